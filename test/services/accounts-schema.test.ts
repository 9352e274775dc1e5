/**
 * The accounts service on its own schema, on the embedded default (PGlite) and on PostgreSQL: it comes up
 * from an empty database (its migrations create `companies` and `users`, recorded in `accounts_migrations`),
 * its writes land in those tables and not in the library's document table, and the referential rules are
 * queries and constraints on them — a user needs a live company (a soft-deleted one does not do), a company
 * with users (soft-deleted ones too) cannot be deleted, an e-mail address belongs to one user — answered
 * over HTTP exactly as before (404, 409) plus a 409 for a taken e-mail address.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema, type Scope } from "effect"
import { HttpClient } from "effect/http"
import { SqlClient } from "effect/sql"
import * as Accounts from "../../services/accounts/Accounts.ts"
import * as AccountsApi from "../../services/accounts/AccountsApi.ts"
import * as AccountsTables from "../../services/accounts/AccountsTables.ts"
import * as HttpApp from "../../services/http/HttpApp.ts"
import * as ServiceDatabase from "../../services/runtime/ServiceDatabase.ts"
import * as ApiClient from "../../services/scenario/ApiClient.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Stack from "./stack.ts"

const schema: ServiceDatabase.ServiceSchema = {
  migrations: AccountsTables.migrations,
  ownerTables: AccountsTables.ownerTables
}

/** The accounts domain on a database (migrated by building its layer), called over HTTP in process. */
const accountsOn = (database: ServiceDatabase.DatabaseOptions) =>
  Effect.gen(function*() {
    const stores = yield* Layer.build(ServiceDatabase.layer(database, schema))
    const accounts = yield* Accounts.make.pipe(Effect.provideContext(stores))
    const client = HttpApp.inProcessClient({ accounts: yield* HttpApp.make(AccountsApi.routes(accounts)) })
    const call = (method: "GET" | "POST" | "PATCH" | "DELETE", path: string, json?: unknown) =>
      ApiClient.call(method, `http://accounts${path}`, json === undefined ? undefined : { json }).pipe(
        Effect.provideService(HttpClient.HttpClient, client),
        Effect.orDie
      )
    const sql = Context.get(stores, SqlClient.SqlClient)
    /** Rows of a query, decoded. */
    const query = <A>(rows: Schema.Decoder<A>, statement: Effect.Effect<unknown, unknown>) =>
      Effect.orDie(Effect.flatMap(statement, Schema.decodeUnknownEffect(rows)))
    /** Soft-deletes a company through the library (the API has no route for it). */
    const softDeleteCompany = (id: string) =>
      Outbox.transaction(Accounts.companies.softDelete(id)).pipe(Effect.provideContext(stores), Effect.orDie)
    /** Creates a user through the library alone, without the domain's check of its company. */
    const createUserUnchecked = (id: string, companyId: string) =>
      Outbox.transaction(Accounts.users.create({ ...user(id, companyId), active: true })).pipe(
        Effect.provideContext(stores)
      )
    return { call, sql, query, softDeleteCompany, createUserUnchecked }
  })

const user = (id: string, companyId: string, email = `${id}@example.test`) => ({
  id,
  companyId,
  email,
  name: id
})

const Tables = Schema.Array(Schema.Struct({ table_name: Schema.String }))
const Count = Schema.Array(Schema.Struct({ n: Schema.Number }))
const Listed = Schema.Array(Schema.Struct({
  id: Schema.String,
  version: Schema.Number,
  updatedAt: Schema.String,
  deletedAt: Schema.NullOr(Schema.String)
}))

