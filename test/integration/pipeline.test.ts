/**
 * The whole pipeline on the real servers: owner writes → outbox (PostgreSQL) → relay → RabbitMQ (quorum
 * queue, confirms) → consumer → inbox + copies (PostgreSQL). Covers create, update, delete, soft delete,
 * a duplicate, an out-of-order pair and a missing dependency, then checks copies equal the owner's rows.
 */
import { assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import { Effect, Exit, Layer, Metric, Schedule, Scope } from "effect"
import { afterAll } from "vitest"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import { Broker } from "../../src/Broker.ts"
import { CopyRepository } from "../../src/CopyRepository.ts"
import * as Metrics from "../../src/Metrics.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import * as Producer from "../../src/Producer.ts"
import * as Relay from "../../src/Relay.ts"
import { SourceRepository } from "../../src/SourceRepository.ts"
import * as Subscription from "../../src/Subscription.ts"
import * as SyncConsumer from "../../src/SyncConsumer.ts"
import { Company, User } from "../fixtures.ts"
import { consumerSide, ownerSide } from "../harness.ts"
import * as TestPostgres from "../postgres.ts"

const url = "amqp://guest:guest@127.0.0.1:5672"
const run = Math.random().toString(36).slice(2, 8)
const service = `pipeline-${run}`
const rabbit = { url, exchange: `test.pipeline.events.${run}`, deadLetterExchange: `test.pipeline.dead.${run}` }

const database = TestPostgres.forFile()
afterAll(async () => {
  const connection = await amqp.connect(url)
  const channel = await connection.createChannel()
  for (const queue of [`${service}.sync`, RabbitBroker.deadQueueOf(`${service}.sync`)]) await channel.deleteQueue(queue)
  for (const exchange of [rabbit.exchange, rabbit.deadLetterExchange]) await channel.deleteExchange(exchange)
  await connection.close()
}, 30_000)
const databaseLayer = database.layer

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const users = accounts.repository(User)
const ann = { id: "u-1", companyId: "c-2", email: "ann@test", name: "Ann", active: true }

const system = Layer.mergeAll(
  ownerSide(PostgresSync.layer({ prefix: `owner_${run}_` }).pipe(Layer.provide(databaseLayer))),
  consumerSide(PostgresSync.layer({ prefix: `directory_${run}_` }).pipe(Layer.provide(databaseLayer))),
  RabbitBroker.layer(rabbit)
)

/** Polls (real time) until `check` satisfies `until`, at most 15 s. */
const waitFor = <A, E, R>(check: Effect.Effect<A, E, R>, until: (a: A) => boolean) =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("20 millis"), until }),
    Effect.timeoutOption("15 seconds"),
    Effect.flatMap((a) => a._tag === "Some" ? Effect.succeed(a.value) : Effect.die(new Error("timed out waiting")))
  )

const copy = (entity: string, id: string) => CopyRepository.use((copies) => copies.get(entity, id))
const outcome = (entity: string, name: Metrics.Outcome) => Metrics.outcomeCount(service, entity, name)

describe("pipeline on PostgreSQL and RabbitMQ", () => {
  it.live(
    "syncs every kind of change, contains duplicates and reordering, and waits for dependencies",
    () =>
      Effect.gen(function*() {
        yield* Layer.build(SyncConsumer.layer({
          service,
          subscriptions: [Subscription.subscribe(Company), Subscription.subscribe(User)],
          producers: { accounts: ["guest"] },
          dependencyRetry: Schedule.spaced("100 millis").pipe(Schedule.upTo({ times: 50 })),
          inProcessRetries: 2
        }))
        const relayScope = yield* Scope.make()
        yield* Layer.build(Relay.layer({ producer: "accounts", pollInterval: "200 millis" })).pipe(
          Scope.provide(relayScope)
        )

        // create and update
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
        const c1 = yield* waitFor(copy("Company", "c-1"), (c) => c?.version === 2)
        assert.deepStrictEqual(c1?.payload, { id: "c-1", name: "Acme Corp" })

        // a User whose Company is published later waits, then applies
        yield* Outbox.transaction(companies.create({ id: "c-2", name: "Beta" }, { dismissSendEvent: true }))
        yield* Outbox.transaction(users.create(ann))
        yield* waitFor(outcome("User", "waiting"), (n) => n === 1)
        assert.isNull(yield* copy("User", "u-1"))
        yield* companies.fullSync({ ids: ["c-2"] })
        const u1 = yield* waitFor(copy("User", "u-1"), (c) => c !== null)
        assert.deepStrictEqual(u1?.payload, ann)

        // a duplicate: the update is delivered again
        const outbox = yield* Outbox.Outbox
        const broker = yield* Broker
        const update = (yield* outbox.rows()).find((row) =>
          row.envelope.entity === "Company" && row.envelope.version === 2
        )!
        yield* broker.publish([Relay.toMessage(update)])
        yield* waitFor(outcome("Company", "duplicate"), (n) => n === 1)

        // an out-of-order pair: with the relay stopped, v4 is published before v3
        yield* Scope.close(relayScope, Exit.void)
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v3" })))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v4" })))
        const [v3, v4] = yield* outbox.claim(10)
        yield* broker.publish([Relay.toMessage(v4!)])
        yield* waitFor(copy("Company", "c-1"), (c) => c?.version === 4)
        yield* broker.publish([Relay.toMessage(v3!)])
        yield* outbox.markPublished([v3!.seq, v4!.seq])
        yield* waitFor(outcome("Company", "stale"), (n) => n === 1)
        assert.deepStrictEqual((yield* copy("Company", "c-1"))?.payload, { id: "c-1", name: "v4" })

        // soft and hard deletes, with the relay back
        yield* Layer.build(Relay.layer({ producer: "accounts", pollInterval: "200 millis" }))
        yield* Outbox.transaction(users.softDelete("u-1"))
        yield* waitFor(copy("User", "u-1"), (c) => c?.state === "softDeleted")
        yield* Outbox.transaction(users.delete("u-1"))
        yield* Outbox.transaction(companies.delete("c-2"))
        yield* waitFor(copy("Company", "c-2"), (c) => c?.state === "deleted")

        // the copies equal the owner's rows, tombstones included
        const source = yield* SourceRepository
        const copies = yield* CopyRepository
        for (const entity of ["Company", "User"]) {
          const owned = yield* source.page(entity, { afterId: null, limit: 100 })
          const copied = yield* copies.list(entity)
          assert.deepStrictEqual(
            copied.map((c) => [c.id, c.version, c.state, c.payload]),
            owned.map((o) => [o.id, o.version, o.state, o.payload])
          )
        }
        assert.strictEqual((yield* outbox.pending).count, 0)
      }).pipe(
        Effect.provide(system),
        Effect.provideService(Metric.MetricRegistry, new Map())
      ),
    60_000
  )
})
