/**
 * The PostgreSQL owner-side row store: one row per entity with its version and state, written in the same
 * transaction as the outbox rows of its events (R2).
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Schema } from "effect"
import type { Lock } from "../CopyRepository.ts"
import { SourceRepository, type SourceRow } from "../SourceRepository.ts"
import { decodeFirst, decodeRows, lockClause, Int8, NullableInt8, State } from "./Columns.ts"
import type { Tables } from "./Tables.ts"

const Source = Schema.Struct({
  entity: Schema.String,
  id: Schema.String,
  version: Int8,
  state: State,
  payload: Schema.Json,
  updatedAt: Int8,
  deletedAt: NullableInt8
})

/** Makes the source repository on `tables`. */
export const make = (tables: Tables): Effect.Effect<SourceRepository["Service"], never, PgClient.PgClient> =>
  Effect.gen(function* () {
    const pg = yield* PgClient.PgClient
    const sql = pg.withoutTransforms()
    const source = sql(tables.source)
    const columns = sql.literal(
      `entity, id, version, state, payload, updated_at AS "updatedAt", deleted_at AS "deletedAt"`
    )
    const decode = decodeRows(Source, "source")
    const decodeOne = decodeFirst(Source, "source")

    const get = (entity: string, id: string, lock?: Lock) =>
      sql`SELECT ${columns} FROM ${source} WHERE entity = ${entity} AND id = ${id} ${sql.literal(lockClause(lock))}`.pipe(Effect.flatMap(decodeOne))

    // One statement: the version the writer read is checked where the row is written.
    const put = (row: SourceRow, previousVersion: number | null) =>
      sql`INSERT INTO ${source} AS s ${
        sql.insert({
          entity: row.entity,
          id: row.id,
          version: row.version,
          state: row.state,
          payload: row.payload === null ? null : pg.json(row.payload),
          updated_at: row.updatedAt,
          deleted_at: row.deletedAt
        })
      }
        ON CONFLICT (entity, id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state,
          payload = EXCLUDED.payload, updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at
        WHERE ${previousVersion === null ? sql.literal("false") : sql`s.version = ${previousVersion}`}
        RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0))

    const page = (
      entity: string,
      options: { readonly afterId: string | null; readonly limit: number; readonly ids?: ReadonlyArray<string> }
    ) => {
      const { afterId, ids, limit } = options
      if (ids !== undefined && ids.length === 0) return Effect.succeed([])
      return sql`SELECT ${columns} FROM ${source}
        WHERE ${
        sql.and([
          sql`entity = ${entity}`,
          ...(afterId === null ? [] : [sql`id > ${afterId}`]),
          ...(ids === undefined ? [] : [sql`id = ANY(${ids})`])
        ])
      }
        ORDER BY id LIMIT ${Math.max(0, Math.floor(limit))}`.pipe(Effect.flatMap(decode))
    }

    return SourceRepository.of({ get, put, page })
  })
