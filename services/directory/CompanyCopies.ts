/**
 * The directory's Companies: the library's copies of the Company contract (`CopyRepository`), read as
 * rows for the API. Hard-deleted companies are tombstones there and are not listed.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import type { SqlError } from "effect/sql"
import { CopyRepository } from "entity-sync"
import { Company } from "../contracts/index.ts"

/** A company copy as the directory lists it. Times are ISO-8601. */
export type CompanyCopy = {
  readonly id: string
  readonly name: string
  /** The version of the owner's Company it was synced from. */
  readonly version: number
  readonly syncedAt: string
  readonly deletedAt: string | null
}

const decode = Schema.decodeUnknownEffect(Company.payload)

const toCompany = (row: CopyRepository.CopyRow): Effect.Effect<CompanyCopy | null> =>
  row.state === "deleted" || row.payload === null
    ? Effect.succeed(null)
    : Effect.map(Effect.orDie(decode(row.payload)), (company) => ({
      id: row.id,
      name: company.name,
      version: row.version,
      syncedAt: new Date(row.syncedAt).toISOString(),
      deletedAt: row.deletedAt === null ? null : new Date(row.deletedAt).toISOString()
    }))

/** Live and soft-deleted company copies, by id. */
export const list: Effect.Effect<ReadonlyArray<CompanyCopy>, SqlError.SqlError, CopyRepository.CopyRepository> = Effect
  .gen(
    function*() {
      const copies = yield* CopyRepository.CopyRepository
      const rows = yield* copies.list(Company.name)
      const companies: Array<CompanyCopy> = []
      for (const row of rows) {
        const company = yield* toCompany(row)
        if (company !== null) companies.push(company)
      }
      return companies
    }
  )

/** One company copy, or null (never copied, or hard-deleted). */
export const get = (id: string): Effect.Effect<CompanyCopy | null, SqlError.SqlError, CopyRepository.CopyRepository> =>
  Effect.flatMap(
    CopyRepository.CopyRepository.use((copies) => copies.get(Company.name, id)),
    (row) => row === null ? Effect.succeed(null) : toCompany(row)
  )
