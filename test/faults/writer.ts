/**
 * A sustained, seeded stream of owner writes through `Producer` repositories in `Outbox.transaction`:
 * transactions of 1–4 writes — creates, updates, soft deletes and hard deletes of `Item`s — paced at a
 * target rate. A transaction that fails with a database error is retried with the same writes (a create
 * that turns out to have committed is skipped), so every planned change is committed once the stream ends.
 *
 * With `groups`, the stream also writes `Group`s and puts items in them (`Item.groupId`, a dependency), so
 * that dependents are often published before or alongside what they depend on: an item is often created
 * in a group that does not exist yet — created later in the same transaction, a few transactions later,
 * or seconds later (long enough for the consumer to park the item's events) — and moved between groups;
 * a group is hard-deleted only once no item (live or soft-deleted) belongs to it, and a hard-deleted group
 * may be created again after an item was put in it (meanwhile its copy is a tombstone: the item waits).
 */
import { Clock, Effect, Schedule } from "effect"
import type { SqlError } from "effect/sql"
import type { EntityExists, EntityNotFound } from "../../src/Errors.ts"
import * as SeededRandom from "../../src/memory/SeededRandom.ts"
import type { OutboxTransaction } from "../../src/Outbox.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import { Group, Item, owner } from "./contract.ts"

/** Options of a write stream. */
export interface WriteStreamOptions {
  /** How many events to write (about; the last transaction may add up to 3 more). */
  readonly events: number
  /** Target events per second. */
  readonly ratePerSecond: number
  readonly seed?: number
  /** The prefix of the created items' ids (default `item-`), so that several streams can write one database. */
  readonly idPrefix?: string
  /**
   * At most this many items are created (default: no limit); once they are, the stream updates them, with
   * a rare soft or hard delete, so that many events hit each entity.
   */
  readonly entities?: number
  /**
   * Also write at most this many groups (counted in `entities`) and put items in them (default: none, and
   * items belong to no group).
   */
  readonly groups?: number
}

/** What a write stream did. */
export interface WriteStreamResult {
  /** Events the writer's transactions raised. */
  readonly events: number
  readonly transactions: number
  /** Transactions retried after a database error. */
  readonly retries: number
  readonly seconds: number
  /** With `groups`: what the stream did to groups and memberships. */
  readonly groups?: GroupFigures
}

/**
 * A planned write. An item's `group` is the group it is created in or moved to: a group id, `null` for
 * none (an update removes it), or absent (an update keeps it).
 */
type Op =
  | { readonly kind: "create"; readonly id: string; readonly group?: string | null }
  | { readonly kind: "update"; readonly id: string; readonly group?: string | null }
  | { readonly kind: "softDelete" | "delete"; readonly id: string }
  | { readonly kind: "createGroup" | "updateGroup" | "softDeleteGroup" | "deleteGroup"; readonly id: string }

const producer = Producer.make(owner)
const items = producer.repository(Item)
const groups = producer.repository(Group)

const inGroup = (item: Item, group: string | null | undefined): Item => {
  if (group === undefined) return item
  const { groupId: _, ...rest } = item
  return group === null ? rest : { ...rest, groupId: group }
}

const runOp = (
  op: Op
): Effect.Effect<unknown, EntityExists | EntityNotFound | SqlError.SqlError, OutboxTransaction | SourceRepository> => {
  switch (op.kind) {
    case "create":
      return items.create(inGroup({ id: op.id, name: `item ${op.id}`, n: 0, tags: ["new"] }, op.group))
    case "update":
      return items.update(op.id, (item) => ({
        ...inGroup(item, op.group),
        n: item.n + 1,
        name: `item ${op.id} #${item.n + 1}`
      }))
    case "softDelete":
      return items.softDelete(op.id)
    case "delete":
      return items.delete(op.id)
    case "createGroup":
      return groups.create({ id: op.id, name: `group ${op.id}`, n: 0 })
    case "updateGroup":
      return groups.update(op.id, (group) => ({ ...group, n: group.n + 1, name: `group ${op.id} #${group.n + 1}` }))
    case "softDeleteGroup":
      return groups.softDelete(op.id)
    case "deleteGroup":
      return groups.delete(op.id)
  }
}

/** What a stream with groups did to its groups and the items' memberships. */
export interface GroupFigures {
  /**
   * Group creates (hard-deleted groups created again included), and of them those in a later transaction
   * than the first item put in the group.
   */
  readonly groupsCreated: number
  readonly createdLate: number
  /** Items created in, or moved to, a group that did not exist yet (or was hard-deleted). */
  readonly itemsBeforeGroup: number
  /** Items moved to another group (or out of theirs). */
  readonly moves: number
  readonly groupsHardDeleted: number
  readonly groupsSoftDeleted: number
}

