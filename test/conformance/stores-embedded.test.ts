/**
 * Runs the store conformance suite on the PostgreSQL stores over the embedded database (PGlite served by
 * `@electric-sql/pglite-socket`, see `src/embedded/Embedded.ts`), plus embedded-only tests: what works
 * through the socket (transactions, savepoints, jsonb, SKIP LOCKED, LISTEN/NOTIFY across connections),
 * how connections share the single backend, start/stop, and persistence in a `dataDir`.
 *
 * One embedded database is started for the file (and closed after it); every test gets its own table
 * prefix, so its tables are fresh.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Array as Arr, Context, Effect, Exit, Fiber, Layer, ManagedRuntime, Option, Queue, Scope } from "effect"
import { SqlClient } from "effect/sql"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Embedded from "../../src/embedded/Embedded.ts"
import type { Envelope } from "../../src/Envelope.ts"
import { Outbox, OutboxTransaction } from "../../src/Outbox.ts"
import * as Migrations from "../../src/postgres/Migrations.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import * as Tables from "../../src/postgres/Tables.ts"
import { createdEnvelope } from "../fixtures.ts"
import { storeConformance } from "./stores.ts"

const leaseMillis = 10_000

const database = ManagedRuntime.make(Embedded.layer())
beforeAll(() => database.context().then(() => undefined), 60_000)
afterAll(() => database.dispose(), 60_000)

/** The file's database: `PgClient | SqlClient | EmbeddedPostgres`. */
const databaseLayer = Layer.unwrap(Effect.map(database.contextEffect, Layer.succeedContext))

let prefixes = 0
const freshPrefix = () => `e${prefixes++}_${Math.floor(Math.random() * 1e6).toString(36)}_`

/** The stores on a fresh (or the given) prefix, with the file's database. */
const stores = (prefix: string = freshPrefix()) =>
  PostgresSync.layer({ prefix, leaseMillis }).pipe(Layer.provideMerge(databaseLayer))

storeConformance("embedded postgres stores", () => stores(), { leaseMillis })

const appendIn = (outbox: Outbox["Service"], envelopes: ReadonlyArray<Envelope>) =>
  outbox.transaction(OutboxTransaction.use((tx) => tx.append(envelopes)))

