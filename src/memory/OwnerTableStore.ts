/**
 * The memory store of one owner table (see `OwnerTable`): rows held column by column, as the owner's table
 * holds them, with tombstones for hard-deleted entities, in the service's `MemoryDatabase`, so they commit
 * or roll back with the outbox. It behaves as the PostgreSQL store does; writes run only inside an open
 * outbox transaction (R2).
 *
 * @since 0.2.0
 */
import { Effect, type Schema } from "effect"
import { EntityExists } from "../Errors.ts"
import { whileOpen } from "../internal/OutboxTransaction.ts"
import { sameJson } from "../internal/SameJson.ts"
import { requireSoftDeleteColumn } from "../internal/SoftDeleteColumn.ts"
import type { OwnerTable } from "../OwnerTable.ts"
import type { NewSourceRow, SavedRow, SourceRepository, SourceRow } from "../SourceRepository.ts"
import { MemoryDatabase } from "./MemoryDatabase.ts"

/** A row of the owner table: its id (the key it is stored under), its columns, and its time of writing. */
interface StoredRow {
  readonly id: string
  readonly columns: Readonly<Record<string, Schema.Json>>
  readonly updatedAt: number
}

interface Tombstone {
  readonly id: string
  readonly version: number
  readonly deletedAt: number
}

