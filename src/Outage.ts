/**
 * R12 — an outage pauses, it never dead-letters. After a database error, a part (the consumer, the relay,
 * the resync responder) asks whether the database answers at all (`answers`): if it does, the error is the
 * statement's own; if it does not, the part waits for it (`awaitDatabase`), probing with backoff, and gives
 * back what it holds every so often, so that nothing stays unsettled past the broker's consumer timeout.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Exit, Option, Schedule } from "effect"
import type { RetrySchedule } from "./RetrySchedule.ts"
import * as SyncConfig from "./SyncConfig.ts"
import type { Transactor } from "./Transactor.ts"

/** The longest a probe may take before the database counts as not answering. */
export const probeTimeout: Duration.Input = "5 seconds"

/** The default wait between probes, by failures in a row: 100 ms doubling, at most 5 s. */
export const defaultProbeSchedule: RetrySchedule = SyncConfig.backoff({ base: "100 millis", maxDelay: "5 seconds" })

/** Whether the database answers a probe within `probeTimeout`; a failure or a defect means it does not. */
export const answers = (transactor: Transactor["Service"]): Effect.Effect<boolean> =>
  transactor.probe.pipe(
    Effect.timeout(probeTimeout),
    Effect.as(true),
    Effect.catch(() => Effect.succeed(false)),
    Effect.catchDefect(() => Effect.succeed(false))
  )

/** How `awaitDatabase` waits. */
export interface WaitOptions {
  /** The wait before each probe, by failures in a row (default `defaultProbeSchedule`). */
  readonly schedule?: RetrySchedule
  /**
   * Failures in a row before this wait (default 0), so that a database that fails again soon after it
   * answered is not probed at once.
   */
  readonly failures?: number
  /** What the caller holds: given back each time `limit` milliseconds pass without an answer. */
  readonly hold?: { readonly limit: number; readonly release: Effect.Effect<void> }
}

/**
 * Waits until the database answers: sleeps on the schedule, then probes, until a probe succeeds (without a
 * transactor to probe, one wait). Returns the failures in a row, this wait's included.
 */
export const awaitDatabase = (
  transactor: Option.Option<Transactor["Service"]>,
  options: WaitOptions = {}
): Effect.Effect<number> =>
  Effect.gen(function*() {
    const step = yield* Schedule.toStep(options.schedule ?? defaultProbeSchedule)
    let failures = options.failures ?? 0
    let delay = Duration.millis(100)
    const next = Effect.gen(function*() {
      const stepped = yield* Effect.exit(step(yield* Clock.currentTimeMillis, undefined))
      if (Exit.isSuccess(stepped)) delay = stepped.value[1] // a spent schedule keeps its last delay
    })
    for (let i = 0; i < failures; i++) yield* next
    let releasedAt = yield* Clock.currentTimeMillis
    while (true) {
      failures++
      yield* next
      yield* Effect.sleep(delay)
      if (Option.isNone(transactor) || (yield* answers(transactor.value))) return failures
      const now = yield* Clock.currentTimeMillis
      if (options.hold !== undefined && now - releasedAt >= options.hold.limit) {
        yield* options.hold.release
        releasedAt = now
      }
    }
  })