const sortedCopy = (xs: ReadonlyArray<string>) => [...xs].sort()

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
const canConnect = (port: number) =>
  Effect.callback<boolean>((resume) => {
    const socket = Net.connect({ host: Embedded.host, port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => resume(Effect.succeed(false)))
  })

/** A new PgClient on the file's database: another pool, as another process would have. */
const otherClient = Effect.gen(function*() {
  const { url } = yield* Embedded.EmbeddedPostgres
  const context = yield* Layer.build(PgClient.layer({ url, maxConnections: 2 }))
  return Context.get(context, PgClient.PgClient)
})

/** The next notification of a LISTEN queue, or a failure after 5 seconds. */
const next = <E>(queue: Queue.Dequeue<{ readonly payload: string }, E>) =>
  Queue.take(queue).pipe(Effect.map((notification) => notification.payload), Effect.timeout("5 seconds"))

// A minimal raw protocol client, to send what the pooled client never would: a cycle left open, a
// disconnect in the middle of a transaction.

const encoder = new TextEncoder()

const frame = (type: string | undefined, ...parts: ReadonlyArray<string | number>) => {
  const bytes: Array<number> = []
  for (const part of parts) {
    if (typeof part === "number") bytes.push(0, 0) // an int16 zero (parameter / format counts)
    else bytes.push(...encoder.encode(part), 0)
  }
  const head = type === undefined ? [] : [type.charCodeAt(0)]
  const length = 4 + bytes.length
  return Uint8Array.from([...head, length >>> 24, (length >>> 16) & 255, (length >>> 8) & 255, length & 255, ...bytes])
}

const startup = () => {
  const body = [...encoder.encode("user\0postgres\0database\0postgres\0\0")]
  const length = 8 + body.length
  return Uint8Array.from([
    length >>> 24,
    (length >>> 16) & 255,
    (length >>> 8) & 255,
    length & 255,
    0,
    3,
    0,
    0,
    ...body
  ])
}
const parse = (sql: string) => frame("P", "", sql, 0)
// Bind: portal "", statement "", no parameter formats, no parameters, no result formats.
const bind = () => frame("B", "", "", 0, 0, 0)
// Execute: portal "", no row limit (int32 0: two int16 zeros).
const execute = () => frame("E", "", 0, 0)
const sync = () => frame("S")
const query = (sql: string) => frame("Q", sql)

interface RawMessage {
  readonly type: string
  /** The body, as latin1 text. */
  readonly body: string
}

interface RawConnection {
  readonly send: (...messages: ReadonlyArray<Uint8Array>) => Effect.Effect<void>
  /** The messages received up to the next one of type `type`, included. */
  readonly receive: (type: string) => Effect.Effect<ReadonlyArray<RawMessage>>
  readonly destroy: Effect.Effect<void>
}

/** A raw protocol connection, started up (it has received `ReadyForQuery`); destroyed with the scope. */
const rawConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.callback<RawConnection>((resume) => {
      const socket = Net.connect({ host: Embedded.host, port })
      let buffer = Buffer.alloc(0)
      const received: Array<RawMessage> = []
      let onData: (() => void) | undefined
      socket.on("data", (chunk) => {
        buffer = Buffer.concat([buffer, chunk])
        let at = 0
        while (buffer.length - at >= 5) {
          const length = buffer.readInt32BE(at + 1)
          if (buffer.length - at < 1 + length) break
          received.push({
            type: String.fromCharCode(buffer[at] ?? 0),
            body: buffer.toString("latin1", at + 5, at + 1 + length)
          })
          at += 1 + length
        }
        buffer = buffer.subarray(at)
        onData?.()
      })
      socket.on("error", () => {})
      const connection: RawConnection = {
        send: (...messages) => Effect.sync(() => messages.forEach((message) => socket.write(message))),
        receive: (type) =>
          Effect.callback((resumeReceive) => {
            const check = () => {
              const index = received.findIndex((message) => message.type === type)
              if (index < 0) return
              onData = undefined
              resumeReceive(Effect.succeed(received.splice(0, index + 1)))
            }
            onData = check
            check()
          }),
        destroy: Effect.sync(() => socket.destroy())
      }
      socket.once("connect", () => {
        socket.write(startup())
        resume(connection.receive("Z").pipe(Effect.as(connection)))
      })
    }),
    (connection) => connection.destroy
  )

