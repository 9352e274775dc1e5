/**
 * Runs the store conformance suite on the PostgreSQL implementations, plus PostgreSQL-only tests:
 * out-of-order commits, concurrent claimers, rollbacks, NOTIFY wake-ups and migrations.
 *
 * One database is created for the file (and dropped after it); every test gets its own table prefix, so
 * its tables are fresh.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import {
  Clock,
  ConfigProvider,
  Data,
  Deferred,
  Effect,
  Exit,
  Fiber,
  Layer,
  ManagedRuntime,
  Redacted,
  Ref,
  Schedule
} from "effect"
import { SqlClient } from "effect/sql"
import { CopyRepository, type CopyRow } from "../../src/CopyRepository.ts"
import type { Envelope } from "../../src/Envelope.ts"
import type { EntityRef } from "../../src/Errors.ts"
import { Inbox } from "../../src/Inbox.ts"
import { Outbox, OutboxTransaction } from "../../src/Outbox.ts"
import * as Migrations from "../../src/postgres/Migrations.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import * as Tables from "../../src/postgres/Tables.ts"
import { SourceRepository, type SourceRow } from "../../src/SourceRepository.ts"
import { createdEnvelope } from "../fixtures.ts"
import * as TestPostgres from "../postgres.ts"
import { storeConformance } from "./stores.ts"

const leaseMillis = 10_000

// 50 concurrent open transactions + the LISTEN connection + a claimer.
const database = ManagedRuntime.make(TestPostgres.layer({ maxConnections: 56 }))
beforeAll(() => database.context().then(() => undefined), 30_000)
afterAll(() => database.dispose(), 30_000)

/** The file's database: `PgClient | SqlClient | TestDatabase`. */
const databaseLayer = Layer.unwrap(Effect.map(database.contextEffect, Layer.succeedContext))

let prefixes = 0
const freshPrefix = () => `t${prefixes++}_${Math.floor(Math.random() * 1e6).toString(36)}_`

/** The stores on a fresh (or the given) prefix, with the file's database. */
const stores = (prefix: string = freshPrefix()) =>
  PostgresSync.layer({ prefix, leaseMillis }).pipe(Layer.provideMerge(databaseLayer))

storeConformance("postgres stores", () => stores(), { leaseMillis })

class Boom extends Data.TaggedError("Boom")<{}> {}

const appendIn = (outbox: Outbox["Service"], envelopes: ReadonlyArray<Envelope>) =>
  outbox.transaction(OutboxTransaction.use((tx) => tx.append(envelopes)))

/** Claims and marks published until nothing is left; returns the message ids in claim order. */
const drain = (outbox: Outbox["Service"], batch: number) =>
  Effect.gen(function*() {
    const ids: Array<string> = []
    while (true) {
      const rows = yield* outbox.claim(batch)
      if (rows.length === 0) return ids
      ids.push(...rows.map((row) => row.envelope.messageId))
      yield* outbox.markPublished(rows.map((row) => row.seq))
    }
  })

const sortedCopy = (xs: ReadonlyArray<string>) => [...xs].sort()

/** Ids of entities that do not exist: most of a batch's refs in a busy stream. */
const newIds = Array.from({ length: 248 }, (_, i) => `n-${i}`)

