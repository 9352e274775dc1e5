/**
 * The memory copy store: copies in a `MemoryDatabase` table with the version guard applied atomically,
 * tombstones kept as rows; ledger rows (no payload) as they are given.
 *
 * @since 0.1.0
 */
import { Effect, Layer, type Schema } from "effect"
import { CopyRepository, type CopyRow, type Guard, passesGuard } from "../CopyRepository.ts"
import { MemoryDatabase } from "./MemoryDatabase.ts"

const keyOf = (entity: string, id: string) => JSON.stringify([entity, id])

const byId = (a: CopyRow, b: CopyRow) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

const isJsonObject = (json: Schema.Json): json is Schema.JsonObject =>
  typeof json === "object" && json !== null && !Array.isArray(json)

/** Whether `row` passes `guard` against the current copy (`passesGuard`); anything passes where there is none. */
const passes = (row: CopyRow, guard: Guard, current: CopyRow | undefined) =>
  current === undefined || passesGuard(guard, row.version, current.version)

/** Makes a memory copy repository on the current `MemoryDatabase`. */
export const make: Effect.Effect<CopyRepository["Service"], never, MemoryDatabase> = Effect.gen(function*() {
  const db = yield* MemoryDatabase
  const copies = db.table<CopyRow>()

  const copiesOf = (entity: string) => copies.values().filter((row) => row.entity === entity).sort(byId)

  return CopyRepository.of({
    get: (entity, id) => db.run(() => copies.get(keyOf(entity, id)) ?? null),
    upsert: (row, guard) =>
      db.run(() => {
        const key = keyOf(row.entity, row.id)
        if (!passes(row, guard, copies.get(key))) return false
        copies.set(key, row)
        return true
      }),
    getMany: (refs) =>
      db.run(() =>
        refs.flatMap((ref) => copies.get(keyOf(ref.entity, ref.id)) ?? [])
          .filter((row, i, rows) => rows.indexOf(row) === i)
          .sort((a, b) => (a.entity < b.entity ? -1 : a.entity > b.entity ? 1 : byId(a, b)))
      ),
    upsertMany: (rows) =>
      db.run(() => {
        const keys = rows.map(({ row }) => keyOf(row.entity, row.id))
        if (new Set(keys).size < keys.length) throw new Error("upsertMany: a copy appears twice")
        let written = 0
        rows.forEach(({ guard, row }, i) => {
          if (!passes(row, guard, copies.get(keys[i]!))) return
          copies.set(keys[i]!, row)
          written++
        })
        return written
      }),
    list: (entity) => db.run(() => copiesOf(entity)),
    referencing: (entity, field, id) =>
      db.run(() =>
        copiesOf(entity)
          .filter((row) =>
            row.state !== "deleted" &&
            ((isJsonObject(row.payload) && row.payload[field] === id) || row.references?.[field] === id)
          )
          .map((row) => row.id)
      )
  })
})

/** The memory `CopyRepository`, keeping its copies in the service's `MemoryDatabase`. */
export const layer: Layer.Layer<CopyRepository, never, MemoryDatabase> = Layer.effect(CopyRepository, make)
