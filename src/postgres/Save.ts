/**
 * `SourceRepository.save` on the PostgreSQL stores, from two operations of each store: one that locks the
 * rows that exist and writes the changed ones, and the store's `create`; and the entity keys both use.
 *
 * @since 0.3.0
 */
import { Array as Arr, Effect, Schema } from "effect"
import type { SqlError } from "effect/sql"
import { EntityExists } from "../Errors.ts"
import type { NewSourceRow, SavedRow, SourceRow } from "../SourceRepository.ts"
import { decodeRows, Int8, NullableInt8, State } from "./Columns.ts"

/**
 * What a store's save statement tells of a row that exists: its state and version before the statement, the
 * version it wrote (null when it left the row as it was), and the row's time (read only when it was left).
 */
const Locked = Schema.Struct({
  entity: Schema.String,
  id: Schema.String,
  version: Int8,
  state: State,
  updatedAt: Int8,
  written: NullableInt8
})
type Locked = typeof Locked.Type

/** Decodes the result rows of a save statement. */
export const decodeLocked = decodeRows(Locked, "saved")

/** The statements a store's `save` runs. */
export interface SaveStatements {
  /**
   * When every row of `rows` exists (live, soft-deleted, and in the document store tombstones), locks them in
   * key order and — only when none is soft-deleted — writes those whose state differs (a tombstone of the
   * document store is re-created), each over the version it locked; otherwise locks none. Returns what it
   * found of each row that exists; absent rows are not in its result.
   */
  readonly saveExisting: (rows: Arr.NonEmptyReadonlyArray<NewSourceRow>) => Effect.Effect<
    ReadonlyArray<Locked>,
    SqlError.SqlError
  >
  /** The store's `create` (all or nothing). */
  readonly create: (
    rows: ReadonlyArray<NewSourceRow>
  ) => Effect.Effect<ReadonlyArray<SourceRow>, EntityExists | SqlError.SqlError>
  /** A savepoint around an effect, for all or nothing over several statements. */
  readonly withSavepoint: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E | SqlError.SqlError>
}

/** An unambiguous key of an entity, whatever its name and id contain. */
export const keyOf = (row: { readonly entity: string; readonly id: string }) =>
  `${row.entity.length}:${row.entity}:${row.id}`

/** The first row whose entity appeared earlier in `rows`, if any. */
export const firstRepeated = (rows: ReadonlyArray<NewSourceRow>): NewSourceRow | undefined => {
  const seen = new Set<string>()
  return rows.find((row) => seen.size === seen.add(keyOf(row)).size)
}

/** The row as saved, from what the statement found and wrote. */
const savedRow = (row: NewSourceRow, locked: Locked): SavedRow => ({
  row: {
    entity: row.entity,
    id: row.id,
    version: locked.written ?? locked.version,
    state: "live",
    payload: row.payload,
    updatedAt: locked.written === null ? locked.updatedAt : row.updatedAt,
    deletedAt: null
  },
  written: locked.written === null ? null : locked.state === "deleted" ? "created" : "updated"
})

/**
 * A store's `save`. When every row exists, `saveExisting` alone. Otherwise the absent rows are created first and all
 * of them saved then, inside a savepoint: no row is locked before the absent ones are created, so that every
 * save locks its rows in key order (and two saves cannot wait on each other). When a concurrent writer
 * created one of the absent rows meanwhile, the whole save runs once more, over it. (A row hard-deleted by a
 * concurrent writer after the statement found it is the exception: the rows locked by then stay locked.)
 */
export const makeSave = (statements: SaveStatements) => {
  const { create, saveExisting, withSavepoint } = statements
  const lockedByKey = (found: ReadonlyArray<Locked>) => new Map(found.map((locked) => [keyOf(locked), locked]))
  const save = (
    rows: ReadonlyArray<NewSourceRow>,
    retry: boolean
  ): Effect.Effect<ReadonlyArray<SavedRow>, EntityExists | SqlError.SqlError> => {
    if (!Arr.isReadonlyArrayNonEmpty(rows)) return Effect.succeed([])
    const repeated = firstRepeated(rows)
    if (repeated !== undefined) return Effect.fail(new EntityExists({ entity: repeated.entity, entityId: repeated.id }))
    return Effect.flatMap(saveExisting(rows), (found) => {
      const locked = lockedByKey(found)
      const saved: Array<SavedRow> = []
      const absent: Array<NewSourceRow> = []
      for (const row of rows) {
        const stored = locked.get(keyOf(row))
        if (stored === undefined) absent.push(row)
        else if (stored.state === "softDeleted") {
          return Effect.fail(new EntityExists({ entity: row.entity, entityId: row.id }))
        } else saved.push(savedRow(row, stored))
      }
      if (absent.length === 0) return Effect.succeed(saved)
      const createThenSave = Effect.gen(function*() {
        const created = new Map((yield* create(absent)).map((row) => [keyOf(row), row]))
        const stored = lockedByKey(yield* saveExisting(rows))
        return rows.flatMap((row): Array<SavedRow> => {
          const key = keyOf(row)
          const createdRow = created.get(key)
          if (createdRow !== undefined) return [{ row: createdRow, written: "created" }]
          const locked = stored.get(key)
          return locked === undefined ? [] : [savedRow(row, locked)]
        })
      })
      return withSavepoint(createThenSave).pipe(
        Effect.catchTag("EntityExists", (error) => retry ? save(rows, false) : Effect.fail(error))
      )
    })
  }
  return (rows: ReadonlyArray<NewSourceRow>) => save(rows, true)
}
