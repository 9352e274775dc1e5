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
import { firstRepeated, keyOf, makeSave } from "./Save.ts"
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

/** A row `save` found, with where it is (`tid`, when locked) and whether its state differs from the saved one. */
const Found = Schema.Struct({
  entity: Schema.String,
  id: Schema.String,
  version: Int8,
  state: State,
  updatedAt: Int8,
  tid: Schema.NullOr(Schema.String),
  changed: Schema.Boolean
})

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

    /**
     * The `p` and `k` of a statement on `rows`: their records (`recordOf`) in one JSON object by entity and
     * id, and `k`, each row's key and record in key order ("C", the index's order).
     */
    const recordsByKey = <Row extends { readonly entity: string; readonly id: string }, A>(
      rows: ReadonlyArray<Row>,
      recordOf: (row: Row) => A
    ) => {
      const byEntity = new Map<string, Array<readonly [string, A]>>()
      for (const row of rows) {
        const records = byEntity.get(row.entity) ?? []
        records.push([row.id, recordOf(row)])
        byEntity.set(row.entity, records)
      }
      const records = Object.fromEntries(
        Array.from(byEntity, ([entity, records]) => [entity, Object.fromEntries(records)])
      )
      return sql`p AS (SELECT ${JSON.stringify(records)}::jsonb AS records),
        k AS (SELECT e.key COLLATE "C" AS entity, i.key COLLATE "C" AS id, i.value AS record
          FROM p, jsonb_each(p.records) AS e, jsonb_each(e.value) AS i ORDER BY 1, 2)`
    }
    /** A row's record in `p`. */
    const itsRecord = sql.literal(`(SELECT records FROM p) -> s.entity -> s.id`)
    /**
     * The row of each key of `k`, found by one index probe per key in `k`'s order (a lateral subquery the
     * planner keeps as it is: never a join that reads every row of the table, as a join or a lookup by
     * `= ANY` did on a table not yet analyzed), locked by its probe when `lock` is given, with its `ctid`.
     */
    const rowOfKey = (lock: string) =>
      sql`k CROSS JOIN LATERAL (SELECT s.ctid AS tid, s.* FROM ${source} AS s
        WHERE s.entity = k.entity AND s.id = k.id OFFSET 0 ${sql.literal(lock)}) AS s`

    // The rows travel as one JSON object, each row's record at its entity and id. When all of them exist,
    // they are locked in key order and compared in the database (a concurrent writer of a row is waited for,
    // and its committed row is the one compared); otherwise none is locked, so that the absent ones are
    // created before any row is locked, and every save locks its rows in key order. The changed rows are
    // written where they are (`ctid`) by a second statement: its snapshot, taken after the locks, sees the
    // versions they locked, which the first statement's does not when it waited for a concurrent writer.
    const decodeFound = decodeRows(Found, "source")
    const savedRecords = (rows: ReadonlyArray<NewSourceRow>) =>
      recordsByKey(rows, (row) => ({ payload: row.payload, updated_at: row.updatedAt }))
    const findAndLock = (rows: Arr.NonEmptyReadonlyArray<NewSourceRow>) =>
      sql`WITH ${savedRecords(rows)},
        found AS (SELECT s.entity, s.id, s.version, s.state, s.updated_at FROM ${rowOfKey("")}),
        l AS (SELECT s.entity, s.id, s.version, s.state, s.updated_at, s.tid::text AS tid,
            s.state = 'deleted' OR (s.state = 'live' AND s.payload IS DISTINCT FROM k.record -> 'payload') AS changed
          FROM ${rowOfKey("FOR UPDATE")} WHERE (SELECT count(*) FROM found) = ${rows.length})
        SELECT entity, id, version, state, updated_at AS "updatedAt", tid, changed FROM l
        UNION ALL
        SELECT entity, id, version, state, updated_at, NULL, false FROM found WHERE NOT EXISTS (SELECT 1 FROM l)`
        .pipe(Effect.flatMap(decodeFound))
    const writeChanged = (rows: Arr.NonEmptyReadonlyArray<NewSourceRow>, tids: ReadonlyArray<string>) =>
      sql`WITH ${savedRecords(rows)}
        UPDATE ${source} AS s SET version = s.version + 1, state = 'live', payload = ${itsRecord} -> 'payload',
          updated_at = (${itsRecord} ->> 'updated_at')::int8, deleted_at = NULL
        WHERE s.ctid = ANY(${tids}::tid[])
        RETURNING s.entity, s.id, s.version`.pipe(Effect.flatMap(decodeCreated))
    const saveExisting = (rows: Arr.NonEmptyReadonlyArray<NewSourceRow>) =>
      Effect.flatMap(findAndLock(rows), (found) => {
        const locked = (written: ReadonlyMap<string, number>) =>
          found.map((row) => ({
            entity: row.entity,
            id: row.id,
            version: row.version,
            state: row.state,
            updatedAt: row.updatedAt,
            written: written.get(keyOf(row)) ?? null
          }))
        const tids = found.flatMap((row) => row.changed && row.tid !== null ? [row.tid] : [])
        const everyLocked = found.length === rows.length &&
          found.every((row) => row.tid !== null && row.state !== "softDeleted")
        if (!everyLocked || tids.length === 0) return Effect.succeed(locked(new Map()))
        return Effect.flatMap(writeChanged(rows, tids), (written) =>
          written.length === tids.length
            ? Effect.succeed(locked(new Map(written.map((row) => [keyOf(row), row.version]))))
            : Effect.die(new Error(`entity-sync: ${tids.length - written.length} locked source rows were not written`)))
      })
    const save = makeSave({ create, withSavepoint: (effect) => sql.withTransaction(effect), saveExisting })

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

    // One index probe per id, in id order, as `rowOfKey`.
    const getMany = (entity: string, ids: ReadonlyArray<string>, lock?: Lock) =>
      ids.length === 0 ? Effect.succeed([]) : sql`SELECT s.* FROM (
          SELECT DISTINCT id COLLATE "C" AS id FROM unnest(${ids}::text[]) AS r(id) ORDER BY 1
        ) AS r
        CROSS JOIN LATERAL (SELECT ${columns} FROM ${source}
          WHERE entity = ${entity} AND id = r.id OFFSET 0 ${sql.literal(lockClause(lock))}) AS s
        ORDER BY s.id`.pipe(Effect.flatMap(decode))

    // One statement for all the rows, each over the version one below its own; found and locked as `rowOfKey`
    // in key order, written where they are, each reading its record at its key. One statement is enough here:
    // its callers hold the rows' locks, and a row a concurrent writer changed meanwhile fails the version
    // check wherever it is (every write raises the version), so it is reported as not written.
    const updateMany = (rows: ReadonlyArray<SourceRow>) =>
      rows.length === 0 ? Effect.succeed(0) : sql`WITH ${
        recordsByKey(rows, (row) => ({
          version: row.version,
          state: row.state,
          payload: row.payload,
          updated_at: row.updatedAt,
          deleted_at: row.deletedAt
        }))
      },
        l AS (SELECT s.tid FROM ${rowOfKey("FOR UPDATE")} WHERE s.version = (k.record ->> 'version')::int8 - 1)
        UPDATE ${source} AS s SET (version, state, payload, updated_at, deleted_at) =
          (SELECT r.version, r.state, r.payload, r.updated_at, r.deleted_at
            FROM jsonb_populate_record(NULL::${source}, ${itsRecord}) AS r)
        WHERE s.ctid = ANY(ARRAY(SELECT tid FROM l))
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
