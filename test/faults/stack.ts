/**
 * The real stack of one fault-injection test, in production mode: a fresh PostgreSQL database holding the
 * owner's tables and the consumer's tables (distinct prefixes), RabbitMQ with this test's own exchanges,
 * queue and named connections, and one connection pool per role (writer, relay, consumer, admin) with its
 * own `application_name`, so a test can terminate exactly the relay's and the consumer's backends.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, type Redacted, Schema } from "effect"
import type { SqlClient } from "effect/sql"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import type { Broker } from "../../src/Broker.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import * as Relay from "../../src/Relay.ts"
import * as SyncConsumer from "../../src/SyncConsumer.ts"
import { ownerSide } from "../harness.ts"
import { owner, subscriptions } from "./contract.ts"

/** The local RabbitMQ. */
export const amqpUrl = "amqp://guest:guest@127.0.0.1:5672"

/** The `application_name` of each role's connections. */
export const roles = {
  writer: "faults-writer",
  relay: "faults-relay",
  consumer: "faults-consumer",
  admin: "faults-admin"
} as const

/** The names of one test's objects; serializable, so a child process gets the same ones. */
export const Names = Schema.Struct({
  test: Schema.String,
  service: Schema.String,
  queue: Schema.String,
  ownerPrefix: Schema.String,
  consumerPrefix: Schema.String,
  exchange: Schema.String,
  deadLetterExchange: Schema.String,
  replayExchange: Schema.String,
  /** Every RabbitMQ connection of the test is named `<connectionPrefix>-<role>`. */
  connectionPrefix: Schema.String,
  /** Ordered lanes: the consumers read this many lanes, the relays publish each entity's events in order. */
  lanes: Schema.optionalKey(Schema.Int)
})
export type Names = typeof Names.Type

/** Fresh names for a test (random per run), with ordered lanes when `lanes` is given. */
export const makeNames = (test: string, lanes?: number): Names => {
  const run = `${test}-${Math.random().toString(36).slice(2, 8)}`
  const service = `faults-${run}`
  return {
    test,
    service,
    queue: SyncConsumer.queueOf(service, subscriptions).name,
    ownerPrefix: "owner_",
    consumerPrefix: "consumer_",
    exchange: `test.faults.events.${run}`,
    deadLetterExchange: `test.faults.dead.${run}`,
    replayExchange: `test.faults.replay.${run}`,
    connectionPrefix: `faults-${run}`,
    ...(lanes === undefined ? {} : { lanes })
  }
}

/** The queues the consumer reads: its queue, or its lane queues. */
export const consumerQueues = (names: Names): ReadonlyArray<string> =>
  SyncConsumer.queuesOf(names.service, subscriptions, names.lanes).map((queue) => queue.name)

/** A connection pool on the test database, its connections named `applicationName`. */
export const pool = (url: Redacted.Redacted, applicationName: string, maxConnections: number) =>
  PgClient.layer({ url, applicationName, maxConnections })

/** The RabbitMQ broker of one role, its connection named `<connectionPrefix>-<role>`. */
export const broker = (names: Names, role: string): Layer.Layer<Broker> =>
  RabbitBroker.layer({
    url: amqpUrl,
    exchange: names.exchange,
    deadLetterExchange: names.deadLetterExchange,
    replayExchange: names.replayExchange,
    connectionName: `${names.connectionPrefix}-${role}`
  })

/** A layer that wraps the broker below it (to inject crashes). */
export type BrokerWrapper = Layer.Layer<Broker, never, Broker>

/** The owner's stores for the writer, on the writer's pool. */
export const writerStores = (url: Redacted.Redacted, names: Names) =>
  ownerSide(PostgresSync.layer({ prefix: names.ownerPrefix })).pipe(Layer.provide(pool(url, roles.writer, 4)))

/** Options of a relay incarnation. */
export interface RelayOptions {
  /** Wraps the relay's broker. */
  readonly wrap?: BrokerWrapper
  /** Claim lease in milliseconds (default 2 000, so rows of a crashed relay come back quickly). */
  readonly leaseMillis?: number
}

/** A running relay with its own pool and broker connection (one "relay process"). */
export const relay = (url: Redacted.Redacted, names: Names, options: RelayOptions = {}) => {
  const rabbit = broker(names, "relay")
  return Relay.layer({ producer: owner, pollInterval: "500 millis", orderedByEntity: names.lanes !== undefined }).pipe(
    Layer.provide(
      ownerSide(PostgresSync.layer({ prefix: names.ownerPrefix, leaseMillis: options.leaseMillis ?? 2_000 })).pipe(
        Layer.provide(pool(url, roles.relay, 4))
      )
    ),
    Layer.provide(options.wrap === undefined ? rabbit : options.wrap.pipe(Layer.provide(rabbit)))
  )
}

/** Options of a consumer incarnation. */
export interface ConsumerOptions {
  /** Wraps the consumer's broker. */
  readonly wrap?: BrokerWrapper
  /** The role in its connection's name (default `consumer`). */
  readonly role?: string
}

/** The consumer's stores and its pool (also provided, for the handler's `SqlClient`). */
const consumerStores = (url: Redacted.Redacted, names: Names) =>
  PostgresSync.layer({ prefix: names.consumerPrefix }).pipe(Layer.provideMerge(pool(url, roles.consumer, 6)))

/** A running consumer with its own pool and broker connection (one "consumer process"). */
export const consumer = (url: Redacted.Redacted, names: Names, options: ConsumerOptions = {}) => {
  const rabbit = broker(names, options.role ?? "consumer")
  return SyncConsumer.layer({
    service: names.service,
    subscriptions,
    producers: { [owner]: ["guest"] },
    ...(names.lanes === undefined ? {} : { lanes: names.lanes })
  }).pipe(
    Layer.provide(consumerStores(url, names)),
    Layer.provide(options.wrap === undefined ? rabbit : options.wrap.pipe(Layer.provide(rabbit)))
  )
}

/** Table names of the test database. */
export const tables = (names: Names) => ({
  outbox: `${names.ownerPrefix}outbox`,
  source: `${names.ownerPrefix}source`,
  inbox: `${names.consumerPrefix}inbox`,
  waiting: `${names.consumerPrefix}waiting`,
  dead: `${names.consumerPrefix}dead`,
  copies: `${names.consumerPrefix}copies`
})

/** Runs the migrations of both sides once, before any role starts (so no two roles migrate at once). */
export const migrate = (url: Redacted.Redacted, names: Names): Effect.Effect<void, PostgresSync.LayerError> =>
  Effect.scoped(Effect.asVoid(Layer.build(
    Layer.mergeAll(
      PostgresSync.layer({ prefix: names.ownerPrefix }),
      PostgresSync.layer({ prefix: names.consumerPrefix })
    ).pipe(Layer.provide(pool(url, roles.admin, 4)))
  )))

/** The admin `SqlClient` type used for checks and faults. */
export type Sql = SqlClient.SqlClient
