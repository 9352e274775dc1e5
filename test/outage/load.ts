/**
 * A steady write load that outlives an outage of the owner's database: the fault suite's write stream
 * (`writeStream`: creates, updates, soft and hard deletes of items with dependencies, paced) run in
 * consecutive chunks of a few seconds, each on items of its own, until told to stop. A chunk whose
 * transaction keeps failing (about 10 s: the database is down) is given up and the next one starts, so the
 * writer keeps trying through an outage of any length; what it could not commit simply does not exist.
 */
import { Clock, Effect, type Layer, Ref } from "effect"
import type { Outbox } from "../../src/Outbox.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import { writeStream, type WriteStreamResult } from "../faults/writer.ts"

/** Options of a steady load. */
export interface LoadOptions {
  /** Target events per second. */
  readonly ratePerSecond: number
  /** Events per chunk. */
  readonly chunkEvents: number
}

/** What a steady load did. */
export interface LoadResult extends WriteStreamResult {
  readonly chunks: number
  /** Chunks given up because their transaction kept failing. */
  readonly failedChunks: number
}

/** Writes chunk after chunk until `stopping` is set (checked between chunks). */
export const steadyLoad = (
  writer: Layer.Layer<Outbox | SourceRepository>,
  options: LoadOptions,
  stopping: Ref.Ref<boolean>
): Effect.Effect<LoadResult> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    let chunks = 0
    let failedChunks = 0
    let events = 0
    let transactions = 0
    let retries = 0
    while (!(yield* Ref.get(stopping))) {
      const chunk = chunks++
      const result = yield* writeStream({
        events: options.chunkEvents,
        ratePerSecond: options.ratePerSecond,
        seed: chunk + 1,
        idPrefix: `c${chunk}-item-`
      }).pipe(Effect.provide(writer), Effect.exit)
      if (result._tag === "Failure") {
        // whatever made it fail (the connection refused, the server shutting down), the next chunk tries again
        failedChunks++
      } else {
        events += result.value.events
        transactions += result.value.transactions
        retries += result.value.retries
      }
    }
    const end = yield* Clock.currentTimeMillis
    return { events, transactions, retries, seconds: (end - start) / 1000, chunks, failedChunks }
  })
