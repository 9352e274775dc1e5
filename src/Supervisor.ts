/**
 * Keeps the background loops of the relay and the consumer alive: a loop that fails or dies (a lost
 * database connection surfaces as a defect from a failed `ROLLBACK`) is logged and started again after a
 * backoff, which starts over once the loop has run healthily for a while.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Duration, Effect, Exit } from "effect"

/** How a supervised loop is restarted. */
export interface RestartPolicy {
  /** The first delay; it doubles with every restart in a row (default 100 ms). */
  readonly base?: Duration.Input
  /** The longest delay (default 10 seconds). */
  readonly maxDelay?: Duration.Input
  /** A run at least this long counts as healthy and resets the backoff (default 30 seconds). */
  readonly healthyAfter?: Duration.Input
}

/**
 * Runs `loop` until it succeeds or the fiber is interrupted, restarting it after every failure or defect;
 * `label` names it in the log.
 */
export const restarting = <A, E, R>(
  label: string,
  loop: Effect.Effect<A, E, R>,
  policy: RestartPolicy = {}
): Effect.Effect<A, never, R> =>
  Effect.gen(function*() {
    const base = Duration.toMillis(Duration.fromInputUnsafe(policy.base ?? "100 millis"))
    const maxDelay = Duration.toMillis(Duration.fromInputUnsafe(policy.maxDelay ?? "10 seconds"))
    const healthyAfter = Duration.toMillis(Duration.fromInputUnsafe(policy.healthyAfter ?? "30 seconds"))
    let restarts = 0
    while (true) {
      const startedAt = yield* Clock.currentTimeMillis
      const exit = yield* Effect.exit(loop)
      if (Exit.isSuccess(exit)) return exit.value
      if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.interrupt
      const ranFor = (yield* Clock.currentTimeMillis) - startedAt
      if (ranFor >= healthyAfter) restarts = 0
      const delay = Math.min(maxDelay, base * 2 ** restarts)
      restarts++
      yield* Effect.logWarning(`${label} stopped; restarting in ${delay} ms`, exit.cause)
      yield* Effect.sleep(Duration.millis(delay))
    }
  })