/**
 * Plans the writes of a stream with groups, one transaction at a time, and keeps the owner's memberships:
 * every group an item refers to is live or will be created (`pending`), and a group is hard-deleted only
 * once no item that is not hard-deleted refers to it.
 */
const groupPlanner = (
  next: () => number,
  options: { readonly idPrefix: string; readonly entities: number | undefined; readonly groups: number }
) => {
  const groupCap = options.groups
  const itemCap = options.entities === undefined ? undefined : Math.max(0, options.entities - groupCap)
  /** Live items (created and not deleted, softly or not). */
  const live: Array<string> = []
  /** Each item that is not hard-deleted, with its group. */
  const groupOf = new Map<string, string>()
  /** Items (not hard-deleted) referring to each group. */
  const refs = new Map<string, number>()
  /** Groups that are live at the owner (or created in the transaction being planned). */
  const liveGroups: Array<string> = []
  /** Groups an item refers to that are not created yet, with the transaction they are created in. */
  const pending = new Map<string, number>()
  /** Hard-deleted groups (that may be created again). */
  const tombstones: Array<string> = []
  let itemsCreated = 0
  let groupsNamed = 0
  const figures = {
    groupsCreated: 0,
    createdLate: 0,
    itemsBeforeGroup: 0,
    moves: 0,
    groupsHardDeleted: 0,
    groupsSoftDeleted: 0
  }
  const pick = <A>(xs: ReadonlyArray<A>): A | undefined => xs[Math.floor(next() * xs.length)]
  const reference = (group: string | undefined, delta: number) => {
    if (group !== undefined) refs.set(group, (refs.get(group) ?? 0) + delta)
  }
  /** A group for an item being created or moved, at transaction `tx`: often one that does not exist yet. */
  const chooseGroup = (tx: number, ops: Array<Op>, used: Set<string>): string | null => {
    const r = next()
    if (r < 0.08) return null
    const existing = pick(liveGroups)
    const tombstone = pick(tombstones)
    const fresh = groupsNamed < groupCap ? `group-${groupsNamed}` : tombstone
    if ((r < 0.35 || existing === undefined) && fresh !== undefined && !pending.has(fresh)) {
      // a group never created yet, or a hard-deleted one created again
      if (fresh === tombstone) tombstones.splice(tombstones.indexOf(fresh), 1)
      else groupsNamed++
      const when = next()
      figures.itemsBeforeGroup++
      // alongside (later in the same transaction), just after, or seconds later (the consumer parks)
      if (when < 0.25) createGroup(fresh, ops, used, false)
      else pending.set(fresh, tx + (when < 0.65 ? 1 + Math.floor(next() * 3) : 200 + Math.floor(next() * 1000)))
      return fresh
    }
    return existing ?? null
  }
  const createGroup = (id: string, ops: Array<Op>, used: Set<string>, late: boolean) => {
    pending.delete(id)
    ops.push({ kind: "createGroup", id })
    used.add(id)
    liveGroups.push(id)
    figures.groupsCreated++
    if (late) figures.createdLate++
  }
  /** The writes of transaction `tx` (`size` slots); after `drain`, every pending group is created. */
  const plan = (tx: number, size: number, drain: boolean): Array<Op> => {
    const ops: Array<Op> = []
    const used = new Set<string>()
    for (const [id, due] of pending) {
      if (due <= tx || drain) createGroup(id, ops, used, true)
    }
    while (ops.length < size && !drain) {
      const before = ops.length
      const r = next()
      if (next() < 0.2) {
        // a group
        const candidate = pick(liveGroups)
        if (groupsNamed < groupCap && (liveGroups.length < 3 || r < 0.3 || candidate === undefined)) {
          createGroup(`group-${groupsNamed++}`, ops, used, false)
        } else if (candidate !== undefined && !used.has(candidate)) {
          used.add(candidate)
          const empty = liveGroups.filter((g) => (refs.get(g) ?? 0) === 0 && !used.has(g))
          const emptyOne = pick(empty)
          if (r < 0.05 && emptyOne !== undefined) {
            used.add(emptyOne)
            liveGroups.splice(liveGroups.indexOf(emptyOne), 1)
            tombstones.push(emptyOne)
            ops.push({ kind: "deleteGroup", id: emptyOne })
            figures.groupsHardDeleted++
          } else if (r >= 0.05 && r < 0.055) {
            liveGroups.splice(liveGroups.indexOf(candidate), 1)
            ops.push({ kind: "softDeleteGroup", id: candidate })
            figures.groupsSoftDeleted++
          } else {
            ops.push({ kind: "updateGroup", id: candidate })
          }
        }
      } else {
        // an item
        const candidate = pick(live)
        const capped = itemCap !== undefined && itemsCreated >= itemCap
        if (!capped && (live.length < 20 || r < 0.45 || candidate === undefined || used.has(candidate))) {
          const id = `${options.idPrefix}${itemsCreated++}`
          used.add(id)
          const at = ops.length
          const group = chooseGroup(tx, ops, used)
          ops.splice(at, 0, { kind: "create", id, group })
          live.push(id)
          if (group !== null) groupOf.set(id, group)
          reference(group ?? undefined, 1)
        } else if (candidate !== undefined && !used.has(candidate)) {
          used.add(candidate)
          const kind = r < 0.99 ? "update" : r < 0.995 ? "softDelete" : "delete"
          if (kind === "update") {
            if (next() < 0.2) {
              const at = ops.length
              const group = chooseGroup(tx, ops, used)
              const from = groupOf.get(candidate)
              if ((group ?? undefined) !== from) {
                reference(from, -1)
                reference(group ?? undefined, 1)
                if (group === null) groupOf.delete(candidate)
                else groupOf.set(candidate, group)
                figures.moves++
              }
              ops.splice(at, 0, { kind: "update", id: candidate, group })
            } else ops.push({ kind: "update", id: candidate })
          } else {
            live.splice(live.indexOf(candidate), 1)
            if (kind === "delete") {
              reference(groupOf.get(candidate), -1)
              groupOf.delete(candidate)
            }
            ops.push({ kind, id: candidate })
          }
        }
      }
      if (ops.length === before && next() < 0.5) break
    }
    return ops
  }
  return { plan, pending: () => pending.size, figures: (): GroupFigures => ({ ...figures }) }
}

