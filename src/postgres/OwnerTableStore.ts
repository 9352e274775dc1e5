/**
 * The PostgreSQL store of one owner table (see `OwnerTable`): the owner's own rows, read and written
 * column by column, with the library's tombstones for hard-deleted entities. PostgreSQL converts between
 * the encoded payload and the columns (`jsonb_build_object` to read, `jsonb_populate_record` to write), so
 * a column may have any type its field's JSON value converts to. Writes run only inside an open outbox
 * transaction (R2).
 *
 * @since 0.2.0
 */
import { PgClient } from "@effect/sql-pg"
import { Array as Arr, Effect, Schema } from "effect"
import type { SqlError, Statement } from "effect/sql"
import type { Lock } from "../CopyRepository.ts"
import { EntityExists } from "../Errors.ts"
import { whileOpen } from "../internal/OutboxTransaction.ts"
import { requireSoftDeleteColumn } from "../internal/SoftDeleteColumn.ts"
import { InvalidOwnerTable, type OwnerTable } from "../OwnerTable.ts"
import type { NewSourceRow, SourceRepository, SourceRow } from "../SourceRepository.ts"
import { decodeRows, Int8, lockClause, NullableInt8, State } from "./Columns.ts"
import { decodeLocked, makeSave } from "./Save.ts"
import { compileOnce } from "./StatementTemplate.ts"
import type { Tables } from "./Tables.ts"

/** How a time column holds a time: epoch milliseconds in an integer, or a timestamp. */
type TimeKind = "millis" | "timestamp"

/** A `text[]` of ids in a statement: a value, an SQL expression, or the marker of a `compileOnce` argument. */
type Ids = ReadonlyArray<string> | Statement.Fragment | string

const Described = Schema.Struct({ column: Schema.String, type: Schema.String, collation: Schema.NullOr(Schema.String) })

const Row = Schema.Struct({
  entity: Schema.String,
  id: Schema.String,
  version: Int8,
  state: State,
  payload: Schema.NullOr(Schema.Json),
  updatedAt: Int8,
  deletedAt: NullableInt8
})

const Created = Schema.Struct({ id: Schema.String, version: Int8 })

const integerTypes = new Set(["smallint", "integer", "bigint"])
const textTypes = new Set(["text", "character varying", "character"])
const timestampTypes = new Set(["timestamp with time zone", "timestamp without time zone"])

/** `jsonb_build_object` takes at most 100 arguments: 50 fields per call, concatenated. */
const fieldsPerCall = 50

const isJsonObject = (json: Schema.Json): json is Schema.JsonObject =>
  json !== null && typeof json === "object" && !Array.isArray(json)

