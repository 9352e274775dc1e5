/**
 * A whole sync system in memory for tests: the owner "accounts" (outbox + source rows in its own
 * database), the consumer "directory" (inbox + copies in another database) and the memory broker
 * between them. Time is the TestClock.
 */
import { type Duration, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { CopyRepository, type CopyRow } from "../src/CopyRepository.ts"
import * as MemoryCopyRepository from "../src/memory/CopyRepository.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as MemorySourceRepository from "../src/memory/SourceRepository.ts"
import * as Relay from "../src/Relay.ts"
import type { RetrySchedule } from "../src/RetrySchedule.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company, User } from "./fixtures.ts"

export const consumerName = "directory"
export const queueName = `${consumerName}.sync`

/** Settings of the in-memory system. */
export interface SystemOptions {
  readonly faults?: MemoryBroker.Faults
  readonly dependencyRetry?: RetrySchedule
  readonly inProcessRetries?: number
  readonly subscriptions?: ReadonlyArray<SyncConsumer.Subscription<CopyRepository>>
}

/** The owner's stores, in their own database. */
export const ownerLayer = Layer.mergeAll(MemoryOutbox.layer(), MemorySourceRepository.layer).pipe(
  Layer.provide(Layer.fresh(MemoryDatabase.layer))
)

/** The consumer's stores, in their own database (its Transactor is exposed). */
export const consumerStoresLayer = Layer.mergeAll(MemoryInbox.layer, MemoryCopyRepository.layer).pipe(
  Layer.provideMerge(Layer.fresh(MemoryDatabase.layer))
)

/** Owner, broker and a running consumer of Company and User. */
export const systemLayer = (options: SystemOptions = {}) =>
  SyncConsumer.layer({
    service: consumerName,
    subscriptions: options.subscriptions ?? [SyncConsumer.subscribe(Company), SyncConsumer.subscribe(User)],
    ...(options.dependencyRetry !== undefined ? { dependencyRetry: options.dependencyRetry } : {}),
    ...(options.inProcessRetries !== undefined ? { inProcessRetries: options.inProcessRetries } : {})
  }).pipe(
    Layer.provideMerge(consumerStoresLayer),
    Layer.provideMerge(ownerLayer),
    Layer.provideMerge(MemoryBroker.layer(options.faults !== undefined ? { faults: options.faults } : {}))
  )

/** Publishes everything due in the outbox. */
export const relay = Relay.drain({ producer: "accounts" })

/** Whether the consumer's queue is empty and nothing is being handled. */
export const isQuiet = Effect.gen(function*() {
  const broker = yield* MemoryBroker.MemoryBroker
  const consumer = yield* SyncConsumer.SyncConsumer
  const depth = yield* broker.queueDepth(queueName)
  const inFlight = yield* consumer.inFlight
  return depth.ready + depth.unsettled + depth.delayed === 0 && inFlight === 0
})

/**
 * Lets the consumer work (virtual time advances by `step` each round) until it is quiet; fails if it is
 * not quiet after `rounds` rounds.
 */
export const settle = (options: { readonly step?: Duration.Input; readonly rounds?: number } = {}) =>
  Effect.gen(function*() {
    const rounds = options.rounds ?? 50
    for (let i = 0; i < rounds; i++) {
      yield* TestClock.adjust(options.step ?? "1 millis")
      if (yield* isQuiet) return
    }
    return yield* Effect.die(new Error(`the consumer is not quiet after ${rounds} rounds`))
  })

/** Relays the outbox and lets the consumer work until quiet. */
export const sync = Effect.andThen(relay, settle())

/** The consumer's copy of an entity. */
export const copyOf = (entity: string, id: string): Effect.Effect<CopyRow | null, never, CopyRepository> =>
  CopyRepository.use((copies) => copies.get(entity, id)).pipe(Effect.orDie)
