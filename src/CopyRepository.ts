/**
 * The consumer-side copies of entities: a guarded upsert by version in one step (R4, R8), tombstones for
 * hard deletes, soft deletes kept with `deletedAt` (R7). It has no way to emit events. A copy of a
 * ledger-only subscription (`keepPayload: false`) keeps no payload, only what the sync rules need.
 *
 * @since 0.1.0
 */
import { Context, type Effect, type Schema } from "effect"
import type { SqlError } from "effect/sql"
import type { EntityRef } from "./Errors.ts"

/** The state of a copy. A `deleted` copy is a tombstone: it keeps only its version. */
export type CopyState = "live" | "softDeleted" | "deleted"

/** A copy of an entity. Times are epoch milliseconds. */
export interface CopyRow {
  readonly entity: string
  readonly id: string
  readonly version: number
  readonly state: CopyState
  /**
   * The encoded payload; null for a tombstone, and for every copy of a ledger-only subscription
   * (`Subscription.subscribe(contract, { keepPayload: false })`), whose handler keeps the data itself.
   */
  readonly payload: Schema.Json | null
  /**
   * A copy that keeps no payload (a ledger row) keeps the ids its dependency fields hold instead, by field
   * (`{ companyId: "c-1" }`; fields holding no id are left out), so that a hard delete of an entity it
   * references still waits for it (`referencing`, R5). Absent when the payload is kept (it holds them).
   */
  readonly references?: Readonly<Record<string, string>>
  readonly deletedAt: number | null
  readonly syncedAt: number
  /** The message that produced this version. */
  readonly messageId: string
}

/** A copy of a ledger-only subscription: entity, id, version, state and times, no payload. */
export interface LedgerRow extends CopyRow {
  readonly payload: null
}

/**
 * How the version guard compares: `newer` (R4), `newerOrEqual` for force-sync events (R8), `any` for a
 * reset (the owner repairs a copy that is ahead of it).
 */
export type Guard = "newer" | "newerOrEqual" | "any"

/**
 * The version guard: whether a copy at `version` may replace the current copy at `currentVersion` under
 * `guard`. Where there is no copy yet, anything may be written. The memory store and the consumer use this;
 * the PostgreSQL store applies the same rule in its upsert statement.
 */
export const passesGuard = (guard: Guard, version: number, currentVersion: number): boolean =>
  guard === "any" || (guard === "newer" ? version > currentVersion : version >= currentVersion)

/**
 * A row lock taken by `get` inside a transaction: the consumer locks the copy it applies `forUpdate` and
 * the copies it depends on `forShare`, so a dependency check and a concurrent delete of that dependency
 * cannot both pass (no write skew under READ COMMITTED).
 */
export type Lock = "forShare" | "forUpdate"

/** The copies held by one consumer service. */
export class CopyRepository extends Context.Service<CopyRepository, {
  readonly get: (entity: string, id: string, lock?: Lock) => Effect.Effect<CopyRow | null, SqlError.SqlError>
  /**
   * Writes `row` only if its version passes the guard against the current copy (or there is none);
   * returns whether it was written. One statement: no read-then-write race.
   */
  readonly upsert: (row: CopyRow, guard: Guard) => Effect.Effect<boolean, SqlError.SqlError>
  /**
   * The copies of `refs` that exist, in (entity, id) order, each locked as `lock` says; locks are taken in
   * that order, so two transactions locking overlapping sets cannot deadlock on them.
   */
  readonly getMany: (refs: ReadonlyArray<EntityRef>, lock?: Lock) => Effect.Effect<
    ReadonlyArray<CopyRow>,
    SqlError.SqlError
  >
  /**
   * `upsert` of rows of distinct copies in one statement, each with its own guard; returns how many were
   * written.
   */
  readonly upsertMany: (
    rows: ReadonlyArray<{ readonly row: CopyRow; readonly guard: Guard }>
  ) => Effect.Effect<number, SqlError.SqlError>
  /** Copies of an entity (tombstones included), by id. */
  readonly list: (entity: string) => Effect.Effect<ReadonlyArray<CopyRow>, SqlError.SqlError>
  /**
   * Ids of the copies of `entity` that are not tombstones and whose payload `field` equals `id` (for a copy
   * without payload: whose `references` hold `id` at `field`).
   */
  readonly referencing: (entity: string, field: string, id: string) => Effect.Effect<
    ReadonlyArray<string>,
    SqlError.SqlError
  >
}>()("entity-sync/CopyRepository") {}