/** Writes the stream; fails only if a transaction keeps failing for 10 seconds. */
export const writeStream = (
  options: WriteStreamOptions
): Effect.Effect<WriteStreamResult, unknown, Outbox.Outbox | SourceRepository> =>
  Effect.gen(function*() {
    const next = SeededRandom.make(options.seed ?? 42)
    const live: Array<string> = []
    let created = 0
    let events = 0
    let transactions = 0
    let retries = 0
    // the planner of a stream without groups
    const plan = (size: number): Array<Op> => {
      const ops: Array<Op> = []
      const used = new Set<string>()
      for (let i = 0; i < size; i++) {
        const r = next()
        const candidate = live[Math.floor(next() * live.length)]
        const capped = options.entities !== undefined && created >= options.entities
        if (capped && candidate !== undefined && !used.has(candidate)) {
          used.add(candidate)
          ops.push({ kind: r < 0.995 ? "update" : r < 0.9975 ? "softDelete" : "delete", id: candidate })
        } else if (capped) {
          continue
        } else if (live.length < 20 || r < 0.45 || candidate === undefined || used.has(candidate)) {
          ops.push({ kind: "create", id: `${options.idPrefix ?? "item-"}${created++}` })
        } else {
          used.add(candidate)
          ops.push({ kind: r < 0.9 ? "update" : r < 0.95 ? "softDelete" : "delete", id: candidate })
        }
      }
      return ops
    }
    const start = yield* Clock.currentTimeMillis
    const planner = options.groups === undefined ? undefined : groupPlanner(next, {
      idPrefix: options.idPrefix ?? "item-",
      entities: options.entities,
      groups: options.groups
    })
    while (events < options.events || (planner !== undefined && planner.pending() > 0)) {
      const size = 1 + Math.floor(next() * 4)
      const ops: Array<Op> = planner === undefined
        ? plan(size)
        : planner.plan(transactions, size, events >= options.events)
      let attempt = 0
      yield* Effect.suspend(() => {
        if (attempt++ > 0) retries++
        return Outbox.transaction(Effect.forEach(ops, (op) =>
          runOp(op).pipe(
            // after an ambiguous commit, the retry finds its own earlier write
            Effect.catchTags({ EntityExists: () => Effect.void, EntityNotFound: () => Effect.void })
          ), { discard: true }))
      }).pipe(Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 100 }))
      for (const op of planner === undefined ? ops : []) {
        if (op.kind === "create") live.push(op.id)
        else if (op.kind === "softDelete" || op.kind === "delete") live.splice(live.indexOf(op.id), 1)
      }
      events += ops.length
      transactions++
      const due = start + (events / options.ratePerSecond) * 1000
      const now = yield* Clock.currentTimeMillis
      if (due > now) yield* Effect.sleep(due - now)
    }
    const end = yield* Clock.currentTimeMillis
    const seconds = (end - start) / 1000
    return planner === undefined
      ? { events, transactions, retries, seconds }
      : { events, transactions, retries, seconds, groups: planner.figures() }
  })
