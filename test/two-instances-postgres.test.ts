/**
 * Two consumer instances of one service on PostgreSQL: one queue (competing consumers on the memory
 * broker), one database, one set of tables. A User create applied by one instance races a hard delete of its
 * Company applied by the other (R5 from both sides). The User's transaction holds its Company `FOR SHARE`
 * from its dependency read to its commit, so the delete's locked read waits for it and then sees the User:
 * the delete waits. Without that lock the delete would see no User (not committed yet), write its
 * tombstone and commit beside the User: a copy referencing a deleted dependency.
 *
 * Each race is made to happen, not hoped for: the User's handler (inside its transaction) holds the
 * transaction open until either the delete's transaction is blocked by it (the lock works) or the delete
 * was applied (it does not). Both paths that read dependencies are raced: a fresh batch, and an event
 * retried in process after its dependency arrived.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Layer, Metric, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Broker } from "../src/Broker.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company, User } from "./fixtures.ts"
import { consumerName, ownerSide, queueName } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()
const prefix = database.prefix

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const users = accounts.repository(User)

/** Races per test: each must end with the delete blocked by the User's lock, and no dangling User. */
const races = 8

/** How the User's transaction stopped waiting: the delete was blocked by it, or applied beside it. */
type Ended = "blockedTheDelete" | "deleteApplied" | "timedOut"

/** One race: the User's handler says when it is inside its transaction, and how its wait ended. */
interface Race {
  readonly inside: Deferred.Deferred<void>
  readonly deleteApplied: Deferred.Deferred<void>
  ended: Ended | undefined
}

const BackendPid = Schema.Array(Schema.Struct({ pid: Schema.Number }))
const Blocked = Schema.Array(Schema.Struct({ blocked: Schema.Number }))

const consumerOptions = (handlers: {
  readonly user: (id: string) => Effect.Effect<void, never, SqlClient.SqlClient>
  readonly companyDeleted: (id: string) => Effect.Effect<void>
}): SyncConsumer.ConsumerOptions<SqlClient.SqlClient> => ({
  service: consumerName,
  subscriptions: [
    Subscription.subscribe(Company, {
      handler: ({ envelope }) =>
        envelope.action === "deleted" ? handlers.companyDeleted(envelope.entityId) : Effect.void
    }),
    Subscription.subscribe(User, {
      handler: ({ envelope }) => envelope.action === "created" ? handlers.user(envelope.entityId) : Effect.void
    })
  ],
  // one unsettled delivery each: while one instance holds the User, the delete goes to the other
  prefetch: 1,
  // a User waiting for its Company retries in process, on the instance that holds it
  dependencyRetry: Schedule.spaced("10 millis").pipe(Schedule.upTo({ times: 30 })),
  inProcessRetries: 20,
  batchWindow: "1 millis"
})

/**
 * Runs `races` races on two instances. `path` says how the User reaches its dependency read: in a fresh
 * batch (its Company applied before it arrives), or retried in process (it arrives first and waits).
 */
