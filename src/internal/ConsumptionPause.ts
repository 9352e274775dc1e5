/**
 * R12 at the consumer: while its database does not answer, consumption pauses — the failing work and
 * every other delivery are held, unsettled, until the database answers again.
 *
 * @since 0.1.0
 */
import { Clock, Deferred, Effect, Option } from "effect"
import * as Envelope from "../Envelope.ts"
import * as Outage from "../Outage.ts"
import type { Paused } from "../SyncConsumer.ts"
import type { Transactor } from "../Transactor.ts"

/** The pause of one consumer. */
export interface ConsumptionPause {
  /** Why consumption is paused, while it is. */
  readonly paused: () => Paused | undefined
  /** Completes at once when consumption is not paused; otherwise once it resumes. */
  readonly awaitResumed: Effect.Effect<void>
  /**
   * After a failure, whether the database is down. If it is, consumption pauses: the caller and every other
   * fiber that asks wait while the database is probed (`Outage.awaitDatabase`), and deliveries held for
   * `holdLimit` are given back to the broker without spending a delivery attempt (`releaseHeld`). Returns
   * true once the database answers again; false at once when it answers.
   */
  readonly pausedBy: (problem: unknown) => Effect.Effect<boolean>
}

/** The pause of `consumer`, probing through `transactor`. */
export const make = (options: {
  readonly consumer: string
  readonly transactor: Transactor["Service"]
  /** How long deliveries are held, in milliseconds, before `releaseHeld` gives them back. */
  readonly holdLimit: number
  /** How many deliveries are held now, for the log. */
  readonly heldCount: () => number
  readonly releaseHeld: Effect.Effect<void>
}): ConsumptionPause => {
  const { consumer, holdLimit, releaseHeld, transactor } = options
  /** The outage consumption is paused by, and how its waiters learn that it is over. */
  let outage: { readonly paused: Paused; readonly recovered: Deferred.Deferred<void> } | undefined

  const pausedBy = (problem: unknown): Effect.Effect<boolean> =>
    Effect.gen(function*() {
      if (outage === undefined && (yield* Outage.answers(transactor))) return false
      if (outage !== undefined) {
        yield* Deferred.await(outage.recovered)
        return true
      }
      const since = yield* Clock.currentTimeMillis
      const detail = problem instanceof Error ? problem.message : String(problem)
      const current = {
        paused: { dependency: "database", since, error: Envelope.bounded(detail, 500) } satisfies Paused,
        recovered: Deferred.makeUnsafe<void>()
      }
      outage = current
      yield* Effect.logWarning(
        `consumer "${consumer}": the database does not answer; consumption paused with ${options.heldCount()} deliveries held`,
        current.paused.error
      )
      const resumed = Effect.suspend(() => {
        outage = undefined
        return Deferred.succeed(current.recovered, undefined)
      })
      yield* Outage.awaitDatabase(Option.some(transactor), { hold: { limit: holdLimit, release: releaseHeld } }).pipe(
        Effect.ensuring(resumed)
      )
      const now = yield* Clock.currentTimeMillis
      yield* Effect.logInfo(
        `consumer "${consumer}": the database answers again after ${now - since} ms; consumption resumed`
      )
      return true
    })

  return {
    paused: () => outage?.paused,
    awaitResumed: Effect.suspend(() => outage === undefined ? Effect.void : Deferred.await(outage.recovered)),
    pausedBy
  }
}
