/**
 * A whole sync system for tests: the owner "accounts" (outbox + source rows in its own database), the
 * consumer "directory" (inbox + copies in another database) and the memory broker between them. The
 * stores are in memory unless PostgreSQL ones are given. Time is the TestClock.
 */
import { Context, type Duration, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { CopyRepository, type CopyRow } from "../src/CopyRepository.ts"
import { Inbox } from "../src/Inbox.ts"
import * as MemoryCopyRepository from "../src/memory/CopyRepository.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as MemorySourceRepository from "../src/memory/SourceRepository.ts"
import { Outbox } from "../src/Outbox.ts"
import * as Relay from "../src/Relay.ts"
import type { RetrySchedule } from "../src/RetrySchedule.ts"
import { SourceRepository } from "../src/SourceRepository.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Transactor } from "../src/Transactor.ts"
import { Company, User } from "./fixtures.ts"
import { ownerTables } from "./owner-tables.ts"

export const consumerName = "directory"
export const queueName = `${consumerName}.sync`

/** Where the owner and the consumer keep their data. */
export interface Stores {
  /** The owner's stores, in the owner's database. */
  readonly owner: Layer.Layer<Outbox | SourceRepository, unknown>
  /** The consumer's stores, in its own database. */
  readonly consumer: Layer.Layer<Inbox | CopyRepository | Transactor, unknown>
}

/** Lets real I/O progress between steps of virtual time: nothing to do in memory, a real pause on PostgreSQL. */
export const Pump = Context.Reference<Effect.Effect<void>>("test/Pump", { defaultValue: () => Effect.void })

/** Advances virtual time, then lets real I/O progress. */
export const tick = (duration: Duration.Input) =>
  Effect.andThen(TestClock.adjust(duration), Effect.flatMap(Pump, (pump) => pump))

/** Keeps only the owner's services of a layer that provides more. */
export const ownerSide = <E, R>(
  layer: Layer.Layer<Outbox | SourceRepository, E, R>
): Layer.Layer<Outbox | SourceRepository, E, R> =>
  Layer.effectContext(
    Effect.map(Layer.build(layer), (context) =>
      Context.make(Outbox, Context.get(context, Outbox)).pipe(
        Context.add(SourceRepository, Context.get(context, SourceRepository))
      ))
  )

/** Keeps only the consumer's services of a layer that provides more. */
export const consumerSide = <E, R>(
  layer: Layer.Layer<Inbox | CopyRepository | Transactor, E, R>
): Layer.Layer<Inbox | CopyRepository | Transactor, E, R> =>
  Layer.effectContext(Effect.map(Layer.build(layer), (context) =>
    Context.make(Inbox, Context.get(context, Inbox)).pipe(
      Context.add(CopyRepository, Context.get(context, CopyRepository)),
      Context.add(Transactor, Context.get(context, Transactor))
    )))

/** Settings of the system. */
export interface SystemOptions {
  /** Default: in memory. */
  readonly stores?: Stores
  readonly faults?: MemoryBroker.Faults
  readonly dependencyRetry?: RetrySchedule
  readonly inProcessRetries?: number
  readonly batchSize?: number
  readonly subscriptions?: ReadonlyArray<Subscription.Subscription<CopyRepository>>
}

/** Settings of the memory stores. */
export interface MemoryStoresOptions {
  /** Where the owner keeps Company and User: the document store (default) or owner tables (`owner-tables.ts`). */
  readonly ownerTables?: boolean
  /** How long the owner's outbox leases claimed rows. */
  readonly leaseMillis?: number
}

/** Owner and consumer in memory, each in its own database (built fresh each time the layers are used). */
export const memoryStoresWith = (options: MemoryStoresOptions = {}): Stores => ({
  owner: Layer.mergeAll(
    MemoryOutbox.layer(options.leaseMillis === undefined ? {} : { leaseMillis: options.leaseMillis }),
    MemorySourceRepository.layer(options.ownerTables === true ? ownerTables() : [])
  ).pipe(Layer.provide(Layer.fresh(MemoryDatabase.layer))),
  consumer: Layer.mergeAll(MemoryInbox.layer, MemoryCopyRepository.layer).pipe(
    Layer.provideMerge(Layer.fresh(MemoryDatabase.layer))
  )
})

/** Owner and consumer in memory, each in its own database; the owner's entities in the document store. */
export const memoryStores: Stores = memoryStoresWith()

/** Owner and consumer in memory, each in its own database; the owner's Company and User in owner tables. */
export const memoryOwnerTableStores: Stores = memoryStoresWith({ ownerTables: true })

/** Owner, broker and a running consumer of Company and User. */
export const systemLayer = (options: SystemOptions = {}) =>
  SyncConsumer.layer({
    service: consumerName,
    subscriptions: options.subscriptions ?? [Subscription.subscribe(Company), Subscription.subscribe(User)],
    ...(options.dependencyRetry !== undefined ? { dependencyRetry: options.dependencyRetry } : {}),
    ...(options.inProcessRetries !== undefined ? { inProcessRetries: options.inProcessRetries } : {}),
    ...(options.batchSize !== undefined ? { batchSize: options.batchSize } : {})
  }).pipe(
    Layer.provideMerge((options.stores ?? memoryStores).consumer),
    Layer.provideMerge((options.stores ?? memoryStores).owner),
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
    const rounds = options.rounds ?? 300
    for (let i = 0; i < rounds; i++) {
      yield* tick(options.step ?? "1 millis")
      if (yield* isQuiet) return
    }
    return yield* Effect.die(new Error(`the consumer is not quiet after ${rounds} rounds`))
  })

/**
 * Lets the system work (virtual time advances by `step` each round) until `check` gives a value that
 * satisfies `until`; fails after `rounds` rounds.
 */
export const eventually = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  until: (a: A) => boolean,
  options: { readonly step?: Duration.Input; readonly rounds?: number } = {}
) =>
  Effect.gen(function*() {
    const rounds = options.rounds ?? 300
    for (let i = 0; i < rounds; i++) {
      const a = yield* check
      if (until(a)) return a
      yield* tick(options.step ?? "1 millis")
    }
    return yield* Effect.die(new Error(`the condition did not hold after ${rounds} rounds`))
  })

/** Relays the outbox and lets the consumer work until quiet. */
export const sync = Effect.andThen(relay, settle())

/** The consumer's copy of an entity. */
export const copyOf = (entity: string, id: string): Effect.Effect<CopyRow | null, never, CopyRepository> =>
  CopyRepository.use((copies) => copies.get(entity, id)).pipe(Effect.orDie)