/** Makes the store of `table`; fails with `InvalidOwnerTable` when the table does not match its declaration. */
export const make = (
  tables: Tables,
  table: OwnerTable
): Effect.Effect<SourceRepository["Service"], InvalidOwnerTable | SqlError.SqlError, PgClient.PgClient> =>
  Effect.gen(function*() {
    const sql = (yield* PgClient.PgClient).withoutTransforms()
    const invalid = (message: string) =>
      new InvalidOwnerTable({
        entity: table.entity,
        tableName: table.tableName,
        message: `${table.entity} (${table.tableName}): ${message}`
      })

    // What the database says about the table: its columns and their types, and a unique index on the id.
    const dot = table.tableName.indexOf(".")
    const schemaName = dot < 0 ? null : table.tableName.slice(0, dot)
    const tableName = table.tableName.slice(dot + 1)
    const described = yield* sql`SELECT column_name AS column, data_type AS type,
        CASE WHEN collation_name IS NULL THEN NULL
          ELSE quote_ident(collation_schema) || '.' || quote_ident(collation_name) END AS collation
      FROM information_schema.columns
      WHERE table_name = ${tableName} AND table_schema = ${schemaName === null ? sql`current_schema()` : schemaName}`
      .pipe(Effect.flatMap(decodeRows(Described, "information_schema.columns")))
    if (described.length === 0) return yield* invalid("the table does not exist (create it with a migration first)")
    const types = new Map(described.map(({ column, type }) => [column, type]))
    const typeOf = (column: string) => {
      const type = types.get(column)
      return type === undefined ? Effect.fail(invalid(`the table has no column "${column}"`)) : Effect.succeed(type)
    }
    for (const [, column] of table.columns) yield* typeOf(column)
    if (!textTypes.has(yield* typeOf(table.idColumn))) {
      return yield* invalid(`the id column "${table.idColumn}" must be a text column (text or varchar)`)
    }
    if (!integerTypes.has(yield* typeOf(table.versionColumn))) {
      return yield* invalid(`the version column "${table.versionColumn}" must be an integer column`)
    }
    const timeKind = (column: string) =>
      Effect.flatMap(typeOf(column), (type): Effect.Effect<TimeKind, InvalidOwnerTable> =>
        integerTypes.has(type)
          ? Effect.succeed("millis")
          : timestampTypes.has(type)
          ? Effect.succeed("timestamp")
          : Effect.fail(invalid(`column "${column}" must be a timestamp or a bigint of epoch milliseconds`)))
    const softDelete = table.softDeleteColumn === undefined
      ? undefined
      : { column: table.softDeleteColumn, kind: yield* timeKind(table.softDeleteColumn) }
    const updatedAt = table.updatedAtColumn === undefined
      ? undefined
      : { column: table.updatedAtColumn, kind: yield* timeKind(table.updatedAtColumn) }
    const unique = yield* sql`SELECT 1 FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = ${table.tableName}::regclass AND i.indisunique AND i.indnkeyatts = 1
        AND i.indpred IS NULL AND a.attname = ${table.idColumn}`
    if (unique.length === 0) {
      return yield* invalid(`the id column "${table.idColumn}" needs a primary key or a unique index of its own`)
    }

    // The id column's collation, for comparing a tombstone's id (bytewise, "C") with the owner's ids by the
    // column's own collation, so that its unique index serves the comparison.
    const idCollation = described.find(({ column }) => column === table.idColumn)?.collation ?? `"default"`
    const owner = sql(table.tableName)
    const tombstones = sql(tables.tombstones)
    const col = (column: string) => `t.${escape(column)}`
    const millisOf = (time: { readonly column: string; readonly kind: TimeKind }) =>
      time.kind === "millis" ? col(time.column) : `(extract(epoch from ${col(time.column)}) * 1000)::int8`
    // the rows of one write share their time: its text is made once
    let isoMillis = Number.NaN
    let iso = ""
    const timeValue = (kind: TimeKind, millis: number | null) => {
      if (millis === null || kind === "millis") return millis
      if (millis !== isoMillis) {
        iso = new Date(millis).toISOString()
        isoMillis = millis
      }
      return iso
    }
    const payloadExpression = Arr.chunksOf(table.columns, fieldsPerCall)
      .map((chunk) =>
        `jsonb_build_object(${chunk.map(([field, column]) => `${quoteLiteral(field)}, ${col(column)}`).join(", ")})`
      )
      .join(" || ")
    const idText = `${col(table.idColumn)}::text`
    /** The owner's ids, and the tombstones' ids, in the id column's collation: the order full sync pages in. */
    const idOrdered = `${idText} COLLATE ${idCollation}`
    const tombstoneIdOrdered = `d.id COLLATE ${idCollation}`
    const stateExpression = softDelete === undefined
      ? `'live'`
      : `CASE WHEN ${col(softDelete.column)} IS NULL THEN 'live' ELSE 'softDeleted' END`
    const updatedAtExpression = updatedAt === undefined
      ? "(extract(epoch from now()) * 1000)::int8"
      : millisOf(updatedAt)
    const selected = sql.literal([
      `${quoteLiteral(table.entity)} AS entity`,
      `${idText} AS id`,
      `${col(table.versionColumn)}::int8 AS version`,
      `${stateExpression} AS state`,
      `${payloadExpression} AS payload`,
      `${updatedAtExpression} AS "updatedAt"`,
      `${softDelete === undefined ? "NULL::int8" : millisOf(softDelete)} AS "deletedAt"`
    ].join(", "))
    const tombstoneSelected = sql.literal(
      `d.entity, d.id, d.version, 'deleted' AS state, NULL::jsonb AS payload, d.deleted_at AS "updatedAt", d.deleted_at AS "deletedAt"`
    )
    /**
     * The tombstones of `ids` (an array), each with its `ctid` as `tid`, found by one index probe per id in
     * id order ("C", the index's order) and locked by its probe when `lock` is given: a lateral subquery the
     * planner keeps as it is. A lookup by `id = ANY` read every tombstone of the entity on a table never
     * analyzed (20,000 tombstones: 40,002 rows read for a create of 100).
     */
    const tombstonesOf = (ids: Ids, lock: string, unless = "") =>
      sql`(SELECT DISTINCT id COLLATE "C" AS id FROM unnest(${ids}::text[]) AS r(id) ORDER BY 1) AS r
        CROSS JOIN LATERAL (SELECT d.ctid AS tid, d.* FROM ${tombstones} AS d
          WHERE d.entity = ${table.entity} AND d.id = r.id ${sql.literal(unless)} OFFSET 0 ${sql.literal(lock)}) AS d`
    /**
     * The owner's rows of `ids` (an array), found by one index probe per id, as `tombstonesOf` finds the
     * tombstones: as `= ANY`, a cached plan made while the table was small (or never analyzed) reads the
     * whole table for every create of the batch (7,000 rows read for a create of 100 on a table of 7,000).
     */
    const rowsOf = (ids: Ids) =>
      sql`unnest(${ids}::text[]) AS k(id)
        CROSS JOIN LATERAL (SELECT 1 FROM ${owner} t WHERE ${sql.literal(idText)} = k.id OFFSET 0) AS hit`
    /**
     * Deletes the tombstones of `ids` (where `when` holds), each locked first in id order; returns their ids
     * and versions. Deleting by `ctid` is sound because a tombstone is only inserted and deleted, never
     * updated: the row a probe locked is the very row the statement sees.
     */
    const deleteTombstonesOf = (
      ids: Ids,
      when: Statement.Fragment = sql.literal("TRUE")
    ) =>
      sql`DELETE FROM ${tombstones} WHERE ctid = ANY(ARRAY(SELECT d.tid FROM ${tombstonesOf(ids, "FOR UPDATE")}))
        AND ${when} RETURNING id, version`
    const decode = decodeRows(Row, table.tableName)
    const decodeCreated = decodeRows(Created, table.tableName)

    /** The columns entity-sync writes for a row, by column name, as `jsonb_populate_record` reads them. */
    const record = (
      row: { readonly id: string; readonly payload: Schema.Json | null; readonly version?: number },
      at: number
    ) => {
      const columns: Record<string, Schema.Json> = {}
      const { payload } = row
      const fields = isJsonObject(payload) ? payload : undefined
      for (const [field, column] of table.columns) {
        columns[column] = fields !== undefined && Object.hasOwn(fields, field) ? fields[field] ?? null : null
      }
      // the row's id is the entity's, whatever the payload holds (the stores read and write by it)
      columns[table.idColumn] = row.id
      if (row.version !== undefined) columns[table.versionColumn] = row.version
      if (updatedAt !== undefined) columns[updatedAt.column] = timeValue(updatedAt.kind, at)
      return columns
    }
    const writtenColumns = [
      ...table.columns.map(([, column]) => column),
      table.versionColumn,
      ...(updatedAt === undefined ? [] : [updatedAt.column]),
      ...(softDelete === undefined ? [] : [softDelete.column])
    ]
    const columnList = sql.literal(writtenColumns.map(escape).join(", "))
    const fromRecord = sql.literal(writtenColumns.map((column) => `r.${escape(column)}`).join(", "))
    const setFromRecord = sql.literal(
      writtenColumns.map((column) => `${escape(column)} = r.${escape(column)}`).join(", ")
    )
    const rowTypeText = `NULL::${escapeQualified(table.tableName)}`
    const rowType = sql.literal(rowTypeText)
    /** `columns` set from the record of the row's id in the object `records` of the statement's `p`. */
    const setFromRecordAt = (columns: ReadonlyArray<string>) =>
      `(${columns.join(", ")}) = (SELECT ${
        columns.map((c) => `r.${c}`).join(", ")
      } FROM jsonb_populate_record(${rowTypeText}, (SELECT records FROM p) -> ${idText}) AS r)`
    const setFromItsRecord = sql.literal(setFromRecordAt(writtenColumns.map(escape)))
    const idColumn = sql(table.idColumn)
    const versionColumn = sql(table.versionColumn)

    const getMany = (_entity: string, ids: ReadonlyArray<string>, lock?: Lock) =>
      ids.length === 0 ? Effect.succeed([]) : sql`WITH o AS (SELECT ${selected} FROM ${owner} t
          WHERE ${sql.literal(idText)} = ANY(${ids}) ORDER BY ${sql.literal(idOrdered)} ${
        sql.literal(lockClause(lock))
      }),
        d AS (SELECT ${tombstoneSelected} FROM ${
        tombstonesOf(ids, lockClause(lock), `AND NOT EXISTS (SELECT 1 FROM o WHERE o.id = ${tombstoneIdOrdered})`)
      })
        SELECT * FROM o UNION ALL SELECT * FROM d`.pipe(Effect.flatMap(decode))

    const get = (entity: string, id: string, lock?: Lock) =>
      Effect.map(getMany(entity, [id], lock), (rows) => rows[0] ?? null)

    /** A live or soft-deleted row's columns, as written by an update. */
    const liveRecord = (row: SourceRow) => {
      const values = record(row, row.updatedAt)
      if (softDelete !== undefined) values[softDelete.column] = timeValue(softDelete.kind, row.deletedAt)
      return values
    }

    // One statement for all the rows, each over the version one below its own; looked up by their ids in the
    // index, each reading its record at its id (see `save`).
    const updateMany = (rows: ReadonlyArray<SourceRow>) =>
      rows.length === 0 ?
        Effect.succeed(0) :
        sql`WITH p AS (SELECT ${
          JSON.stringify(Object.fromEntries(rows.map((row) => [row.id, liveRecord(row)])))
        }::jsonb AS records)
        UPDATE ${owner} AS t SET ${setFromItsRecord}
        WHERE ${sql.literal(idText)} = ANY(${rows.map((row) => row.id)})
          AND t.${versionColumn} = ((SELECT records FROM p) -> ${
          sql.literal(idText)
        } ->> ${table.versionColumn})::int8 - 1
        RETURNING 1`.pipe(Effect.map((written) => written.length))

    const putLive = (row: SourceRow, previousVersion: number | null) => {
      const json = JSON.stringify(liveRecord(row))
      // An existing row is updated where its version is still the one the writer read; a new row (or one
      // re-created over a tombstone) is inserted and its tombstone removed.
      return previousVersion !== null
        ? sql`UPDATE ${owner} AS t SET ${setFromRecord}
            FROM jsonb_populate_record(${rowType}, ${json}::jsonb) AS r
            WHERE t.${idColumn} = ${row.id} AND t.${versionColumn} = ${previousVersion}
            RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0))
        : sql`INSERT INTO ${owner} (${columnList})
            SELECT ${fromRecord} FROM jsonb_populate_record(${rowType}, ${json}::jsonb) AS r
            WHERE NOT EXISTS (SELECT 1 FROM ${tombstones} WHERE entity = ${table.entity} AND id = ${row.id})
            ON CONFLICT (${idColumn}) DO NOTHING
            RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0))
    }

    // The owner's row goes; the tombstone keeps its version (R4). The row was read under a lock by this
    // transaction, or already removed by the owner's own statement in it (`track`).
    const putDeleted = (row: SourceRow, previousVersion: number | null) =>
      sql`WITH gone AS (DELETE FROM ${owner} AS t
          WHERE t.${idColumn} = ${row.id} AND t.${versionColumn} = ${previousVersion ?? 0} RETURNING 1)
        INSERT INTO ${tombstones} (entity, id, version, deleted_at)
        SELECT ${table.entity}, ${row.id}, ${row.version}, ${row.deletedAt ?? row.updatedAt}
        WHERE EXISTS (SELECT 1 FROM gone) OR NOT EXISTS (SELECT 1 FROM ${owner} AS t WHERE t.${idColumn} = ${row.id})
        ON CONFLICT (entity, id) DO NOTHING
        RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0))

    /** The written columns of a created row, live at the version after its tombstone's (`tombstoneVersion`). */
    const createdColumns = (tombstoneVersion: string) =>
      sql.literal(
        writtenColumns.map((column) =>
          column === table.versionColumn
            ? `coalesce(${tombstoneVersion}, 0) + 1`
            : softDelete !== undefined && column === softDelete.column
            ? "NULL"
            : `r.${escape(column)}`
        ).join(", ")
      )
    const createdFromGone = createdColumns("gone.version")
    const createdFromTomb = createdColumns("tomb.version")
    const createdFromItsTomb = createdColumns("(SELECT version FROM tomb)")

    // One statement: rows re-created over a tombstone continue its version; a live or soft-deleted row is
    // left as it is and missing from RETURNING.
    const insertNew = (rows: Arr.NonEmptyReadonlyArray<NewSourceRow>) => {
      const records = Arr.sort(rows, byId).map((row) => record({ id: row.id, payload: row.payload }, row.updatedAt))
      const ids = rows.map((row) => row.id)
      return sql`WITH gone AS (${deleteTombstonesOf(ids)})
        INSERT INTO ${owner} AS t (${columnList})
        SELECT ${createdFromGone}
        FROM jsonb_populate_recordset(${rowType}, ${JSON.stringify(records)}::jsonb) WITH ORDINALITY AS r
        LEFT JOIN gone ON gone.id = r.${idColumn}::text COLLATE "C"
        ORDER BY r.ordinality
        ON CONFLICT (${idColumn}) DO NOTHING
        RETURNING ${sql.literal(idText)} AS id, t.${versionColumn}::int8 AS version`.pipe(Effect.flatMap(decodeCreated))
    }

    // One statement and no lock: the rows are inserted only when no row of their ids is visible (a row a
    // concurrent hard delete is removing still is, and goes to `create`'s locked path, which then sees its
    // tombstone); re-created over a committed tombstone, a row continues its version and the tombstone goes,
    // only when every row was inserted. Rows are inserted in id order, as the locked path locks them. One
    // row has a statement of its own that looks its id up by equality: a plan PostgreSQL keeps for a prepared
    // statement made while the table was small reads the index for that, where for a list of ids (`= ANY`)
    // it scans the table, and goes on scanning it as it grows (a single create is what a busy service sends
    // most).
    const insertOneStatement = compileOnce<[id: string, record: string], object>(
      sql,
      (id, json) =>
        sql`WITH tomb AS (SELECT version FROM ${tombstones} WHERE entity = ${table.entity} AND id = ${id}),
        created AS (INSERT INTO ${owner} AS t (${columnList})
          SELECT ${createdFromItsTomb}
          FROM jsonb_populate_record(${rowType}, ${json}::jsonb) AS r
          WHERE NOT EXISTS (SELECT 1 FROM ${owner} t WHERE ${sql.literal(idText)} = ${id})
          ON CONFLICT (${idColumn}) DO NOTHING
          RETURNING ${sql.literal(idText)} AS id, t.${versionColumn}::int8 AS version),
        gone AS (DELETE FROM ${tombstones} WHERE entity = ${table.entity} AND id = (SELECT id COLLATE "C" FROM created))
        SELECT id, version FROM created`
    )
    const insertManyStatement = compileOnce<[ids: ReadonlyArray<string>, records: string, count: number], object>(
      sql,
      (ids, json, count) =>
        sql`WITH tomb AS (SELECT d.id, d.version FROM ${tombstonesOf(ids, "")}),
        created AS (INSERT INTO ${owner} AS t (${columnList})
          SELECT ${createdFromTomb}
          FROM jsonb_populate_recordset(${rowType}, ${json}::jsonb) WITH ORDINALITY AS r
          LEFT JOIN tomb ON tomb.id = r.${idColumn}::text COLLATE "C"
          WHERE NOT EXISTS (SELECT 1 FROM ${rowsOf(ids)})
          ORDER BY r.ordinality
          ON CONFLICT (${idColumn}) DO NOTHING
          RETURNING ${sql.literal(idText)} AS id, t.${versionColumn}::int8 AS version),
        gone AS (${
          deleteTombstonesOf(
            sql.literal("ARRAY(SELECT id FROM created)"),
            sql`(SELECT count(*) FROM created) = ${count}`
          )
        })
        SELECT id, version FROM created`
    )
    const insertAbsent = (rows: Arr.NonEmptyReadonlyArray<NewSourceRow>) => {
      const [first] = rows
      const inserted = rows.length === 1
        ? insertOneStatement(first.id, JSON.stringify(record(first, first.updatedAt)))
        : insertManyStatement(
          rows.map((row) => row.id),
          JSON.stringify(Arr.sort(rows, byId).map((row) => record(row, row.updatedAt))),
          rows.length
        )
      return Effect.flatMap(inserted, decodeCreated)
    }
    // Rows `insertAbsent` wrote when it did not write them all (a concurrent create of one of the ids
    // committed while it ran): taken out again, in this transaction, before the locked path runs.
    const removeInserted = (ids: ReadonlyArray<string>) =>
      sql`DELETE FROM ${owner} t WHERE ${sql.literal(idText)} = ANY(${ids})`

    const lockExisting = (ids: ReadonlyArray<string>) =>
      sql`SELECT 1 FROM ${owner} t WHERE ${sql.literal(idText)} = ANY(${ids})
        ORDER BY ${sql.literal(idText)} COLLATE "C" FOR UPDATE`

    const create = (rows: ReadonlyArray<NewSourceRow>) => {
      if (!Arr.isReadonlyArrayNonEmpty(rows)) return Effect.succeed([])
      const seen = new Set<string>()
      const repeated = rows.find((row) => seen.size === seen.add(row.id).size)
      if (repeated !== undefined) return Effect.fail(new EntityExists({ entity: table.entity, entityId: repeated.id }))
      const written = (created: ReadonlyArray<{ readonly id: string; readonly version: number }>) => {
        const versions = new Map(created.map((row) => [row.id, row.version]))
        const rowsWritten: Array<SourceRow> = []
        for (const row of rows) {
          const version = versions.get(row.id)
          if (version === undefined) return Effect.fail(new EntityExists({ entity: table.entity, entityId: row.id }))
          rowsWritten.push(createdRow(row, version))
        }
        return Effect.succeed(rowsWritten)
      }
      // The existing rows of the ids are locked first: a create that waits on a concurrent hard delete then
      // reads the tombstone it leaves in a statement of its own (a later snapshot), and continues its
      // version (R4) instead of starting again at 1. A savepoint, so that nothing is written when one of
      // the rows exists.
      const locked = () =>
        sql.withTransaction(
          Effect.andThen(lockExisting(rows.map((row) => row.id)), Effect.flatMap(insertNew(rows), written))
        )
      // New rows, the common case, need neither: `insertAbsent` writes them all or none, or (having lost a
      // race to a concurrent create) some, which go again before the locked path reports the id that exists.
      return Effect.flatMap(insertAbsent(rows), (created) =>
        created.length === rows.length
          ? written(created)
          : created.length === 0
          ? locked()
          : Effect.andThen(removeInserted(created.map((row) => row.id)), locked()))
    }

    // The columns a save compares and writes: the payload's, the version over the one it locked, the time.
    const payloadColumns = table.columns.map(([, column]) => escape(column))
    const payloadDiffers = sql.literal(
      `(${payloadColumns.map((c) => `t.${c}::text`).join(", ")}) IS DISTINCT FROM (${
        payloadColumns.map((c) => `r.${c}::text`).join(", ")
      })`
    )
    // What a save tells of a row (see `Save`): as it exists, or as the update wrote it, over the version below.
    const reportedColumns = (version: string, state: string, written?: string) =>
      sql.literal([
        `${quoteLiteral(table.entity)}::text AS entity`,
        `${idText} AS id`,
        `${version} AS version`,
        `${state} AS state`,
        `${updatedAtExpression} AS "updatedAt"`,
        ...(written === undefined ? [] : [`${written} AS written`])
      ].join(", "))
    const versionText = `${col(table.versionColumn)}::int8`
    const foundColumns = reportedColumns(versionText, stateExpression)
    // The payload's columns as saved and the time, from the row's record as the lock read it (`l`, by
    // position); the version one over the locked one.
    const savedColumns = [...payloadColumns, ...(updatedAt === undefined ? [] : [escape(updatedAt.column)])]
    const savedFromRecord = sql.literal(savedColumns.map((c, i) => `r.${c} AS saved_${i}`).join(", "))
    const setSaved = sql.literal(
      `(${savedColumns.join(", ")}) = (${savedColumns.map((_, i) => `l.saved_${i}`).join(", ")}), ${
        escape(table.versionColumn)
      } = ${col(table.versionColumn)} + 1`
    )
    const savedReturning = reportedColumns(`${versionText} - 1`, `'live'`, versionText)
    // The rows travel as one JSON object, each row's record at its id. When all of them exist, they are locked
    // in id order (as `getMany` locks) and compared in the database (a concurrent writer of a row is waited
    // for, and its committed row is the one compared and written over; a row it removed, a hard delete, is
    // then missing); otherwise none is locked, so that the absent ones are created before any row is locked,
    // and every save locks its rows in id order. Every scan of the table looks the rows up by their ids
    // (`= ANY`, once per scan) in the index, and each row reads its record by its id: joined with the records
    // instead, a table PostgreSQL has no statistics of (or only those of when it was small) is scanned in
    // full as it grows, or the ids are looked up again for every row. The update takes each row's record as
    // the lock read it. (It finds the rows by id, not by the `ctid` the lock returned: after the lock waited for
    // a concurrent writer, that version is not visible to the statement's snapshot, and the update skips it.)
    const saveExistingStatement = compileOnce<[records: string, ids: ReadonlyArray<string>, count: number], object>(
      sql,
      (records, ids, count) =>
        sql`WITH p AS (SELECT ${records}::jsonb AS records, ${ids}::text[] AS ids),
        found AS (SELECT ${foundColumns} FROM ${owner} t WHERE ${
          sql.literal(idText)
        } = ANY((SELECT ids FROM p)::text[])),
        l AS (SELECT ${foundColumns}, ${payloadDiffers} AS changed, ${savedFromRecord}
          FROM ${owner} t CROSS JOIN LATERAL jsonb_populate_record(${rowType}, (SELECT records FROM p) -> ${
          sql.literal(idText)
        }) AS r
          WHERE ${sql.literal(idText)} = ANY((SELECT ids FROM p)::text[]) AND (SELECT count(*) FROM found) = ${count}
          ORDER BY ${sql.literal(idOrdered)} FOR UPDATE OF t),
        every AS (SELECT count(*) = ${count} AND bool_and(state = 'live') AS ok FROM l),
        u AS (UPDATE ${owner} AS t SET ${setSaved}
          FROM l WHERE ${sql.literal(idText)} = ANY(ARRAY(SELECT id FROM l WHERE changed)) AND ${
          sql.literal(idText)
        } = l.id AND (SELECT ok FROM every)
          RETURNING ${savedReturning})
        SELECT * FROM u
        UNION ALL
        SELECT entity, id, version, state, "updatedAt", NULL FROM l WHERE NOT (changed AND (SELECT ok FROM every))
        UNION ALL
        SELECT entity, id, version, state, "updatedAt", NULL FROM found WHERE NOT EXISTS (SELECT 1 FROM l)`
    )
    const save = makeSave({
      create,
      withSavepoint: (effect) => sql.withTransaction(effect),
      saveExisting: (rows) =>
        Effect.flatMap(
          saveExistingStatement(
            JSON.stringify(Object.fromEntries(rows.map((row) => [row.id, record(row, row.updatedAt)]))),
            rows.map((row) => row.id),
            rows.length
          ),
          decodeLocked
        )
    })

    const page = (
      _entity: string,
      options: { readonly afterId: string | null; readonly limit: number; readonly ids?: ReadonlyArray<string> }
    ) => {
      const { afterId, ids, limit } = options
      if (ids !== undefined && ids.length === 0) return Effect.succeed([])
      const ownerWhere = [
        ...(afterId === null ? [] : [sql`${sql.literal(idOrdered)} > ${afterId}`]),
        ...(ids === undefined ? [] : [sql`${sql.literal(idText)} = ANY(${ids})`])
      ]
      // Both sides are ordered by id in the id column's collation, so that its index serves the owner's side
      // (a table of any size pages in index order), and limited before the union; a tombstone of an id the
      // owner's table holds again (a row the owner inserted itself) is not sent.
      const n = Math.max(0, Math.floor(limit))
      return sql`SELECT * FROM (
          (SELECT ${selected} FROM ${owner} t ${
        ownerWhere.length === 0 ? sql.literal("") : sql`WHERE ${sql.and(ownerWhere)}`
      } ORDER BY ${sql.literal(idOrdered)} LIMIT ${n})
          UNION ALL
          (SELECT ${tombstoneSelected} FROM ${tombstones} d WHERE ${
        sql.and([
          sql`d.entity = ${table.entity}`,
          ...(afterId === null ? [] : [sql`${sql.literal(tombstoneIdOrdered)} > ${afterId}`]),
          ...(ids === undefined ? [] : [sql`d.id = ANY(${ids})`]),
          sql`NOT EXISTS (SELECT 1 FROM ${owner} t WHERE t.${idColumn} = d.id COLLATE ${sql.literal(idCollation)})`
        ])
      } ORDER BY ${sql.literal(tombstoneIdOrdered)} LIMIT ${n})
        ) AS r ORDER BY r.id COLLATE ${sql.literal(idCollation)} LIMIT ${n}`.pipe(Effect.flatMap(decode))
    }

    return {
      get,
      put: (row, previousVersion) =>
        requireSoftDeleteColumn(
          table,
          [row],
          whileOpen("put", row.state === "deleted" ? putDeleted(row, previousVersion) : putLive(row, previousVersion))
        ),
      create: (rows) => whileOpen("create", create(rows)),
      save: (rows) => whileOpen("save", save(rows)),
      getMany,
      updateMany: (rows) => requireSoftDeleteColumn(table, rows, whileOpen("updateMany", updateMany(rows))),
      page
    }
  })

/** A new row as written, at `version`. */
const createdRow = (row: NewSourceRow, version: number): SourceRow => ({
  entity: row.entity,
  id: row.id,
  version,
  state: "live",
  payload: row.payload,
  updatedAt: row.updatedAt,
  deletedAt: null
})

const byId = (a: NewSourceRow, b: NewSourceRow) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** A double-quoted identifier (the declaration's names are already checked to be identifiers). */
const escape = (name: string) => `"${name.replaceAll(`"`, `""`)}"`

/** A possibly schema-qualified identifier, each part quoted. */
const escapeQualified = (name: string) => name.split(".").map(escape).join(".")

/** A string literal for SQL text the library builds (payload field names). */
const quoteLiteral = (text: string) => `'${text.replaceAll(`'`, `''`)}'`
