/**
 * The parked-event worker (R5): an instance that retries an event another instance parked wakes the events
 * waiting for it, even when it had seen nothing parked before (its applies skip the wake while it knows of
 * no parked event).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import type { WaitingRow } from "../src/Inbox.ts"
import * as ParkedEvents from "../src/internal/ParkedEvents.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import { createdEnvelope } from "./fixtures.ts"

const consumer = "directory"

describe("ParkedEvents", () => {
  it.effect("retrying an event another instance parked wakes the events behind it", () =>
    Effect.gen(function*() {
      const inbox = yield* MemoryInbox.make
      const parked = yield* ParkedEvents.make({
        consumer,
        inbox,
        pollInterval: Duration.seconds(1),
        concurrency: 1,
        leaseMillis: 30_000,
        awaitResumed: Effect.void
      })
      const retried: Array<string> = []
      const woken: Array<number> = []
      // a retry that applies the event, then wakes what waits for its entity (as an apply does)
      const retry = (row: WaitingRow) =>
        Effect.gen(function*() {
          retried.push(row.messageId)
          yield* inbox.release(consumer, row.messageId)
          woken.push(yield* parked.wake([{ entity: row.envelope.entity, id: row.envelope.entityId }]))
        })
      const worker = yield* Effect.forkChild(parked.work(retry))
      // the worker looks once and finds nothing parked
      yield* TestClock.adjust("10 millis")
      assert.strictEqual(yield* parked.wake([{ entity: "User", id: "u-1" }]), 0)
      // another instance parks version 1 of u-1 (due now) and version 2 behind it (due in ten minutes)
      const now = yield* Clock.currentTimeMillis
      const head = createdEnvelope("u-1")
      const row = (messageId: string, version: number, nextAttemptAt: number): WaitingRow => ({
        consumer,
        messageId,
        envelope: { ...head, messageId, version },
        waitingFor: [{ entity: "User", id: "u-1" }],
        attempts: 4,
        nextAttemptAt,
        firstSeenAt: now,
        lastSeenAt: now
      })
      yield* inbox.park(row("m-1", 1, now))
      yield* inbox.park(row("m-2", 2, now + 600_000))
      // within the poll interval this worker claims version 1 and retries it: the retry wakes version 2,
      // which is retried at once instead of in ten minutes
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(retried, ["m-1", "m-2"])
      assert.strictEqual(woken[0], 1)
      yield* Fiber.interrupt(worker)
    }).pipe(Effect.provide(MemoryDatabase.layer)))
})
