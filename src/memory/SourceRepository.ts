/**
 * The memory owner-side row store: entity rows in a `MemoryDatabase` table, so they commit or roll back
 * together with the outbox events appended in the same transaction; its writes run only inside an open
 * outbox transaction (R2).
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { EntityExists } from "../Errors.ts"
import { whileOpen } from "../internal/OutboxTransaction.ts"
import { sameJson } from "../internal/SameJson.ts"
import type { OwnerTable } from "../OwnerTable.ts"
import { type NewSourceRow, routed, type SavedRow, SourceRepository, type SourceRow } from "../SourceRepository.ts"
import { MemoryDatabase } from "./MemoryDatabase.ts"
import * as OwnerTableStore from "./OwnerTableStore.ts"

const keyOf = (entity: string, id: string) => JSON.stringify([entity, id])

const byId = (a: SourceRow, b: SourceRow) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** Makes a memory source repository on the current `MemoryDatabase`. */
export const make: Effect.Effect<SourceRepository["Service"], never, MemoryDatabase> = Effect.gen(function*() {
  const db = yield* MemoryDatabase
  const rows = db.table<SourceRow>()

  /** A row written live over the stored one (if any), with the version after it. */
  const liveOver = (row: NewSourceRow, current: SourceRow | undefined): SourceRow => ({
    entity: row.entity,
    id: row.id,
    version: (current?.version ?? 0) + 1,
    state: "live",
    payload: row.payload,
    updatedAt: row.updatedAt,
    deletedAt: null
  })

  // Checks every row before writing any, in one step of the database (one writer at a time).
  const create = (created: ReadonlyArray<NewSourceRow>) =>
    whileOpen(
      "create",
      Effect.flatMap(
        db.run((): ReadonlyArray<SourceRow> | EntityExists => {
          const written: Array<SourceRow> = []
          const seen = new Set<string>()
          for (const row of created) {
            const key = keyOf(row.entity, row.id)
            const current = rows.get(key)
            if (seen.has(key) || (current !== undefined && current.state !== "deleted")) {
              return new EntityExists({ entity: row.entity, entityId: row.id })
            }
            seen.add(key)
            written.push(liveOver(row, current))
          }
          for (const row of written) rows.set(keyOf(row.entity, row.id), row)
          return written
        }),
        (result) => (result instanceof EntityExists ? Effect.fail(result) : Effect.succeed(result))
      )
    )

  // Like `create`, in one step: a live row with an equal payload is left as it is.
  const save = (saved: ReadonlyArray<NewSourceRow>) =>
    whileOpen(
      "save",
      Effect.flatMap(
        db.run((): ReadonlyArray<SavedRow> | EntityExists => {
          const result: Array<SavedRow> = []
          const seen = new Set<string>()
          for (const row of saved) {
            const key = keyOf(row.entity, row.id)
            const current = rows.get(key)
            if (seen.has(key) || current?.state === "softDeleted") {
              return new EntityExists({ entity: row.entity, entityId: row.id })
            }
            seen.add(key)
            if (current?.state === "live" && current.payload !== null && sameJson(current.payload, row.payload)) {
              result.push({ row: current, written: null })
              continue
            }
            result.push({ row: liveOver(row, current), written: current?.state === "live" ? "updated" : "created" })
          }
          for (const { row, written } of result) if (written !== null) rows.set(keyOf(row.entity, row.id), row)
          return result
        }),
        (result) => (result instanceof EntityExists ? Effect.fail(result) : Effect.succeed(result))
      )
    )

  return SourceRepository.of({
    create,
    save,
    get: (entity, id) => db.run(() => rows.get(keyOf(entity, id)) ?? null),
    getMany: (entity, ids) =>
      db.run(() =>
        ids.flatMap((id) => {
          const row = rows.get(keyOf(entity, id))
          return row === undefined ? [] : [row]
        }).sort(byId)
      ),
    updateMany: (updated) =>
      whileOpen(
        "updateMany",
        db.run(() => {
          const current = updated.filter((row) => rows.get(keyOf(row.entity, row.id))?.version === row.version - 1)
          for (const row of current) rows.set(keyOf(row.entity, row.id), row)
          return current.length
        })
      ),
    put: (row, previousVersion) =>
      whileOpen(
        "put",
        db.run(() => {
          const key = keyOf(row.entity, row.id)
          if ((rows.get(key)?.version ?? null) !== previousVersion) return false
          rows.set(key, row)
          return true
        })
      ),
    page: (entity, { afterId, ids, limit }) =>
      db.run(() => {
        const only = ids === undefined ? undefined : new Set(ids)
        return rows
          .values()
          .filter((row) =>
            row.entity === entity && (afterId === null || row.id > afterId) && (only === undefined || only.has(row.id))
          )
          .sort(byId)
          .slice(0, Math.max(0, limit))
      })
  })
})

/**
 * The memory `SourceRepository`, keeping its rows in the service's `MemoryDatabase`: the entities of each
 * of `ownerTables` column by column as their table holds them (see `OwnerTable`), the others as documents.
 */
export const layer = (
  ownerTables: ReadonlyArray<OwnerTable> = []
): Layer.Layer<SourceRepository, never, MemoryDatabase> =>
  Layer.effect(
    SourceRepository,
    Effect.gen(function*() {
      const documents = yield* make
      const owned = yield* Effect.forEach(
        ownerTables,
        (table) => Effect.map(OwnerTableStore.make(table), (store) => [table.entity, store] as const)
      )
      return routed(documents, new Map(owned))
    })
  )
