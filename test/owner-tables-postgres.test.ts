/**
 * Owner tables on PostgreSQL under concurrency and at their edges: concurrent writers of one entity get
 * consecutive versions and one event per committed write (none for a rolled-back one); concurrent creates
 * of one id have one winner, and a batch that loses such a race writes nothing; a hard delete leaves a
 * tombstone that a re-create continues, also when the re-create waits on the delete; concurrent saves
 * (`saveMany`) of new and existing entities, in any order, get consecutive versions, and a save that waits on a hard
 * delete re-creates over its tombstone, and looks its rows up in the index however much the table grew; a full
 * sync pages
 * owner rows and tombstones by id in batches, each its own transaction, whatever the id column's
 * collation; a table that does not match its declaration fails the layer with `InvalidOwnerTable` saying
 * what to change.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Deferred, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { EntityExists, EntityNotFound } from "../src/Errors.ts"
import * as Outbox from "../src/Outbox.ts"
import { InvalidOwnerTable } from "../src/OwnerTable.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import { SourceRepository } from "../src/SourceRepository.ts"
import { Company } from "./fixtures.ts"
import { migrations, ownerTables } from "./owner-tables.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile({ maxConnections: 20 })

const companies = Producer.make("accounts").repository(Company)

/** The owner's stores with Company and User in owner tables named with `prefix` (created by `migration`). */
const stores = (
  prefix: string,
  migration: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = migrations(prefix)
) =>
  PostgresSync.layer({ prefix, ownerTables: ownerTables(prefix), migrations: migration }).pipe(
    Layer.provideMerge(database.layer)
  )

/** A writer that fails after writing: its transaction rolls back. */
class RolledBack extends Data.TaggedError("RolledBack")<{ readonly writer: number }> {}

const OwnerRow = Schema.Struct({ id: Schema.String, name: Schema.String, version: Schema.Number })
const decodeOwnerRows = Schema.decodeUnknownEffect(Schema.Array(OwnerRow))
const TombstoneRow = Schema.Struct({ id: Schema.String, version: Schema.Number })
const decodeTombstones = Schema.decodeUnknownEffect(Schema.Array(TombstoneRow))

/** The owner's rows of `<prefix>companies` with id `id`, read with plain SQL. */
const ownerRows = (prefix: string, id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql`SELECT id, name, version::int AS version FROM ${sql(`${prefix}companies`)}
      WHERE id = ${id}`
    return yield* Effect.orDie(decodeOwnerRows(rows))
  })

/** The versions of the library's tombstones of Company `id`. */
const tombstones = (prefix: string, id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql`SELECT id, version::int AS version FROM ${sql(`${prefix}tombstones`)}
      WHERE entity = 'Company' AND id = ${id}`
    return (yield* Effect.orDie(decodeTombstones(rows))).map((row) => row.version)
  })

/** The outbox's events of Company `id`, in sequence order. */
const eventsOf = (id: string) =>
  Effect.map(
    Outbox.Outbox.use((outbox) => outbox.rows({ limit: 10_000 })),
    (rows) => rows.map((row) => row.envelope).filter((event) => event.entity === "Company" && event.entityId === id)
  )

const nameOf = (payload: unknown) =>
  typeof payload === "object" && payload !== null && "name" in payload ? payload.name : undefined

