/**
 * The memory inbox: dedupe records, waiting rows and dead rows in `MemoryDatabase` tables, so they commit
 * or roll back with the apply they belong to.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer } from "effect"
import type { EntityRef } from "../Errors.ts"
import { type DeadRow, Inbox, type WaitingRow } from "../Inbox.ts"
import { MemoryDatabase } from "./MemoryDatabase.ts"

interface Received {
  readonly consumer: string
  readonly messageId: string
  readonly receivedAt: number
}

const keyOf = (consumer: string, messageId: string) => JSON.stringify([consumer, messageId])

const byDue = (a: WaitingRow, b: WaitingRow) =>
  a.nextAttemptAt - b.nextAttemptAt || a.firstSeenAt - b.firstSeenAt || compare(a.messageId, b.messageId)

const byAge = (a: DeadRow, b: DeadRow) => a.firstSeenAt - b.firstSeenAt || compare(a.messageId, b.messageId)

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

const sameRef = (a: EntityRef, b: EntityRef) => a.entity === b.entity && a.id === b.id

/** Makes a memory inbox on the current `MemoryDatabase`. */
export const make: Effect.Effect<Inbox["Service"], never, MemoryDatabase> = Effect.gen(function* () {
  const db = yield* MemoryDatabase
  const received = db.table<Received>()
  const waitingRows = db.table<WaitingRow>()
  const deadRows = db.table<DeadRow>()

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

  const park = (row: WaitingRow) => db.run(() => waitingRows.set(keyOf(row.consumer, row.messageId), row))

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

  const nextDueAt = (consumer: string) => db.run(() => waitingOf(consumer)[0]?.nextAttemptAt ?? null)

  const waiting = (consumer: string) => db.run(() => waitingOf(consumer))

  const release = (consumer: string, messageId: string) => db.run(() => waitingRows.delete(keyOf(consumer, messageId)))

  const deadLetter = (row: DeadRow) =>
    db.run(() => {
      const key = keyOf(row.consumer, row.messageId)
      waitingRows.delete(key)
      deadRows.set(key, row)
    })

  const deadLetters = (consumer: string) =>
    db.run(() => deadRows.values().filter((row) => row.consumer === consumer).sort(byAge))

  const replay = (consumer: string, messageId: string, now: number) =>
    db.run(() => {
      const key = keyOf(consumer, messageId)
      const dead = deadRows.get(key)
      if (dead === undefined) return false
      deadRows.delete(key)
      waitingRows.set(key, {
        consumer,
        messageId,
        envelope: dead.envelope,
        waitingFor: dead.waitingFor,
        attempts: 0,
        nextAttemptAt: now,
        firstSeenAt: dead.firstSeenAt,
        lastSeenAt: dead.lastSeenAt
      })
      return true
    })

  const prune = (receivedBefore: number) =>
    db.run(() => {
      const old = received.values().filter((r) => r.receivedAt < receivedBefore)
      old.forEach((r) => received.delete(keyOf(r.consumer, r.messageId)))
      return old.length
    })

  return Inbox.of({ record, recordMany, forget, park, wake, due, nextDueAt, waiting, release, deadLetter, deadLetters, replay, prune })
})

/** The memory `Inbox`, keeping its rows in the service's `MemoryDatabase`. */
export const layer: Layer.Layer<Inbox, never, MemoryDatabase> = Layer.effect(Inbox, make)
