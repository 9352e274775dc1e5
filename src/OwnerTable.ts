/**
 * An owner table: the owner's own table that holds the entities of one contract, declared so that writes
 * through the contract's repository change the owner's row and append the event in one outbox transaction
 * (R2). The table keeps its columns, indexes and constraints; entity-sync needs a text id column, an
 * integer version column it bumps (R4), optionally a soft-delete and an updated-at column, and one column
 * per field of the contract's encoded payload. Hard deletes leave a tombstone in a table of the library,
 * so a re-create continues the version and a full sync republishes the deletion.
 *
 * The stores layers (`PostgresSync.layer`, `Embedded.layer`, `MemorySync.layer`) take the owner tables of
 * a service in their `ownerTables` option; a contract without one keeps its entities in the library's
 * document table.
 *
 * @since 0.2.0
 */
import { Schema, SchemaAST } from "effect"
import type * as Contract from "./Contract.ts"

/** A lowercase or quoted-safe SQL identifier, optionally schema-qualified (`accounts.users`). */
const identifierPattern = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/
/** A column name: one identifier, not qualified. */
const columnPattern = /^[A-Za-z_][A-Za-z0-9_]*$/

/** The declaration of an owner table: which table and columns hold the entities of one contract. */
export interface OwnerTable<Name extends string = string, Owner extends string = string> {
  /** The contract's entity name. */
  readonly entity: Name
  /** The contract's owner (R1): only its producer has a repository of the contract. */
  readonly owner: Owner
  /** The table, optionally schema-qualified. */
  readonly tableName: string
  /** The id column: unique, text; it holds the contract's id field. */
  readonly idColumn: string
  /** The version column: an integer column entity-sync writes; a new row starts at 1 (R4). */
  readonly versionColumn: string
  /** The soft-delete column (R7): null while the entity is live, the deletion time after a soft delete. */
  readonly softDeleteColumn: string | undefined
  /** The column entity-sync sets to the time of each write, if the table has one. */
  readonly updatedAtColumn: string | undefined
  /** Each field of the encoded payload with the column that holds it, in the payload's field order. */
  readonly columns: ReadonlyArray<readonly [field: string, column: string]>
}

/** The declaration of an owner table is not usable; `message` says what to change. */
export class InvalidOwnerTable extends Schema.TaggedError<InvalidOwnerTable>()("InvalidOwnerTable", {
  entity: Schema.String,
  tableName: Schema.String,
  message: Schema.String
}) {}

/** The fields of an encoded payload object, as a string union. */
type Fields<I> = keyof I & string

/** Options of `make`. */
export interface Options<I> {
  readonly tableName: string
  /** The id column (default: the column of the contract's id field). */
  readonly idColumn?: string
  /** The version column (default `"version"`). */
  readonly versionColumn?: string
  readonly softDeleteColumn?: string
  readonly updatedAtColumn?: string
  /**
   * The column of each encoded payload field whose column has another name (`{ companyId: "company_id" }`);
   * the others are held in the column of the field's name. A field the payload does not have does not
   * compile.
   */
  readonly columns?: { readonly [K in Fields<I>]?: string }
}

/** The field names of a payload schema's encoded side (a struct), or undefined for any other schema. */
const encodedFields = (payload: Schema.Top): ReadonlyArray<string> | undefined => {
  const encoded = SchemaAST.toEncoded(payload.ast)
  return SchemaAST.isObjects(encoded) && encoded.indexSignatures.length === 0
    ? encoded.propertySignatures.flatMap((signature) => typeof signature.name === "string" ? [signature.name] : [])
    : undefined
}

const invalid = (entity: string, tableName: string, message: string) =>
  new InvalidOwnerTable({ entity, tableName, message: `${entity} (${tableName}): ${message}` })

/**
 * Declares the owner table of `contract`. The contract's payload must encode to an object (a struct):
 * each of its fields is a column (named as the field unless `columns` renames it). Throws
 * `InvalidOwnerTable` for a name that is not an SQL identifier, a payload that is not a struct, or two
 * fields in one column — mistakes in code, found when the declaration runs.
 *
 * ```ts
 * const UsersTable = OwnerTable.make(User, {
 *   tableName: "users", softDeleteColumn: "deleted_at", updatedAtColumn: "updated_at",
 *   columns: { companyId: "company_id" }
 * })
 * ```
 */