const raceInstances = (path: "batch" | "retry") =>
  Effect.gen(function*() {
    const observer = yield* Layer.build(database.layer)
    const { url } = Context.get(observer, TestPostgres.TestDatabase)
    const sql = Context.get(observer, SqlClient.SqlClient)
    const owner = yield* Layer.build(
      ownerSide(PostgresSync.layer({ prefix: prefix("owner") }).pipe(Layer.provide(database.layer)))
    )
    const brokers = yield* Layer.build(MemoryBroker.layer())
    const memory = Context.get(brokers, MemoryBroker.MemoryBroker)
    const broker = Context.get(brokers, Broker)
    const pending = new Map<string, Race>()

    // Whether a backend of this database waits for a lock held by `pid`.
    const blocks = (pid: number) =>
      sql`SELECT count(*)::int AS blocked FROM pg_stat_activity
        WHERE datname = current_database() AND ${pid} = ANY(pg_blocking_pids(pid))`.pipe(
        Effect.flatMap(Schema.decodeUnknownEffect(Blocked)),
        Effect.map((rows) => (rows[0]?.blocked ?? 0) > 0)
      )
    const user = (id: string) =>
      Effect.gen(function*() {
        const race = pending.get(id)
        if (race === undefined || race.ended !== undefined) return
        const inTransaction = yield* SqlClient.SqlClient
        const [own] = yield* inTransaction`SELECT pg_backend_pid() AS pid`.pipe(
          Effect.flatMap(Schema.decodeUnknownEffect(BackendPid))
        )
        if (own === undefined) return yield* Effect.die(new Error("pg_backend_pid() returned no row"))
        yield* Deferred.succeed(race.inside, undefined)
        const blockedTheDelete = blocks(own.pid).pipe(
          Effect.repeat({ schedule: Schedule.spaced("2 millis"), until: (blocked) => blocked }),
          Effect.map((): Ended => "blockedTheDelete")
        )
        const deleteApplied = Deferred.await(race.deleteApplied).pipe(Effect.map((): Ended => "deleteApplied"))
        const ended = yield* Effect.raceFirst(blockedTheDelete, deleteApplied).pipe(Effect.timeoutOption("5 seconds"))
        race.ended = ended._tag === "Some" ? ended.value : "timedOut"
      }).pipe(Effect.orDie)
    const companyDeleted = (id: string) =>
      Effect.suspend(() => {
        const race = pending.get(`u-of-${id}`)
        return race === undefined ? Effect.void : Deferred.succeed(race.deleteApplied, undefined)
      })

    // the two instances share one set of tables: one service, one database, each with its own pool
    const directory = prefix("directory")
    const instance = Layer.build(
      SyncConsumer.layer(consumerOptions({ user, companyDeleted })).pipe(
        Layer.provideMerge(PostgresSync.layer({ prefix: directory })),
        Layer.provideMerge(PgClient.layer({ url, maxConnections: 4 })),
        Layer.provide(Layer.succeedContext(brokers))
      )
    )
    const first = yield* instance
    const second = yield* instance
    const copies = Context.get(first, CopyRepository)
    const instances = [Context.get(first, SyncConsumer.SyncConsumer), Context.get(second, SyncConsumer.SyncConsumer)]

    const quiet = Effect.gen(function*() {
      const depth = yield* memory.queueDepth(queueName)
      let inFlight = 0
      for (const consumer of instances) inFlight += yield* consumer.inFlight
      return depth.ready + depth.unsettled + depth.delayed + inFlight === 0
    })
    const awaitQuiet = quiet.pipe(
      Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (isQuiet) => isQuiet }),
      Effect.timeoutOrElse({
        duration: "20 seconds",
        orElse: () => Effect.die(new Error("the two instances are not quiet after 20 seconds"))
      })
    )
    const waiting = Metrics.outcomeCount(consumerName, "User", "waiting")

    for (let i = 0; i < races; i++) {
      const companyId = `c-${path}-${i}`
      const userId = `u-of-${companyId}`
      const race: Race = {
        inside: yield* Deferred.make<void>(),
        deleteApplied: yield* Deferred.make<void>(),
        ended: undefined
      }
      pending.set(userId, race)
      const rows = yield* Effect.gen(function*() {
        yield* Outbox.transaction(companies.create({ id: companyId, name: "Acme" }))
        yield* Outbox.transaction(
          users.create({ id: userId, companyId, email: `${userId}@acme.test`, name: "Ann", active: true })
        )
        yield* Outbox.transaction(companies.delete(companyId))
        return yield* (yield* Outbox.Outbox).claim(10)
      }).pipe(Effect.provideContext(owner))
      const [created, userCreated, deleted] = rows.map((row) => Relay.toMessage(row))
      if (path === "batch") {
        yield* broker.publish([created!])
        yield* awaitQuiet
        yield* broker.publish([userCreated!])
      } else {
        const before = yield* waiting
        yield* broker.publish([userCreated!])
        yield* waiting.pipe(
          Effect.repeat({ schedule: Schedule.spaced("2 millis"), until: (n) => n > before }),
          Effect.timeout("10 seconds")
        )
        yield* broker.publish([created!])
      }
      yield* Deferred.await(race.inside).pipe(Effect.timeout("10 seconds"))
      yield* broker.publish([deleted!])
      yield* awaitQuiet
      // R5 at this moment: no live User references a missing or deleted Company
      const userCopy = yield* copies.get("User", userId)
      const companyCopy = yield* copies.get("Company", companyId)
      assert.deepStrictEqual(
        [userCopy?.state, companyCopy?.state, race.ended],
        ["live", "live", "blockedTheDelete"],
        `race ${i} (${path}): the delete must wait for the User's lock, then for the User`
      )
    }
  }).pipe(
    Effect.scoped,
    Effect.provideService(Metric.MetricRegistry, new Map())
  )

describe("two consumer instances of one service (PostgreSQL)", () => {
  it.live(
    "a User applied in a batch holds its Company: a racing hard delete waits for it",
    () => raceInstances("batch"),
    120_000
  )

  it.live(
    "a User retried after its Company arrived holds it: a racing hard delete waits for it",
    () => raceInstances("retry"),
    120_000
  )
})
