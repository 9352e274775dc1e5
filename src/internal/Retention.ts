/**
 * Retention clean-ups in bounded statements, run by one instance per interval.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"

/** What one retention clean-up did: rows deleted, and in how many statements. */
export interface PruneRound {
  readonly deleted: number
  readonly batches: number
}

/**
 * Runs `step` (a delete of at most `batchSize` rows, committing on its own) until it deletes fewer than
 * `batchSize`, so that a huge backlog is never one giant transaction.
 */
export const inBatches = <E, R>(
  step: (limit: number) => Effect.Effect<number, E, R>,
  batchSize: number
): Effect.Effect<PruneRound, E, R> =>
  Effect.gen(function*() {
    const limit = Math.max(1, Math.floor(batchSize))
    let deleted = 0
    let batches = 0
    while (true) {
      const n = yield* step(limit)
      deleted += n
      batches++
      if (n < limit) return { deleted, batches }
    }
  })

/**
 * `clean` when `takeTurn` gives this instance the turn of the interval, else nothing (`undefined`): the
 * clean-up runs once per interval across the instances that share the store.
 */
export const onTurn = <A, E, R, E2, R2>(
  takeTurn: Effect.Effect<boolean, E, R>,
  clean: Effect.Effect<A, E2, R2>
): Effect.Effect<A | undefined, E | E2, R | R2> =>
  Effect.flatMap(takeTurn, (mine) => mine ? clean : Effect.succeed(undefined))
