/**
 * Ordered lanes on PostgreSQL and RabbitMQ: one consumer service with 8 lanes (a consistent-hash exchange
 * on the entity key, each lane a quorum queue with a single active consumer) read by three instances in
 * this process (each with its own layers, scope, broker connection and database pool), fed by two relays
 * that publish each entity's events in version order (`orderedByEntity`). About 3,000 events over 100
 * Companies, most of them updates, in two phases; between them the instance with the most lanes is
 * stopped and the others take its lanes over.
 *
 * What must hold: every handler call that committed saw, for its entity, a strictly higher version than the
 * entity's previous one (the handlers log their calls in the apply transaction, so calls rolled back with
 * the stopped instance's last batch do not count); no event was stale; every copy ends at the owner's last
 * version; and after the stop, the stopped instance's lanes belong to the others.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import { Clock, Effect, Exit, Layer, Metric, type Redacted, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import * as RabbitBroker from "../src/amqp/RabbitBroker.ts"
import { type Broker, laneQueues } from "../src/Broker.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import type { SourceRepository } from "../src/SourceRepository.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { activeConsumers } from "./faults/rabbit.ts"
import { Company } from "./fixtures.ts"
import { ownerSide } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const run = Math.random().toString(36).slice(2, 8)
const service = `lanes-${run}`
const lanes = 8
const amqpUrl = "amqp://guest:guest@127.0.0.1:5672"
const rabbit = {
  url: amqpUrl,
  exchange: `test.lanes.events.${run}`,
  deadLetterExchange: `test.lanes.dead.${run}`,
  replayExchange: `test.lanes.replay.${run}`
}
const laneNames = laneQueues(service, SyncConsumer.queueOf(service, []), lanes).map((lane) => lane.name)

afterAll(async () => {
  const connection = await amqp.connect(amqpUrl)
  const channel = await connection.createChannel()
  for (const queue of laneNames) {
    await channel.deleteQueue(queue)
    await channel.deleteQueue(RabbitBroker.deadQueueOf(queue))
  }
  for (const exchange of [`${service}.lanes`, rabbit.exchange, rabbit.deadLetterExchange, rabbit.replayExchange]) {
    await channel.deleteExchange(exchange)
  }
  await connection.close()
}, 30_000)

const companies = Producer.make("accounts").repository(Company)
const entities = 100
const rounds = 30
const ids = Array.from({ length: entities }, (_, i) => `c-${String(i).padStart(3, "0")}`)

const brokerOf = (name: string): Layer.Layer<Broker> =>
  RabbitBroker.layer({ ...rabbit, connectionName: `lanes-${run}-${name}` })

const ownerPrefix = "owner_"
const consumerPrefix = "directory_"
const handledLog = "handled_log"

/** An owner instance: its stores and a relay that publishes each entity's events in version order. */
const relayInstance = (url: Redacted.Redacted, name: string) =>
  Relay.layer({ producer: "accounts", orderedByEntity: true, pollInterval: "100 millis", batchSize: 50 }).pipe(
    Layer.provideMerge(ownerSide(PostgresSync.layer({ prefix: ownerPrefix, leaseMillis: 5_000 }))),
    Layer.provide(PgClient.layer({ url, maxConnections: 4 })),
    Layer.provide(brokerOf(name))
  )

/** What the handlers of all instances see. */
interface Observed {
  /** When each instance last handled each entity (epoch ms), for the takeover time. */
  readonly lastHandledBy: Map<string, string>
  /** The first handler call after the stop for an entity the stopped instance had handled. */
  takenOverAt: number | undefined
  stoppedInstance: string | undefined
}

const observed: Observed = {
  lastHandledBy: new Map(),
  takenOverAt: undefined,
  stoppedInstance: undefined
}

