/**
 * The relay's pipelined drain on the memory stores and broker (TestClock): batches in flight together
 * reach the queue in outbox order, and after a broker failure the relay stops claiming, so the failed rows
 * are retried first (once due, which is when `Relay.run` drains again) and the order still holds.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import { Broker } from "../src/Broker.ts"
import type * as Envelope from "../src/Envelope.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Relay from "../src/Relay.ts"

const queue = { name: "relay-test.sync", bindings: ["accounts.#"] }

const envelope = (i: number): Envelope.Envelope => ({
  specVersion: 1,
  messageId: `m-${String(i).padStart(4, "0")}`,
  entity: "Company",
  entityId: `c-${i % 7}`,
  action: "updated",
  version: i + 1,
  occurredAt: "2026-11-22T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload: { id: `c-${i % 7}`, name: `name ${i}` }
})

/** Appends `n` events, one transaction each. */
const append = (n: number) =>
  Effect.forEach(
    Array.from({ length: n }, (_, i) => i),
    (i) => Outbox.transaction(Outbox.OutboxTransaction.use((tx) => tx.append([envelope(i)]))),
    { discard: true }
  )

/** The message ids in the queue, in delivery order (prefetch 1, all acked). */
const received = (n: number) =>
  Effect.flatMap(Broker, (broker) =>
    broker.subscribe(queue, { prefetch: 1 }).pipe(
      Stream.take(n),
      Stream.mapEffect((d) => Effect.as(d.ack, d.messageId)),
      Stream.runCollect
    ))

const system = Layer.mergeAll(
  MemoryOutbox.layer().pipe(Layer.provide(MemoryDatabase.layer)),
  MemoryBroker.layer()
)

const ids = (n: number) => Array.from({ length: n }, (_, i) => envelope(i).messageId)

describe("Relay", () => {
  it.effect("a pipelined drain publishes in outbox order with many batches in flight", () =>
    Effect.gen(function*() {
      yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
      yield* append(250)
      assert.strictEqual(yield* Relay.drain({ producer: "accounts", batchSize: 10, batchesInFlight: 6 }), 250)
      assert.deepStrictEqual(yield* received(250), ids(250))
      const outbox = yield* Outbox.Outbox
      assert.strictEqual((yield* outbox.pending).count, 0)
    }).pipe(Effect.provide(system)))

  it.effect("after a broker failure it stops claiming; the failed rows go first once due, in order", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
      yield* append(50)
      yield* memory.publishFails(1)
      const options = { producer: "accounts", batchSize: 10, batchesInFlight: 4 }
      assert.strictEqual(yield* Relay.drain(options), 10) // the first batch failed: nothing more was claimed
      yield* TestClock.adjust("100 millis") // `Relay.run` waits this long before draining again
      assert.strictEqual(yield* Relay.drain(options), 50)
      assert.deepStrictEqual(yield* received(50), ids(50))
    }).pipe(Effect.provide(system)))
})
