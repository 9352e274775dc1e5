/**
 * The memory inbox: dedupe records, waiting rows and dead rows in `MemoryDatabase` tables, so they commit
 * or roll back with the apply they belong to.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer } from "effect"
import type { EntityRef } from "../Errors.ts"
import {
  type DeadRow,
  type DeadRowCursor,
  type DeadRowFilter,
  Inbox,
  matchesDeadRow,
  type Page,
  pageSize,
  pruneBatchSize,
  type WaitingRow,
  type WaitingRowCursor,
  type WaitingVersion
} from "../Inbox.ts"
import * as Retention from "../internal/Retention.ts"
import { MemoryDatabase } from "./MemoryDatabase.ts"
import { makeTakeTurn } from "./Outbox.ts"

interface Received {
  readonly consumer: string
  readonly messageId: string
  readonly receivedAt: number
}

const keyOf = (consumer: string, messageId: string) => JSON.stringify([consumer, messageId])

const byDue = (a: WaitingRow, b: WaitingRow) =>
  a.nextAttemptAt - b.nextAttemptAt || a.firstSeenAt - b.firstSeenAt || compare(a.messageId, b.messageId)

const byAge = (a: DeadRow, b: DeadRow) => a.firstSeenAt - b.firstSeenAt || compare(a.messageId, b.messageId)

const afterDead = (cursor: DeadRowCursor | undefined) => (row: DeadRow) =>
  cursor === undefined ||
  row.firstSeenAt > cursor.firstSeenAt ||
  (row.firstSeenAt === cursor.firstSeenAt && compare(row.messageId, cursor.messageId) > 0)

const afterWaiting = (cursor: WaitingRowCursor | undefined) => (row: WaitingRow) =>
  cursor === undefined ||
  row.nextAttemptAt > cursor.nextAttemptAt ||
  (row.nextAttemptAt === cursor.nextAttemptAt &&
    (row.firstSeenAt > cursor.firstSeenAt ||
      (row.firstSeenAt === cursor.firstSeenAt && compare(row.messageId, cursor.messageId) > 0)))

/** The first `limit` of `rows` (in page order), with the cursor of the next page when more follow. */
const pageOf = <A, Cursor>(rows: ReadonlyArray<A>, limit: number, cursorOf: (row: A) => Cursor): Page<A, Cursor> => {
  const items = rows.slice(0, limit)
  const last = items[items.length - 1]
  return { items, next: rows.length > limit && last !== undefined ? cursorOf(last) : null }
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

const sameRef = (a: EntityRef, b: EntityRef) => a.entity === b.entity && a.id === b.id

/** Makes a memory inbox on the current `MemoryDatabase`. */
export const make: Effect.Effect<Inbox["Service"], never, MemoryDatabase> = Effect.gen(function*() {
  const db = yield* MemoryDatabase
  const received = db.table<Received>()
  const waitingRows = db.table<WaitingRow>()
  const deadRows = db.table<DeadRow>()
  // until when a claim (`claimDue`) holds a waiting row, by its key; no entry: no claim holds it
  const claims = db.table<number>()
  const turns = db.table<number>()

  const waitingOf = (consumer: string) => waitingRows.values().filter((row) => row.consumer === consumer).sort(byDue)

  const record = (consumer: string, messageId: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (receivedAt) =>
      db.run(() => {
        const key = keyOf(consumer, messageId)
        if (received.get(key) !== undefined) return false
        received.set(key, { consumer, messageId, receivedAt })
        return true
      }))

  const recordMany = (consumer: string, messageIds: ReadonlyArray<string>) =>
    Effect.flatMap(Clock.currentTimeMillis, (receivedAt) =>
      db.run(() => {
        const fresh = new Set<string>()
        for (const messageId of messageIds) {
          const key = keyOf(consumer, messageId)
          if (received.get(key) !== undefined) continue
          received.set(key, { consumer, messageId, receivedAt })
          fresh.add(messageId)
        }
        return fresh
      }))

  const forget = (consumer: string, messageIds: ReadonlyArray<string>) =>
    db.run(() => messageIds.forEach((messageId) => received.delete(keyOf(consumer, messageId))))

  const park = (row: WaitingRow) =>
    db.run(() => {
      const key = keyOf(row.consumer, row.messageId)
      waitingRows.set(key, row)
      claims.delete(key)
    })

  const wake = (consumer: string, refs: ReadonlyArray<EntityRef>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      db.run(() => {
        const wakes = (row: WaitingRow) => row.waitingFor.some((ref) => refs.some((r) => sameRef(r, ref)))
        const woken = waitingOf(consumer).filter(wakes)
        woken.forEach((row) =>
          waitingRows.set(keyOf(row.consumer, row.messageId), {
            ...row,
            nextAttemptAt: Math.min(row.nextAttemptAt, now)
          })
        )
        return woken.length
      }))

  const due = (consumer: string, now: number, limit: number) =>
    db.run(() => waitingOf(consumer).filter((row) => row.nextAttemptAt <= now).slice(0, Math.max(0, limit)))

  const claimDue = (consumer: string, now: number, limit: number, leaseMillis: number) =>
    db.run(() => {
      const free = (row: WaitingRow) => {
        const heldUntil = claims.get(keyOf(row.consumer, row.messageId))
        return heldUntil === undefined || heldUntil <= now
      }
      const claimed = waitingOf(consumer)
        .filter((row) => row.nextAttemptAt <= now && free(row))
        .slice(0, Math.max(0, Math.floor(limit)))
      claimed.forEach((row) => claims.set(keyOf(row.consumer, row.messageId), now + Math.max(0, leaseMillis)))
      return claimed
    })

  const earliestWaiting = (consumer: string, refs: ReadonlyArray<EntityRef>) =>
    db.run(() => {
      const lowest = new Map<string, WaitingVersion>()
      for (const { envelope } of waitingOf(consumer)) {
        if (envelope.action === "deleted") continue
        if (!refs.some((ref) => ref.entity === envelope.entity && ref.id === envelope.entityId)) continue
        const key = JSON.stringify([envelope.entity, envelope.entityId])
        const known = lowest.get(key)
        if (known === undefined || envelope.version < known.version) {
          lowest.set(key, { entity: envelope.entity, id: envelope.entityId, version: envelope.version })
        }
      }
      return [...lowest.values()]
    })

  // A claimed row is due for the others when its lease ends.
  const nextDueAt = (consumer: string) =>
    db.run(() =>
      waitingOf(consumer).reduce<number | null>((min, row) => {
        const at = Math.max(row.nextAttemptAt, claims.get(keyOf(row.consumer, row.messageId)) ?? row.nextAttemptAt)
        return min === null || at < min ? at : min
      }, null)
    )

  const waiting = (consumer: string) => db.run(() => waitingOf(consumer))

  const waitingPage = (consumer: string, options?: { readonly limit?: number; readonly after?: WaitingRowCursor }) =>
    db.run(() =>
      pageOf(
        waitingOf(consumer).filter(afterWaiting(options?.after)),
        pageSize(options?.limit),
        (row): WaitingRowCursor => ({
          nextAttemptAt: row.nextAttemptAt,
          firstSeenAt: row.firstSeenAt,
          messageId: row.messageId
        })
      )
    )

  const release = (consumer: string, messageId: string) =>
    db.run(() => {
      const key = keyOf(consumer, messageId)
      const held = waitingRows.get(key) !== undefined
      waitingRows.delete(key)
      claims.delete(key)
      return held
    })

  const deadLetter = (row: DeadRow) =>
    db.run(() => {
      const key = keyOf(row.consumer, row.messageId)
      waitingRows.delete(key)
      claims.delete(key)
      deadRows.set(key, row)
    })

  const deadLetters = (consumer: string) => db.run(() => deadOf(consumer))

  const deadOf = (consumer: string) => deadRows.values().filter((row) => row.consumer === consumer).sort(byAge)

  const deadLetterPage = (consumer: string, options?: {
    readonly limit?: number
    readonly after?: DeadRowCursor
    readonly filter?: DeadRowFilter
  }) =>
    db.run(() =>
      pageOf(
        deadOf(consumer).filter(afterDead(options?.after)).filter(matchesDeadRow(options?.filter)),
        pageSize(options?.limit),
        (row): DeadRowCursor => ({ firstSeenAt: row.firstSeenAt, messageId: row.messageId })
      )
    )

  const stats = (consumer: string) =>
    db.run(() => {
      const parked = waitingRows.values().filter((row) => row.consumer === consumer)
      const dead = deadRows.values().filter((row) => row.consumer === consumer)
      const least = (times: ReadonlyArray<number>) =>
        times.reduce<number | null>((min, time) => (min === null || time < min ? time : min), null)
      return {
        waiting: parked.length,
        dead: dead.length,
        oldestWaitingSince: least(parked.map((row) => row.firstSeenAt)),
        oldestDeadAt: least(dead.map((row) => row.lastSeenAt))
      }
    })

  const revive = (dead: DeadRow, now: number) => {
    const key = keyOf(dead.consumer, dead.messageId)
    deadRows.delete(key)
    claims.delete(key)
    waitingRows.set(key, {
      consumer: dead.consumer,
      messageId: dead.messageId,
      envelope: dead.envelope,
      waitingFor: dead.waitingFor,
      attempts: 0,
      nextAttemptAt: now,
      firstSeenAt: dead.firstSeenAt,
      lastSeenAt: dead.lastSeenAt
    })
  }

  const replayMany = (consumer: string, filter: DeadRowFilter, now: number) =>
    db.run(() => {
      const matching = deadOf(consumer).filter(matchesDeadRow(filter))
      matching.forEach((dead) => revive(dead, now))
      return matching.length
    })

  const replay = (consumer: string, messageId: string, now: number) =>
    db.run(() => {
      const key = keyOf(consumer, messageId)
      const dead = deadRows.get(key)
      if (dead === undefined) return false
      revive(dead, now)
      return true
    })

  const pruneBatch = (receivedBefore: number, limit: number) =>
    db.run(() => {
      const old = received.values()
        .filter((r) => r.receivedAt < receivedBefore)
        .sort((a, b) => a.receivedAt - b.receivedAt)
        .slice(0, Math.max(0, Math.floor(limit)))
      old.forEach((r) => received.delete(keyOf(r.consumer, r.messageId)))
      return old.length
    })

  const prune = (receivedBefore: number) =>
    Effect.map(
      Retention.inBatches((limit) => pruneBatch(receivedBefore, limit), pruneBatchSize),
      (round) => round.deleted
    )

  return Inbox.of({
    record,
    recordMany,
    forget,
    park,
    wake,
    due,
    claimDue,
    earliestWaiting,
    nextDueAt,
    waiting,
    waitingPage,
    release,
    deadLetter,
    deadLetters,
    deadLetterPage,
    stats,
    replay,
    replayMany,
    prune,
    pruneBatch,
    takeTurn: makeTakeTurn(db, turns)
  })
})

/** The memory `Inbox`, keeping its rows in the service's `MemoryDatabase`. */
export const layer: Layer.Layer<Inbox, never, MemoryDatabase> = Layer.effect(Inbox, make)