/** A consumer instance with 8 lanes; its handler logs each call in the apply transaction. */
const consumerInstance = (url: Redacted.Redacted, instance: string) =>
  SyncConsumer.layer({
    service,
    lanes,
    subscriptions: [
      Subscription.subscribe(Company, {
        handler: ({ envelope }) =>
          Effect.gen(function*() {
            const id = envelope.entityId
            const previous = observed.lastHandledBy.get(id)
            if (
              observed.stoppedInstance !== undefined && observed.takenOverAt === undefined &&
              previous === observed.stoppedInstance && instance !== previous
            ) observed.takenOverAt = yield* Clock.currentTimeMillis
            observed.lastHandledBy.set(id, instance)
            const sql = yield* SqlClient.SqlClient
            yield* sql`INSERT INTO ${sql(handledLog)} (instance, entity_id, version)
              VALUES (${instance}, ${id}, ${envelope.version})`
            yield* Effect.sleep("1 millis")
          })
      })
    ],
    producers: { accounts: ["guest"] },
    prefetch: 200,
    pollInterval: "200 millis"
  }).pipe(
    Layer.provideMerge(PostgresSync.layer({ prefix: consumerPrefix })),
    Layer.provideMerge(PgClient.layer({ url, maxConnections: 4 })),
    Layer.provideMerge(brokerOf(instance))
  )

/** Builds a layer in a scope of its own; `stop` closes it. */
const start = <A, E>(layer: Layer.Layer<A, E>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Scope.Scope)
    yield* Layer.buildWithScope(layer, scope)
    return { stop: Scope.close(scope, Exit.void) }
  })

/** The instance (by its connection name) holding each lane's active consumer, from RabbitMQ. */
const activeLanes = activeConsumers(laneNames, `lanes-${run}`)

const HandledRow = Schema.Struct({
  id: Schema.Number,
  instance: Schema.String,
  entityId: Schema.String,
  version: Schema.Number
})
const CopyVersion = Schema.Struct({ id: Schema.String, version: Schema.Number })

