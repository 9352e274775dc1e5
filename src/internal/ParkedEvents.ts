/**
 * The consumer's parked events (R5): events whose dependencies were still missing after the in-process
 * retries wait in the inbox, and a worker retries each when it is due or when what it waits for is applied.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect } from "effect"
import type { SqlError } from "effect/sql"
import type { EntityRef } from "../Errors.ts"
import type { Inbox, WaitingRow } from "../Inbox.ts"
import * as Tracing from "../Tracing.ts"
import * as Signal from "./Signal.ts"

/** Waiting rows taken per look. */
const pageSize = 100

/** The parked events of one consumer. */
export interface ParkedEvents {
  /** Notes that parked events may exist: this instance parked or replayed one. */
  readonly noteParked: () => void
  /**
   * Makes the parked events waiting for `refs` due (`Inbox.wake`); how many. Only while parked events may
   * exist: set when this instance parks or replays one, and from what the worker finds (it looks at least
   * once per poll interval, so the parked events of other instances are known within that interval). That
   * spares every apply a statement while nothing is parked.
   */
  readonly wake: (refs: ReadonlyArray<EntityRef>) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Fired after a commit that parked events or made parked ones due, and after a replay: wakes the worker,
   * which otherwise looks only when the next parked event is due (or after the poll interval).
   */
  readonly changed: Signal.Signal
  /**
   * The worker, forever: claims the parked events that are due (`Inbox.claimDue`, so that the instances of
   * the consumer never retry one at the same time) and retries them with `retry` (`concurrency` at once), then
   * waits until the next one is due, `changed` fires or the poll interval passes. While consumption is
   * paused (`awaitResumed`) it waits.
   */
  readonly work: <E, R>(
    retry: (row: WaitingRow) => Effect.Effect<void, E, R>
  ) => Effect.Effect<never, E | SqlError.SqlError, R>
}

/** The parked events of `consumer` in `inbox`. */
export const make = (options: {
  readonly consumer: string
  readonly inbox: Inbox["Service"]
  readonly pollInterval: Duration.Duration
  readonly concurrency: number
  /** How long a claim keeps the claimed events from the other instances, in milliseconds. */
  readonly leaseMillis: number
  readonly awaitResumed: Effect.Effect<void>
}): Effect.Effect<ParkedEvents> =>
  Effect.map(Signal.make(), (changed) => {
    const { consumer, inbox, pollInterval } = options
    const parked = { maybe: true, changes: 0 }
    const noteParked = () => {
      parked.maybe = true
      parked.changes++
    }

    const work = <E, R>(retry: (row: WaitingRow) => Effect.Effect<void, E, R>) =>
      Effect.gen(function*() {
        while (true) {
          yield* options.awaitResumed
          const wake = yield* changed.current
          const now = yield* Clock.currentTimeMillis
          const changes = parked.changes
          // claimed, so that each due event is retried by one instance at a time
          const due = yield* Tracing.untraced(inbox.claimDue(consumer, now, pageSize, options.leaseMillis))
          // what it claimed exists (another instance may have parked it): its retries must wake
          if (due.length > 0) parked.maybe = true
          yield* Effect.forEach(due, retry, { concurrency: options.concurrency, discard: true })
          if (due.length === pageSize) continue
          const next = yield* Tracing.untraced(inbox.nextDueAt(consumer))
          if (next !== null) parked.maybe = true
          else if (parked.changes === changes) parked.maybe = false
          const later = yield* Clock.currentTimeMillis
          const wait = next === null
            ? pollInterval
            : Duration.min(pollInterval, Duration.millis(Math.max(0, next - later)))
          if (next !== null && next <= later) continue
          yield* Signal.awaitAtMost(wake, wait)
        }
      })

    return {
      noteParked,
      wake: (refs) => parked.maybe ? inbox.wake(consumer, refs) : Effect.succeed(0),
      changed,
      work
    }
  })
