/**
 * Runs the owner-write conformance suite on the PostgreSQL implementations, plus a PostgreSQL-only test on
 * both stores (documents and owner tables): a `createMany` that loses a race to a concurrent create writes
 * none of its rows.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer } from "effect"
import { EntityExists } from "../../src/Errors.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import * as Producer from "../../src/Producer.ts"
import { Company } from "../fixtures.ts"
import { migrations, ownerTables } from "../owner-tables.ts"
import * as TestPostgres from "../postgres.ts"
import { ownerWriteConformance } from "./owner-writes.ts"

const database = TestPostgres.forFile({ maxConnections: 10 })
const stores = () => PostgresSync.layer({ prefix: database.prefix("w") }).pipe(Layer.provideMerge(database.layer))
const ownerTableStores = () => {
  const prefix = database.prefix("t")
  return PostgresSync.layer({ prefix, ownerTables: ownerTables(prefix), migrations: migrations(prefix) }).pipe(
    Layer.provideMerge(database.layer)
  )
}

ownerWriteConformance("postgres owner writes", stores)

const companies = Producer.make("accounts").repository(Company)
const company = (id: string) => ({ id, name: id })

describe.each([["documents", stores], ["owner tables", ownerTableStores]] as const)(
  "postgres owner writes on %s, PostgreSQL only",
  (_, layer) => {
    it.live("a createMany that waits on a concurrent create of one of its ids fails and writes none of its rows", () =>
      Effect.gen(function*() {
        // "a-1" was deleted: its tombstone (version 2) outlives the failed create
        yield* Outbox.transaction(companies.create(company("a-1")))
        yield* Outbox.transaction(companies.delete("a-1"))
        const written = yield* Deferred.make<void>()
        const gate = yield* Deferred.make<void>()
        // holds "x-5" uncommitted until the gate opens
        const first = yield* Effect.forkChild(Outbox.transaction(Effect.gen(function*() {
          yield* companies.createMany([company("x-1"), company("x-5")])
          yield* Deferred.succeed(written, undefined)
          yield* Deferred.await(gate)
        })))
        yield* Deferred.await(written)
        // "a-1" and "a-2" are inserted before the statement waits on "x-5"; the transaction commits anyway
        const second = yield* Effect.forkChild(Outbox.transaction(
          companies.createMany([company("x-5"), company("a-2"), company("a-1")]).pipe(
            Effect.flip,
            Effect.tap(() => companies.create(company("b-1")))
          )
        ))
        yield* Effect.sleep("300 millis")
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(first)
        const error = yield* Fiber.join(second)
        assert.deepStrictEqual(error, new EntityExists({ entity: "Company", entityId: "x-5" }))
        assert.notStrictEqual((yield* companies.get("a-1"))?.state, "live")
        assert.isNull(yield* companies.get("a-2"))
        assert.strictEqual((yield* companies.get("b-1"))?.version, 1)
        assert.strictEqual((yield* Outbox.transaction(companies.create(company("a-1")))).version, 3)
        const rows = yield* Outbox.Outbox.use((outbox) => outbox.rows())
        assert.deepStrictEqual(rows.map((row) => row.envelope.entityId), ["a-1", "a-1", "x-1", "x-5", "b-1", "a-1"])
      }).pipe(Effect.provide(layer())))
  }
)

ownerWriteConformance("postgres owner writes, on owner tables", ownerTableStores)
