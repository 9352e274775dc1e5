/**
 * The owner-side store of entities: one row per entity with its monotonic version (R4) and its state,
 * written in the same transaction as the outbox (R2). Typed, per-contract access with events is in
 * `Producer`; this is the row store its implementations provide. Its writes need the `OutboxTransaction`
 * (R2): nothing writes an owner row outside `Outbox.transaction`, and a transaction that has ended refuses.
 *
 * @since 0.1.0
 */
import { Array as Arr, Context, Effect, type Schema } from "effect"
import type { SqlError } from "effect/sql"
import type { CopyState, Lock } from "./CopyRepository.ts"
import type { EntityExists } from "./Errors.ts"
import type { OutboxTransaction } from "./internal/OutboxTransaction.ts"

/** An owner row. A `deleted` row is a tombstone that keeps the version so a re-create continues it. */
export interface SourceRow {
  readonly entity: string
  readonly id: string
  readonly version: number
  readonly state: CopyState
  /** The encoded payload; null for a tombstone. */
  readonly payload: Schema.Json | null
  readonly updatedAt: number
  readonly deletedAt: number | null
}

/** A row to create: `create` makes it live and gives it its version. */
export interface NewSourceRow {
  readonly entity: string
  readonly id: string
  /** The encoded payload. */
  readonly payload: Schema.Json
  readonly updatedAt: number
}

/** A row as `save` left it: `written` says whether it created or updated it, null when it was unchanged. */
export interface SavedRow {
  readonly row: SourceRow
  readonly written: "created" | "updated" | null
}

/** The owner's entity rows. */
export class SourceRepository extends Context.Service<SourceRepository, {
  /** Reads a row; inside a transaction, `lock` keeps concurrent writers of that entity waiting until commit. */
  readonly get: (entity: string, id: string, lock?: Lock) => Effect.Effect<SourceRow | null, SqlError.SqlError>
  /**
   * Writes a row if the stored version is still `previousVersion` (null: no row yet); returns whether it
   * wrote, so two writers that read the same version cannot both win. Only inside an open outbox
   * transaction (R2): it needs the `OutboxTransaction`, and dies before writing when that one has ended.
   */
  readonly put: (
    row: SourceRow,
    previousVersion: number | null
  ) => Effect.Effect<boolean, SqlError.SqlError, OutboxTransaction>
  /**
   * Reads the rows of `ids` that exist, tombstones included, in id order; inside a transaction, `lock` locks
   * them as `get` does, in id order, so two writers of overlapping sets do not deadlock.
   */
  readonly getMany: (
    entity: string,
    ids: ReadonlyArray<string>,
    lock?: Lock
  ) => Effect.Effect<ReadonlyArray<SourceRow>, SqlError.SqlError>
  /**
   * Writes changed live or soft-deleted rows of one entity type, each over the stored version one below its
   * own (the version its writer read under a lock), in one step; returns how many it wrote: fewer than
   * `rows` means that a row was written concurrently. Only inside an open outbox transaction, like `put`.
   */
  readonly updateMany: (
    rows: ReadonlyArray<SourceRow>
  ) => Effect.Effect<number, SqlError.SqlError, OutboxTransaction>
  /**
   * Creates live rows without reading them first: a new entity gets version 1, a tombstone (`deleted`) is
   * re-created with its version + 1. All or nothing: when a row of one of them is live or soft-deleted
   * (including one written concurrently), or an entity appears twice in `rows`, it fails with
   * `EntityExists` for the first such row in `rows` order and writes none of them. Returns the written rows
   * in `rows` order. Only inside an open outbox transaction, like `put`.
   */
  readonly create: (
    rows: ReadonlyArray<NewSourceRow>
  ) => Effect.Effect<ReadonlyArray<SourceRow>, EntityExists | SqlError.SqlError, OutboxTransaction>
  /**
   * Writes the new state of rows without reading them first (an upsert): a row that does not exist or is
   * deleted is created as `create` does; a live row whose payload differs is updated with its version + 1;
   * an equal one is left as it is. All or nothing: a soft-deleted row, or an entity twice in `rows`, fails
   * it with `EntityExists` for the first such row in `rows` order and writes none of them. Returns the rows
   * in `rows` order. Only inside an open outbox transaction, like `put`.
   */
  readonly save: (
    rows: ReadonlyArray<NewSourceRow>
  ) => Effect.Effect<ReadonlyArray<SavedRow>, EntityExists | SqlError.SqlError, OutboxTransaction>
  /**
   * A page of rows ordered by id, after `afterId` (keyset pagination), tombstones included; restricted to
   * `ids` when given.
   */
  readonly page: (
    entity: string,
    options: { readonly afterId: string | null; readonly limit: number; readonly ids?: ReadonlyArray<string> }
  ) => Effect.Effect<ReadonlyArray<SourceRow>, SqlError.SqlError>
}>()("entity-sync/SourceRepository") {}