/** Counts the rows of one of the library's tables. */
const countRows = (table: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`).pipe(
    Effect.map((rows) => rows[0]?.n)
  )

describe("postgres stores, PostgreSQL only", () => {
  it.live("out-of-order commits lose nothing: every committed row is claimed once, no rolled-back one", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const n = 50
      const rollsBack = (i: number) => i % 5 === 2
      const seqs = new Map<number, number>()
      const gates = yield* Effect.forEach(Array.from({ length: n }), () => Deferred.make<void>())
      const appended = yield* Ref.make(0)
      const allAppended = yield* Deferred.make<void>()

      const transaction = (i: number) =>
        outbox.transaction(Effect.gen(function*() {
          const messageId = `m-${i}`
          yield* OutboxTransaction.use((tx) => tx.append([createdEnvelope(messageId)]))
          // the transaction sees its own uncommitted row, and its seq
          const own = (yield* outbox.rows()).find((row) => row.envelope.messageId === messageId)
          assert.isDefined(own)
          seqs.set(i, own?.seq ?? -1)
          if ((yield* Ref.updateAndGet(appended, (k) => k + 1)) === n) yield* Deferred.succeed(allAppended, undefined)
          const gate = gates[i]
          if (gate !== undefined) yield* Deferred.await(gate)
          if (rollsBack(i)) return yield* new Boom()
        }))

      const transactions = yield* Effect.forEach(
        gates,
        (gate, i) => Effect.map(Effect.forkChild(Effect.exit(transaction(i))), (fiber) => ({ i, gate, fiber }))
      )
      yield* Deferred.await(allAppended)
      // nothing is visible while every transaction is open
      assert.deepStrictEqual(yield* outbox.claim(100), [])

      // commit (or roll back) the highest seq first, claiming after each one
      const order = transactions.slice().sort((a, b) => (seqs.get(b.i) ?? 0) - (seqs.get(a.i) ?? 0))
      const claimed: Array<string> = []
      for (const { fiber, gate, i } of order) {
        yield* Deferred.succeed(gate, undefined)
        const exit = yield* Fiber.join(fiber)
        assert.strictEqual(Exit.isSuccess(exit), !rollsBack(i), `transaction ${i}`)
        claimed.push(...(yield* drain(outbox, 7)))
      }
      claimed.push(...(yield* drain(outbox, 7)))

      const committed = order.filter(({ i }) => !rollsBack(i)).map(({ i }) => `m-${i}`)
      assert.strictEqual(new Set(claimed).size, claimed.length, "no row claimed twice")
      assert.deepStrictEqual(sortedCopy(claimed), sortedCopy(committed))
      assert.deepStrictEqual((yield* outbox.pending).count, 0)
      assert.strictEqual(yield* countRows(`${prefix}outbox`), committed.length)
    }).pipe(Effect.provide(stores(prefix)))
  }, 60_000)

  it.live("concurrent claimers never get the same row", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox
      const total = 300
      const ids = Array.from({ length: total }, (_, i) => `m-${i}`)
      for (let i = 0; i < total; i += 100) yield* appendIn(outbox, ids.slice(i, i + 100).map(createdEnvelope))
      const claimer = Effect.gen(function*() {
        const mine: Array<string> = []
        while (true) {
          const rows = yield* outbox.claim(5)
          if (rows.length === 0) return mine
          mine.push(...rows.map((row) => row.envelope.messageId))
          yield* Effect.yieldNow
          yield* outbox.markPublished(rows.map((row) => row.seq))
        }
      })
      const results = yield* Effect.all([claimer, claimer, claimer, claimer], { concurrency: "unbounded" })
      const all = results.flat()
      assert.strictEqual(new Set(all).size, all.length, "no row claimed twice")
      assert.deepStrictEqual(sortedCopy(all), sortedCopy(ids))
      assert.isTrue(results.filter((mine) => mine.length > 0).length > 1, "the claimers ran concurrently")
    }).pipe(Effect.provide(stores())), 60_000)

  it.live("a rolled-back Outbox.transaction leaves neither a source row nor an outbox row", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const sources = yield* SourceRepository
      const write = (id: string) =>
        Effect.gen(function*() {
          yield* sources.put({
            entity: "User",
            id,
            version: 1,
            state: "live",
            payload: { name: id },
            updatedAt: 0,
            deletedAt: null
          }, null)
          yield* OutboxTransaction.use((tx) => tx.append([createdEnvelope(`m-${id}`)]))
        })
      const failed = yield* outbox.transaction(write("u-1").pipe(Effect.andThen(new Boom()))).pipe(Effect.flip)
      assert.instanceOf(failed, Boom)
      const died = yield* outbox.transaction(write("u-2").pipe(Effect.andThen(Effect.die("defect")))).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(died))
      const interrupted = yield* outbox.transaction(write("u-3").pipe(Effect.andThen(Effect.interrupt))).pipe(
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(interrupted))
      assert.strictEqual(yield* countRows(`${prefix}outbox`), 0)
      assert.strictEqual(yield* countRows(`${prefix}source`), 0)
      // and a committed one leaves both
      yield* outbox.transaction(write("u-4"))
      assert.strictEqual(yield* countRows(`${prefix}outbox`), 1)
      assert.strictEqual(yield* countRows(`${prefix}source`), 1)
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live("a claimed row that is not an envelope fails the claim with a message naming what is wrong", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const sql = yield* SqlClient.SqlClient
      yield* outbox.transaction(OutboxTransaction.use((tx) => tx.append([createdEnvelope("m-1")])))
      assert.deepStrictEqual((yield* outbox.claim(10)).map((row) => row.envelope), [createdEnvelope("m-1")])
      yield* outbox.transaction(OutboxTransaction.use((tx) => tx.append([createdEnvelope("m-2")])))
      yield* sql`UPDATE ${sql(`${prefix}outbox`)} SET envelope = envelope - 'entityId' WHERE message_id = 'm-2'`
      const error = yield* outbox.claim(10).pipe(Effect.flip)
      assert.include(error.message, "unexpected outbox row")
      assert.include(error.message, "entityId")
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live("a mark inside a caller's transaction leaves that transaction's commit durable", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const sql = yield* SqlClient.SqlClient
      yield* outbox.transaction(
        OutboxTransaction.use((tx) => tx.append([createdEnvelope("m-1"), createdEnvelope("m-2")]))
      )
      const [first, second] = yield* outbox.claim(10)
      assert.isDefined(first)
      assert.isDefined(second)
      // on its own, the mark commits asynchronously (its own transaction); in a caller's, it must not change how that commits
      yield* outbox.markPublished([first!.seq])
      const settings = yield* sql.withTransaction(
        Effect.andThen(
          outbox.markPublished([second!.seq]),
          sql<{ readonly setting: string }>`SELECT current_setting('synchronous_commit') AS setting`
        )
      )
      assert.strictEqual(settings[0]?.setting, "on")
      assert.deepStrictEqual((yield* outbox.rows()).map((row) => row.publishedAt !== null), [true, true])
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live("a claim updates each row in place: a HOT update, with no new index entry (migration 9)", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const sql = yield* SqlClient.SqlClient
      const total = 200
      const envelopes = Array.from({ length: total }, (_, i) => ({
        ...createdEnvelope(`m-${i}`),
        // rows of different sizes, so that pages hold different numbers of them
        payload: { name: "x".repeat((i * 37) % 1500) }
      }))
      yield* appendIn(outbox, envelopes)
      // the counters of the current transaction: the claim's updates, read before it commits
      const [counts] = yield* sql.withTransaction(
        Effect.andThen(
          outbox.claim(total),
          sql<{ readonly updated: number; readonly hot: number }>`SELECT
            pg_stat_get_xact_tuples_updated(${`${prefix}outbox`}::regclass)::int AS updated,
            pg_stat_get_xact_tuples_hot_updated(${`${prefix}outbox`}::regclass)::int AS hot`
        )
      )
      assert.deepStrictEqual(counts, { updated: total, hot: total })
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live("getMany of the copies probes its refs only, in a table of any size never analyzed", () => {
    const prefix = freshPrefix()
    const table = `${prefix}copies`
    return Effect.gen(function*() {
      const copies = yield* CopyRepository
      const sql = yield* SqlClient.SqlClient
      const copy = (id: string): CopyRow => ({
        entity: "User",
        id,
        version: 1,
        state: "live",
        payload: { name: id },
        deletedAt: null,
        syncedAt: 0,
        messageId: `m-${id}`
      })
      yield* copies.upsertMany([copy("u-1"), copy("u-2")].map((row) => ({ row, guard: "newer" })))
      yield* sql`INSERT INTO ${sql(table)} (entity, id, version, state, payload, synced_at, message_id)
        SELECT 'User', 'g-' || g, 1, 'live', '{}', 0, 'm-g-' || g FROM generate_series(1, 20000) g`
      // a consumer's batch: its refs, most of them new
      const refs = ["u-2", "u-1", ...newIds].map((id) => ({ entity: "User", id }))
      const [found, read] = yield* sql.withTransaction(
        Effect.all([copies.getMany(refs, "forUpdate"), TestPostgres.rowsRead(table)])
      )
      assert.deepStrictEqual(found, [copy("u-1"), copy("u-2")])
      assert.isAtMost(read, refs.length)
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live("the document store's save, updateMany and getMany probe their rows only, in a table never analyzed", () => {
    const prefix = freshPrefix()
    const table = `${prefix}source`
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const sources = yield* SourceRepository
      const sql = yield* SqlClient.SqlClient
      const ids = ["u-2", "u-1"]
      const saveBoth = (name: string) =>
        sources.save(ids.map((id) => ({ entity: "User", id, payload: { name }, updatedAt: 0 })))
      yield* outbox.transaction(saveBoth("one"))
      yield* sql`INSERT INTO ${sql(table)} (entity, id, version, state, payload, updated_at)
        SELECT 'User', 'g-' || g, 1, 'live', '{}', 0 FROM generate_series(1, 20000) g`
      const [saved, savedRead] = yield* outbox.transaction(Effect.all([saveBoth("two"), TestPostgres.rowsRead(table)]))
      assert.deepStrictEqual(saved.map(({ row, written }) => [row.id, row.version, written]), [
        ["u-2", 2, "updated"],
        ["u-1", 2, "updated"]
      ])
      // each row read where it is found, again where it is locked, and where it is written
      assert.isAtMost(savedRead, 3 * ids.length)
      const [found, foundRead] = yield* sql.withTransaction(
        Effect.all([sources.getMany("User", [...ids, ...newIds], "forUpdate"), TestPostgres.rowsRead(table)])
      )
      assert.deepStrictEqual(found.map((row) => [row.id, row.version]), [["u-1", 2], ["u-2", 2]])
      assert.isAtMost(foundRead, ids.length)
      const updates = found.map((row): SourceRow => ({ ...row, version: 3, payload: { name: "three" } }))
      const [written, updatedRead] = yield* outbox.transaction(
        Effect.all([sources.updateMany(updates), TestPostgres.rowsRead(table)])
      )
      assert.strictEqual(written, 2)
      assert.isAtMost(updatedRead, 2 * ids.length)
      assert.deepStrictEqual(yield* sources.get("User", "u-2"), updates[1])
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live("awaitAppended wakes on a commit from another connection", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const { url } = yield* TestPostgres.TestDatabase
      // another process: its own client (pool) and its own stores on the same tables
      const otherProcess = PostgresSync.layer({ prefix }).pipe(
        Layer.provide(PgClient.layer({ url, maxConnections: 2 }))
      )
      const waiter = yield* Effect.forkChild(outbox.awaitAppended)
      yield* Effect.sleep("100 millis")
      assert.isUndefined(waiter.pollUnsafe(), "no commit yet")
      yield* Effect.flatMap(Outbox, (other) => appendIn(other, [createdEnvelope("m-remote")])).pipe(
        Effect.provide(otherProcess)
      )
      yield* Fiber.join(waiter).pipe(Effect.timeout("5 seconds"))
      assert.deepStrictEqual((yield* outbox.claim(10)).map((row) => row.envelope.messageId), ["m-remote"])
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live(
    "inside a caller's transaction, this process's awaitAppended wakes at the caller's commit",
    () =>
      Effect.gen(function*() {
        const outbox = yield* Outbox
        const sql = yield* SqlClient.SqlClient
        const waiter = yield* Effect.forkChild(outbox.awaitAppended)
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* appendIn(outbox, [createdEnvelope("m-outer")])
          yield* Effect.sleep("100 millis")
          assert.isUndefined(waiter.pollUnsafe(), "the caller's transaction has not committed yet")
        }))
        yield* Fiber.join(waiter).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual((yield* outbox.claim(10)).map((row) => row.envelope.messageId), ["m-outer"])
      }).pipe(Effect.provide(stores())),
    30_000
  )

  it.live("awaitAppended listens again when its connection is lost", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const sql = yield* SqlClient.SqlClient
      const { url } = yield* TestPostgres.TestDatabase
      const listeners = sql<{ pid: number }>`SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND query = ${`LISTEN "${prefix}outbox"`}`
      const [listener] = yield* listeners
      assert.isDefined(listener)
      const waiter = yield* Effect.forkChild(outbox.awaitAppended)
      yield* sql`SELECT pg_terminate_backend(${listener?.pid ?? 0})`
      // the waiters of the lost connection learn about it (or are woken); they do not hang
      yield* Fiber.await(waiter).pipe(Effect.timeout("5 seconds"))
      // a new LISTEN connection comes up...
      yield* listeners.pipe(
        Effect.flatMap((rows) => rows.some((row) => row.pid !== listener?.pid) ? Effect.void : Effect.fail("not yet")),
        Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 250 })
      )
      // ...and commits of another process wake new waiters again
      const next = yield* Effect.forkChild(outbox.awaitAppended)
      yield* Effect.sleep("100 millis")
      assert.isUndefined(next.pollUnsafe(), "no commit yet")
      yield* Effect.flatMap(Outbox, (other) => appendIn(other, [createdEnvelope("m-remote")])).pipe(
        Effect.provide(PostgresSync.layer({ prefix }).pipe(Layer.provide(PgClient.layer({ url, maxConnections: 2 }))))
      )
      yield* Fiber.join(next).pipe(Effect.timeout("5 seconds"))
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live("wake matches refs exactly, whatever characters entity names and ids contain", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox
      const now = yield* Clock.currentTimeMillis
      const later = now + 3_600_000
      const park = (messageId: string, ref: EntityRef) =>
        inbox.park({
          consumer: "directory",
          messageId,
          envelope: createdEnvelope(messageId),
          waitingFor: [ref],
          attempts: 1,
          nextAttemptAt: later,
          firstSeenAt: now,
          lastSeenAt: now
        })
      yield* park("m-1", { entity: "User:x", id: "1" })
      yield* park("m-2", { entity: "User", id: "x:1" })
      yield* park("m-3", { entity: "User", id: "x" })
      assert.strictEqual(yield* inbox.wake("directory", [{ entity: "User", id: "x:1" }]), 1)
      const due = yield* inbox.due("directory", yield* Clock.currentTimeMillis, 10)
      assert.deepStrictEqual(due.map((row) => row.messageId), ["m-2"])
    }).pipe(Effect.provide(stores())), 30_000)

  it.live("migrations are idempotent, also when run concurrently", () =>
    Effect.gen(function*() {
      const prefix = freshPrefix()
      const applied = yield* Effect.all([Migrations.migrate({ prefix }), Migrations.migrate({ prefix })], {
        concurrency: "unbounded"
      })
      assert.deepStrictEqual(applied.flat(), [
        [1, "create_sync_tables"],
        [2, "create_claim_function"],
        [3, "create_tombstones"],
        [4, "add_copy_references"],
        [5, "scale_out"],
        [6, "ordered_claims"],
        [7, "ordered_parking"],
        [8, "claim_after"],
        [9, "outbox_fill_factor"]
      ])
      assert.deepStrictEqual(yield* Migrations.migrate({ prefix }), [])
      // building the layer twice on the same prefix works, and the data stays
      yield* Effect.flatMap(Outbox, (outbox) => appendIn(outbox, [createdEnvelope("m-1")])).pipe(
        Effect.provide(stores(prefix))
      )
      const rows = yield* Effect.flatMap(Outbox, (outbox) => outbox.rows()).pipe(Effect.provide(stores(prefix)))
      assert.deepStrictEqual(rows.map((row) => row.envelope.messageId), ["m-1"])
    }).pipe(Effect.provide(databaseLayer)), 30_000)

  it.live("a bad prefix fails with a clear error", () =>
    Effect.gen(function*() {
      for (const prefix of ["Sync_", "1sync_", "sync-", "", "x".repeat(Tables.maxPrefixLength + 1)]) {
        const error = yield* Effect.flip(Layer.build(PostgresSync.layer({ prefix })).pipe(Effect.scoped))
        assert.strictEqual(error._tag, "InvalidTablePrefix", prefix)
        assert.include(error.message, "invalid table prefix")
      }
      const error = yield* Effect.flip(Migrations.migrate({ prefix: "Sync_" }))
      assert.strictEqual(error._tag, "InvalidTablePrefix")
      assert.include(error.message, "/^[a-z_][a-z0-9_]*$/".slice(1, -1))
    }).pipe(Effect.provide(databaseLayer)), 30_000)

  it.live("layerConfig reads DATABASE_URL, DATABASE_POOL_SIZE and SYNC_TABLE_PREFIX", () =>
    Effect.gen(function*() {
      const { url } = yield* TestPostgres.TestDatabase
      const prefix = freshPrefix()
      const withEnv = (env: Record<string, string>) =>
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env }))
      const env = { DATABASE_URL: Redacted.value(url), DATABASE_POOL_SIZE: "3", SYNC_TABLE_PREFIX: prefix }
      yield* Effect.gen(function*() {
        const outbox = yield* Outbox
        yield* appendIn(outbox, [createdEnvelope("m-1")])
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(`${prefix}outbox`)}`
        assert.deepStrictEqual(rows, [{ n: 1 }])
      }).pipe(Effect.provide(PostgresSync.layerConfig()), withEnv(env))
      const tooSmall = yield* Layer.build(PostgresSync.layerConfig()).pipe(
        Effect.scoped,
        withEnv({ ...env, DATABASE_POOL_SIZE: "1" }),
        Effect.flip
      )
      assert.strictEqual(tooSmall._tag, "ConfigError")
      const missing = yield* Layer.build(PostgresSync.layerConfig()).pipe(Effect.scoped, withEnv({}), Effect.flip)
      assert.strictEqual(missing._tag, "ConfigError")
      assert.include(missing.message, "DATABASE_URL")
    }).pipe(Effect.provide(databaseLayer)), 30_000)
})
