/** Owner table declarations: defaults, renamed columns, and the mistakes found when a declaration runs. */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Schema } from "effect"
import { Model } from "effect/schema"
import * as Contract from "../src/Contract.ts"
import * as MemorySync from "../src/memory/MemorySync.ts"
import * as Outbox from "../src/Outbox.ts"
import * as OwnerTable from "../src/OwnerTable.ts"
import * as Producer from "../src/Producer.ts"
import { Company, User } from "./fixtures.ts"

const message = (declare: () => unknown): string => {
  try {
    declare()
  } catch (error) {
    assert.instanceOf(error, OwnerTable.InvalidOwnerTable)
    return error.message
  }
  return assert.fail("the declaration was accepted")
}

describe("OwnerTable", () => {
  it("holds each encoded field in the column of its name unless renamed; the id column is the id field's", () => {
    const table = OwnerTable.make(User, { tableName: "accounts.users", columns: { companyId: "company_id" } })
    assert.deepStrictEqual(table.columns, [
      ["id", "id"],
      ["companyId", "company_id"],
      ["email", "email"],
      ["name", "name"],
      ["active", "active"]
    ])
    assert.strictEqual(table.idColumn, "id")
    assert.strictEqual(table.versionColumn, "version")
    assert.strictEqual(table.softDeleteColumn, undefined)
    assert.strictEqual(table.entity, "User")
  })

  it("follows the encoded side of the payload: a field renamed by its schema is held under the encoded name", () => {
    const Renamed = Contract.make({
      name: "Renamed",
      owner: "accounts",
      payload: Schema.Struct({ id: Schema.String, fullName: Schema.String }).pipe(
        Schema.encodeKeys({ fullName: "full_name" })
      ),
      id: "id"
    })
    assert.deepStrictEqual(OwnerTable.make(Renamed, { tableName: "people" }).columns, [
      ["id", "id"],
      ["full_name", "full_name"]
    ])
  })

  it("refuses what cannot be a table of the contract, saying what to change", () => {
    assert.include(message(() => OwnerTable.make(Company, { tableName: "companies; DROP TABLE x" })), "SQL identifier")
    assert.include(
      message(() => OwnerTable.make(Company, { tableName: "companies", columns: { name: "id" } })),
      `two payload fields are held in column "id"`
    )
    assert.include(
      message(() => OwnerTable.make(Company, { tableName: "companies", versionColumn: "name" })),
      `column "name" is entity-sync's`
    )
    assert.include(
      message(() => OwnerTable.make(Company, { tableName: "companies", idColumn: "code" })),
      `the id column "code" must hold a payload field`
    )
    const Listed = Contract.make({
      name: "Listed",
      owner: "accounts",
      payload: Schema.Record(Schema.String, Schema.String),
      id: "id"
    })
    assert.include(message(() => OwnerTable.make(Listed, { tableName: "listed" })), "fixed fields")
  })

  it("takes the columns of an effect/sql model, and refuses a model without a column for a payload field", () => {
    class CompanyRow extends Model.Class<CompanyRow>("CompanyRow")({
      id: Schema.String,
      name: Schema.String,
      version: Schema.Int,
      updated_at: Schema.Number
    }) {}
    const table = OwnerTable.fromModel(CompanyRow, {
      tableName: "companies",
      idColumn: "id",
      versionColumn: "version",
      updatedAtColumn: "updated_at",
      contract: Company
    })
    assert.deepStrictEqual(table.columns, [["id", "id"], ["name", "name"]])
    assert.strictEqual(table.updatedAtColumn, "updated_at")
  })

  it.effect("a soft delete on a table without a soft-delete column is a defect naming the missing declaration", () =>
    Effect.gen(function*() {
      const companies = Producer.make("accounts").repository(Company)
      yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
      const cause = yield* Outbox.transaction(companies.softDelete("c-1")).pipe(Effect.sandbox, Effect.flip)
      assert.isTrue(Cause.hasDies(cause))
      assert.include(Cause.pretty(cause), "declare softDeleteColumn")
      assert.strictEqual((yield* companies.get("c-1"))?.state, "live")
    }).pipe(
      Effect.provide(MemorySync.layer({ ownerTables: [OwnerTable.make(Company, { tableName: "companies" })] }))
    ))
})
