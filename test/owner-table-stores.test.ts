/**
 * The owner-table stores (memory and PostgreSQL) at the `SourceRepository` level, where the owner writes
 * do not reach: a write whose version does not match writes nothing (a hard delete leaves no tombstone and
 * keeps the row), and a row is read, paged and written by its entity id whatever its payload holds.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as MemorySourceRepository from "../src/memory/SourceRepository.ts"
import { Outbox } from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import { SourceRepository, type SourceRow } from "../src/SourceRepository.ts"
import { migrations, ownerTables } from "./owner-tables.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile({ maxConnections: 5 })

const company = (id: string, version: number, state: SourceRow["state"] = "live", name = id): SourceRow => ({
  entity: "Company",
  id,
  version,
  state,
  payload: state === "deleted" ? null : { id, name },
  updatedAt: 1_000 * version,
  deletedAt: state === "live" ? null : 1_000 * version
})

const suite = (name: string, stores: () => Layer.Layer<Outbox | SourceRepository, unknown>) =>
  describe(name, () => {
    it.live("a hard delete whose version does not match writes nothing: the row stays, no tombstone", () =>
      Effect.gen(function*() {
        const outbox = yield* Outbox
        const sources = yield* SourceRepository
        assert.isTrue(yield* outbox.transaction(sources.put(company("c-1", 1), null)))
        assert.isTrue(yield* outbox.transaction(sources.put(company("c-1", 2, "live", "two"), 1)))
        assert.isFalse(yield* outbox.transaction(sources.put(company("c-1", 2, "deleted"), 1)))
        assert.isFalse(yield* outbox.transaction(sources.put(company("c-1", 4, "deleted"), 3)))
        const row = yield* sources.get("Company", "c-1")
        assert.deepStrictEqual(row && [row.state, row.version, row.payload], ["live", 2, { id: "c-1", name: "two" }])
        const page = yield* sources.page("Company", { afterId: null, limit: 10 })
        assert.deepStrictEqual(page.map((r) => [r.id, r.version, r.state]), [["c-1", 2, "live"]])
        // a live write whose version does not match writes nothing either
        assert.isFalse(yield* outbox.transaction(sources.put(company("c-1", 3, "live", "three"), 1)))
        assert.isTrue(yield* outbox.transaction(sources.put(company("c-1", 3, "deleted"), 2)))
        const gone = yield* sources.get("Company", "c-1")
        assert.deepStrictEqual(gone && [gone.state, gone.version, gone.payload], ["deleted", 3, null])
      }).pipe(Effect.provide(stores())))

    it.live("a row is read, paged and written by its entity id, whatever its payload's id field holds", () =>
      Effect.gen(function*() {
        const outbox = yield* Outbox
        const sources = yield* SourceRepository
        const odd: SourceRow = { ...company("c-2", 1), payload: { id: "other", name: "odd" } }
        assert.isTrue(yield* outbox.transaction(sources.put(odd, null)))
        const row = yield* sources.get("Company", "c-2")
        assert.deepStrictEqual(row && [row.id, row.payload], ["c-2", { id: "c-2", name: "odd" }])
        assert.isNull(yield* sources.get("Company", "other"))
        const page = yield* sources.page("Company", { afterId: null, limit: 10, ids: ["c-2", "other"] })
        assert.deepStrictEqual(page.map((r) => r.id), ["c-2"])
        assert.isTrue(
          yield* outbox.transaction(sources.put({ ...odd, version: 2, payload: { id: "x", name: "b" } }, 1))
        )
        assert.deepStrictEqual((yield* sources.get("Company", "c-2"))?.payload, { id: "c-2", name: "b" })
      }).pipe(Effect.provide(stores())))
  })

suite(
  "memory owner-table store",
  () =>
    Layer.mergeAll(MemoryOutbox.layer(), MemorySourceRepository.layer(ownerTables())).pipe(
      Layer.provide(Layer.fresh(MemoryDatabase.layer))
    )
)

suite("PostgreSQL owner-table store", () => {
  const prefix = database.prefix("s")
  return PostgresSync.layer({ prefix, ownerTables: ownerTables(prefix), migrations: migrations(prefix) }).pipe(
    Layer.provide(database.layer)
  )
})