describe("embedded postgres: what works through the socket", () => {
  it.live("plain queries, transactions, savepoints, jsonb and FOR UPDATE SKIP LOCKED", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const pg = yield* PgClient.PgClient
      const table = sql(`${freshPrefix()}docs`)
      yield* sql`CREATE TABLE ${table} (id int PRIMARY KEY, doc jsonb NOT NULL)`
      const insert = (id: number) => sql`INSERT INTO ${table} VALUES (${id}, ${pg.json({ id, tags: ["a", `t${id}`] })})`
      yield* sql.withTransaction(insert(1))
      const failed = yield* sql.withTransaction(insert(2).pipe(Effect.andThen(Effect.fail("rolled back")))).pipe(
        Effect.flip
      )
      assert.strictEqual(failed, "rolled back")
      // nested transactions are savepoints: the failed inner one is undone, the outer one commits
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* insert(3)
        yield* sql.withTransaction(insert(4).pipe(Effect.andThen(Effect.fail("inner")))).pipe(Effect.flip)
        yield* sql.withTransaction(insert(5))
      }))
      const rows = yield* sql<{ id: number; tag: string; tagged: boolean; doc: unknown }>`
        SELECT id, doc->'tags'->>1 AS tag, doc @> '{"tags": ["a"]}'::jsonb AS tagged, doc FROM ${table} ORDER BY id`
      assert.deepStrictEqual(rows, [
        { id: 1, tag: "t1", tagged: true, doc: { id: 1, tags: ["a", "t1"] } },
        { id: 3, tag: "t3", tagged: true, doc: { id: 3, tags: ["a", "t3"] } },
        { id: 5, tag: "t5", tagged: true, doc: { id: 5, tags: ["a", "t5"] } }
      ])
      const locked = yield* sql.withTransaction(
        sql<{ id: number }>`SELECT id FROM ${table} ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED`
      )
      assert.deepStrictEqual(locked, [{ id: 1 }, { id: 3 }])
      const version = yield* sql<{ version: string }>`SELECT version() AS version`
      assert.include(version[0]?.version ?? "", "PGlite")
    }).pipe(Effect.provide(databaseLayer)), 30_000)

  it.live(
    "large statements and results pass through intact, also while notifications are routed",
    () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const pg = yield* PgClient.PgClient
        const channel = `${freshPrefix()}big`
        const notifications = yield* pg.listen(channel)
        const table = sql(`${freshPrefix()}big`)
        yield* sql`CREATE TABLE ${table} (id int PRIMARY KEY, doc jsonb NOT NULL, note text NOT NULL)`
        const doc = (id: number) => ({ id, text: `row ${id} `.repeat(200) })
        // ~5 MB of parameters in one statement, ~5 MB of rows in one result, and a 1 MB value
        yield* sql`INSERT INTO ${table} ${
          sql.insert(Arr.makeBy(2_000, (id) => ({
            id,
            doc: pg.json(doc(id)),
            note: id === 7 ? "n".repeat(1_000_000) : `note ${id}`
          })))
        }`
        yield* sql`SELECT pg_notify(${channel}, 'after the insert')`
        const rows = yield* sql<
          { id: number; doc: unknown; note: string }
        >`SELECT id, doc, note FROM ${table} ORDER BY id`
        assert.strictEqual(rows.length, 2_000)
        rows.forEach((row, id) => {
          assert.strictEqual(row.id, id)
          assert.deepStrictEqual(row.doc, doc(id))
          assert.strictEqual(row.note, id === 7 ? "n".repeat(1_000_000) : `note ${id}`)
        })
        assert.strictEqual(yield* next(notifications), "after the insert")
      }).pipe(Effect.provide(databaseLayer)),
    60_000
  )

  it.live(
    "concurrent transactions and claimers on several connections: serialized, nothing lost or shared",
    () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const outbox = yield* Outbox
        const table = sql(`${freshPrefix()}counter`)
        yield* sql`CREATE TABLE ${table} (id int PRIMARY KEY, seen int NOT NULL)`
        // each transaction reads the count and writes it back: with interleaving, two would see the same count
        yield* Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          (i) =>
            sql.withTransaction(Effect.gen(function*() {
              const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${table}`
              yield* Effect.yieldNow
              yield* sql`INSERT INTO ${table} VALUES (${i}, ${row?.n ?? -1})`
            })),
          { concurrency: "unbounded", discard: true }
        )
        const seen = yield* sql<{ seen: number }>`SELECT seen FROM ${table} ORDER BY seen`
        assert.deepStrictEqual(seen.map((row) => row.seen), Array.from({ length: 20 }, (_, i) => i))

        const ids = Array.from({ length: 200 }, (_, i) => `m-${i}`)
        for (let i = 0; i < ids.length; i += 50) yield* appendIn(outbox, ids.slice(i, i + 50).map(createdEnvelope))
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
      }).pipe(Effect.provide(stores())),
    60_000
  )

  it.live("an outbox commit on another connection wakes awaitAppended: NOTIFY reaches the socket client", () => {
    const prefix = freshPrefix()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const { url } = yield* Embedded.EmbeddedPostgres
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
      // the other process's layer is gone (it sent UNLISTEN): commits still wake this one
      const again = yield* Effect.forkChild(outbox.awaitAppended)
      yield* Effect.sleep("100 millis")
      assert.isUndefined(again.pollUnsafe(), "no commit yet")
      const client = yield* otherClient
      yield* client`SELECT pg_notify(${`${prefix}outbox`}, 'another instance')`
      yield* Fiber.join(again).pipe(Effect.timeout("5 seconds"))
    }).pipe(Effect.provide(stores(prefix)))
  }, 30_000)

  it.live(
    "NOTIFY goes to every listening connection, once, at commit, never on rollback",
    () =>
      Effect.gen(function*() {
        const pg = yield* PgClient.PgClient
        const channel = `${freshPrefix()}channel`
        const other = yield* otherClient
        const notify = (payload: string) => other`SELECT pg_notify(${channel}, ${payload})`
        const mine = yield* pg.listen(channel)
        const leaving = yield* Scope.fork(yield* Scope.Scope)
        const theirs = yield* other.listen(channel).pipe(Scope.provide(leaving))
        // a listener on the notifying connection's own pool, too
        yield* notify("one")
        assert.strictEqual(yield* next(mine), "one")
        assert.strictEqual(yield* next(theirs), "one")
        // a transaction's notifications arrive when it commits
        const committed = yield* other.withTransaction(Effect.gen(function*() {
          yield* notify("two")
          yield* Effect.sleep("100 millis")
          return yield* Queue.poll(mine)
        }))
        assert.isTrue(Option.isNone(committed), "not before the commit")
        assert.strictEqual(yield* next(mine), "two")
        assert.strictEqual(yield* next(theirs), "two")
        yield* other.withTransaction(notify("rolled back").pipe(Effect.andThen(Effect.fail("no")))).pipe(Effect.flip)
        // one listener leaves (UNLISTEN on the shared backend): the other still hears
        yield* Scope.close(leaving, Exit.void)
        yield* notify("three")
        assert.strictEqual(yield* next(mine), "three")
        yield* Effect.sleep("100 millis")
        assert.strictEqual(yield* Queue.size(mine), 0, "each notification once, none for the rollback")
      }).pipe(Effect.provide(databaseLayer)),
    30_000
  )
})

describe("embedded postgres: connections share one backend", () => {
  it.live(
    "a cycle left open by one connection holds the others, which go on when it syncs or goes away",
    () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const { port } = yield* Embedded.EmbeddedPostgres
        const tableName = `${freshPrefix()}raw`
        const table = sql(tableName)
        yield* sql`CREATE TABLE ${table} (id int PRIMARY KEY)`
        const count = sql<{ n: number }>`SELECT count(*)::int AS n FROM ${table}`
        /** A statement of the pool, started now; it must wait while `held` says so. */
        const waitsWhile = (held: string) =>
          Effect.gen(function*() {
            const fiber = yield* Effect.forkChild(count)
            yield* Effect.sleep("200 millis")
            assert.isUndefined(fiber.pollUnsafe(), held)
            return fiber
          })

        // Parse and Bind without Sync: the unnamed statement and portal are this connection's until it syncs
        const raw = yield* rawConnection(port)
        yield* raw.send(parse("SELECT 1 AS one"), bind())
        yield* raw.receive("2") // BindComplete
        const afterSync = yield* waitsWhile("another connection waits for the open cycle")
        yield* raw.send(execute(), sync())
        const messages = yield* raw.receive("Z")
        assert.deepStrictEqual(messages.map((message) => message.type), ["D", "C", "Z"])
        assert.include(messages[0]?.body ?? "", "1")
        assert.deepStrictEqual(yield* Fiber.join(afterSync), [{ n: 0 }])

        // a client that goes away in the middle of a cycle frees the others, and its statement is undone
        const vanishing = yield* rawConnection(port)
        yield* vanishing.send(parse(`INSERT INTO "${tableName}" VALUES (1)`), bind(), execute())
        yield* vanishing.receive("C") // CommandComplete of the INSERT
        const afterCycle = yield* waitsWhile("another connection waits for the open cycle")
        yield* vanishing.destroy
        assert.deepStrictEqual(yield* Fiber.join(afterCycle).pipe(Effect.timeout("5 seconds")), [{ n: 0 }])

        // ...also when its cycle failed (the backend skips messages until a Sync)
        const failing = yield* rawConnection(port)
        yield* failing.send(parse(`INSERT INTO "${tableName}" VALUES (1)`), bind(), execute(), parse("SELEC 1"), bind())
        yield* failing.receive("E") // ErrorResponse of the bad Parse
        const afterFailure = yield* waitsWhile("another connection waits for the failed cycle")
        yield* failing.destroy
        assert.deepStrictEqual(yield* Fiber.join(afterFailure).pipe(Effect.timeout("5 seconds")), [{ n: 0 }])

        // ...and in the middle of a transaction: rolled back
        const inTransaction = yield* rawConnection(port)
        yield* inTransaction.send(query(`BEGIN; INSERT INTO "${tableName}" VALUES (2)`))
        yield* inTransaction.receive("Z")
        const afterTransaction = yield* waitsWhile("an open transaction holds the other connections")
        yield* inTransaction.destroy
        assert.deepStrictEqual(yield* Fiber.join(afterTransaction).pipe(Effect.timeout("5 seconds")), [{ n: 0 }])
      }).pipe(Effect.provide(databaseLayer)),
    30_000
  )
})

describe("embedded postgres: lifecycle", () => {
  it.live(
    "starts on a free loopback port and stops cleanly: the port is closed after the scope",
    () =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(yield* Scope.Scope)
        const context = yield* Layer.build(Embedded.layer({ maxConnections: 3 })).pipe(Scope.provide(scope))
        const embedded = Context.get(context, Embedded.EmbeddedPostgres)
        assert.strictEqual(embedded.host, "127.0.0.1")
        assert.strictEqual(embedded.maxConnections, 3)
        assert.strictEqual(embedded.serverConnections, 3 + Embedded.spareServerConnections)
        assert.isUndefined(embedded.dataDir)
        const sql = Context.get(context, SqlClient.SqlClient)
        assert.deepStrictEqual(yield* sql<{ answer: number }>`SELECT 41 + 1 AS answer`, [{ answer: 42 }])
        assert.isTrue(yield* canConnect(embedded.port))
        yield* Scope.close(scope, Exit.void)
        assert.isFalse(yield* canConnect(embedded.port), "nothing listens after the scope closed")
      }),
    60_000
  )

  it.live("rejects a pool too small for the stores", () =>
    Effect.gen(function*() {
      const error = yield* Layer.build(Embedded.layerSync({ maxConnections: 1 })).pipe(Effect.scoped, Effect.flip)
      assert.strictEqual(error._tag, "EmbeddedPostgresError")
      assert.include(error.message, "maxConnections")
    }), 10_000)

  it.live("keeps its data in dataDir across two layer lifetimes", () =>
    Effect.gen(function*() {
      const dataDir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "entity-sync-embedded-"))),
        (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
      )
      const prefix = freshPrefix()
      const lifetime = Embedded.layerSync({ dataDir, prefix, maxConnections: 3 })
      yield* Effect.gen(function*() {
        assert.strictEqual((yield* Embedded.EmbeddedPostgres).dataDir, dataDir)
        yield* appendIn(yield* Outbox, [createdEnvelope("m-1"), createdEnvelope("m-2")])
      }).pipe(Effect.provide(lifetime))
      const { migrations, rows } = yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const rows = yield* (yield* Outbox).rows()
        const migrations = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(`${prefix}migrations`)}`
        return { rows, migrations }
      }).pipe(Effect.provide(lifetime))
      assert.deepStrictEqual(rows.map((row) => row.envelope.messageId), ["m-1", "m-2"])
      const count = Object.keys(Migrations.migrations(yield* Tables.make(prefix))).length
      assert.deepStrictEqual(migrations, [{ n: count }], "each migration ran once")
    }), 60_000)
})
