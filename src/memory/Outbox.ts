/**
 * The memory outbox: rows live in a `MemoryDatabase` table, so an append in a failed transaction is rolled
 * back with the rest of it. Claims lease rows for a while; a commit wakes `awaitAppended` waiters.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer } from "effect"
import type { Envelope } from "../Envelope.ts"
import { makeBufferedAppends } from "../internal/OutboxTransaction.ts"
import * as Retention from "../internal/Retention.ts"
import * as Signal from "../internal/Signal.ts"
import {
  type ClaimOptions,
  defaultLeaseMillis,
  Outbox,
  type OutboxRow,
  pruneBatchSize,
  type RepublishRange
} from "../Outbox.ts"
import { Transactor } from "../Transactor.ts"
import { MemoryDatabase, type MemoryTable } from "./MemoryDatabase.ts"

/** Options of the memory outbox. */
export interface Options {
  /** How long a claim keeps rows from other claimers, in milliseconds (default 30 000). */
  readonly leaseMillis?: number
}

/** The default claim lease: 30 seconds. */
export { defaultLeaseMillis } from "../Outbox.ts"

interface Stored {
  readonly row: OutboxRow
  /** Until when a claim holds the row; null when it is not claimed. */
  readonly leasedUntil: number | null
}

const bySeq = (a: Stored, b: Stored) => a.row.seq - b.row.seq

/**
 * The turn of a periodic task in `turns` (until when it is held, by task): true for the one caller that
 * finds it free and takes it until `now + intervalMillis`.
 */
export const makeTakeTurn =
  (db: MemoryDatabase["Service"], turns: MemoryTable<number>) =>
  (task: string, intervalMillis: number): Effect.Effect<boolean> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      db.run(() => {
        const heldUntil = turns.get(task)
        if (heldUntil !== undefined && heldUntil > now) return false
        turns.set(task, now + Math.max(0, Math.floor(intervalMillis)))
        return true
      }))