describe("ordered lanes on PostgreSQL and RabbitMQ", () => {
  it.live(
    "8 lanes, 3 instances, 2 ordered relays: every entity in version order, no stale event, lanes taken over",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const { url } = yield* TestPostgres.TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE ${sql(handledLog)} (
        id bigserial PRIMARY KEY, instance text NOT NULL, entity_id text NOT NULL, version bigint NOT NULL)`
        const applied = () =>
          Effect.gen(function*() {
            const [row] = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${sql(handledLog)}`
            return row?.n ?? 0
          })
        const awaitApplied = (n: number, what: string) =>
          Effect.gen(function*() {
            const deadline = Date.now() + 90_000
            while ((yield* applied()) < n) {
              if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
              yield* Effect.sleep("50 millis")
            }
          })

        // the owner's writer (stores without a relay), two relays, three consumer instances started together
        const writer = yield* Layer.build(
          ownerSide(PostgresSync.layer({ prefix: ownerPrefix })).pipe(
            Layer.provide(PgClient.layer({ url, maxConnections: 2 }))
          )
        )
        const write = <A, E>(effect: Effect.Effect<A, E, Outbox.OutboxTransaction | SourceRepository>) =>
          Outbox.transaction(effect).pipe(Effect.provide(writer))
        yield* Effect.all([relayInstance(url, "relay-1"), relayInstance(url, "relay-2")].map(start), {
          concurrency: "unbounded"
        })
        const instances = ["consumer-1", "consumer-2", "consumer-3"]
        const consumers = new Map(
          yield* Effect.all(
            instances.map((name) =>
              Effect.map(start(consumerInstance(url, name)), (started) => [name, started] as const)
            ),
            { concurrency: "unbounded" }
          )
        )
        // every lane has its active consumer: RabbitMQ gives a lane to the first instance that subscribed to
        // it (an instance that connected first may hold them all); each instance applies its lanes in one loop
        for (let attempt = 0;; attempt++) {
          const holding = yield* activeLanes
          if ([...holding.values()].reduce((n, held) => n + held.length, 0) === lanes) break
          if (attempt >= 100) {
            return yield* Effect.die(new Error(`lanes without a consumer: ${JSON.stringify([...holding])}`))
          }
          yield* Effect.sleep("100 millis")
        }

        // phase 1: creates and half of the updates
        yield* write(companies.createMany(ids.map((id) => ({ id, name: `${id} v1` }))))
        for (let round = 0; round < rounds / 2; round++) {
          yield* write(companies.updateMany(ids, (c) => ({ ...c, name: `${c.id} r${round}` })))
        }
        const phase1 = entities * (1 + rounds / 2)
        yield* awaitApplied(phase1, "phase 1")
        const before = yield* activeLanes
        const counts = (byInstance: ReadonlyMap<string, ReadonlyArray<string>>) =>
          Object.fromEntries(instances.map((name) => [name, byInstance.get(name)?.length ?? 0]))
        const lanesBefore = counts(before)
        assert.strictEqual(Object.values(lanesBefore).reduce((a, b) => a + b, 0), lanes, JSON.stringify(lanesBefore))

        // stop the instance with the most lanes, then the second half of the updates
        const stopped = instances.reduce((a, b) => (lanesBefore[b] ?? 0) > (lanesBefore[a] ?? 0) ? b : a)
        observed.stoppedInstance = stopped
        const stoppedAt = Date.now()
        yield* consumers.get(stopped)!.stop
        for (let round = rounds / 2; round < rounds; round++) {
          yield* write(companies.updateMany(ids, (c) => ({ ...c, name: `${c.id} r${round}` })))
        }
        const total = entities * (1 + rounds)
        yield* awaitApplied(total, "phase 2")
        const lanesAfter = counts(yield* activeLanes)

        // every entity's handled versions strictly increase, in the order they committed
        const handled = yield* sql`SELECT id::int AS id, instance, entity_id AS "entityId", version::int AS version
        FROM ${sql(handledLog)} ORDER BY id`.pipe(Effect.flatMap(Schema.decodeUnknownEffect(Schema.Array(HandledRow))))
        assert.strictEqual(handled.length, total)
        const last = new Map<string, number>()
        let violations = 0
        for (const row of handled) {
          if ((last.get(row.entityId) ?? 0) >= row.version) violations++
          last.set(row.entityId, row.version)
        }
        assert.strictEqual(violations, 0)
        for (const id of ids) assert.strictEqual(last.get(id), 1 + rounds, id)
        const copies = yield* sql`SELECT id, version::int AS version FROM ${sql(`${consumerPrefix}copies`)}
        WHERE entity = 'Company'`.pipe(Effect.flatMap(Schema.decodeUnknownEffect(Schema.Array(CopyVersion))))
        assert.strictEqual(copies.length, entities)
        assert.isTrue(copies.every((copy) => copy.version === 1 + rounds))
        const stale = yield* Metrics.outcomeCount(service, "Company", "stale")
        assert.strictEqual(stale, 0)
        // the stopped instance holds no lane; the others hold all of them
        assert.strictEqual(lanesAfter[stopped], 0)
        assert.strictEqual(Object.values(lanesAfter).reduce((a, b) => a + b, 0), lanes, JSON.stringify(lanesAfter))
        const afterStop = handled.filter((row) => row.instance === stopped).length

        const takeover = observed.takenOverAt === undefined ? "n/a" : `${observed.takenOverAt - stoppedAt} ms`
        console.log(
          [
            `ordered lanes: ${total} events (${entities} entities, ${rounds} updates each), ${lanes} lanes, ` +
            `3 instances, 2 relays (orderedByEntity)`,
            `lanes per instance before: ${JSON.stringify(lanesBefore)}; after stopping ${stopped}: ${
              JSON.stringify(lanesAfter)
            }`,
            `takeover: first event of a taken-over entity ${takeover} after the stop`,
            `handled by ${stopped} in all: ${afterStop}`,
            `version order violations: ${violations}; stale: ${stale}`
          ].join("\n")
        )
      })).pipe(
        Effect.provide(TestPostgres.layer()),
        Effect.provideService(Metric.MetricRegistry, new Map())
      ),
    180_000
  )
})
