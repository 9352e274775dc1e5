/**
 * The rules the compiler enforces for owner tables: writes through an owner table's repository and its
 * lower-level `track` need the outbox transaction (R2); a contract of another owner has no repository (R1);
 * a row mapping that does not fit the contract's encoded payload, or a model without a column for one of
 * its fields, does not compile. Compiled by `tsc.test.ts` with the rest of `test/types`.
 */
// @effect-diagnostics missingEffectContext:off missingEffectError:off -- the forbidden programs below are errors on purpose
import { type Effect, Schema } from "effect"
import { Model } from "effect/schema"
import { SqlClient } from "effect/sql"
import * as Outbox from "../../src/Outbox.ts"
import * as OwnerTable from "../../src/OwnerTable.ts"
import * as Producer from "../../src/Producer.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import { Company, Invoice, User } from "../fixtures.ts"

const accounts = Producer.make("accounts")
const users = accounts.repository(User)

export const r1 = () =>
  // @ts-expect-error R1: "accounts" does not own Invoice, whatever table holds it
  accounts.repository(Invoice)

const rename = SqlClient.SqlClient.use((sql) => sql`UPDATE users SET name = 'Ada' WHERE id = 'u-1'`)

export const r2 = () => {
  // @ts-expect-error R2: a tracked statement outside the outbox transaction still needs OutboxTransaction
  const outside: Effect.Effect<unknown, unknown, SourceRepository | SqlClient.SqlClient> = users.track("u-1", rename)
  // the statement's own services are required next to the transaction's
  const inside: Effect.Effect<unknown, unknown, Outbox.Outbox | SourceRepository | SqlClient.SqlClient> = Outbox
    .transaction(users.track("u-1", rename))
  return [outside, inside]
}

export const mappings = () => [
  OwnerTable.make(User, { tableName: "users", columns: { companyId: "company_id" } }),
  // @ts-expect-error the payload of User has no field "company": the mapping does not fit the contract
  OwnerTable.make(User, { tableName: "users", columns: { company: "company_id" } }),
  // @ts-expect-error a column name is a string
  OwnerTable.make(Company, { tableName: "companies", columns: { name: 1 } })
]

class CompanyRow extends Model.Class<CompanyRow>("CompanyRow")({
  id: Schema.String,
  name: Schema.String,
  version: Schema.Int,
  deleted_at: Schema.NullOr(Schema.Number)
}) {}

class NamelessRow extends Model.Class<NamelessRow>("NamelessRow")({ id: Schema.String, version: Schema.Int }) {}

export const models = () => [
  OwnerTable.fromModel(CompanyRow, {
    tableName: "companies",
    idColumn: "id",
    versionColumn: "version",
    softDeleteColumn: "deleted_at",
    contract: Company
  }),
  // @ts-expect-error the model has no column for Company's field "name"
  OwnerTable.fromModel(NamelessRow, {
    tableName: "companies",
    idColumn: "id",
    versionColumn: "version",
    contract: Company
  }),
  OwnerTable.fromModel(CompanyRow, {
    tableName: "companies",
    idColumn: "id",
    // @ts-expect-error "revision" is not a column of the model
    versionColumn: "revision",
    contract: Company
  })
]
