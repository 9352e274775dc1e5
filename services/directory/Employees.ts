/**
 * The directory's Employees: its own table, a projection of the User copies, written by the User
 * subscription's handler inside the apply transaction — so a User copy and its Employee row commit
 * together, with the same version, or not at all. A hard-deleted user's row is removed (the library
 * keeps the tombstone in its copies); a soft-deleted one keeps its row with `deletedAt`.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Schema } from "effect"
import { Migrator, SqlClient, type SqlError } from "effect/sql"
import type { Subscription } from "entity-sync"
import { Columns } from "entity-sync/postgres"
import type { User } from "../contracts/index.ts"

/** An employee as the directory lists it. Times are ISO-8601. */
export type EmployeeRow = {
  readonly id: string
  readonly companyId: string
  readonly email: string
  readonly name: string
  readonly active: boolean
  /** The version of the User it was synced from. */
  readonly version: number
  readonly syncedAt: string
  readonly deletedAt: string | null
}

/** The directory's own migrations (table `directory_migrations`): the `employees` table. */
export const migrate: Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  Migrator.MigrationError | SqlError.SqlError,
  SqlClient.SqlClient
> = Migrator.make({})({
  table: "directory_migrations",
  loader: Migrator.fromRecord({
    "1_create_employees": Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE employees (
        id text COLLATE "C" PRIMARY KEY,
        company_id text COLLATE "C" NOT NULL,
        email text NOT NULL,
        name text NOT NULL,
        active boolean NOT NULL,
        version bigint NOT NULL,
        synced_at bigint NOT NULL,
        deleted_at bigint
      )`
      yield* sql`CREATE INDEX employees_company_id_idx ON employees (company_id, id)`
    })
  })
})

/**
 * The User subscription's handler: mirrors the event into `employees` in the apply transaction. It runs
 * only for events the version guard let through, so it never regresses a row.
 */
export const apply = (
  event: Subscription.SyncEvent<User>
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { envelope, payload } = event
    if (payload === null) {
      yield* sql`DELETE FROM employees WHERE id = ${envelope.entityId}`
      return
    }
    const syncedAt = yield* Clock.currentTimeMillis
    const deletedAt = envelope.action === "softDeleted" ? Date.parse(envelope.occurredAt) : null
    yield* sql`INSERT INTO employees ${
      sql.insert({
        id: payload.id,
        company_id: payload.companyId,
        email: payload.email,
        name: payload.name,
        active: payload.active,
        version: envelope.version,
        synced_at: syncedAt,
        deleted_at: deletedAt
      })
    } ON CONFLICT (id) DO UPDATE SET company_id = EXCLUDED.company_id, email = EXCLUDED.email,
      name = EXCLUDED.name, active = EXCLUDED.active, version = EXCLUDED.version,
      synced_at = EXCLUDED.synced_at, deleted_at = EXCLUDED.deleted_at`
  })

const Row = Schema.Struct({
  id: Schema.String,
  company_id: Schema.String,
  email: Schema.String,
  name: Schema.String,
  active: Schema.Boolean,
  version: Columns.Int8,
  synced_at: Columns.Int8,
  deleted_at: Columns.NullableInt8
})
const decodeRows = Schema.decodeUnknownEffect(Schema.Array(Row))

const toEmployee = (row: typeof Row.Type): EmployeeRow => ({
  id: row.id,
  companyId: row.company_id,
  email: row.email,
  name: row.name,
  active: row.active,
  version: row.version,
  syncedAt: new Date(row.synced_at).toISOString(),
  deletedAt: row.deleted_at === null ? null : new Date(row.deleted_at).toISOString()
})

const read = (rows: Effect.Effect<ReadonlyArray<unknown>, SqlError.SqlError>) =>
  rows.pipe(Effect.flatMap((raw) => Effect.orDie(decodeRows(raw))), Effect.map((decoded) => decoded.map(toEmployee)))

/** Employees (soft-deleted ones included), by id; only those of `companyId` when given. */
export const list = (
  companyId?: string
): Effect.Effect<ReadonlyArray<EmployeeRow>, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    read(
      companyId === undefined
        ? sql`SELECT * FROM employees ORDER BY id`
        : sql`SELECT * FROM employees WHERE company_id = ${companyId} ORDER BY id`
    ))

/** One employee, or null. */
export const get = (id: string): Effect.Effect<EmployeeRow | null, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => Effect.map(read(sql`SELECT * FROM employees WHERE id = ${id}`), (rows) => rows[0] ?? null)
  )
