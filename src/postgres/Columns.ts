/**
 * Column codecs shared by the PostgreSQL stores, and the decoding of result rows with Schema. A row that
 * does not decode is reported as a `SqlError` (the database returned something the library did not
 * write), so the stores keep the `SqlError`-only error channel of their interfaces.
 *
 * @since 0.1.0
 */
import { Effect, Result, Schema, SchemaGetter } from "effect"
import { SqlError } from "effect/sql"
import type { Lock } from "../CopyRepository.ts"

/**
 * A `bigint` (int8) column read as a JavaScript number: the driver gives a `bigint` (or a string in text
 * mode); values outside the safe integer range fail to decode instead of losing precision.
 */
export const Int8 = Schema.Union([Schema.BigInt, Schema.String, Schema.Number]).pipe(
  Schema.decodeTo(Schema.Int, {
    decode: SchemaGetter.transform((value: bigint | string | number) => Number(value)),
    encode: SchemaGetter.transform((value: number) => BigInt(value))
  })
)

/** A nullable `bigint` column, e.g. an optional time in epoch milliseconds. */
export const NullableInt8 = Schema.NullOr(Int8)

/** The `state` column of source rows and copies. */
export const State = Schema.Literals(["live", "softDeleted", "deleted"])

/** Wraps a decoding failure as the `SqlError` the store interfaces allow. */
const unexpectedRow = (what: string) => (error: Schema.SchemaError): SqlError.SqlError =>
  new SqlError.SqlError({
    reason: new SqlError.UnknownError({
      cause: error,
      message: `entity-sync: unexpected ${what} row: ${error.message}`,
      operation: "decode"
    })
  })

/** Decodes result rows with `schema` (synchronous: row schemas have no asynchronous parts); `what` names the rows in the error message. */
export const decodeRows = <A>(schema: Schema.Decoder<A>, what: string) => {
  const decode = Schema.decodeUnknownResult(Schema.Array(schema))
  const fail = unexpectedRow(what)
  return (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<A>, SqlError.SqlError> => {
    const decoded = decode(rows)
    return Result.isSuccess(decoded) ? Effect.succeed(decoded.success) : Effect.fail(fail(decoded.failure))
  }
}

/** Decodes the first result row with `schema`, or gives null when there is none. */
export const decodeFirst = <A>(schema: Schema.Decoder<A>, what: string) => {
  const decode = decodeRows(schema, what)
  return (rows: ReadonlyArray<unknown>): Effect.Effect<A | null, SqlError.SqlError> =>
    Effect.map(decode(rows.slice(0, 1)), (decoded) => decoded[0] ?? null)
}

/** The row of a `SELECT count(*) AS count` statement. */
export const Count = Schema.Struct({ count: Int8 })

/** Reads the count of a `SELECT count(*) AS count` statement. */
export const decodeCount = (what: string) => {
  const decode = decodeRows(Count, what)
  return (rows: ReadonlyArray<unknown>): Effect.Effect<number, SqlError.SqlError> =>
    Effect.map(decode(rows), (decoded) => decoded[0]?.count ?? 0)
}

/** The row-lock clause of a `SELECT` for a `Lock` (empty without one). */
export const lockClause = (lock: Lock | undefined): string =>
  lock === "forUpdate" ? "FOR UPDATE" : lock === "forShare" ? "FOR SHARE" : ""
