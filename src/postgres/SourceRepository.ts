/**
 * The PostgreSQL owner-side row store: one row per entity with its version and state, written in the same
 * transaction as the outbox rows of its events (R2): its writes run only inside an open outbox transaction.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Array as Arr, Effect, Order, Schema } from "effect"
import type { Lock } from "../CopyRepository.ts"
import { EntityExists } from "../Errors.ts"
import { whileOpen } from "../internal/OutboxTransaction.ts"
import { type NewSourceRow, SourceRepository, type SourceRow } from "../SourceRepository.ts"
import { decodeFirst, decodeRows, Int8, lockClause, NullableInt8, State } from "./Columns.ts"
import { decodeLocked, firstRepeated, keyOf, makeSave } from "./Save.ts"
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

const Created = Schema.Struct({ entity: Schema.String, id: Schema.String, version: Int8 })

/** By entity, then id: concurrent creates of overlapping entities lock their rows in the same order. */
const byKey: Order.Order<NewSourceRow> = Order.combine(
  Order.mapInput(Order.String, (row: NewSourceRow) => row.entity),
  Order.mapInput(Order.String, (row: NewSourceRow) => row.id)
)

/** Makes the source repository on `tables`. */
export const make = (tables: Tables): Effect.Effect<SourceRepository["Service"], never, PgClient.PgClient> =>
  Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    const sql = pg.withoutTransforms()
    const source = sql(tables.source)
    const columns = sql.literal(
      `entity, id, version, state, payload, updated_at AS "updatedAt", deleted_at AS "deletedAt"`
    )
    const decode = decodeRows(Source, "source")
    const decodeOne = decodeFirst(Source, "source")

    const get = (entity: string, id: string, lock?: Lock) =>
      sql`SELECT ${columns} FROM ${source} WHERE entity = ${entity} AND id = ${id} ${sql.literal(lockClause(lock))}`
        .pipe(Effect.flatMap(decodeOne))

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

    // One statement, no read: a conflicting tombstone is re-created with its version + 1; a live or
    // soft-deleted row is left as it is and is missing from RETURNING. ON CONFLICT waits for a concurrent
    // writer of the row and then sees its committed row.
    const decodeCreated = decodeRows(Created, "source")
    // The rows travel as one JSON parameter, in key order (the order the statement inserts and locks them).
    const insertNew = (rows: Arr.NonEmptyReadonlyArray<NewSourceRow>) =>
      sql`INSERT INTO ${source} AS s (entity, id, version, state, payload, updated_at, deleted_at)
        SELECT r.entity, r.id, 1, 'live', r.payload, r.updated_at, NULL
        FROM jsonb_to_recordset(${
        JSON.stringify(Arr.map(Arr.sort(rows, byKey), (row) => ({
          entity: row.entity,
          id: row.id,
          payload: row.payload,
          updated_at: row.updatedAt
        })))
      }::jsonb) AS r(entity text, id text, payload jsonb, updated_at bigint)
        ON CONFLICT (entity, id) DO UPDATE SET version = s.version + 1, state = EXCLUDED.state,
          payload = EXCLUDED.payload, updated_at = EXCLUDED.updated_at, deleted_at = NULL
        WHERE s.state = 'deleted'
        RETURNING entity, id, version`.pipe(Effect.flatMap(decodeCreated))

    const create = (rows: ReadonlyArray<NewSourceRow>) => {
      if (!Arr.isReadonlyArrayNonEmpty(rows)) return Effect.succeed([])
      const repeated = firstRepeated(rows)
      if (repeated !== undefined) {
        return Effect.fail(new EntityExists({ entity: repeated.entity, entityId: repeated.id }))
      }
      const attempt = Effect.flatMap(insertNew(rows), (created) => {
        const versions = new Map(created.map((row) => [keyOf(row), row.version]))
        const written: Array<SourceRow> = []
        for (const row of rows) {
          const version = versions.get(keyOf(row))
          if (version === undefined) return Effect.fail(new EntityExists({ entity: row.entity, entityId: row.id }))
          written.push({
            entity: row.entity,
            id: row.id,
            version,
            state: "live",
            payload: row.payload,
            updatedAt: row.updatedAt,
            deletedAt: null
          })
        }
        return Effect.succeed(written)
      })
      // One row is written or not by its one statement; several need a savepoint so that none is written
      // when one of them exists.
      return rows.length === 1 ? attempt : sql.withTransaction(attempt)
    }

    // The rows travel as one JSON parameter. When all of them exist, they are locked in key order and
    // compared in the database (a concurrent writer of a row is waited for, and its committed row is the one
    // compared and written over); otherwise none is locked, so that the absent ones are created before any
    // row is locked, and every save locks its rows in key order. Looked up by their keys (`= ANY`) in the
    // index (see the owner tables' save).
    const save = makeSave({
      create,
      withSavepoint: (effect) => sql.withTransaction(effect),
      saveExisting: (rows) => {
        const entities = Array.from(new Set(rows.map((row) => row.entity)))
        const ids = rows.map((row) => row.id)
        return sql`WITH r AS (SELECT * FROM jsonb_to_recordset(${
          JSON.stringify(Arr.map(Arr.sort(rows, byKey), (row) => ({
            entity: row.entity,
            id: row.id,
            payload: row.payload,
            updated_at: row.updatedAt
          })))
        }::jsonb) AS r(entity text, id text, payload jsonb, updated_at bigint)),
          found AS (SELECT s.entity, s.id, s.version, s.state, s.updated_at
            FROM ${source} s JOIN r ON s.entity = r.entity COLLATE "C" AND s.id = r.id COLLATE "C"
            WHERE s.entity = ANY(${entities}) AND s.id = ANY(${ids})),
          l AS (SELECT s.entity, s.id, s.version, s.state, s.updated_at,
              s.state = 'deleted' OR (s.state = 'live' AND s.payload IS DISTINCT FROM r.payload) AS changed
            FROM ${source} s JOIN r ON s.entity = r.entity COLLATE "C" AND s.id = r.id COLLATE "C"
            WHERE s.entity = ANY(${entities}) AND s.id = ANY(${ids}) AND (SELECT count(*) FROM found) = ${rows.length}
            ORDER BY s.entity, s.id FOR UPDATE OF s),
          every AS (SELECT count(*) = ${rows.length} AND bool_and(state <> 'softDeleted') AS ok FROM l),
          u AS (UPDATE ${source} AS s SET version = l.version + 1, state = 'live', payload = r.payload,
              updated_at = r.updated_at, deleted_at = NULL
            FROM l JOIN r ON r.entity = l.entity COLLATE "C" AND r.id = l.id COLLATE "C"
            WHERE s.entity = l.entity AND s.id = l.id AND s.entity = ANY(${entities}) AND s.id = ANY(${ids})
              AND l.changed AND (SELECT ok FROM every)
            RETURNING s.entity, s.id, s.version)
          SELECT l.entity, l.id, l.version, l.state, l.updated_at AS "updatedAt", u.version AS written
          FROM l LEFT JOIN u ON u.entity = l.entity AND u.id = l.id
          UNION ALL
          SELECT entity, id, version, state, updated_at, NULL FROM found WHERE NOT EXISTS (SELECT 1 FROM l)`
          .pipe(Effect.flatMap(decodeLocked))
      }
    })

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

    const getMany = (entity: string, ids: ReadonlyArray<string>, lock?: Lock) =>
      ids.length === 0 ? Effect.succeed([]) : sql`SELECT ${columns} FROM ${source}
        WHERE entity = ${entity} AND id = ANY(${ids}) ORDER BY id ${sql.literal(lockClause(lock))}`.pipe(
        Effect.flatMap(decode)
      )

    // One statement for all the rows, each over the version one below its own; looked up by their keys in
    // the index (see `save`).
    const updateMany = (rows: ReadonlyArray<SourceRow>) =>
      rows.length === 0 ? Effect.succeed(0) : sql`UPDATE ${source} AS s SET version = r.version, state = r.state,
          payload = r.payload, updated_at = r.updated_at, deleted_at = r.deleted_at
        FROM jsonb_to_recordset(${
        JSON.stringify(rows.map((row) => ({
          entity: row.entity,
          id: row.id,
          version: row.version,
          state: row.state,
          payload: row.payload,
          updated_at: row.updatedAt,
          deleted_at: row.deletedAt
        })))
      }::jsonb) AS r(entity text, id text, version bigint, state text, payload jsonb, updated_at bigint, deleted_at bigint)
        WHERE s.entity = r.entity COLLATE "C" AND s.id = r.id COLLATE "C" AND s.version = r.version - 1
          AND s.entity = ANY(${Array.from(new Set(rows.map((row) => row.entity)))})
          AND s.id = ANY(${rows.map((row) => row.id)})
        RETURNING 1`.pipe(Effect.map((written) => written.length))

    return SourceRepository.of({
      get,
      getMany,
      updateMany: (rows) => whileOpen("updateMany", updateMany(rows)),
      put: (row, previousVersion) => whileOpen("put", put(row, previousVersion)),
      create: (rows) => whileOpen("create", create(rows)),
      save: (rows) => whileOpen("save", save(rows)),
      page
    })
  })
