/**
 * The memory owner-side row store: entity rows in a `MemoryDatabase` table, so they commit or roll back
 * together with the outbox events appended in the same transaction.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { SourceRepository, type SourceRow } from "../SourceRepository.ts"
import { MemoryDatabase } from "./MemoryDatabase.ts"

const keyOf = (entity: string, id: string) => JSON.stringify([entity, id])

const byId = (a: SourceRow, b: SourceRow) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** Makes a memory source repository on the current `MemoryDatabase`. */
export const make: Effect.Effect<SourceRepository["Service"], never, MemoryDatabase> = Effect.gen(function* () {
  const db = yield* MemoryDatabase
  const rows = db.table<SourceRow>()

  return SourceRepository.of({
    get: (entity, id) => db.run(() => rows.get(keyOf(entity, id)) ?? null),
    put: (row, previousVersion) =>
      db.run(() => {
        const key = keyOf(row.entity, row.id)
        if ((rows.get(key)?.version ?? null) !== previousVersion) return false
        rows.set(key, row)
        return true
      }),
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

/** The memory `SourceRepository`, keeping its rows in the service's `MemoryDatabase`. */
export const layer: Layer.Layer<SourceRepository, never, MemoryDatabase> = Layer.effect(SourceRepository, make)
