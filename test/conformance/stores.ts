/**
 * The store conformance suite: every implementation of the stores of one service (Outbox, Inbox,
 * CopyRepository, SourceRepository and their Transactor) must pass it unchanged. Each test gets a fresh
 * layer (an empty database) and runs on the TestClock.
 *
 * @since 0.1.0
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Data, Effect, Fiber, type Layer, Ref, type Scope } from "effect"
import { TestClock } from "effect/testing"
import type { CopyRow, CopyState } from "../../src/CopyRepository.ts"
import { CopyRepository } from "../../src/CopyRepository.ts"
import type { Envelope } from "../../src/Envelope.ts"
import type { EntityRef } from "../../src/Errors.ts"
import {
  type DeadRow,
  type DeadRowCursor,
  type DeadRowFilter,
  defaultPageSize,
  Inbox,
  maxPageSize,
  type Page,
  replayBatchSize,
  type WaitingRow,
  type WaitingVersion
} from "../../src/Inbox.ts"
import { type ClaimOptions, Outbox, OutboxTransaction } from "../../src/Outbox.ts"
import { SourceRepository, type SourceRow } from "../../src/SourceRepository.ts"
import { Transactor } from "../../src/Transactor.ts"

/** The services a store implementation provides to the suite. */
export type Stores = Outbox | Inbox | CopyRepository | SourceRepository | Transactor

/** What the suite needs to know about the implementation under test. */
export interface StoreConformanceOptions {
  /** The outbox claim lease the layer was built with, in milliseconds (default 30 000). */
  readonly leaseMillis?: number
}

/** The failure the suite raises to roll a transaction back. */
class Boom extends Data.TaggedError("Boom")<{}> {}

/** The TestClock time every test starts at: 2026-01-01T00:00:00Z. */
const T0 = 1_767_225_600_000

const envelope = (messageId: string, entityId = "u-1", version = 1): Envelope => ({
  contractVersion: 1,
  messageId,
  entity: "User",
  entityId,
  action: "updated",
  version,
  occurredAt: "2026-01-01T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload: { name: `user ${entityId} v${version}` }
})

const append = (...envelopes: ReadonlyArray<Envelope>) =>
  Outbox.use((outbox) => outbox.transaction(OutboxTransaction.use((tx) => tx.append(envelopes))))

const seqsOf = (rows: ReadonlyArray<{ readonly seq: number }>) => rows.map((row) => row.seq)
const idsOf = (rows: ReadonlyArray<{ readonly messageId: string }>) => rows.map((row) => row.messageId)

const waitingRow = (
  consumer: string,
  messageId: string,
  times: { readonly nextAttemptAt: number; readonly firstSeenAt?: number },
  waitingFor: ReadonlyArray<EntityRef> = [{ entity: "Company", id: "c-1" }]
): WaitingRow => ({
  consumer,
  messageId,
  envelope: envelope(messageId),
  waitingFor,
  attempts: 1,
  nextAttemptAt: times.nextAttemptAt,
  firstSeenAt: times.firstSeenAt ?? T0,
  lastSeenAt: times.firstSeenAt ?? T0
})

const deadRow = (consumer: string, messageId: string, firstSeenAt: number): DeadRow => ({
  consumer,
  messageId,
  envelope: envelope(messageId),
  error: "DependencyMissing",
  reason: `${messageId} waits for Company:c-1`,
  waitingFor: [{ entity: "Company", id: "c-1" }],
  attempts: 5,
  firstSeenAt,
  lastSeenAt: firstSeenAt + 1_000
})

const copy = (
  id: string,
  version: number,
  fields: { readonly state?: CopyState; readonly payload?: CopyRow["payload"]; readonly entity?: string } = {}
): CopyRow => {
  const state = fields.state ?? "live"
  return {
    entity: fields.entity ?? "User",
    id,
    version,
    state,
    payload: fields.payload !== undefined ? fields.payload : state === "deleted" ? null : { name: `${id} v${version}` },
    deletedAt: state === "live" ? null : T0,
    syncedAt: T0,
    messageId: `m-${id}-${version}`
  }
}

const source = (id: string, version: number, state: CopyState = "live", entity = "User"): SourceRow => ({
  entity,
  id,
  version,
  state,
  payload: state === "deleted" ? null : { name: `${id} v${version}` },
  updatedAt: T0,
  deletedAt: state === "live" ? null : T0
})

/**
 * Registers the store conformance tests under `name`. `makeLayer` is called once per test and must give
 * a fresh, empty store.
 */
