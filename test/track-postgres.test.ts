/**
 * The lower-level form of owner writes on PostgreSQL: the owner's own statement on its table, tracked by
 * `track` — the version bumped and the event appended in the same transaction, nothing for a no-op, a
 * soft delete and a hard delete recognized from what the statement did, a rollback leaving no trace; and a
 * no-op update recognized on an owner table; a schema-qualified owner table.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { EntityNotFound } from "../src/Errors.ts"
import * as Outbox from "../src/Outbox.ts"
import * as OwnerTable from "../src/OwnerTable.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import { Company, User } from "./fixtures.ts"
import { migrations, ownerTables } from "./owner-tables.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile({ maxConnections: 4 })
const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const users = accounts.repository(User)

class Boom extends Data.TaggedError("Boom")<{}> {}

/** Runs `body` on fresh owner tables, with the name of the users table. */
const withTables = <A, E>(
  body: (
    usersTable: string
  ) => Effect.Effect<A, E, PostgresSync.Stores | SqlClient.SqlClient>
) => {
  const prefix = database.prefix("k")
  return body(`${prefix}users`).pipe(
    Effect.provide(
      PostgresSync.layer({ prefix, ownerTables: ownerTables(prefix), migrations: migrations(prefix) }).pipe(
        Layer.provideMerge(database.layer)
      )
    )
  )
}

const events = Effect.map(
  Outbox.Outbox.use((outbox) => outbox.rows()),
  (rows) => rows.map((row) => `${row.envelope.entityId}.${row.envelope.action}.v${row.envelope.version}`)
)

const ada = { id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true }

describe("track (PostgreSQL owner tables)", () => {
  it.live("raises the event of what the owner's statement did, and nothing for a statement that changed nothing", () =>
    withTables((usersTable) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const table = sql(usersTable)
        yield* Outbox.transaction(Effect.andThen(companies.create({ id: "c-1", name: "Acme" }), users.create(ada)))

        const renamed = yield* Outbox.transaction(
          users.track("u-1", sql`UPDATE ${table} SET name = 'Ada L.' WHERE id = 'u-1'`)
        )
        assert.strictEqual(renamed.version, 2)
        assert.deepStrictEqual(renamed.payload, { ...ada, name: "Ada L." })
        const [row] = yield* sql<{ readonly version: number }>`SELECT version FROM ${table} WHERE id = 'u-1'`
        assert.strictEqual(Number(row?.version), 2)

        const unchanged = yield* Outbox.transaction(
          users.track("u-1", sql`UPDATE ${table} SET name = name WHERE id = 'u-1'`)
        )
        assert.strictEqual(unchanged.version, 2)

        const soft = yield* Outbox.transaction(
          users.track("u-1", sql`UPDATE ${table} SET deleted_at = now() WHERE id = 'u-1'`)
        )
        assert.strictEqual(soft.state, "softDeleted")

        yield* Outbox.transaction(companies.create({ id: "c-2", name: "Beta" }))
        yield* Outbox.transaction(users.create({ ...ada, id: "u-2" }))
        const gone = yield* Outbox.transaction(users.track("u-2", sql`DELETE FROM ${table} WHERE id = 'u-2'`))
        assert.strictEqual(gone.state, "deleted")
        assert.strictEqual(gone.version, 2)
        // the tombstone keeps the version: a re-create continues it (R4)
        assert.strictEqual((yield* Outbox.transaction(users.create({ ...ada, id: "u-2" }))).version, 3)

        assert.deepStrictEqual(yield* events, [
          "c-1.created.v1",
          "u-1.created.v1",
          "u-1.updated.v2",
          "u-1.softDeleted.v3",
          "c-2.created.v1",
          "u-2.created.v1",
          "u-2.deleted.v2",
          "u-2.created.v3"
        ])
      })
    ))

  it.live("a rolled-back tracked write leaves neither the change nor its event; a missing entity is refused first", () =>
    withTables((usersTable) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const table = sql(usersTable)
        yield* Outbox.transaction(users.create(ada))
        const failed = yield* Outbox.transaction(
          Effect.andThen(
            users.track("u-1", sql`UPDATE ${table} SET name = 'X' WHERE id = 'u-1'`),
            Effect.fail(new Boom())
          )
        ).pipe(Effect.flip)
        assert.instanceOf(failed, Boom)
        assert.deepStrictEqual((yield* users.get("u-1"))?.payload, ada)
        assert.strictEqual((yield* users.get("u-1"))?.version, 1)

        let ran = false
        const missing = yield* Outbox.transaction(users.track(
          "u-9",
          Effect.sync(() => {
            ran = true
          })
        )).pipe(Effect.flip)
        assert.deepStrictEqual(missing, new EntityNotFound({ entity: "User", entityId: "u-9" }))
        assert.isFalse(ran)
        assert.deepStrictEqual(yield* events, ["u-1.created.v1"])
      })
    ))

  it.live("an update to the same payload is a no-op on an owner table, whatever order its columns come back in", () =>
    withTables(() =>
      Effect.gen(function*() {
        yield* Outbox.transaction(users.create(ada))
        const same = yield* Outbox.transaction(users.update("u-1", (user) => ({ ...user })))
        assert.strictEqual(same.version, 1)
        const renamed = yield* Outbox.transaction(users.update("u-1", (user) => ({ ...user, active: false })))
        assert.strictEqual(renamed.version, 2)
        assert.deepStrictEqual(yield* events, ["u-1.created.v1", "u-1.updated.v2"])
      })
    ))

  it.live("a schema-qualified owner table is checked and written in its schema", () => {
    const prefix = database.prefix("q")
    const schema = `${prefix}accounts`
    const migration = SqlClient.SqlClient.use((sql) =>
      Effect.andThen(
        sql`CREATE SCHEMA ${sql(schema)}`,
        sql`CREATE TABLE ${
          sql(`${schema}.companies`)
        } (id text PRIMARY KEY, name text NOT NULL, version bigint NOT NULL)`
      )
    )
    const table = OwnerTable.make(Company, { tableName: `${schema}.companies` })
    return Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
      yield* Outbox.transaction(companies.update("c-1", (company) => ({ ...company, name: "Acme 2" })))
      const rows = yield* sql<{ readonly name: string }>`SELECT name FROM ${sql(`${schema}.companies`)}`
      assert.deepStrictEqual(rows.map((row) => row.name), ["Acme 2"])
      assert.strictEqual((yield* companies.get("c-1"))?.version, 2)
    }).pipe(
      Effect.provide(
        PostgresSync.layer({ prefix, ownerTables: [table], migrations: migration }).pipe(
          Layer.provideMerge(database.layer)
        )
      )
    )
  })
})