export const make = <Name extends string, Owner extends string, A, I extends Schema.Json>(
  contract: Contract.Contract<Name, Owner, A, I>,
  options: Options<I>
): OwnerTable<Name, Owner> => {
  const fields = encodedFields(contract.payload)
  if (fields === undefined) {
    throw invalid(contract.name, options.tableName, "its payload does not encode to an object with fixed fields")
  }
  const renamed: Readonly<Record<string, string | undefined>> = options.columns ?? {}
  const columns = fields.map((field) => [field, renamed[field] ?? field] as const)
  const idColumn = options.idColumn ?? columns.find(([field]) => field === contract.idField)?.[1]
  if (idColumn === undefined) {
    throw invalid(
      contract.name,
      options.tableName,
      `its id field "${contract.idField}" is not an encoded field; set idColumn`
    )
  }
  const table: OwnerTable<Name, Owner> = {
    entity: contract.name,
    owner: contract.owner,
    tableName: options.tableName,
    idColumn,
    versionColumn: options.versionColumn ?? "version",
    softDeleteColumn: options.softDeleteColumn,
    updatedAtColumn: options.updatedAtColumn,
    columns
  }
  check(table)
  return table
}

const check = (table: OwnerTable) => {
  if (!identifierPattern.test(table.tableName)) {
    throw invalid(
      table.entity,
      table.tableName,
      "the table name must be an SQL identifier, optionally schema-qualified"
    )
  }
  const special = [table.idColumn, table.versionColumn, table.softDeleteColumn, table.updatedAtColumn]
  const named = [...special.filter((column) => column !== undefined), ...table.columns.map(([, column]) => column)]
  const bad = named.find((column) => !columnPattern.test(column))
  if (bad !== undefined) throw invalid(table.entity, table.tableName, `column "${bad}" is not an SQL identifier`)
  const payloadColumns = table.columns.map(([, column]) => column)
  const twice = payloadColumns.find((column, i) => payloadColumns.indexOf(column) !== i)
  if (twice !== undefined) {
    throw invalid(table.entity, table.tableName, `two payload fields are held in column "${twice}"`)
  }
  const clash = special.slice(1).find((column) => column !== undefined && payloadColumns.includes(column))
  if (clash !== undefined) {
    throw invalid(table.entity, table.tableName, `column "${clash}" is entity-sync's and cannot hold a payload field`)
  }
  if (!payloadColumns.includes(table.idColumn)) {
    throw invalid(table.entity, table.tableName, `the id column "${table.idColumn}" must hold a payload field`)
  }
}

/** A model (an effect/sql `Model.Class`, or any struct schema) whose fields are the table's columns. */
export interface ModelLike {
  readonly fields: Readonly<Record<string, Schema.Top>>
}

/** Options of `fromModel`: `SqlModel.makeRepository`'s, plus the contract and entity-sync's columns. */
export interface ModelOptions<
  M extends ModelLike,
  Name extends string,
  Owner extends string,
  A,
  I extends Schema.Json
> {
  readonly tableName: string
  readonly idColumn: keyof M["fields"] & string
  readonly versionColumn: keyof M["fields"] & string
  readonly softDeleteColumn?: keyof M["fields"] & string
  readonly updatedAtColumn?: keyof M["fields"] & string
  readonly contract: Contract.Contract<Name, Owner, A, I>
}

/**
 * The payload fields a model lacks, as a type that no contract has, so that `fromModel` with a model that
 * cannot hold the contract's payload does not compile and names the missing fields.
 */
export type ModelHolds<M extends ModelLike, I> = Exclude<Fields<I>, keyof M["fields"]> extends never ? unknown
  : { readonly "the model has no field for": Exclude<Fields<I>, keyof M["fields"]> }

/**
 * Declares the owner table of a contract from the model of its rows (an effect/sql `Model.Class`): each
 * encoded payload field is the model's field (column) of that name; a payload field the model does not
 * have does not compile.
 *
 * ```ts
 * class UserRow extends Model.Class<UserRow>("UserRow")({ id: Schema.String, email: Schema.String, … }) {}
 * const UsersTable = OwnerTable.fromModel(UserRow, {
 *   tableName: "users", idColumn: "id", versionColumn: "version", softDeleteColumn: "deleted_at", contract: User
 * })
 * ```
 */
export const fromModel = <M extends ModelLike, Name extends string, Owner extends string, A, I extends Schema.Json>(
  model: M,
  options: ModelOptions<M, Name, Owner, A, I> & ModelHolds<M, I>
): OwnerTable<Name, Owner> => {
  const table = make(options.contract, {
    tableName: options.tableName,
    idColumn: options.idColumn,
    versionColumn: options.versionColumn,
    ...(options.softDeleteColumn === undefined ? {} : { softDeleteColumn: options.softDeleteColumn }),
    ...(options.updatedAtColumn === undefined ? {} : { updatedAtColumn: options.updatedAtColumn })
  })
  const missing = table.columns.find(([, column]) => !(column in model.fields))
  if (missing !== undefined) {
    throw invalid(table.entity, options.tableName, `the model has no field "${missing[1]}"`)
  }
  return table
}