const suite = (
  name: string,
  database: Effect.Effect<ServiceDatabase.DatabaseOptions, unknown, Scope.Scope>
) =>
  describe(`accounts on its own schema (${name})`, () => {
    it.live("comes up from an empty database; writes land in companies and users, not in the document table", () =>
      Effect.gen(function*() {
        const { call, query, sql } = yield* accountsOn(yield* database)
        const tables = yield* query(
          Tables,
          sql`SELECT table_name::text AS table_name FROM information_schema.tables
            WHERE table_schema = current_schema() AND table_name IN ('companies', 'users', 'accounts_migrations')
            ORDER BY table_name`
        )
        assert.deepStrictEqual(tables.map((t) => t.table_name), ["accounts_migrations", "companies", "users"])

        assert.strictEqual((yield* call("POST", "/companies", { id: "c-1", name: "Acme" })).status, 201)
        assert.strictEqual((yield* call("PATCH", "/companies/c-1", { name: "Acme Corp" })).status, 200)
        assert.strictEqual((yield* call("POST", "/users", user("u-1", "c-1"))).status, 201)
        assert.strictEqual((yield* call("POST", "/users", user("u-2", "c-1"))).status, 201)
        assert.strictEqual((yield* call("DELETE", "/users/u-2?soft=true")).status, 200)

        const companyRows = yield* query(
          Schema.Array(Schema.Struct({ id: Schema.String, name: Schema.String, version: Schema.Number })),
          sql`SELECT id, name, version FROM companies`
        )
        assert.deepStrictEqual(companyRows, [{ id: "c-1", name: "Acme Corp", version: 2 }])
        const userRows = yield* query(
          Schema.Array(Schema.Struct({ id: Schema.String, company_id: Schema.String, soft: Schema.Boolean })),
          sql`SELECT id, company_id, deleted_at IS NOT NULL AS soft FROM users ORDER BY id`
        )
        assert.deepStrictEqual(userRows, [
          { id: "u-1", company_id: "c-1", soft: false },
          { id: "u-2", company_id: "c-1", soft: true }
        ])
        const documents = yield* query(Count, sql`SELECT count(*)::int AS n FROM sync_source`)
        assert.deepStrictEqual(documents, [{ n: 0 }])
        const events = yield* query(Count, sql`SELECT count(*)::int AS n FROM sync_outbox`)
        assert.deepStrictEqual(events, [{ n: 5 }])

        // the listings read the own tables, with the same fields as before
        const companies = yield* Effect.flatMap(call("GET", "/companies"), ApiClient.decodeBody(Listed, "companies"))
        assert.deepStrictEqual(companies.map((c) => [c.id, c.version, c.deletedAt]), [["c-1", 2, null]])
        const users = yield* Effect.flatMap(call("GET", "/users"), ApiClient.decodeBody(Listed, "users"))
        assert.deepStrictEqual(users.map((u) => [u.id, u.version, u.deletedAt !== null]), [
          ["u-1", 1, false],
          ["u-2", 2, true]
        ])
        assert.isFalse(Number.isNaN(Date.parse(users[1]?.deletedAt ?? "")))
      }))

    it.live("a user needs a live company; a company with users, soft-deleted ones too, cannot be deleted", () =>
      Effect.gen(function*() {
        const { call, createUserUnchecked, softDeleteCompany } = yield* accountsOn(yield* database)
        assert.strictEqual((yield* call("POST", "/companies", { id: "c-1", name: "Acme" })).status, 201)
        assert.strictEqual((yield* call("POST", "/companies", { id: "c-2", name: "Beta" })).status, 201)
        assert.strictEqual((yield* call("POST", "/companies", { id: "c-3", name: "Gone" })).status, 201)

        // the foreign key stands behind the check
        const unchecked = yield* Effect.flip(createUserUnchecked("u-0", "c-404"))
        assert.strictEqual(
          unchecked._tag === "SqlError" ? Accounts.violatedConstraint(unchecked) : unchecked._tag,
          AccountsTables.userCompanyConstraint
        )
        const unknown = yield* call("POST", "/users", user("u-1", "c-404"))
        assert.strictEqual(unknown.status, 404)
        assert.deepInclude(unknown.body, { error: "NotFound", message: "Company c-404 does not exist" })

        yield* softDeleteCompany("c-3")
        const softDeleted = yield* call("POST", "/users", user("u-1", "c-3"))
        assert.strictEqual(softDeleted.status, 404)
        assert.deepInclude(softDeleted.body, { error: "NotFound", message: "Company c-3 does not exist" })
        assert.strictEqual((yield* call("POST", "/users", user("u-1", "c-1"))).status, 201)
        const moved = yield* call("PATCH", "/users/u-1", { companyId: "c-3" })
        assert.strictEqual(moved.status, 404)
        assert.strictEqual((yield* call("PATCH", "/users/u-1", { companyId: "c-404" })).status, 404)

        assert.strictEqual((yield* call("POST", "/users", user("u-2", "c-2"))).status, 201)
        assert.strictEqual((yield* call("DELETE", "/users/u-2?soft=true")).status, 200)
        const inUse = yield* call("DELETE", "/companies/c-2")
        assert.strictEqual(inUse.status, 409)
        assert.deepInclude(inUse.body, { error: "Conflict", details: { userIds: ["u-2"] } })
        assert.strictEqual((yield* call("DELETE", "/users/u-2")).status, 200)
        assert.deepInclude((yield* call("DELETE", "/companies/c-2")).body, {
          entity: "Company",
          id: "c-2",
          version: 2,
          state: "deleted"
        })
        assert.strictEqual((yield* call("DELETE", "/companies/c-2")).status, 404)
        // a company re-created over its tombstone continues its version
        assert.deepInclude((yield* call("POST", "/companies", { id: "c-2", name: "Beta again" })).body, {
          version: 3
        })
      }))

    it.live("an e-mail address belongs to one user: a taken one is a 409 on create and on update", () =>
      Effect.gen(function*() {
        const { call } = yield* accountsOn(yield* database)
        assert.strictEqual((yield* call("POST", "/companies", { id: "c-1", name: "Acme" })).status, 201)
        assert.strictEqual((yield* call("POST", "/users", user("u-1", "c-1", "ann@example.test"))).status, 201)
        const taken = yield* call("POST", "/users", user("u-2", "c-1", "ann@example.test"))
        assert.strictEqual(taken.status, 409)
        assert.deepStrictEqual(taken.body, {
          error: "Conflict",
          message: "The e-mail address ann@example.test belongs to another user",
          details: { email: "ann@example.test" }
        })
        assert.strictEqual((yield* call("POST", "/users", user("u-2", "c-1", "bob@example.test"))).status, 201)
        const updated = yield* call("PATCH", "/users/u-2", { email: "ann@example.test" })
        assert.strictEqual(updated.status, 409)
        assert.deepInclude(updated.body, { error: "Conflict", details: { email: "ann@example.test" } })
        // a soft-deleted user keeps the address; a hard-deleted one frees it
        assert.strictEqual((yield* call("DELETE", "/users/u-1?soft=true")).status, 200)
        assert.strictEqual((yield* call("POST", "/users", user("u-3", "c-1", "ann@example.test"))).status, 409)
        assert.strictEqual((yield* call("DELETE", "/users/u-1")).status, 200)
        assert.strictEqual((yield* call("POST", "/users", user("u-3", "c-1", "ann@example.test"))).status, 201)
        // the id conflict answers as before
        assert.deepInclude((yield* call("POST", "/users", user("u-3", "c-1", "new@example.test"))).body, {
          error: "Conflict"
        })
      }))
  })