export const storeConformance = <E>(
  name: string,
  makeLayer: () => Layer.Layer<Stores, E>,
  options?: StoreConformanceOptions
): void => {
  const leaseMillis = options?.leaseMillis ?? 30_000

  const test = (title: string, body: () => Effect.Effect<void, unknown, Stores | Scope.Scope>) =>
    it.effect(title, () => TestClock.setTime(T0).pipe(Effect.andThen(body), Effect.provide(makeLayer())))

  describe(name, () => {
    describe("Outbox", () => {
      test("an append in a failed transaction leaves no rows, nor the entity write", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const sources = yield* SourceRepository
          const error = yield* outbox.transaction(
            Effect.gen(function*() {
              yield* sources.put(source("u-1", 1), null)
              yield* OutboxTransaction.use((tx) => tx.append([envelope("m-1")]))
              return yield* new Boom()
            })
          ).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual(yield* outbox.claim(10), [])
          assert.deepStrictEqual(yield* outbox.rows(), [])
          assert.deepStrictEqual(yield* outbox.pending, { count: 0, oldestCreatedAt: null })
          assert.isNull(yield* sources.get("User", "u-1"))
        }))

      test("a committed append is claimable, with the entity write", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const sources = yield* SourceRepository
          yield* outbox.transaction(
            Effect.gen(function*() {
              yield* sources.put(source("u-1", 1), null)
              yield* OutboxTransaction.use((tx) => tx.append([envelope("m-1"), envelope("m-2", "u-2")]))
            })
          )
          const claimed = yield* outbox.claim(10)
          assert.deepStrictEqual(idsOf(claimed.map((row) => row.envelope)), ["m-1", "m-2"])
          const [first, second] = claimed
          assert.deepStrictEqual(first?.envelope, envelope("m-1"))
          assert.deepStrictEqual(second?.envelope, envelope("m-2", "u-2"))
          assert.isTrue((second?.seq ?? 0) > (first?.seq ?? 0))
          for (const row of claimed) {
            assert.strictEqual(row.createdAt, T0)
            assert.strictEqual(row.nextAttemptAt, T0)
            assert.strictEqual(row.attempts, 0)
            assert.isNull(row.lastError)
            assert.isNull(row.publishedAt)
          }
          assert.deepStrictEqual(yield* sources.get("User", "u-1"), source("u-1", 1))
          assert.deepStrictEqual(yield* outbox.pending, { count: 2, oldestCreatedAt: T0 })
        }))

      test("claims in sequence order, at most `limit`, skipping claimed rows", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1"))
          yield* append(envelope("m-2"))
          yield* append(envelope("m-3"))
          const all = yield* outbox.rows()
          assert.deepStrictEqual(idsOf(all.map((row) => row.envelope)), ["m-1", "m-2", "m-3"])
          const [s1, s2, s3] = seqsOf(all)
          assert.isTrue(s1 !== undefined && s2 !== undefined && s3 !== undefined && s1 < s2 && s2 < s3)
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(2)), [s1, s2])
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(2)), [s3])
          assert.deepStrictEqual(yield* outbox.claim(2), [])
        }))

      test("afterSeq: a claim takes only rows after the seq; one without it takes the rows below", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1"))
          yield* append(envelope("m-2"))
          yield* append(envelope("m-3"))
          yield* append(envelope("m-4"))
          const [s1, s2, s3, s4] = seqsOf(yield* outbox.rows())
          assert.isTrue(s1 !== undefined && s2 !== undefined && s3 !== undefined && s4 !== undefined)
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(1, { afterSeq: s2! })), [s3])
          // the claimed row stays skipped; rows after it come next
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(10, { afterSeq: s1! })), [s2, s4])
          assert.deepStrictEqual(yield* outbox.claim(10, { afterSeq: s4! }), [])
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(10)), [s1])
        }))

      test("orderedByEntity: an entity's rows are claimed only from its earliest unpublished one on", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const ordered: ClaimOptions = { orderedByEntity: true }
          // u-1 v1..v3 and u-2 v1..v2, interleaved; u-3 v1
          yield* append(envelope("a1", "u-1", 1), envelope("b1", "u-2", 1))
          yield* append(envelope("a2", "u-1", 2))
          yield* append(envelope("b2", "u-2", 2), envelope("a3", "u-1", 3))
          yield* append(envelope("c1", "u-3", 1))
          const messageIds = (rows: ReadonlyArray<{ readonly envelope: Envelope }>) =>
            idsOf(rows.map((row) => row.envelope))
          // a claim may take several rows of an entity: one relay publishes them in order
          const first = yield* outbox.claim(2, ordered)
          assert.deepStrictEqual(messageIds(first), ["a1", "b1"])
          // while a1 and b1 are leased, no later row of u-1 or u-2 is claimable; u-3 is
          assert.deepStrictEqual(messageIds(yield* outbox.claim(10, ordered)), ["c1"])
          assert.deepStrictEqual(yield* outbox.claim(10, ordered), [])
          const [a1, b1] = seqsOf(first)
          assert.isTrue(a1 !== undefined && b1 !== undefined)
          // a1 published: u-1 continues; b1 rescheduled: u-2 waits for it
          yield* outbox.markPublished([a1!])
          yield* outbox.markFailed([b1!], { error: "nacked", nextAttemptAt: T0 + 1_000 })
          assert.deepStrictEqual(messageIds(yield* outbox.claim(10, ordered)), ["a2", "a3"])
          assert.deepStrictEqual(yield* outbox.claim(10, ordered), [])
          yield* TestClock.adjust(1_000)
          assert.deepStrictEqual(messageIds(yield* outbox.claim(10, ordered)), ["b1", "b2"])
        }))

      test("orderedByEntity: a lease that ends makes the entity's rows claimable again, in order", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const ordered: ClaimOptions = { orderedByEntity: true }
          yield* append(envelope("a1", "u-1", 1))
          yield* append(envelope("a2", "u-1", 2))
          assert.strictEqual((yield* outbox.claim(1, ordered)).length, 1)
          assert.deepStrictEqual(yield* outbox.claim(10, ordered), [])
          // the unordered claim is not held back by the entity's earlier row
          assert.deepStrictEqual(idsOf((yield* outbox.claim(10)).map((row) => row.envelope)), ["a2"])
          yield* TestClock.adjust(leaseMillis)
          assert.deepStrictEqual(idsOf((yield* outbox.claim(10, ordered)).map((row) => row.envelope)), ["a1", "a2"])
        }))

      test("a claimed row is claimable again only when its lease ends", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1"))
          const [row] = yield* outbox.claim(10)
          assert.isDefined(row)
          assert.deepStrictEqual(yield* outbox.claim(10), [])
          yield* TestClock.adjust(leaseMillis - 1)
          assert.deepStrictEqual(yield* outbox.claim(10), [])
          yield* TestClock.adjust(1)
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(10)), seqsOf(row ? [row] : []))
          // the new claim holds a new lease
          assert.deepStrictEqual(yield* outbox.claim(10), [])
          yield* TestClock.adjust(leaseMillis)
          assert.strictEqual((yield* outbox.claim(10)).length, 1)
        }))

      test("markPublished removes rows from claims and pending", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1"))
          yield* TestClock.adjust(1_000)
          yield* append(envelope("m-2"))
          assert.deepStrictEqual(yield* outbox.pending, { count: 2, oldestCreatedAt: T0 })
          const [first, second] = seqsOf(yield* outbox.claim(10))
          assert.isTrue(first !== undefined && second !== undefined)
          yield* outbox.markPublished(first === undefined ? [] : [first])
          const published = (yield* outbox.rows()).find((row) => row.seq === first)
          assert.strictEqual(published?.publishedAt, T0 + 1_000)
          assert.deepStrictEqual(yield* outbox.pending, { count: 1, oldestCreatedAt: T0 + 1_000 })
          yield* TestClock.adjust(leaseMillis)
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(10)), [second])
          yield* outbox.markPublished(second === undefined ? [] : [second])
          assert.deepStrictEqual(yield* outbox.pending, { count: 0, oldestCreatedAt: null })
          yield* TestClock.adjust(leaseMillis)
          assert.deepStrictEqual(yield* outbox.claim(10), [])
          assert.strictEqual((yield* outbox.rows()).length, 2)
        }))

      test("markFailed records the error and delays the row until nextAttemptAt", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1"))
          const seqs = seqsOf(yield* outbox.claim(10))
          yield* outbox.markFailed(seqs, { error: "nacked", nextAttemptAt: T0 + 5_000 })
          const [failed] = yield* outbox.rows()
          assert.strictEqual(failed?.attempts, 1)
          assert.strictEqual(failed?.lastError, "nacked")
          assert.strictEqual(failed?.nextAttemptAt, T0 + 5_000)
          assert.isNull(failed?.publishedAt)
          assert.deepStrictEqual(yield* outbox.pending, { count: 1, oldestCreatedAt: T0 })
          assert.deepStrictEqual(yield* outbox.claim(10), [])
          yield* TestClock.adjust(4_999)
          assert.deepStrictEqual(yield* outbox.claim(10), [])
          yield* TestClock.adjust(1)
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(10)), seqs)
          // markFailed clears the lease: a row due now is claimable at once
          const now = yield* Clock.currentTimeMillis
          yield* outbox.markFailed(seqs, { error: "timeout", nextAttemptAt: now })
          const [again] = yield* outbox.claim(10)
          assert.strictEqual(again?.attempts, 2)
          assert.strictEqual(again?.lastError, "timeout")
        }))

      test("awaitAppended completes after a later commit", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1")) // committed before the wait began: does not count
          const done = yield* Ref.make(false)
          const waiter = yield* outbox.awaitAppended.pipe(Effect.andThen(Ref.set(done, true)), Effect.forkChild)
          yield* Effect.repeat(Effect.yieldNow, { times: 20 })
          assert.isFalse(yield* Ref.get(done))
          yield* append(envelope("m-2"))
          yield* Fiber.join(waiter)
          assert.isTrue(yield* Ref.get(done))
        }))

      test("rows pages in sequence order after `afterSeq`", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1"), envelope("m-2"))
          yield* append(envelope("m-3"))
          const all = yield* outbox.rows()
          assert.deepStrictEqual(idsOf(all.map((row) => row.envelope)), ["m-1", "m-2", "m-3"])
          const [s1, s2, s3] = seqsOf(all)
          assert.deepStrictEqual(seqsOf(yield* outbox.rows({ limit: 2 })), [s1, s2])
          assert.deepStrictEqual(seqsOf(yield* outbox.rows({ afterSeq: s1 ?? 0 })), [s2, s3])
          assert.deepStrictEqual(seqsOf(yield* outbox.rows({ afterSeq: s1 ?? 0, limit: 1 })), [s2])
          assert.deepStrictEqual(yield* outbox.rows({ afterSeq: s3 ?? 0 }), [])
        }))

      test("prune deletes rows published before the given time, never unpublished ones", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(envelope("m-1"), envelope("m-2"), envelope("m-3"))
          const [s1, s2, s3] = seqsOf(yield* outbox.claim(10))
          yield* TestClock.adjust(1_000)
          yield* outbox.markPublished(s1 === undefined ? [] : [s1])
          yield* TestClock.adjust(2_000)
          yield* outbox.markPublished(s2 === undefined ? [] : [s2])
          assert.strictEqual(yield* outbox.prune(T0 + 1_000), 0)
          assert.strictEqual(yield* outbox.prune(T0 + 2_000), 1)
          assert.deepStrictEqual(seqsOf(yield* outbox.rows()), [s2, s3])
          assert.strictEqual(yield* outbox.prune(T0 + 1_000_000), 1)
          assert.deepStrictEqual(seqsOf(yield* outbox.rows()), [s3])
          assert.deepStrictEqual(yield* outbox.pending, { count: 1, oldestCreatedAt: T0 })
        }))

      test("pruneBatch deletes at most `limit` published rows, oldest first; prune loops until done", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* append(...Array.from({ length: 7 }, (_, i) => envelope(`m-${i}`)))
          const seqs = seqsOf(yield* outbox.claim(10))
          yield* outbox.markPublished(seqs.slice(0, 6))
          yield* TestClock.adjust(1_000)
          assert.strictEqual(yield* outbox.pruneBatch(T0 + 1, 4), 4)
          assert.deepStrictEqual(seqsOf(yield* outbox.rows()), seqs.slice(4))
          assert.strictEqual(yield* outbox.pruneBatch(T0 + 1, 4), 2)
          assert.strictEqual(yield* outbox.pruneBatch(T0 + 1, 4), 0)
          assert.deepStrictEqual(seqsOf(yield* outbox.rows()), seqs.slice(6))
        }))

      test("takeTurn gives a task's turn to one caller per interval", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const takes = yield* Effect.all(Array.from({ length: 4 }, () => outbox.takeTurn("prune", 1_000)), {
            concurrency: "unbounded"
          })
          assert.deepStrictEqual(takes.filter((taken) => taken).length, 1)
          assert.isTrue(yield* outbox.takeTurn("another task", 1_000))
          yield* TestClock.adjust(999)
          assert.isFalse(yield* outbox.takeTurn("prune", 1_000))
          yield* TestClock.adjust(1)
          assert.isTrue(yield* outbox.takeTurn("prune", 1_000))
          assert.isFalse(yield* outbox.takeTurn("prune", 1_000))
        }))
      test("republish makes the published rows of a range due again, in steps, and leaves others alone", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const company = (messageId: string): Envelope => ({ ...envelope(messageId, "c-1"), entity: "Company" })
          yield* append(envelope("m-1", "u-1"), company("m-2"))
          yield* TestClock.adjust(1_000)
          yield* append(envelope("m-3", "u-2"), envelope("m-4", "u-3"))
          yield* TestClock.adjust(1_000)
          yield* append(envelope("m-5", "u-4"))
          const [s1, s2, s3, s4, s5] = seqsOf(yield* outbox.claim(10))
          yield* outbox.markPublished([s1, s2, s3, s4].filter((seq) => seq !== undefined))
          yield* TestClock.adjust(1_000)

          // nothing outside the range, nor unpublished rows (m-5), nor other entities or producers
          assert.deepStrictEqual(yield* outbox.republish({ from: T0 + 5_000, to: T0 + 9_000 }), {
            count: 0,
            lastSeq: null
          })
          assert.deepStrictEqual(
            yield* outbox.republish({ from: T0, to: T0 + 1_000, entity: "Order" }),
            { count: 0, lastSeq: null }
          )
          assert.strictEqual((yield* outbox.republish({ from: T0, to: T0 + 9_000, producer: "billing" })).count, 0)

          // one entity of the first second
          assert.deepStrictEqual(yield* outbox.republish({ from: T0, to: T0 + 1_000, entity: "Company" }), {
            count: 1,
            lastSeq: s2 ?? null
          })
          // the second second, one row per step
          const first = yield* outbox.republish({ from: T0 + 1_000, to: T0 + 2_000, limit: 1 })
          assert.deepStrictEqual(first, { count: 1, lastSeq: s3 ?? null })
          const second = yield* outbox.republish({
            from: T0 + 1_000,
            to: T0 + 2_000,
            limit: 1,
            ...(first.lastSeq === null ? {} : { afterSeq: first.lastSeq })
          })
          assert.deepStrictEqual(second, { count: 1, lastSeq: s4 ?? null })
          assert.strictEqual((yield* outbox.republish({ from: T0 + 1_000, to: T0 + 2_000, limit: 0 })).count, 0)

          const rows = yield* outbox.rows()
          assert.deepStrictEqual(
            rows.map((row) => [row.envelope.messageId, row.publishedAt, row.attempts, row.nextAttemptAt]),
            [
              ["m-1", T0 + 2_000, 0, T0],
              ["m-2", null, 0, T0 + 3_000],
              ["m-3", null, 0, T0 + 3_000],
              ["m-4", null, 0, T0 + 3_000],
              ["m-5", null, 0, T0 + 2_000]
            ]
          )
          assert.deepStrictEqual(yield* outbox.pending, { count: 4, oldestCreatedAt: T0 })
          // the relay claims them again, in sequence order (m-5 is still leased by the first claim)
          assert.deepStrictEqual(seqsOf(yield* outbox.claim(10)), [s2, s3, s4])
          assert.isDefined(s5)
        }))
    })

    describe("Inbox", () => {
      test("record dedupes by (consumer, messageId)", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          assert.isTrue(yield* inbox.record("directory", "m-1"))
          assert.isFalse(yield* inbox.record("directory", "m-1"))
          assert.isTrue(yield* inbox.record("billing", "m-1"))
          assert.isTrue(yield* inbox.record("directory", "m-2"))
          assert.isFalse(yield* inbox.record("billing", "m-1"))
        }))

      test("recordMany records many at once and returns the new ones; forget removes records", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const transactor = yield* Transactor
          assert.isTrue(yield* inbox.record("directory", "m-2"))
          const fresh = yield* inbox.recordMany("directory", ["m-3", "m-1", "m-2", "m-3"])
          assert.deepStrictEqual([...fresh].sort(), ["m-1", "m-3"])
          assert.deepStrictEqual([...(yield* inbox.recordMany("billing", ["m-1"]))], ["m-1"])
          assert.deepStrictEqual([...(yield* inbox.recordMany("directory", ["m-1", "m-2"]))], [])
          assert.strictEqual((yield* inbox.recordMany("directory", [])).size, 0)
          yield* inbox.forget("directory", ["m-1", "m-2", "m-9"])
          assert.isTrue(yield* inbox.record("directory", "m-1"))
          assert.isFalse(yield* inbox.record("directory", "m-3"))
          assert.isFalse(yield* inbox.record("billing", "m-1"))
          const error = yield* transactor.withTransaction(
            Effect.andThen(inbox.recordMany("directory", ["m-4", "m-5"]), new Boom())
          ).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual([...(yield* inbox.recordMany("directory", ["m-5"]))], ["m-5"])
        }))

      test("writes in a failed transaction are rolled back, committed ones stay", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const transactor = yield* Transactor
          const error = yield* transactor.withTransaction(
            Effect.gen(function*() {
              assert.isTrue(yield* inbox.record("directory", "m-1"))
              yield* inbox.park(waitingRow("directory", "m-1", { nextAttemptAt: T0 }))
              yield* inbox.deadLetter(deadRow("directory", "m-2", T0))
              return yield* new Boom()
            })
          ).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual(yield* inbox.waiting("directory"), [])
          assert.deepStrictEqual(yield* inbox.deadLetters("directory"), [])
          assert.isTrue(yield* transactor.withTransaction(inbox.record("directory", "m-1")))
          assert.isFalse(yield* inbox.record("directory", "m-1"))
        }))

      test("park, due, nextDueAt and waiting order by next attempt, then first seen", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          assert.isNull(yield* inbox.nextDueAt("directory"))
          assert.deepStrictEqual(yield* inbox.due("directory", T0 + 1_000_000, 10), [])
          const w1 = waitingRow("directory", "m-1", { nextAttemptAt: T0 + 3_000, firstSeenAt: T0 })
          const w2 = waitingRow("directory", "m-2", { nextAttemptAt: T0 + 1_000, firstSeenAt: T0 + 100 })
          const w3 = waitingRow("directory", "m-3", { nextAttemptAt: T0 + 1_000, firstSeenAt: T0 + 50 })
          const other = waitingRow("billing", "m-4", { nextAttemptAt: T0 })
          yield* Effect.forEach([w1, w2, w3, other], inbox.park)
          assert.strictEqual(yield* inbox.nextDueAt("directory"), T0 + 1_000)
          assert.strictEqual(yield* inbox.nextDueAt("billing"), T0)
          assert.deepStrictEqual(yield* inbox.due("directory", T0 + 999, 10), [])
          assert.deepStrictEqual(yield* inbox.due("directory", T0 + 1_000, 10), [w3, w2])
          assert.deepStrictEqual(yield* inbox.due("directory", T0 + 5_000, 10), [w3, w2, w1])
          assert.deepStrictEqual(yield* inbox.due("directory", T0 + 5_000, 2), [w3, w2])
          assert.deepStrictEqual(yield* inbox.waiting("directory"), [w3, w2, w1])
          // park replaces by messageId
          const w1Again = { ...w1, attempts: 2, nextAttemptAt: T0 + 500, lastSeenAt: T0 + 400 }
          yield* inbox.park(w1Again)
          assert.deepStrictEqual(yield* inbox.waiting("directory"), [w1Again, w3, w2])
          assert.strictEqual(yield* inbox.nextDueAt("directory"), T0 + 500)
        }))

      test("wake makes rows waiting for one of the refs due now", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const later = T0 + 60_000
          const a = waitingRow("directory", "m-a", { nextAttemptAt: later, firstSeenAt: T0 }, [
            { entity: "Company", id: "c-1" }
          ])
          const b = waitingRow("directory", "m-b", { nextAttemptAt: later, firstSeenAt: T0 + 1 }, [
            { entity: "Company", id: "c-2" },
            { entity: "Department", id: "d-1" }
          ])
          const c1 = { entity: "Company", id: "c-1" }
          const userC1 = { entity: "User", id: "c-1" }
          const sameIdOtherEntity = waitingRow("directory", "m-c", { nextAttemptAt: later }, [userC1])
          const otherConsumer = waitingRow("billing", "m-d", { nextAttemptAt: later }, [c1])
          yield* Effect.forEach([a, b, sameIdOtherEntity, otherConsumer], inbox.park)
          yield* TestClock.adjust(10)
          const now = T0 + 10
          assert.strictEqual(yield* inbox.wake("directory", []), 0)
          assert.strictEqual(yield* inbox.wake("directory", [{ entity: "Company", id: "c-9" }]), 0)
          assert.deepStrictEqual(yield* inbox.due("directory", now, 10), [])
          const woken = yield* inbox.wake("directory", [c1, { entity: "Department", id: "d-1" }])
          assert.strictEqual(woken, 2)
          assert.deepStrictEqual(yield* inbox.due("directory", now, 10), [
            { ...a, nextAttemptAt: now },
            { ...b, nextAttemptAt: now }
          ])
          assert.strictEqual(yield* inbox.nextDueAt("directory"), now)
          assert.deepStrictEqual(yield* inbox.waiting("billing"), [otherConsumer])
          const stillWaiting = (yield* inbox.waiting("directory")).find((row) => row.messageId === "m-c")
          assert.deepStrictEqual(stillWaiting, sameIdOtherEntity)
        }))

      test("release removes one waiting row of one consumer", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const w1 = waitingRow("directory", "m-1", { nextAttemptAt: T0 })
          const w2 = waitingRow("directory", "m-2", { nextAttemptAt: T0 + 1 })
          const other = waitingRow("billing", "m-1", { nextAttemptAt: T0 })
          yield* Effect.forEach([w1, w2, other], inbox.park)
          yield* inbox.release("directory", "m-1")
          yield* inbox.release("directory", "m-404")
          assert.deepStrictEqual(yield* inbox.waiting("directory"), [w2])
          assert.deepStrictEqual(yield* inbox.waiting("billing"), [other])
        }))

      test("deadLetter moves a row to the dead rows; replay moves it back, due now", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          yield* inbox.park(waitingRow("directory", "m-1", { nextAttemptAt: T0 + 1_000 }))
          const d1 = deadRow("directory", "m-1", T0 + 100)
          yield* inbox.deadLetter(d1)
          assert.deepStrictEqual(yield* inbox.waiting("directory"), [])
          assert.isNull(yield* inbox.nextDueAt("directory"))
          assert.deepStrictEqual(yield* inbox.deadLetters("directory"), [d1])
          // dead-lettered later, but first seen earlier: listed first
          const d2 = deadRow("directory", "m-2", T0)
          yield* inbox.deadLetter(d2)
          assert.deepStrictEqual(yield* inbox.deadLetters("directory"), [d2, d1])
          assert.deepStrictEqual(yield* inbox.deadLetters("billing"), [])
          assert.isFalse(yield* inbox.replay("billing", "m-1", T0))

          yield* TestClock.adjust(5_000)
          const now = T0 + 5_000
          assert.isTrue(yield* inbox.replay("directory", "m-1", now))
          assert.deepStrictEqual(yield* inbox.deadLetters("directory"), [d2])
          const [replayed, ...rest] = yield* inbox.due("directory", now, 10)
          assert.deepStrictEqual(rest, [])
          assert.strictEqual(replayed?.consumer, "directory")
          assert.strictEqual(replayed?.messageId, "m-1")
          assert.deepStrictEqual(replayed?.envelope, d1.envelope)
          assert.deepStrictEqual(replayed?.waitingFor, d1.waitingFor)
          assert.strictEqual(replayed?.attempts, 0)
          assert.strictEqual(replayed?.nextAttemptAt, now)
          assert.isFalse(yield* inbox.replay("directory", "m-1", now))
          assert.isFalse(yield* inbox.replay("directory", "m-404", now))
        }))

      test("stats counts waiting and dead rows of one consumer and tells the oldest of each", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          assert.deepStrictEqual(yield* inbox.stats("directory"), {
            waiting: 0,
            dead: 0,
            oldestWaitingSince: null,
            oldestDeadAt: null
          })
          yield* inbox.park(waitingRow("directory", "m-1", { nextAttemptAt: T0 + 9_000, firstSeenAt: T0 + 300 }))
          yield* inbox.park(waitingRow("directory", "m-2", { nextAttemptAt: T0 + 1_000, firstSeenAt: T0 + 200 }))
          yield* inbox.park(waitingRow("billing", "m-3", { nextAttemptAt: T0, firstSeenAt: T0 }))
          yield* inbox.deadLetter(deadRow("directory", "m-4", T0 + 50))
          yield* inbox.deadLetter({ ...deadRow("directory", "m-5", T0 + 60), lastSeenAt: T0 + 70 })
          yield* inbox.deadLetter(deadRow("billing", "m-6", T0))
          assert.deepStrictEqual(yield* inbox.stats("directory"), {
            waiting: 2,
            dead: 2,
            oldestWaitingSince: T0 + 200,
            oldestDeadAt: T0 + 70
          })
          assert.deepStrictEqual(yield* inbox.stats("nobody"), {
            waiting: 0,
            dead: 0,
            oldestWaitingSince: null,
            oldestDeadAt: null
          })
        }))

      test("deadLetterPage pages oldest first with a stable cursor, at most the limit", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const rows = Array.from({ length: 7 }, (_, i) => deadRow("directory", `m-${i}`, T0 + 10 * (i % 4)))
          yield* Effect.forEach(rows, inbox.deadLetter)
          yield* inbox.deadLetter(deadRow("billing", "m-x", T0))
          const expected = idsOf(yield* inbox.deadLetters("directory"))
          assert.deepStrictEqual(expected, ["m-0", "m-4", "m-1", "m-5", "m-2", "m-6", "m-3"])
          const first = yield* inbox.deadLetterPage("directory", { limit: 3 })
          assert.deepStrictEqual(idsOf(first.items), ["m-0", "m-4", "m-1"])
          assert.deepStrictEqual(first.next, { firstSeenAt: T0 + 10, messageId: "m-1" })
          // rows dead-lettered before the cursor, or replayed, change nothing after it
          yield* inbox.deadLetter(deadRow("directory", "m-early", T0 - 1))
          assert.isTrue(yield* inbox.replay("directory", "m-0", T0))
          const second = yield* inbox.deadLetterPage("directory", {
            limit: 3,
            ...(first.next ? { after: first.next } : {})
          })
          assert.deepStrictEqual(idsOf(second.items), ["m-5", "m-2", "m-6"])
          assert.isNotNull(second.next)
          const last = yield* inbox.deadLetterPage("directory", {
            limit: 3,
            ...(second.next ? { after: second.next } : {})
          })
          assert.deepStrictEqual(idsOf(last.items), ["m-3"])
          assert.isNull(last.next)
          // exactly the limit left: no next page
          const exact = yield* inbox.deadLetterPage("directory", { limit: 7 })
          assert.deepStrictEqual(idsOf(exact.items), ["m-early", "m-4", "m-1", "m-5", "m-2", "m-6", "m-3"])
          assert.isNull(exact.next)
          // the default and the largest page
          assert.lengthOf((yield* inbox.deadLetterPage("directory")).items, 7)
          assert.lengthOf((yield* inbox.deadLetterPage("directory", { limit: 10_000 })).items, 7)
          assert.deepStrictEqual((yield* inbox.deadLetterPage("directory", { limit: 0 })).items, [])
          assert.deepStrictEqual((yield* inbox.deadLetterPage("directory", { limit: -5 })).items, [])
        }))

      test("a large dead-row set is paged in bounded pages, never more than the largest page", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const total = maxPageSize + 150
          yield* Effect.forEach(
            Array.from({ length: total }, (_, i) => deadRow("directory", `m-${String(i).padStart(5, "0")}`, T0)),
            inbox.deadLetter,
            { concurrency: 8 }
          )
          const seen: Array<string> = []
          let after: DeadRowCursor | null = null
          let pages = 0
          do {
            const page: Page<DeadRow, DeadRowCursor> = yield* inbox.deadLetterPage("directory", {
              limit: 100_000,
              ...(after !== null ? { after } : {})
            })
            assert.isAtMost(page.items.length, maxPageSize)
            seen.push(...idsOf(page.items))
            after = page.next
            pages++
          } while (after !== null)
          assert.strictEqual(pages, 2)
          assert.strictEqual(seen.length, total)
          assert.strictEqual(new Set(seen).size, total)
          assert.strictEqual((yield* inbox.deadLetterPage("directory")).items.length, defaultPageSize)
          assert.strictEqual((yield* inbox.stats("directory")).dead, total)
        }))

      test("deadLetterPage filters by error, entity, time window and message ids", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const company = (messageId: string): DeadRow => ({
            ...deadRow("directory", messageId, T0 + 5),
            envelope: { ...envelope(messageId), entity: "Company" },
            error: "InvalidPayload",
            lastSeenAt: T0 + 2_000
          })
          const rows = [
            deadRow("directory", "m-1", T0),
            deadRow("directory", "m-2", T0 + 10),
            company("m-3"),
            company("m-4")
          ]
          yield* Effect.forEach(rows, inbox.deadLetter)
          const ids = (filter: DeadRowFilter) =>
            Effect.map(inbox.deadLetterPage("directory", { filter }), (page) => idsOf(page.items))
          assert.deepStrictEqual(yield* ids({ errors: ["InvalidPayload"] }), ["m-3", "m-4"])
          assert.deepStrictEqual(yield* ids({ errors: ["DependencyMissing", "InvalidPayload"] }), [
            "m-1",
            "m-3",
            "m-4",
            "m-2"
          ])
          assert.deepStrictEqual(yield* ids({ errors: [] }), [])
          assert.deepStrictEqual(yield* ids({ entities: ["User"] }), ["m-1", "m-2"])
          // lastSeenAt: m-1 at T0+1000, m-2 at T0+1010, m-3 and m-4 at T0+2000
          assert.deepStrictEqual(yield* ids({ from: T0 + 1_010 }), ["m-3", "m-4", "m-2"])
          assert.deepStrictEqual(yield* ids({ to: T0 + 1_010 }), ["m-1"])
          assert.deepStrictEqual(yield* ids({ from: T0 + 1_000, to: T0 + 2_000 }), ["m-1", "m-2"])
          assert.deepStrictEqual(yield* ids({ messageIds: ["m-4", "m-2", "m-9"] }), ["m-4", "m-2"])
          assert.deepStrictEqual(yield* ids({ entities: ["Company"], messageIds: ["m-1", "m-3"] }), ["m-3"])
          const filtered = yield* inbox.deadLetterPage("directory", { limit: 1, filter: { entities: ["Company"] } })
          assert.deepStrictEqual(idsOf(filtered.items), ["m-3"])
          const rest = yield* inbox.deadLetterPage("directory", {
            limit: 1,
            filter: { entities: ["Company"] },
            ...(filtered.next ? { after: filtered.next } : {})
          })
          assert.deepStrictEqual(idsOf(rest.items), ["m-4"])
          assert.isNull(rest.next)
        }))

      test("waitingPage pages waiting rows earliest due first", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const rows = [
            waitingRow("directory", "m-1", { nextAttemptAt: T0 + 3_000 }),
            waitingRow("directory", "m-2", { nextAttemptAt: T0 + 1_000, firstSeenAt: T0 + 100 }),
            waitingRow("directory", "m-3", { nextAttemptAt: T0 + 1_000, firstSeenAt: T0 + 50 }),
            waitingRow("billing", "m-4", { nextAttemptAt: T0 })
          ]
          yield* Effect.forEach(rows, inbox.park)
          const first = yield* inbox.waitingPage("directory", { limit: 2 })
          assert.deepStrictEqual(idsOf(first.items), ["m-3", "m-2"])
          assert.deepStrictEqual(first.next, { nextAttemptAt: T0 + 1_000, firstSeenAt: T0 + 100, messageId: "m-2" })
          const second = yield* inbox.waitingPage("directory", {
            limit: 2,
            ...(first.next ? { after: first.next } : {})
          })
          assert.deepStrictEqual(idsOf(second.items), ["m-1"])
          assert.isNull(second.next)
          assert.deepStrictEqual(idsOf((yield* inbox.waitingPage("directory")).items), ["m-3", "m-2", "m-1"])
        }))

      test("replayMany moves every matching dead row back to waiting, due now, attempts reset", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const transactor = yield* Transactor
          const many = Array.from(
            { length: replayBatchSize + 20 },
            (_, i) => deadRow("directory", `m-${String(i).padStart(5, "0")}`, T0 + i)
          )
          const other: DeadRow = { ...deadRow("directory", "m-other", T0), error: "InvalidPayload" }
          yield* Effect.forEach([...many, other, deadRow("billing", "m-00000", T0)], inbox.deadLetter, {
            concurrency: 8
          })
          yield* TestClock.adjust(5_000)
          const now = T0 + 5_000
          assert.strictEqual(yield* inbox.replayMany("directory", { errors: ["NoSuchError"] }, now), 0)
          // rolled back with its transaction
          const error = yield* transactor.withTransaction(
            Effect.andThen(inbox.replayMany("directory", { errors: ["DependencyMissing"] }, now), new Boom())
          ).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.strictEqual((yield* inbox.stats("directory")).dead, many.length + 1)
          assert.strictEqual(yield* inbox.replayMany("directory", { errors: ["DependencyMissing"] }, now), many.length)
          assert.deepStrictEqual(yield* inbox.stats("directory"), {
            waiting: many.length,
            dead: 1,
            oldestWaitingSince: T0,
            oldestDeadAt: T0 + 1_000
          })
          assert.deepStrictEqual(idsOf((yield* inbox.deadLetterPage("directory")).items), ["m-other"])
          assert.strictEqual((yield* inbox.stats("billing")).dead, 1)
          const due = yield* inbox.due("directory", now, maxPageSize)
          assert.strictEqual(due.length, many.length)
          for (const row of due) {
            assert.strictEqual(row.attempts, 0)
            assert.strictEqual(row.nextAttemptAt, now)
          }
          const first = due.find((row) => row.messageId === "m-00000")
          assert.deepStrictEqual(first, {
            consumer: "directory",
            messageId: "m-00000",
            envelope: many[0]!.envelope,
            waitingFor: many[0]!.waitingFor,
            attempts: 0,
            nextAttemptAt: now,
            firstSeenAt: T0,
            lastSeenAt: T0 + 1_000
          })
          assert.strictEqual(
            yield* inbox.replayMany("directory", { entities: ["User"], messageIds: ["m-other"] }, now),
            1
          )
          assert.strictEqual((yield* inbox.stats("directory")).dead, 0)
        }))

      test("claimDue leases due rows to one claimer until the lease ends", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const w1 = waitingRow("directory", "m-1", { nextAttemptAt: T0, firstSeenAt: T0 })
          const w2 = waitingRow("directory", "m-2", { nextAttemptAt: T0, firstSeenAt: T0 + 1 })
          const w3 = waitingRow("directory", "m-3", { nextAttemptAt: T0 + 5_000, firstSeenAt: T0 })
          const other = waitingRow("billing", "m-4", { nextAttemptAt: T0 })
          yield* Effect.forEach([w1, w2, w3, other], inbox.park)
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0, 1, 1_000), [w1])
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0, 10, 1_000), [w2])
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0, 10, 1_000), [])
          // claimed rows are due for the others when their lease ends; `due` still lists them
          assert.strictEqual(yield* inbox.nextDueAt("directory"), T0 + 1_000)
          assert.deepStrictEqual(yield* inbox.due("directory", T0, 10), [w1, w2])
          assert.deepStrictEqual(yield* inbox.claimDue("billing", T0, 10, 1_000), [other])
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0 + 999, 10, 1_000), [])
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0 + 1_000, 10, 1_000), [w1, w2])
          // parking again ends the claim; releasing removes the row
          const w1Again = { ...w1, attempts: 2, nextAttemptAt: T0 + 1_500 }
          yield* inbox.park(w1Again)
          assert.isTrue(yield* inbox.release("directory", "m-2"))
          assert.strictEqual(yield* inbox.nextDueAt("directory"), T0 + 1_500)
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0 + 1_500, 10, 1_000), [w1Again])
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0 + 2_499, 10, 1_000), [])
          assert.deepStrictEqual(yield* inbox.claimDue("directory", T0 + 6_000, 10, 1_000), [w1Again, w3])
        }))

      test("earliestWaiting gives the lowest parked version of each asked entity", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const at = (consumer: string, messageId: string, entityId: string, version: number): WaitingRow => ({
            ...waitingRow(consumer, messageId, { nextAttemptAt: T0 }),
            envelope: envelope(messageId, entityId, version)
          })
          yield* Effect.forEach([
            at("directory", "m-1", "u-1", 7),
            at("directory", "m-2", "u-1", 4),
            at("directory", "m-3", "u-2", 9),
            at("directory", "m-4", "u-3", 2),
            {
              ...at("directory", "m-6", "u-2", 3),
              envelope: { ...envelope("m-6", "u-2", 3), action: "deleted" as const }
            },
            at("billing", "m-5", "u-1", 1)
          ], inbox.park)
          const asked = [{ entity: "User", id: "u-1" }, { entity: "User", id: "u-2" }, { entity: "User", id: "u-9" }]
          const sorted = (rows: ReadonlyArray<WaitingVersion>) => [...rows].sort((a, b) => a.id.localeCompare(b.id))
          assert.deepStrictEqual(sorted(yield* inbox.earliestWaiting("directory", asked)), [
            { entity: "User", id: "u-1", version: 4 },
            { entity: "User", id: "u-2", version: 9 }
          ])
          // waiting for an entity is not being one of its events
          assert.deepStrictEqual(yield* inbox.earliestWaiting("directory", [{ entity: "Company", id: "c-1" }]), [])
          assert.deepStrictEqual(yield* inbox.earliestWaiting("directory", []), [])
          assert.isTrue(yield* inbox.release("directory", "m-2"))
          assert.deepStrictEqual(yield* inbox.earliestWaiting("directory", [{ entity: "User", id: "u-1" }]), [
            { entity: "User", id: "u-1", version: 7 }
          ])
        }))

      test("concurrent claimDue calls never take the same row", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          const rows = Array.from(
            { length: 30 },
            (_, i) => waitingRow("directory", `m-${String(i).padStart(2, "0")}`, { nextAttemptAt: T0 })
          )
          yield* Effect.forEach(rows, inbox.park)
          const claims = yield* Effect.all(
            Array.from({ length: 5 }, () => inbox.claimDue("directory", T0, 8, 1_000)),
            { concurrency: "unbounded" }
          )
          const claimed = claims.flatMap(idsOf)
          assert.strictEqual(new Set(claimed).size, claimed.length)
          assert.deepStrictEqual([...claimed].sort(), idsOf(rows))
        }))

      test("pruneBatch deletes at most `limit` dedupe records, oldest first; takeTurn once per interval", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          for (const id of ["m-1", "m-2", "m-3"]) {
            assert.isTrue(yield* inbox.record("directory", id))
            yield* TestClock.adjust(10)
          }
          assert.strictEqual(yield* inbox.pruneBatch(T0 + 30, 2), 2)
          assert.isTrue(yield* inbox.record("directory", "m-1"))
          assert.isTrue(yield* inbox.record("directory", "m-2"))
          assert.isFalse(yield* inbox.record("directory", "m-3"))
          assert.strictEqual(yield* inbox.pruneBatch(T0 + 30, 2), 1)
          assert.isTrue(yield* inbox.takeTurn("inbox prune", 60_000))
          assert.isFalse(yield* inbox.takeTurn("inbox prune", 60_000))
          yield* TestClock.adjust(60_000)
          assert.isTrue(yield* inbox.takeTurn("inbox prune", 60_000))
        }))

      test("prune deletes dedupe records received before the given time", () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          assert.isTrue(yield* inbox.record("directory", "m-1"))
          yield* TestClock.adjust(1_000)
          assert.isTrue(yield* inbox.record("directory", "m-2"))
          assert.strictEqual(yield* inbox.prune(T0), 0)
          assert.strictEqual(yield* inbox.prune(T0 + 1_000), 1)
          assert.isTrue(yield* inbox.record("directory", "m-1"))
          assert.isFalse(yield* inbox.record("directory", "m-2"))
        }))
    })

    describe("CopyRepository", () => {
      test("the `newer` guard takes only higher versions; `newerOrEqual` also equal ones", () =>
        Effect.gen(function*() {
          const copies = yield* CopyRepository
          assert.isNull(yield* copies.get("User", "u-1"))
          assert.isTrue(yield* copies.upsert(copy("u-1", 1), "newer"))
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), copy("u-1", 1))
          assert.isTrue(yield* copies.upsert(copy("u-1", 2), "newer"))
          const equal = copy("u-1", 2, { payload: { name: "repaired" } })
          assert.isFalse(yield* copies.upsert(equal, "newer"))
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), copy("u-1", 2))
          assert.isTrue(yield* copies.upsert(equal, "newerOrEqual"))
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), equal)
          assert.isFalse(yield* copies.upsert(copy("u-1", 1), "newer"))
          assert.isFalse(yield* copies.upsert(copy("u-1", 1), "newerOrEqual"))
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), equal)
          // another entity with the same id is another copy
          assert.isTrue(yield* copies.upsert(copy("u-1", 1, { entity: "Company" }), "newer"))
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), equal)
        }))

      test("getMany gives the existing copies of refs in (entity, id) order, under any lock", () =>
        Effect.gen(function*() {
          const copies = yield* CopyRepository
          const transactor = yield* Transactor
          const rows = [copy("u-2", 1), copy("u-1", 3, { state: "deleted" }), copy("c-1", 1, { entity: "Company" })]
          yield* Effect.forEach(rows, (row) => copies.upsert(row, "newer"))
          const refs = [
            { entity: "User", id: "u-2" },
            { entity: "User", id: "u-9" },
            { entity: "Company", id: "c-1" },
            { entity: "User", id: "u-1" },
            { entity: "Company", id: "u-2" }
          ]
          const expected = [copy("c-1", 1, { entity: "Company" }), copy("u-1", 3, { state: "deleted" }), copy("u-2", 1)]
          assert.deepStrictEqual(yield* copies.getMany(refs), expected)
          assert.deepStrictEqual(yield* transactor.withTransaction(copies.getMany(refs, "forUpdate")), expected)
          assert.deepStrictEqual(yield* transactor.withTransaction(copies.getMany(refs, "forShare")), expected)
          assert.deepStrictEqual(yield* copies.getMany([]), [])
        }))

      test("upsertMany writes each row that passes its own guard and counts them", () =>
        Effect.gen(function*() {
          const copies = yield* CopyRepository
          const existing = [copy("u-1", 2), copy("u-2", 2), copy("u-3", 2), copy("u-5", 2)]
          yield* Effect.forEach(existing, (row) => copies.upsert(row, "newer"))
          const repaired = copy("u-3", 2, { payload: { name: "repaired" } })
          const written = yield* copies.upsertMany([
            { row: copy("u-1", 3), guard: "newer" },
            { row: copy("u-2", 2, { payload: { name: "ignored" } }), guard: "newer" },
            { row: repaired, guard: "newerOrEqual" },
            { row: copy("u-4", 1), guard: "newer" },
            { row: copy("u-5", 1), guard: "newerOrEqual" }
          ])
          assert.strictEqual(written, 3)
          assert.deepStrictEqual(yield* copies.list("User"), [
            copy("u-1", 3),
            copy("u-2", 2),
            repaired,
            copy("u-4", 1),
            copy("u-5", 2)
          ])
          assert.strictEqual(yield* copies.upsertMany([]), 0)
        }))

      test("a tombstone keeps older events out and a newer one re-creates", () =>
        Effect.gen(function*() {
          const copies = yield* CopyRepository
          assert.isTrue(yield* copies.upsert(copy("u-1", 1), "newer"))
          const tombstone = copy("u-1", 3, { state: "deleted" })
          assert.isTrue(yield* copies.upsert(tombstone, "newer"))
          assert.isFalse(yield* copies.upsert(copy("u-1", 2), "newer"))
          assert.isFalse(yield* copies.upsert(copy("u-1", 2), "newerOrEqual"))
          assert.isFalse(yield* copies.upsert(copy("u-1", 3), "newer"))
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), tombstone)
          assert.deepStrictEqual(yield* copies.list("User"), [tombstone])
          assert.isTrue(yield* copies.upsert(copy("u-1", 4), "newer"))
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), copy("u-1", 4))
        }))

      test("list gives the copies of one entity by id, tombstones included", () =>
        Effect.gen(function*() {
          const copies = yield* CopyRepository
          const rows = [copy("u-3", 1), copy("u-1", 2, { state: "deleted" }), copy("u-2", 1, { state: "softDeleted" })]
          yield* Effect.forEach(rows, (row) => copies.upsert(row, "newer"))
          yield* copies.upsert(copy("c-1", 1, { entity: "Company" }), "newer")
          assert.deepStrictEqual(yield* copies.list("User"), [
            copy("u-1", 2, { state: "deleted" }),
            copy("u-2", 1, { state: "softDeleted" }),
            copy("u-3", 1)
          ])
          assert.deepStrictEqual(yield* copies.list("Department"), [])
        }))

      test("referencing finds non-tombstone copies whose payload field equals the id", () =>
        Effect.gen(function*() {
          const copies = yield* CopyRepository
          const rows = [
            copy("u-1", 1, { payload: { companyId: "c-1" } }),
            copy("u-2", 1, { state: "softDeleted", payload: { companyId: "c-1" } }),
            copy("u-3", 1, { payload: { companyId: "c-1" } }),
            copy("u-3", 2, { state: "deleted" }),
            copy("u-4", 1, { payload: { companyId: "c-2" } }),
            copy("u-5", 1, { payload: { companyId: 1 } }),
            copy("u-6", 1, { payload: ["c-1"] }),
            copy("u-7", 1, { payload: "c-1" }),
            copy("u-8", 1, { payload: { company: { companyId: "c-1" } } }),
            copy("u-9", 1, { payload: { companyId: null } }),
            copy("d-1", 1, { entity: "Department", payload: { companyId: "c-1" } })
          ]
          yield* Effect.forEach(rows, (row) => copies.upsert(row, "newer"))
          const sorted = (ids: ReadonlyArray<string>) => [...ids].sort()
          assert.deepStrictEqual(sorted(yield* copies.referencing("User", "companyId", "c-1")), ["u-1", "u-2"])
          assert.deepStrictEqual(yield* copies.referencing("User", "companyId", "1"), [])
          assert.deepStrictEqual(yield* copies.referencing("User", "managerId", "c-1"), [])
          assert.deepStrictEqual(yield* copies.referencing("Department", "companyId", "c-1"), ["d-1"])
          assert.deepStrictEqual(yield* copies.referencing("Company", "companyId", "c-1"), [])
        }))

      test("a failed transaction undoes its upserts", () =>
        Effect.gen(function*() {
          const copies = yield* CopyRepository
          const transactor = yield* Transactor
          assert.isTrue(yield* copies.upsert(copy("u-1", 1), "newer"))
          const error = yield* transactor.withTransaction(
            Effect.gen(function*() {
              assert.isTrue(yield* copies.upsert(copy("u-1", 2), "newer"))
              assert.isTrue(yield* copies.upsert(copy("u-2", 1), "newer"))
              assert.deepStrictEqual(yield* copies.get("User", "u-1"), copy("u-1", 2))
              return yield* new Boom()
            })
          ).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual(yield* copies.get("User", "u-1"), copy("u-1", 1))
          assert.isNull(yield* copies.get("User", "u-2"))
          assert.deepStrictEqual(yield* copies.list("User"), [copy("u-1", 1)])
        }))
    })

    describe("SourceRepository", () => {
      test("put inserts or replaces, get reads by entity and id", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          assert.isNull(yield* sources.get("User", "u-1"))
          assert.isTrue(yield* outbox.transaction(sources.put(source("u-1", 1), null)))
          assert.deepStrictEqual(yield* sources.get("User", "u-1"), source("u-1", 1))
          assert.isTrue(yield* outbox.transaction(sources.put(source("u-1", 2, "deleted"), 1)))
          assert.deepStrictEqual(yield* sources.get("User", "u-1", "forUpdate"), source("u-1", 2, "deleted"))
          assert.isNull(yield* sources.get("Company", "u-1"))
        }))

      test("put writes only over the version it read: of two writers that read the same version, one wins", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          assert.isTrue(yield* outbox.transaction(sources.put(source("u-1", 1), null)))
          assert.isFalse(yield* outbox.transaction(sources.put(source("u-1", 1, "softDeleted"), null)))
          assert.isTrue(yield* outbox.transaction(sources.put(source("u-1", 2), 1)))
          assert.isFalse(yield* outbox.transaction(sources.put(source("u-1", 2, "deleted"), 1)))
          assert.deepStrictEqual(yield* sources.get("User", "u-1"), source("u-1", 2))
        }))

      test("page is keyset-paginated by id, tombstones included, optionally restricted to ids", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          const rows = [
            source("s-04", 1),
            source("s-01", 1),
            source("s-05", 2, "softDeleted"),
            source("s-03", 3, "deleted"),
            source("s-02", 1),
            source("s-02", 1, "live", "Company")
          ]
          yield* outbox.transaction(Effect.forEach(rows, (row) => sources.put(row, null)))
          const ids = (page: ReadonlyArray<SourceRow>) => page.map((row) => row.id)
          const first = yield* sources.page("User", { afterId: null, limit: 2 })
          assert.deepStrictEqual(first, [source("s-01", 1), source("s-02", 1)])
          const second = yield* sources.page("User", { afterId: "s-02", limit: 2 })
          assert.deepStrictEqual(second, [source("s-03", 3, "deleted"), source("s-04", 1)])
          assert.deepStrictEqual(ids(yield* sources.page("User", { afterId: "s-04", limit: 2 })), ["s-05"])
          assert.deepStrictEqual(yield* sources.page("User", { afterId: "s-05", limit: 2 }), [])
          const only = ["s-05", "s-01", "s-03", "s-99"]
          assert.deepStrictEqual(ids(yield* sources.page("User", { afterId: null, limit: 10, ids: only })), [
            "s-01",
            "s-03",
            "s-05"
          ])
          assert.deepStrictEqual(ids(yield* sources.page("User", { afterId: "s-01", limit: 1, ids: only })), ["s-03"])
          assert.deepStrictEqual(yield* sources.page("User", { afterId: null, limit: 10, ids: [] }), [])
          assert.deepStrictEqual(ids(yield* sources.page("Company", { afterId: null, limit: 10 })), ["s-02"])
        }))

      test("save and updateMany of several entities write exactly the rows they name", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          const rows = [
            source("a", 1),
            source("b", 1),
            source("a", 1, "live", "Company"),
            source("b", 1, "live", "Company")
          ]
          yield* outbox.transaction(Effect.forEach(rows, (row) => sources.put(row, null)))
          const named = (entity: string, id: string, name: string) => ({ entity, id, payload: { name }, updatedAt: T0 })
          // User b and Company a are named with the payload they have: each shares its id with a row that changes
          const saved = yield* outbox.transaction(sources.save([
            named("User", "a", "a v2"),
            named("Company", "b", "b v2"),
            named("User", "b", "b v1"),
            named("Company", "a", "a v1")
          ]))
          assert.deepStrictEqual(saved.map(({ row, written }) => [row.entity, row.id, row.version, written]), [
            ["User", "a", 2, "updated"],
            ["Company", "b", 2, "updated"],
            ["User", "b", 1, null],
            ["Company", "a", 1, null]
          ])
          const versions = Effect.forEach(
            [["User", "a"], ["User", "b"], ["Company", "a"], ["Company", "b"]] as const,
            ([entity, id]) => Effect.map(sources.get(entity, id), (row) => row?.version)
          )
          assert.deepStrictEqual(yield* versions, [2, 1, 1, 2])
          const written = yield* outbox.transaction(
            sources.updateMany([source("b", 2), source("a", 2, "softDeleted", "Company")])
          )
          assert.strictEqual(written, 2)
          assert.deepStrictEqual(yield* versions, [2, 2, 2, 2])
          assert.deepStrictEqual(yield* sources.get("Company", "a"), source("a", 2, "softDeleted", "Company"))
          assert.deepStrictEqual(yield* sources.get("User", "a"), { ...source("a", 2), payload: { name: "a v2" } })
        }))

      test("a put in a failed transaction is rolled back", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          yield* outbox.transaction(sources.put(source("u-1", 1), null))
          const error = yield* outbox.transaction(
            Effect.gen(function*() {
              yield* sources.put(source("u-1", 2), 1)
              yield* sources.put(source("u-2", 1), null)
              return yield* new Boom()
            })
          ).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual(yield* sources.get("User", "u-1"), source("u-1", 1))
          assert.isNull(yield* sources.get("User", "u-2"))
        }))
    })
  })
}
