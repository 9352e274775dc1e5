/**
 * The library's pipeline, in production mode: `Producer` repositories in `Outbox.transaction` on the
 * owner's database, its items in an owner table (`OwnerTable`, created by the layer's `migrations`),
 * `Relay.layer`, `RabbitBroker` (quorum queue, confirms) and `SyncConsumer` with its
 * inbox and copies on the consumer's database (`PostgresSync.layer`). Owner and consumer each have their
 * own pool and their own RabbitMQ connection, as two services would.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { Envelope, Metrics, Outbox, Producer, Relay, Subscription, SyncConsumer } from "entity-sync"
import { RabbitBroker } from "entity-sync/amqp"
import { PostgresSync } from "entity-sync/postgres"
import { amqpUrl, Item, itemOf, ItemsTable, itemsTable, owner } from "./contract.ts"
import type { ApplyListener, MakePipeline, PhaseEnv } from "./workloads.ts"

const items = Producer.make(owner).repository(Item)

const pool = (url: PhaseEnv["ownerUrl"], applicationName: string) =>
  PgClient.layer({ url, applicationName, maxConnections: 10 })

/** The owner's stores: the items in their owner table, created by the service's migration. */
const ownerStores = (url: PhaseEnv["ownerUrl"]) =>
  PostgresSync.layer({
    ownerTables: [ItemsTable],
    migrations: SqlClient.SqlClient.use((sql) => sql.unsafe(itemsTable))
  }).pipe(Layer.provideMerge(pool(url, "bench-library-owner")))

/** The consumer's stores: inbox and copies. */
const consumerStores = (url: PhaseEnv["consumerUrl"]) =>
  PostgresSync.layer().pipe(Layer.provideMerge(pool(url, "bench-library-consumer")))

const broker = (env: PhaseEnv, role: string) =>
  RabbitBroker.layer({
    url: amqpUrl,
    exchange: env.names.exchange,
    deadLetterExchange: env.names.deadLetterExchange,
    connectionName: `${env.names.connectionPrefix}-${role}`
  })

/** The consumer; with a listener, a handler reports each apply once its transaction committed. */
const consumer = (env: PhaseEnv, listener: ApplyListener | null) => {
  const subscription = listener === null
    ? Subscription.subscribe(Item)
    : Subscription.subscribe(Item, {
      handler: ({ envelope }) =>
        Effect.flatMap(
          SqlClient.SqlClient,
          (sql) => sql.afterCommit(Effect.sync(() => listener.onApplied(envelope.entityId)))
        )
    })
  return SyncConsumer.layer({
    service: env.names.service,
    subscriptions: [subscription],
    producers: { [owner]: ["guest"] },
    batchSize: env.settings.consumerBatch,
    prefetch: env.settings.prefetch,
    ...(env.lanes === undefined ? {} : { lanes: env.lanes })
  }).pipe(
    Layer.provide(consumerStores(env.consumerUrl)),
    Layer.provide(broker(env, "consumer"))
  )
}

const envelopeOf = (prefix: string, i: number) =>
  Effect.map(Envelope.makeMessageId, (messageId): Envelope.Envelope => {
    const item = itemOf(prefix, i)
    return {
      contractVersion: 1,
      messageId,
      entity: Item.name,
      entityId: item.id,
      action: "created",
      version: 1,
      occurredAt: new Date().toISOString(),
      producer: owner,
      forceSync: false,
      payload: item
    }
  })

/** The library pipeline of a phase. */
export const make: MakePipeline = (env) =>
  Effect.gen(function*() {
    const ownerContext = yield* Layer.build(ownerStores(env.ownerUrl))
    // The writes run in the owner's services as a server's handlers run in its runtime: merged into the
    // phase's context once, not copied into each transaction's fiber (a copy of ~100 services per write).
    const ownerServices = Context.merge(yield* Effect.context<never>(), ownerContext)
    const withOwner = <A, E, R extends Layer.Success<ReturnType<typeof ownerStores>>>(effect: Effect.Effect<A, E, R>) =>
      Effect.updateContext(effect, (_: Context.Context<never>) => ownerServices)
    return {
      name: "library",
      write: (prefix, ids) =>
        Outbox.transaction(items.createMany(ids.map((i) => itemOf(prefix, i)))).pipe(Effect.asVoid, withOwner),
      // The new state of every item, as the baseline writes it: one `saveMany` per transaction (one write
      // and one append, no read).
      update: (prefix, ids, revision) =>
        Outbox.transaction(items.saveMany(ids.map((i) => itemOf(prefix, i, revision)))).pipe(Effect.asVoid, withOwner),
      fillOutbox: (prefix, count) =>
        Effect.forEach(
          Array.from({ length: Math.ceil(count / 1_000) }, (_, c) => c),
          (c) =>
            Effect.gen(function*() {
              const envelopes = yield* Effect.forEach(
                Array.from({ length: Math.min(1_000, count - c * 1_000) }, (_, i) => c * 1_000 + i),
                (i) => envelopeOf(prefix, i)
              )
              yield* Outbox.transaction(Outbox.OutboxTransaction.use((tx) => tx.append(envelopes)))
            }).pipe(withOwner),
          { concurrency: 2, discard: true }
        ),
      startConsumer: (listener) =>
        Effect.asVoid(Effect.replicateEffect(Layer.build(consumer(env, listener)), env.instances?.consumers ?? 1)),
      startRelay: Effect.asVoid(Effect.replicateEffect(
        Layer.build(
          Relay.layer({ producer: owner, batchSize: env.settings.relayBatch, orderedByEntity: env.lanes !== undefined })
            .pipe(
              Layer.provide(Layer.succeedContext(ownerContext)),
              Layer.provide(broker(env, "relay"))
            )
        ),
        env.instances?.relays ?? 1
      )),
      applied: Metrics.outcomeCount(env.names.service, Item.name, "applied")
    }
  })