/** Makes a memory outbox on the current `MemoryDatabase` and `Transactor`. */
export const make = (options?: Options): Effect.Effect<Outbox["Service"], never, MemoryDatabase | Transactor> =>
  Effect.gen(function*() {
    const db = yield* MemoryDatabase
    const transactor = yield* Transactor
    const leaseMillis = options?.leaseMillis ?? defaultLeaseMillis
    const table = db.table<Stored>()
    // Like a database sequence, the counter is not rolled back: seqs may have gaps.
    let lastSeq = 0
    // fired after every commit that appended events
    const appended = yield* Signal.make()

    const sorted = () => table.values().slice().sort(bySeq)
    const store = (stored: Stored) => table.set(String(stored.row.seq), stored)
    const update = (seqs: ReadonlyArray<number>, f: (stored: Stored) => Stored | undefined) => {
      for (const seq of seqs) {
        const current = table.get(String(seq))
        const next = current && f(current)
        if (next) store(next)
      }
    }

    const append = (envelopes: ReadonlyArray<Envelope>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        db.run(() => {
          for (const envelope of envelopes) {
            lastSeq += 1
            store({
              row: {
                seq: lastSeq,
                envelope,
                createdAt: now,
                attempts: 0,
                nextAttemptAt: now,
                lastError: null,
                publishedAt: null
              },
              leasedUntil: null
            })
          }
        }))

    const claim = (limit: number, options?: ClaimOptions) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        db.run(() => {
          const free = ({ leasedUntil, row }: Stored) =>
            row.nextAttemptAt <= now && (leasedUntil === null || leasedUntil <= now)
          // ordered: entities (`<length>:<entity>:<id>`) with an earlier unpublished row this claim cannot take
          const blocked = new Set<string>()
          const ordered = options?.orderedByEntity === true
          const afterSeq = options?.orderedByEntity === true ? undefined : options?.afterSeq
          const claimed = sorted()
            .filter((stored) => {
              if (stored.row.publishedAt !== null) return false
              if (!ordered) return free(stored) && (afterSeq === undefined || stored.row.seq > afterSeq)
              const { entity, entityId } = stored.row.envelope
              const key = `${entity.length}:${entity}:${entityId}`
              if (blocked.has(key)) return false
              if (free(stored)) return true
              blocked.add(key)
              return false
            })
            .slice(0, Math.max(0, limit))
          claimed.forEach(({ row }) => store({ row, leasedUntil: now + leaseMillis }))
          return claimed.map(({ row }) => row)
        }))

    const markPublished = (seqs: ReadonlyArray<number>) =>
      Effect.flatMap(
        Clock.currentTimeMillis,
        (now) =>
          db.run(() =>
            update(seqs, ({ row }) =>
              row.publishedAt === null ? { row: { ...row, publishedAt: now }, leasedUntil: null } : undefined)
          )
      )

    const markFailed = (
      seqs: ReadonlyArray<number>,
      failure: { readonly error: string; readonly nextAttemptAt: number }
    ) =>
      db.run(() =>
        update(seqs, ({ row }) =>
          row.publishedAt === null
            ? {
              row: {
                ...row,
                attempts: row.attempts + 1,
                lastError: failure.error,
                nextAttemptAt: failure.nextAttemptAt
              },
              leasedUntil: null
            }
            : undefined)
      )

    const pending = db.run(() => {
      const unpublished = table.values().filter(({ row }) => row.publishedAt === null)
      const oldest = unpublished.reduce<number | null>(
        (min, { row }) => (min === null || row.createdAt < min ? row.createdAt : min),
        null
      )
      return { count: unpublished.length, oldestCreatedAt: oldest }
    })

    const rows = (options?: { readonly afterSeq?: number; readonly limit?: number }) =>
      db.run(() => {
        const afterSeq = options?.afterSeq
        const after = sorted()
          .filter(({ row }) => afterSeq === undefined || row.seq > afterSeq)
          .map(({ row }) => row)
        return options?.limit === undefined ? after : after.slice(0, Math.max(0, options.limit))
      })

    const republish = (range: RepublishRange) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        db.run(() => {
          const { afterSeq, entity, from, limit, producer, to } = range
          const matching = sorted().filter(({ row }) =>
            row.publishedAt !== null && row.createdAt >= from && row.createdAt < to &&
            (afterSeq === undefined || row.seq > afterSeq) &&
            (entity === undefined || row.envelope.entity === entity) &&
            (producer === undefined || row.envelope.producer === producer)
          )
          const taken = limit === undefined ? matching : matching.slice(0, Math.max(0, Math.floor(limit)))
          taken.forEach(({ row }) =>
            store({
              row: { ...row, publishedAt: null, attempts: 0, lastError: null, nextAttemptAt: now },
              leasedUntil: null
            })
          )
          return { count: taken.length, lastSeq: taken.at(-1)?.row.seq ?? null }
        }))

    const pruneBatch = (publishedBefore: number, limit: number) =>
      db.run(() => {
        const old = sorted()
          .filter(({ row }) => row.publishedAt !== null && row.publishedAt < publishedBefore)
          .slice(0, Math.max(0, Math.floor(limit)))
        old.forEach(({ row }) => table.delete(String(row.seq)))
        return old.length
      })

    const prune = (publishedBefore: number) =>
      Effect.map(
        Retention.inBatches((limit) => pruneBatch(publishedBefore, limit), pruneBatchSize),
        (round) => round.deleted
      )

    const turns = db.table<number>()
    const takeTurn = (task: string, intervalMillis: number) => makeTakeTurn(db, turns)(task, intervalMillis)

    // A transaction's events are written when its body ends; its own reads write them first.
    const appends = makeBufferedAppends(transactor, append, appended.fire)

    return Outbox.of({
      transaction: appends.transaction,
      claim: (limit, options) => Effect.andThen(appends.flushPending, claim(limit, options)),
      markPublished,
      markFailed,
      awaitAppended: appended.await,
      pending: Effect.andThen(appends.flushPending, pending),
      rows: (options) => Effect.andThen(appends.flushPending, rows(options)),
      republish: (range) => Effect.andThen(appends.flushPending, republish(range)),
      prune,
      pruneBatch,
      takeTurn
    })
  })

/** The memory `Outbox`, keeping its rows in the service's `MemoryDatabase`. */
export const layer = (options?: Options): Layer.Layer<Outbox, never, MemoryDatabase | Transactor> =>
  Layer.effect(Outbox, make(options))