/**
 * One source repository over several stores: the entities of each owner table (`stores`, by entity name)
 * in their own table, every other entity in `documents`, the library's document table. The stores layers
 * build it from their `ownerTables` option. A `create` of rows of several entities creates them store by
 * store; all or nothing holds within each store (and for the transaction as a whole when the failure is
 * not caught inside it).
 */
export const routed = (
  documents: SourceRepository["Service"],
  stores: ReadonlyMap<string, SourceRepository["Service"]>
): SourceRepository["Service"] => {
  if (stores.size === 0) return documents
  const storeOf = (entity: string) => stores.get(entity) ?? documents
  // Writes rows store by store: one call when they are all of one entity (the repositories' case).
  const byStore = <Row extends { readonly entity: string }, A, E, R>(
    rows: ReadonlyArray<Row>,
    write: (store: SourceRepository["Service"], rows: ReadonlyArray<Row>) => Effect.Effect<A, E, R>
  ): Effect.Effect<ReadonlyArray<A>, E, R> => {
    const entity = rows[0]?.entity
    return entity !== undefined && rows.every((row) => row.entity === entity)
      ? Effect.map(write(storeOf(entity), rows), (written) => [written])
      : Effect.forEach(
        Object.entries(Arr.groupBy(rows, (row) => row.entity)),
        ([entity, group]) => write(storeOf(entity), group)
      )
  }
  const keyOf = (row: { readonly entity: string; readonly id: string }) =>
    `${row.entity.length}:${row.entity}:${row.id}`
  // The rows of several stores' answers, in `rows` order.
  const inOrder = <A>(
    rows: ReadonlyArray<NewSourceRow>,
    groups: ReadonlyArray<ReadonlyArray<A>>,
    rowOf: (a: A) => SourceRow
  ): ReadonlyArray<A> => {
    if (groups.length === 1) return groups[0] ?? []
    const byKey = new Map(groups.flat().map((a) => [keyOf(rowOf(a)), a]))
    return rows.flatMap((row) => byKey.get(keyOf(row)) ?? [])
  }
  return SourceRepository.of({
    get: (entity, id, lock) => storeOf(entity).get(entity, id, lock),
    put: (row, previousVersion) => storeOf(row.entity).put(row, previousVersion),
    create: (rows) =>
      Effect.map(byStore(rows, (store, group) => store.create(group)), (groups) => inOrder(rows, groups, (row) => row)),
    save: (rows) =>
      Effect.map(byStore(rows, (store, group) => store.save(group)), (groups) => inOrder(rows, groups, (s) => s.row)),
    getMany: (entity, ids, lock) => storeOf(entity).getMany(entity, ids, lock),
    updateMany: (rows) =>
      Effect.map(
        byStore(rows, (store, group) => store.updateMany(group)),
        (written) => written.reduce((a, n) => a + n, 0)
      ),
    page: (entity, options) => storeOf(entity).page(entity, options)
  })
}