const byId = (a: SourceRow, b: SourceRow) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** Makes the memory store of `table` on the current `MemoryDatabase`. */
export const make = (table: OwnerTable): Effect.Effect<SourceRepository["Service"], never, MemoryDatabase> =>
  Effect.gen(function*() {
    const db = yield* MemoryDatabase
    const rows = db.table<StoredRow>()
    const tombstones = db.table<Tombstone>()

    const columnsOf = (id: string, payload: Schema.Json | null, version: number, deletedAt: number | null) => {
      const fields = new Map(payload !== null && typeof payload === "object" ? Object.entries(payload) : [])
      const columns: Record<string, Schema.Json> = {}
      for (const [field, column] of table.columns) columns[column] = fields.get(field) ?? null
      // the row's id is the entity's, whatever the payload holds (as on PostgreSQL)
      columns[table.idColumn] = id
      columns[table.versionColumn] = version
      if (table.softDeleteColumn !== undefined) columns[table.softDeleteColumn] = deletedAt
      return columns
    }

    /** The payload the table's columns hold. */
    const payloadOf = (columns: Readonly<Record<string, Schema.Json>>) => {
      const payload: Record<string, Schema.Json> = {}
      for (const [field, column] of table.columns) payload[field] = columns[column] ?? null
      return payload
    }

    const toSourceRow = (stored: StoredRow): SourceRow => {
      const payload = payloadOf(stored.columns)
      const version = stored.columns[table.versionColumn]
      const deletedAt = table.softDeleteColumn === undefined ? null : stored.columns[table.softDeleteColumn]
      return {
        entity: table.entity,
        id: stored.id,
        version: typeof version === "number" ? version : 0,
        state: typeof deletedAt === "number" ? "softDeleted" : "live",
        payload,
        updatedAt: stored.updatedAt,
        deletedAt: typeof deletedAt === "number" ? deletedAt : null
      }
    }

    const tombstoneRow = (tombstone: Tombstone): SourceRow => ({
      entity: table.entity,
      id: tombstone.id,
      version: tombstone.version,
      state: "deleted",
      payload: null,
      updatedAt: tombstone.deletedAt,
      deletedAt: tombstone.deletedAt
    })

    const read = (id: string): SourceRow | null => {
      const stored = rows.get(id)
      if (stored !== undefined) return toSourceRow(stored)
      const tombstone = tombstones.get(id)
      return tombstone === undefined ? null : tombstoneRow(tombstone)
    }

    const put = (row: SourceRow, previousVersion: number | null) =>
      db.run(() => {
        if ((read(row.id)?.version ?? null) !== previousVersion) return false
        if (row.state === "deleted") {
          rows.delete(row.id)
          tombstones.set(row.id, { id: row.id, version: row.version, deletedAt: row.deletedAt ?? row.updatedAt })
        } else {
          tombstones.delete(row.id)
          rows.set(row.id, {
            id: row.id,
            columns: columnsOf(row.id, row.payload, row.version, row.deletedAt),
            updatedAt: row.updatedAt
          })
        }
        return true
      })

    /** Writes a live row (created or updated), its tombstone gone. */
    const write = (row: SourceRow) => {
      tombstones.delete(row.id)
      rows.set(row.id, {
        id: row.id,
        columns: columnsOf(row.id, row.payload, row.version, null),
        updatedAt: row.updatedAt
      })
    }

    const create = (created: ReadonlyArray<NewSourceRow>) =>
      Effect.flatMap(
        db.run((): ReadonlyArray<SourceRow> | EntityExists => {
          const written: Array<SourceRow> = []
          const seen = new Set<string>()
          for (const row of created) {
            if (seen.has(row.id) || rows.get(row.id) !== undefined) {
              return new EntityExists({ entity: table.entity, entityId: row.id })
            }
            seen.add(row.id)
            const version = (tombstones.get(row.id)?.version ?? 0) + 1
            written.push({ ...row, entity: table.entity, version, state: "live", deletedAt: null })
          }
          written.forEach(write)
          return written
        }),
        (result) => (result instanceof EntityExists ? Effect.fail(result) : Effect.succeed(result))
      )

    // Like `create`, in one step: a live row whose columns would not change is left as it is.
    const save = (saved: ReadonlyArray<NewSourceRow>) =>
      Effect.flatMap(
        db.run((): ReadonlyArray<SavedRow> | EntityExists => {
          const result: Array<SavedRow> = []
          const seen = new Set<string>()
          for (const row of saved) {
            const stored = rows.get(row.id)
            const current = stored === undefined ? undefined : toSourceRow(stored)
            if (seen.has(row.id) || current?.state === "softDeleted") {
              return new EntityExists({ entity: table.entity, entityId: row.id })
            }
            seen.add(row.id)
            const version = (current?.version ?? tombstones.get(row.id)?.version ?? 0) + 1
            const next: SourceRow = { ...row, entity: table.entity, version, state: "live", deletedAt: null }
            if (current === undefined) {
              result.push({ row: next, written: "created" })
              continue
            }
            const columns = payloadOf(columnsOf(row.id, row.payload, version, null))
            const unchanged = current.payload !== null && sameJson(current.payload, columns)
            result.push(unchanged ? { row: current, written: null } : { row: next, written: "updated" })
          }
          for (const { row, written } of result) if (written !== null) write(row)
          return result
        }),
        (result) => (result instanceof EntityExists ? Effect.fail(result) : Effect.succeed(result))
      )

    const updateMany = (updated: ReadonlyArray<SourceRow>) =>
      db.run(() => {
        const current = updated.filter((row) => read(row.id)?.version === row.version - 1)
        for (const row of current) {
          rows.set(row.id, {
            id: row.id,
            columns: columnsOf(row.id, row.payload, row.version, row.deletedAt),
            updatedAt: row.updatedAt
          })
        }
        return current.length
      })

    return {
      get: (_entity, id) => db.run(() => read(id)),
      getMany: (_entity, ids) =>
        db.run(() =>
          ids.flatMap((id) => {
            const row = read(id)
            return row === null ? [] : [row]
          }).sort(byId)
        ),
      updateMany: (updated) => requireSoftDeleteColumn(table, updated, whileOpen("updateMany", updateMany(updated))),
      put: (row, previousVersion) => requireSoftDeleteColumn(table, [row], whileOpen("put", put(row, previousVersion))),
      create: (created) => whileOpen("create", create(created)),
      save: (saved) => whileOpen("save", save(saved)),
      page: (_entity, { afterId, ids, limit }) =>
        db.run(() => {
          const only = ids === undefined ? undefined : new Set(ids)
          const keep = (id: string) => (afterId === null || id > afterId) && (only === undefined || only.has(id))
          // by the id each row is stored under, as `get` reads it
          return [...rows.values().map(toSourceRow), ...tombstones.values().map(tombstoneRow)]
            .filter((row) => keep(row.id))
            .sort(byId)
            .slice(0, Math.max(0, limit))
        })
    }
  })
