/**
 * Durable retries on an Effect `Schedule`: the delay before attempt `n + 1` is found by replaying the
 * schedule from its start, so a retry state that lives in a database row (its attempt count) follows the
 * same `Schedule` as an in-process `Effect.retry`.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Option, Pull, Schedule } from "effect"

/** A schedule of retries, fed no input; it ends when the retry budget is spent. */
export type RetrySchedule = Schedule.Schedule<unknown, void>

/**
 * The delay the schedule gives after `attempts` failed attempts (attempts >= 1) made from `startedAt`,
 * or none when its budget is spent.
 */
export const delayAfter = (
  schedule: RetrySchedule,
  attempts: number,
  startedAt = 0
): Effect.Effect<Option.Option<Duration.Duration>> =>
  Effect.gen(function*() {
    const step = yield* Schedule.toStep(schedule)
    let now = startedAt
    let delay = Duration.zero
    for (let i = 0; i < attempts; i++) {
      const next = yield* Effect.exit(step(now, undefined))
      if (next._tag === "Failure") {
        if (Pull.isDoneCause(next.cause)) return Option.none()
        return yield* Effect.die(next.cause)
      }
      delay = next.value[1]
      now += Duration.toMillis(delay)
    }
    return Option.some(delay)
  })
