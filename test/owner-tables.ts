/**
 * Owner tables for the test contracts: Company and User held column by column in tables of their own
 * (`<prefix>companies`, `<prefix>users`), so the suites that run over the document store run over owner
 * tables too. On PostgreSQL the tables are created by `migrations`, the service's own migration. The users'
 * payload columns are nullable: the store suites write rows of any payload under any entity.
 */
import { Effect } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import * as OwnerTable from "../src/OwnerTable.ts"
import { Company, User } from "./fixtures.ts"

/** The owner tables of the test contracts, named with `prefix`. */
export const ownerTables = (prefix = "") =>
  [
    OwnerTable.make(Company, {
      tableName: `${prefix}companies`,
      softDeleteColumn: "deleted_at",
      updatedAtColumn: "updated_at"
    }),
    OwnerTable.make(User, {
      tableName: `${prefix}users`,
      softDeleteColumn: "deleted_at",
      updatedAtColumn: "updated_at",
      columns: { companyId: "company_id" }
    })
  ] as const

/** Creates the tables of `ownerTables(prefix)`, the way a service's migration does. */
export const migrations = (prefix = ""): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE ${sql(`${prefix}companies`)} (
      id text PRIMARY KEY,
      name text NOT NULL,
      version integer NOT NULL,
      updated_at timestamptz NOT NULL,
      deleted_at bigint
    )`
    yield* sql`CREATE TABLE ${sql(`${prefix}users`)} (
      id text PRIMARY KEY,
      company_id text,
      email text,
      name text,
      active boolean,
      version bigint NOT NULL,
      updated_at bigint NOT NULL,
      deleted_at timestamptz
    )`
  })
