/**
 * A sustained, seeded stream of owner writes through `Producer` repositories in `Outbox.transaction`:
 * transactions of 1–4 writes — creates, updates, soft deletes and hard deletes of `Item`s — paced at a
 * target rate. A transaction that fails with a database error is retried with the same writes (a create
 * that turns out to have committed is skipped), so every planned change is committed once the stream ends.
 */
import { Clock, Effect, Schedule } from "effect"
import type { SqlError } from "effect/sql"
import type { EntityExists, EntityNotFound } from "../../src/Errors.ts"
import * as SeededRandom from "../../src/memory/SeededRandom.ts"
import type { OutboxTransaction } from "../../src/Outbox.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import { Item, owner } from "./contract.ts"

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
}

/** What a write stream did. */
export interface WriteStreamResult {
  /** Events the writer's transactions raised. */
  readonly events: number
  readonly transactions: number
  /** Transactions retried after a database error. */
  readonly retries: number
  readonly seconds: number
}

type Op =
  | { readonly kind: "create"; readonly id: string }
  | { readonly kind: "update" | "softDelete" | "delete"; readonly id: string }

const items = Producer.make(owner).repository(Item)

const runOp = (
  op: Op
): Effect.Effect<unknown, EntityExists | EntityNotFound | SqlError.SqlError, OutboxTransaction | SourceRepository> => {
  switch (op.kind) {
    case "create":
      return items.create({ id: op.id, name: `item ${op.id}`, n: 0, tags: ["new"] })
    case "update":
      return items.update(op.id, (item) => ({ ...item, n: item.n + 1, name: `item ${op.id} #${item.n + 1}` }))
    case "softDelete":
      return items.softDelete(op.id)
    case "delete":
      return items.delete(op.id)
  }
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
    const start = yield* Clock.currentTimeMillis
    while (events < options.events) {
      const size = 1 + Math.floor(next() * 4)
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
      let attempt = 0
      yield* Effect.suspend(() => {
        if (attempt++ > 0) retries++
        return Outbox.transaction(Effect.forEach(ops, (op) =>
          runOp(op).pipe(
            // after an ambiguous commit, the retry finds its own earlier write
            Effect.catchTags({ EntityExists: () => Effect.void, EntityNotFound: () => Effect.void })
          ), { discard: true }))
      }).pipe(Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 100 }))
      for (const op of ops) {
        if (op.kind === "create") live.push(op.id)
        else if (op.kind !== "update") live.splice(live.indexOf(op.id), 1)
      }
      events += ops.length
      transactions++
      const due = start + (events / options.ratePerSecond) * 1000
      const now = yield* Clock.currentTimeMillis
      if (due > now) yield* Effect.sleep(due - now)
    }
    const end = yield* Clock.currentTimeMillis
    return { events, transactions, retries, seconds: (end - start) / 1000 }
  })