describe("owner tables on PostgreSQL", () => {
  it.live(
    "concurrent writers of one entity get consecutive versions, one event per committed write, none for a rolled-back one",
    () => {
      const prefix = database.prefix("o")
      return Effect.gen(function*() {
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "start" }))
        const writers = Array.from({ length: 12 }, (_, i) => i)
        const exits = yield* Effect.forEach(
          writers,
          (writer) =>
            Effect.exit(Outbox.transaction(Effect.gen(function*() {
              const written = yield* companies.update("c-1", (c) => ({ ...c, name: `w${writer}` }))
              // holds the row lock a while, so that the other writers queue behind it
              yield* Effect.sleep("2 millis")
              if (writer % 3 === 0) return yield* new RolledBack({ writer })
              return written
            }))),
          { concurrency: "unbounded" }
        )
        const committed = new Map<number, string>()
        exits.forEach((exit, writer) => {
          if (Exit.isSuccess(exit)) committed.set(exit.value.version, `w${writer}`)
          else assert.deepStrictEqual<unknown>(exit, Exit.fail(new RolledBack({ writer })))
        })
        assert.strictEqual(committed.size, 8)
        const versions = Array.from(committed.keys()).sort((a, b) => a - b)
        assert.deepStrictEqual(versions, [2, 3, 4, 5, 6, 7, 8, 9])

        const events = yield* eventsOf("c-1")
        assert.deepStrictEqual(events.map((event) => event.version), [1, 2, 3, 4, 5, 6, 7, 8, 9])
        assert.deepStrictEqual(events.map((event) => event.action), ["created", ...versions.map(() => "updated")])
        assert.deepStrictEqual(
          events.slice(1).map((event) => nameOf(event.payload)),
          versions.map((version) => committed.get(version))
        )
        const rolledBack = writers.filter((writer) => writer % 3 === 0).map((writer) => `w${writer}`)
        assert.isFalse(events.some((event) => rolledBack.includes(String(nameOf(event.payload)))))
        assert.deepStrictEqual(yield* ownerRows(prefix, "c-1"), [{ id: "c-1", name: committed.get(9)!, version: 9 }])
      }).pipe(Effect.provide(stores(prefix)))
    }
  )

  it.live("concurrent creates of one id: one wins, the others fail with EntityExists", () =>
    Effect.gen(function*() {
      const exits = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, i) => i),
        (writer) =>
          Effect.exit(Outbox.transaction(
            companies.create({ id: "c-2", name: `w${writer}` }).pipe(Effect.tap(() => Effect.sleep("20 millis")))
          )),
        { concurrency: "unbounded" }
      )
      const winners = exits.flatMap((exit) => (Exit.isSuccess(exit) ? [exit.value] : []))
      assert.lengthOf(winners, 1)
      assert.strictEqual(winners[0]!.version, 1)
      for (const exit of exits) {
        if (Exit.isFailure(exit)) {
          assert.deepStrictEqual<unknown>(exit, Exit.fail(new EntityExists({ entity: "Company", entityId: "c-2" })))
        }
      }
      const events = yield* eventsOf("c-2")
      assert.deepStrictEqual(events.map((event) => [event.action, event.version, nameOf(event.payload)]), [
        ["created", 1, winners[0]!.payload?.name]
      ])
    }).pipe(Effect.provide(stores(database.prefix("o")))))

  it.live("a createMany that loses a race for one of its ids writes nothing, even when its transaction commits", () => {
    const prefix = database.prefix("o")
    return Effect.gen(function*() {
      // c-11 was deleted (tombstone at 2): the batch re-creates it over the tombstone before it loses on c-12
      yield* Outbox.transaction(companies.create({ id: "c-11", name: "one" }))
      yield* Outbox.transaction(companies.delete("c-11"))
      const written = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const first = yield* Effect.forkChild(Outbox.transaction(Effect.gen(function*() {
        yield* companies.create({ id: "c-12", name: "first" })
        yield* Deferred.succeed(written, undefined)
        yield* Deferred.await(gate)
      })))
      yield* Deferred.await(written)
      // the batch's transaction goes on after the failed create, and commits
      const batch = yield* Effect.forkChild(Outbox.transaction(
        companies.createMany(["c-11", "c-12", "c-13"].map((id) => ({ id, name: "batch" }))).pipe(Effect.flip)
      ))
      yield* Effect.sleep("200 millis")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      assert.deepStrictEqual<unknown>(
        yield* Fiber.join(batch),
        new EntityExists({ entity: "Company", entityId: "c-12" })
      )
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-11"), [])
      assert.deepStrictEqual(yield* tombstones(prefix, "c-11"), [2])
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-12"), [{ id: "c-12", name: "first", version: 1 }])
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-13"), [])
      const events = [...yield* eventsOf("c-11"), ...yield* eventsOf("c-12"), ...yield* eventsOf("c-13")]
      assert.deepStrictEqual(events.map((event) => [event.entityId, event.action, event.version]), [
        ["c-11", "created", 1],
        ["c-11", "deleted", 2],
        ["c-12", "created", 1]
      ])
      // the ids are free again for the batch
      const created = yield* Outbox.transaction(
        companies.createMany(["c-11", "c-13"].map((id) => ({ id, name: "again" })))
      )
      assert.deepStrictEqual(created.map((row) => [row.id, row.version]), [["c-11", 3], ["c-13", 1]])
      assert.deepStrictEqual(yield* tombstones(prefix, "c-11"), [])
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live("a create that rolls back frees its id for a create waiting on it", () =>
    Effect.gen(function*() {
      const written = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const first = yield* Effect.forkChild(Effect.exit(Outbox.transaction(Effect.gen(function*() {
        yield* companies.create({ id: "c-3", name: "first" })
        yield* Deferred.succeed(written, undefined)
        yield* Deferred.await(gate)
        return yield* new RolledBack({ writer: 1 })
      }))))
      yield* Deferred.await(written)
      const second = yield* Effect.forkChild(Outbox.transaction(companies.create({ id: "c-3", name: "second" })))
      yield* Effect.sleep("200 millis")
      yield* Deferred.succeed(gate, undefined)
      assert.deepStrictEqual(yield* Fiber.join(first), Exit.fail(new RolledBack({ writer: 1 })))
      assert.strictEqual((yield* Fiber.join(second)).version, 1)
      const events = yield* eventsOf("c-3")
      assert.deepStrictEqual(events.map((event) => [event.action, event.version, nameOf(event.payload)]), [
        ["created", 1, "second"]
      ])
    }).pipe(Effect.provide(stores(database.prefix("o")))))

  it.live("a hard delete leaves a tombstone with its version; a re-create continues it and removes the tombstone", () => {
    const prefix = database.prefix("o")
    return Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id: "c-4", name: "one" }))
      yield* Outbox.transaction(companies.update("c-4", (c) => ({ ...c, name: "two" })))
      yield* Outbox.transaction(companies.delete("c-4"))
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-4"), [])
      assert.deepStrictEqual(yield* tombstones(prefix, "c-4"), [3])
      const gone = yield* companies.get("c-4")
      assert.deepStrictEqual(gone && [gone.state, gone.version, gone.payload], ["deleted", 3, null])
      assert.deepStrictEqual(
        yield* Effect.flip(Outbox.transaction(companies.update("c-4", (c) => c))),
        new EntityNotFound({ entity: "Company", entityId: "c-4" })
      )
      assert.strictEqual((yield* Outbox.transaction(companies.create({ id: "c-4", name: "three" }))).version, 4)
      assert.deepStrictEqual(yield* tombstones(prefix, "c-4"), [])
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-4"), [{ id: "c-4", name: "three", version: 4 }])
      // a soft-deleted entity can be hard-deleted too
      yield* Outbox.transaction(companies.softDelete("c-4"))
      yield* Outbox.transaction(companies.delete("c-4"))
      assert.deepStrictEqual(yield* tombstones(prefix, "c-4"), [6])
      assert.strictEqual((yield* Outbox.transaction(companies.create({ id: "c-4", name: "four" }))).version, 7)
      const events = yield* eventsOf("c-4")
      assert.deepStrictEqual(events.map((event) => [event.action, event.version]), [
        ["created", 1],
        ["updated", 2],
        ["deleted", 3],
        ["created", 4],
        ["softDeleted", 5],
        ["deleted", 6],
        ["created", 7]
      ])
      const page = (limit: number) => SourceRepository.use((source) => source.page("Company", { afterId: null, limit }))
      assert.deepStrictEqual((yield* page(10)).map((row) => [row.id, row.version, row.state]), [["c-4", 7, "live"]])
      // a row the owner inserts with its own statement over a tombstone is the entity; its tombstone is not
      // paged beside it (a page of 2 still reaches the next entity)
      yield* Outbox.transaction(companies.create({ id: "c-9", name: "nine" }))
      yield* Outbox.transaction(companies.delete("c-4"))
      const sql = yield* SqlClient.SqlClient
      yield* sql`INSERT INTO ${sql(`${prefix}companies`)} (id, name, version, updated_at)
        VALUES ('c-4', 'by hand', 8, now())`
      assert.deepStrictEqual((yield* page(2)).map((row) => [row.id, row.version, row.state]), [
        ["c-4", 8, "live"],
        ["c-9", 1, "live"]
      ])
      const byHand = yield* companies.get("c-4")
      assert.deepStrictEqual(byHand && [byHand.state, byHand.version, byHand.payload], ["live", 8, {
        id: "c-4",
        name: "by hand"
      }])
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live("a re-create that waits on a concurrent hard delete continues the tombstone's version", () => {
    const prefix = database.prefix("o")
    return Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id: "c-5", name: "one" }))
      const deleted = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const deleter = yield* Effect.forkChild(Outbox.transaction(Effect.gen(function*() {
        yield* companies.delete("c-5")
        yield* Deferred.succeed(deleted, undefined)
        yield* Deferred.await(gate)
      })))
      yield* Deferred.await(deleted)
      const creator = yield* Effect.forkChild(Outbox.transaction(companies.create({ id: "c-5", name: "again" })))
      yield* Effect.sleep("200 millis")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(deleter)
      assert.strictEqual((yield* Fiber.join(creator)).version, 3)
      assert.deepStrictEqual(yield* tombstones(prefix, "c-5"), [])
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-5"), [{ id: "c-5", name: "again", version: 3 }])
      const events = yield* eventsOf("c-5")
      assert.deepStrictEqual(events.map((event) => [event.action, event.version]), [
        ["created", 1],
        ["deleted", 2],
        ["created", 3]
      ])
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live("concurrent saves of new and existing entities, in any order: consecutive versions, the first a create", () => {
    const prefix = database.prefix("o")
    return Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id: "c-8", name: "start" }))
      const ids = ["c-6", "c-7", "c-8"]
      const writers = Array.from({ length: 9 }, (_, i) => i)
      yield* Effect.forEach(
        writers,
        (writer) => {
          // each writer names the entities in another order
          const order = [...ids.slice(writer % 3), ...ids.slice(0, writer % 3)]
          return Outbox.transaction(companies.saveMany(order.map((id) => ({ id, name: `w${writer}` }))))
        },
        { concurrency: "unbounded", discard: true }
      )
      for (const id of ["c-6", "c-7"]) {
        assert.deepStrictEqual((yield* eventsOf(id)).map((event) => [event.action, event.version]), [
          ["created", 1],
          ...writers.slice(1).map((i) => ["updated", i + 1])
        ])
      }
      const c8 = yield* eventsOf("c-8")
      assert.deepStrictEqual(c8.map((event) => event.version), [1, ...writers.map((i) => i + 2)])
      // every writer wrote all three in one transaction: the last one holds them all
      const last = nameOf(c8.at(-1)?.payload)
      for (const id of ids) assert.strictEqual(nameOf((yield* eventsOf(id)).at(-1)?.payload), last)
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-7"), [{ id: "c-7", name: String(last), version: 9 }])
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live("saves and updates look their rows up in the index however much the table grew since their statements were first run", () => {
    const prefix = database.prefix("o")
    const table = `${prefix}companies`
    return Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Outbox.transaction(companies.createMany([{ id: "c-1", name: "one" }, { id: "c-2", name: "two" }]))
      // run often enough while the table is small for PostgreSQL to keep a plan of a prepared statement
      for (let i = 0; i < 8; i++) {
        yield* Outbox.transaction(
          companies.saveMany([{ id: "c-1", name: `one ${i}` }, { id: "c-2", name: `two ${i}` }])
        )
      }
      yield* sql`INSERT INTO ${sql(table)} (id, name, version, updated_at)
        SELECT 'g-' || g, 'grown', 1, now() FROM generate_series(1, 20000) g`
      // the table's sequential scans so far in the current transaction
      const scans = sql<{ readonly seq: number }>`SELECT seq_scan::int AS seq FROM pg_stat_xact_user_tables
        WHERE relname = ${table}`
      const ids = ["c-1", "c-2"]
      const saved = companies.saveMany(ids.map((id) => ({ id, name: `${id} again` })))
      assert.deepStrictEqual(yield* Outbox.transaction(Effect.andThen(saved, scans)), [{ seq: 0 }])
      const updated = companies.updateMany(ids, (c) => ({ ...c, name: `${c.id} updated` }))
      assert.deepStrictEqual(yield* Outbox.transaction(Effect.andThen(updated, scans)), [{ seq: 0 }])
      assert.strictEqual((yield* companies.get("c-2"))?.version, 11)
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live("creates, saves and updates probe the tombstones of their ids only, however many a table never analyzed holds", () => {
    const prefix = database.prefix("o")
    const table = `${prefix}tombstones`
    return Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Outbox.transaction(companies.createMany([{ id: "c-1", name: "one" }, { id: "c-2", name: "two" }]))
      yield* Outbox.transaction(companies.delete("c-2"))
      yield* sql`INSERT INTO ${sql(table)} (entity, id, version, deleted_at)
        SELECT 'Company', 'g-' || g, 1, 0 FROM generate_series(1, 20000) g`
      const read = TestPostgres.rowsRead(table)
      const batch = ["c-2", ...Array.from({ length: 99 }, (_, i) => `n-${i}`)]
      const created = yield* Outbox.transaction(
        Effect.andThen(companies.createMany(batch.map((id) => ({ id, name: "new" }))), read)
      )
      const saved = yield* Outbox.transaction(
        Effect.andThen(companies.saveMany(["c-1", ...batch].map((id) => ({ id, name: "saved" }))), read)
      )
      const updated = yield* Outbox.transaction(
        Effect.andThen(companies.updateMany(["c-1", ...batch], (c) => ({ ...c, name: "updated" })), read)
      )
      for (const rows of [created, saved, updated]) assert.isAtMost(rows, 2 * (batch.length + 1))
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-2"), [{ id: "c-2", name: "updated", version: 5 }])
      assert.deepStrictEqual(yield* tombstones(prefix, "c-2"), [])
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live("a save that waits on a concurrent hard delete re-creates the entity over its tombstone", () => {
    const prefix = database.prefix("o")
    return Effect.gen(function*() {
      yield* Outbox.transaction(companies.createMany([{ id: "c-9", name: "one" }, { id: "c-10", name: "ten" }]))
      const deleted = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const deleter = yield* Effect.forkChild(Outbox.transaction(Effect.gen(function*() {
        yield* companies.delete("c-9")
        yield* Deferred.succeed(deleted, undefined)
        yield* Deferred.await(gate)
      })))
      yield* Deferred.await(deleted)
      const saver = yield* Effect.forkChild(
        Outbox.transaction(companies.saveMany([{ id: "c-10", name: "ten again" }, { id: "c-9", name: "again" }]))
      )
      yield* Effect.sleep("200 millis")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(deleter)
      const saved = yield* Fiber.join(saver)
      assert.deepStrictEqual(saved.map((entity) => [entity.id, entity.version]), [["c-10", 2], ["c-9", 3]])
      assert.deepStrictEqual(yield* tombstones(prefix, "c-9"), [])
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-9"), [{ id: "c-9", name: "again", version: 3 }])
      assert.deepStrictEqual((yield* eventsOf("c-9")).map((event) => [event.action, event.version]), [
        ["created", 1],
        ["deleted", 2],
        ["created", 3]
      ])
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live("a hard delete racing updates: versions stay consecutive, later writers find the entity gone", () => {
    const prefix = database.prefix("o")
    return Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id: "c-6", name: "start" }))
      const exits = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, i) => i),
        (writer) =>
          Effect.exit(Outbox.transaction(
            (writer === 3 ? companies.delete("c-6") : companies.update("c-6", (c) => ({ ...c, name: `w${writer}` })))
              .pipe(Effect.tap(() => Effect.sleep("2 millis")))
          )),
        { concurrency: "unbounded" }
      )
      const versions = exits.flatMap((exit) => (Exit.isSuccess(exit) ? [exit.value.version] : [])).sort((a, b) => a - b)
      for (const exit of exits) {
        if (Exit.isFailure(exit)) {
          assert.deepStrictEqual<unknown>(exit, Exit.fail(new EntityNotFound({ entity: "Company", entityId: "c-6" })))
        }
      }
      assert.deepStrictEqual(versions, versions.map((_, i) => i + 2))
      const events = yield* eventsOf("c-6")
      assert.deepStrictEqual(events.map((event) => event.version), [1, ...versions])
      assert.strictEqual(events.at(-1)?.action, "deleted")
      assert.deepStrictEqual(yield* tombstones(prefix, "c-6"), [versions.at(-1)!])
      assert.deepStrictEqual(yield* ownerRows(prefix, "c-6"), [])
    }).pipe(Effect.provide(stores(prefix)))
  })

  it.live(
    "full sync pages owner rows and tombstones by id in batches of 100, each its own transaction, and republishes deletions",
    () => {
      const prefix = database.prefix("o")
      // The id column sorts by a linguistic collation ("a" < "B"), the tombstones' table by bytes ("B" < "a"):
      // the keyset pages must order both the same way (the column's), or rows are skipped or sent twice.
      const migration = Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* migrations(prefix)
        yield* sql`ALTER TABLE ${sql(`${prefix}companies`)} ALTER COLUMN id TYPE text COLLATE "en-x-icu"`
      })
      return Effect.gen(function*() {
        const letters = ["a", "B", "c", "D", "_", "e"]
        const ids = Array.from({ length: 250 }, (_, i) => `${letters[i % letters.length]}${String(i).padStart(3, "0")}`)
        yield* Outbox.transaction(companies.createMany(ids.map((id) => ({ id, name: id }))))
        const deleted = new Set(ids.filter((_, i) => i % 7 === 3))
        yield* Outbox.transaction(Effect.forEach(deleted, (id) => companies.delete(id), { discard: true }))
        const outbox = yield* Outbox.Outbox
        const before = (yield* outbox.rows({ limit: 10_000 })).at(-1)?.seq ?? 0
        let transactions = 0
        const transaction: Outbox.TransactionFn = (effect) => {
          transactions++
          return outbox.transaction(effect)
        }
        const queued = yield* companies.fullSync().pipe(
          Effect.provideService(Outbox.Outbox, Outbox.Outbox.of({ ...outbox, transaction }))
        )
        assert.strictEqual(queued, 250)
        assert.strictEqual(transactions, 3)
        const events = (yield* outbox.rows({ afterSeq: before, limit: 10_000 })).map((row) => row.envelope)
        // in the id column's collation, which its primary key index serves
        const sql = yield* SqlClient.SqlClient
        const columnOrder = (yield* sql<{ readonly id: string }>`SELECT id FROM ${sql(`${prefix}companies`)}
          UNION ALL SELECT id COLLATE "en-x-icu" FROM ${sql(`${prefix}tombstones`)} WHERE entity = 'Company'
          ORDER BY id`).map((row) => row.id)
        assert.notDeepEqual(columnOrder, [...ids].sort())
        assert.deepStrictEqual(events.map((event) => event.entityId), columnOrder)
        for (const event of events) {
          const gone = deleted.has(event.entityId)
          assert.deepStrictEqual(
            [event.entityId, event.action, event.version, event.forceSync, event.payload],
            [
              event.entityId,
              gone ? "deleted" : "snapshot",
              gone ? 2 : 1,
              true,
              gone ? null : { id: event.entityId, name: event.entityId }
            ]
          )
        }
        // a batch size that divides the rows: a last, empty page ends the sync
        transactions = 0
        const again = yield* companies.fullSync({ batchSize: 125 }).pipe(
          Effect.provideService(Outbox.Outbox, Outbox.Outbox.of({ ...outbox, transaction }))
        )
        assert.deepStrictEqual([again, transactions], [250, 3])
        // restricted to ids, across owner rows and tombstones
        const some = [columnOrder[0]!, [...deleted][0]!, columnOrder.at(-1)!]
        assert.strictEqual(yield* companies.fullSync({ ids: some, batchSize: 2 }), 3)
      }).pipe(Effect.provide(stores(prefix, migration)))
    }
  )

  describe("a table that does not match its declaration fails the layer with InvalidOwnerTable", () => {
    const failure = (prefix: string, migration: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient>) =>
      Layer.build(stores(prefix, migration)).pipe(Effect.scoped, Effect.flip)
    const company = (prefix: string, message: string) =>
      new InvalidOwnerTable({
        entity: "Company",
        tableName: `${prefix}companies`,
        message: `Company (${prefix}companies): ${message}`
      })
    const createCompanies = (prefix: string, columns: string) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE ${sql(`${prefix}companies`)} (${sql.literal(columns)})`
        yield* sql`CREATE TABLE ${sql(`${prefix}users`)} (id text PRIMARY KEY, company_id text, email text,
          name text, active boolean, version bigint NOT NULL, updated_at bigint NOT NULL, deleted_at timestamptz)`
      })

    it.live("a table that does not exist", () => {
      const prefix = database.prefix("x")
      return Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* failure(prefix, Effect.void),
          company(prefix, "the table does not exist (create it with a migration first)")
        )
      })
    })

    const mismatches = [
      {
        title: "a missing column",
        columns: "id text PRIMARY KEY, version integer NOT NULL, updated_at timestamptz, deleted_at bigint",
        message: `the table has no column "name"`
      },
      {
        title: "a version column that is not an integer",
        columns: "id text PRIMARY KEY, name text, version numeric NOT NULL, updated_at timestamptz, deleted_at bigint",
        message: `the version column "version" must be an integer column`
      }
    ]
    for (const { columns, message, title } of mismatches) {
      it.live(title, () => {
        const prefix = database.prefix("x")
        return Effect.gen(function*() {
          assert.deepStrictEqual(yield* failure(prefix, createCompanies(prefix, columns)), company(prefix, message))
        })
      })
    }

    it.live("an id without a unique index of its own", () => {
      const unique = `the id column "id" needs a primary key or a unique index of its own`
      const columns = "name text, version integer NOT NULL, updated_at timestamptz, deleted_at bigint"
      return Effect.gen(function*() {
        const none = database.prefix("x")
        assert.deepStrictEqual(
          yield* failure(none, createCompanies(none, `id text, ${columns}`)),
          company(none, unique)
        )
        const composite = database.prefix("x")
        assert.deepStrictEqual(
          yield* failure(composite, createCompanies(composite, `id text, ${columns}, PRIMARY KEY (id, name)`)),
          company(composite, unique)
        )
        const partial = database.prefix("x")
        assert.deepStrictEqual(
          yield* failure(
            partial,
            Effect.andThen(
              createCompanies(partial, `id text, ${columns}`),
              SqlClient.SqlClient.use((sql) =>
                sql`CREATE UNIQUE INDEX ON ${sql(`${partial}companies`)} (id) WHERE deleted_at IS NULL`.pipe(
                  Effect.asVoid
                )
              )
            )
          ),
          company(partial, unique)
        )
      })
    })
  })
})