suite("embedded", Effect.succeed({ poolSize: 4 }))

suite("PostgreSQL", Effect.map(Stack.database, (url) => ({ url, poolSize: 4 })))

describe("accounts on its own schema, PostgreSQL only", () => {
  it.live("restarts on its database: the migrations ran once, the rows are kept", () =>
    Effect.gen(function*() {
      const url = yield* Stack.database
      yield* Effect.scoped(Effect.gen(function*() {
        const { call } = yield* accountsOn({ url, poolSize: 3 })
        assert.strictEqual((yield* call("POST", "/companies", { id: "c-1", name: "Acme" })).status, 201)
      }))
      const { call, query, sql } = yield* accountsOn({ url, poolSize: 3 })
      const applied = yield* query(
        Schema.Array(Schema.Struct({ name: Schema.String })),
        sql`SELECT name FROM accounts_migrations`
      )
      assert.deepStrictEqual(applied, [{ name: "companies_and_users" }])
      assert.strictEqual((yield* call("PATCH", "/companies/c-1", { name: "Acme Corp" })).status, 200)
    }))

  it.live("a user create and a delete of its company, concurrently: never both", () =>
    Effect.gen(function*() {
      const url = yield* Stack.database
      const { call } = yield* accountsOn({ url, poolSize: 8 })
      const ids = Array.from({ length: 12 }, (_, i) => i)
      for (const i of ids) {
        assert.strictEqual((yield* call("POST", "/companies", { id: `c-${i}`, name: "x" })).status, 201)
      }
      const outcomes = yield* Effect.forEach(ids, (i) =>
        Effect.all([
          call("POST", "/users", user(`u-${i}`, `c-${i}`)),
          call("DELETE", `/companies/c-${i}`)
        ], { concurrency: 2 }), { concurrency: 4 })
      for (const [created, deleted] of outcomes) {
        assert.notDeepEqual([created.status, deleted.status], [201, 200])
        assert.isTrue(created.status === 201 || deleted.status === 200, JSON.stringify([created, deleted]))
      }
    }))
})
