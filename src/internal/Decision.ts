/**
 * What becomes of an event at the consumer: a duplicate (the inbox has seen its message), stale (the
 * version guard refuses it, R4 and R8), waiting for missing dependencies (R5), or applied. `decide` is pure;
 * the single-event and the batch paths both ask it, each gathering the facts it asks for in its own way.
 *
 * @since 0.1.0
 */
import type { Schema } from "effect"
import type { Mutable } from "effect/Types"
import { type CopyRow, type Guard, passesGuard } from "../CopyRepository.ts"
import type * as Envelope from "../Envelope.ts"
import type { EntityRef } from "../Errors.ts"

/**
 * The version guard of an event: force-sync events also replace an equal version (R8); a reset replaces
 * any version (the owner repairs a copy that is ahead of it).
 */
export const guardOf = (envelope: Envelope.Envelope): Guard =>
  envelope.reset === true ? "any" : envelope.forceSync ? "newerOrEqual" : "newer"

/** Whether the copy an event would replace refuses it (`CopyRepository.passesGuard` under `guardOf`). */
export const isStale = (envelope: Envelope.Envelope, current: CopyRow): boolean =>
  !passesGuard(guardOf(envelope), envelope.version, current.version)

/** Whether a dependency is missing: no copy of it, or a tombstone. */
export const isMissing = (copy: CopyRow | null | undefined): boolean =>
  copy === null || copy === undefined || copy.state === "deleted"

/**
 * The copy an event leaves behind, with its payload as the contract's schema shapes it (R6) — or, for a
 * ledger-only subscription, no payload and the `references` its dependency fields hold.
 */
export const copyOf = (
  envelope: Envelope.Envelope,
  kept: { readonly payload: Schema.Json | null; readonly ledgerReferences?: Readonly<Record<string, string>> },
  syncedAt: number
): CopyRow => {
  const row: Mutable<CopyRow> = {
    entity: envelope.entity,
    id: envelope.entityId,
    version: envelope.version,
    state: envelope.action === "deleted" ? "deleted" : envelope.action === "softDeleted" ? "softDeleted" : "live",
    payload: kept.payload,
    deletedAt: envelope.action === "deleted" || envelope.action === "softDeleted"
      ? Date.parse(envelope.occurredAt)
      : null,
    syncedAt,
    messageId: envelope.messageId
  }
  if (kept.ledgerReferences !== undefined) row.references = kept.ledgerReferences
  return row
}

/** What is known about an event so far. */
export interface Facts {
  /** The copy the event would replace; null when there is none. */
  readonly current: CopyRow | null
  /** The dependencies it misses (R5); undefined until asked. */
  readonly missing?: ReadonlyArray<EntityRef>
  /** Whether the inbox sees its message for the first time; undefined until asked. */
  readonly fresh?: boolean
}

/** A fact `decide` needs before it can decide: the missing dependencies, or whether the message is fresh. */
export type Question = "missing" | "fresh"

/** What `decide` says: ask for one more fact, or what becomes of the event. */
export type Decision =
  | { readonly _tag: "ask"; readonly question: Question }
  | { readonly _tag: "duplicate" }
  | { readonly _tag: "stale"; readonly currentVersion: number }
  | { readonly _tag: "missing"; readonly missing: ReadonlyArray<EntityRef> }
  | { readonly _tag: "apply" }

const askMissing: Decision = { _tag: "ask", question: "missing" }
const askFresh: Decision = { _tag: "ask", question: "fresh" }
const duplicate: Decision = { _tag: "duplicate" }
const apply: Decision = { _tag: "apply" }

/**
 * Decides what becomes of an event from the facts known so far, or asks for the next one. Facts are asked
 * only when needed, in this order: an event the guard refuses is stale, or a duplicate if its message is not
 * fresh (its dependencies are not looked at); otherwise its missing dependencies are asked, then whether it
 * is fresh. With `waitsUnrecorded` (an in-process attempt that may not park yet) an event missing
 * dependencies waits without asking whether it is fresh, so nothing is recorded for it.
 */
export const decide = (envelope: Envelope.Envelope, facts: Facts, waitsUnrecorded: boolean): Decision => {
  const { current, fresh, missing } = facts
  if (current !== null && isStale(envelope, current)) {
    if (fresh === undefined) return askFresh
    return fresh ? { _tag: "stale", currentVersion: current.version } : duplicate
  }
  if (missing === undefined) return askMissing
  if (missing.length > 0 && waitsUnrecorded) return { _tag: "missing", missing }
  if (fresh === undefined) return askFresh
  if (!fresh) return duplicate
  return missing.length > 0 ? { _tag: "missing", missing } : apply
}

/** Arrival order, except that the events of one entity take that entity's places in version order. */
export const inEntityVersionOrder = <T extends { readonly key: string }>(
  items: ReadonlyArray<T>,
  versionOf: (item: T) => number
): ReadonlyArray<T> => {
  const keys = new Set<string>()
  for (const item of items) keys.add(item.key)
  if (keys.size === items.length) return items
  const byKey = new Map<string, Array<T>>()
  for (const item of items) {
    const group = byKey.get(item.key)
    if (group === undefined) byKey.set(item.key, [item])
    else group.push(item)
  }
  for (const group of byKey.values()) group.sort((a, b) => versionOf(a) - versionOf(b))
  return items.map((item) => byKey.get(item.key)!.shift()!)
}

const keyOf = (entity: string, id: string): string => `${entity}:${id}`

/** The key of an entity reference, `entity:id`. */
export const refKey = (ref: EntityRef): string => keyOf(ref.entity, ref.id)

/** The key of the entity an event is about: `refKey(selfRef(envelope))`, without making the reference. */
export const selfKey = (envelope: Envelope.Envelope): string => keyOf(envelope.entity, envelope.entityId)

/** The entity an event is about. */
export const selfRef = (envelope: Envelope.Envelope): EntityRef => ({ entity: envelope.entity, id: envelope.entityId })

/** References without repeats, in first-seen order. */
export const uniqueRefs = (refs: ReadonlyArray<EntityRef>): ReadonlyArray<EntityRef> => {
  if (refs.length < 2) return refs
  const byKey = new Map<string, EntityRef>()
  for (const ref of refs) {
    const key = refKey(ref)
    if (!byKey.has(key)) byKey.set(key, ref)
  }
  return byKey.size === refs.length ? refs : Array.from(byKey.values())
}
