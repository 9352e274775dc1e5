/**
 * What both owner-table stores refuse before writing: a soft delete (R7) of an entity whose owner table
 * declares no soft-delete column — a defect in the owner's code that names the missing declaration.
 *
 * @since 0.2.0
 */
import { Effect } from "effect"
import type { CopyState } from "../CopyRepository.ts"
import type { OwnerTable } from "../OwnerTable.ts"

/** `write`, unless one of `rows` is soft-deleted and `table` has no soft-delete column: then a defect. */
export const requireSoftDeleteColumn = <A, E, R>(
  table: OwnerTable,
  rows: ReadonlyArray<{ readonly id: string; readonly state: CopyState }>,
  write: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => {
  const soft = table.softDeleteColumn === undefined ? rows.find((row) => row.state === "softDeleted") : undefined
  return soft === undefined ? write : Effect.die(
    new Error(
      `${table.entity}:${soft.id} cannot be soft-deleted: its owner table ${table.tableName} has no soft-delete ` +
        `column (declare softDeleteColumn)`
    )
  )
}
