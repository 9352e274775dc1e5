/**
 * The accounts service's own schema: `companies` and `users`, created by its migrations (an effect/sql
 * `Migrator` recording them in `accounts_migrations`), and declared as the owner tables of Company and User,
 * so the service's writes change these rows and append their events in one transaction (R2).
 *
 * The referential rules are constraints: a user's `company_id` references `companies (id)` (a company with
 * users, live or soft-deleted, cannot be hard-deleted), and a user's `email` is unique. Hard-deleted
 * entities leave these tables; the library keeps their tombstones.
 *
 * @since 0.2.0
 */
import { Effect } from "effect"
import { Migrator, SqlClient } from "effect/sql"
import { OwnerTable } from "entity-sync"
import { Company, User } from "../contracts/index.ts"

/** The table of the service's applied migrations. */
export const migrationsTable = "accounts_migrations"

/** The foreign key from `users.company_id` to `companies.id`. */
export const userCompanyConstraint = "users_company_id_fkey"

/** The unique constraint on `users.email`. */
export const userEmailConstraint = "users_email_key"

/** Companies: one row per live or soft-deleted company. */
export const companiesTable = OwnerTable.make(Company, {
  tableName: "companies",
  softDeleteColumn: "deleted_at",
  updatedAtColumn: "updated_at"
})

/** Users: one row per live or soft-deleted user, in a company that exists. */
export const usersTable = OwnerTable.make(User, {
  tableName: "users",
  softDeleteColumn: "deleted_at",
  updatedAtColumn: "updated_at",
  columns: { companyId: "company_id" }
})

/** The owner tables of the accounts service. */
export const ownerTables: ReadonlyArray<OwnerTable.OwnerTable> = [companiesTable, usersTable]

const createTables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE companies (
    id text PRIMARY KEY,
    name text NOT NULL,
    version integer NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz
  )`
  yield* sql`CREATE TABLE users (
    id text PRIMARY KEY,
    company_id text NOT NULL CONSTRAINT ${sql(userCompanyConstraint)} REFERENCES companies (id),
    email text NOT NULL CONSTRAINT ${sql(userEmailConstraint)} UNIQUE,
    name text NOT NULL,
    active boolean NOT NULL,
    version integer NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz
  )`
  yield* sql`CREATE INDEX users_company_id_idx ON users (company_id, id)`
})

/** The service's migrations: creates `companies` and `users` on a database that has not got them yet. */
export const migrations = Migrator.make({})({
  table: migrationsTable,
  loader: Migrator.fromRecord({ "1_companies_and_users": createTables })
})
