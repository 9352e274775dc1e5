/**
 * The consumer's batches: an idle consumer's first delivery opens a window for more; deliveries that waited
 * during the previous batch go once a window has passed since that batch was taken, at once when they fill
 * a batch or when the window has passed already; the queue's end ends the batches.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Clock, Duration, Effect, Exit, Fiber, Queue } from "effect"
import { TestClock } from "effect/testing"
import * as DeliveryBatches from "../src/internal/DeliveryBatches.ts"

const options = { batchSize: 3, batchWindow: Duration.millis(5) }

/** A queue of numbers, its batches, and a way to take the next batch in a fiber that records when it ended. */
const setUp = Effect.gen(function*() {
  const queue = yield* Queue.make<number, Cause.Done>()
  const next = DeliveryBatches.make(queue, options)
  const taking = Effect.forkChild(
    Effect.flatMap(next, (batch) => Effect.map(Clock.currentTimeMillis, (at) => ({ batch, at }))),
    { startImmediately: true }
  )
  return { queue, taking }
})

describe("DeliveryBatches", () => {
  it.effect("an idle consumer's first delivery opens a window; what arrives in it joins the batch", () =>
    Effect.gen(function*() {
      const { queue, taking } = yield* setUp
      const fiber = yield* taking
      yield* TestClock.adjust("10 millis")
      yield* Queue.offer(queue, 1)
      yield* TestClock.adjust("2 millis")
      yield* Queue.offer(queue, 2)
      yield* TestClock.adjust("2 millis")
      assert.isUndefined(fiber.pollUnsafe(), "the window is still open")
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(fiber), { batch: [1, 2], at: 15 })
    }))

  it.effect("deliveries that waited go a window after the previous batch was taken, at once when that passed", () =>
    Effect.gen(function*() {
      const { queue, taking } = yield* setUp
      const first = yield* taking
      yield* Queue.offer(queue, 1)
      yield* TestClock.adjust("5 millis")
      assert.deepStrictEqual(yield* Fiber.join(first), { batch: [1], at: 5 })
      // applying the batch took 2 ms; one delivery arrived meanwhile and waits until 10
      yield* TestClock.adjust("2 millis")
      yield* Queue.offer(queue, 2)
      const second = yield* taking
      yield* TestClock.adjust("2 millis")
      yield* Queue.offer(queue, 3)
      assert.isUndefined(second.pollUnsafe(), "less than a window since the previous batch")
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(second), { batch: [2, 3], at: 10 })
      // applying took longer than a window: what waited goes at once
      yield* Queue.offer(queue, 4)
      yield* TestClock.adjust("6 millis")
      assert.deepStrictEqual(yield* Fiber.join(yield* taking), { batch: [4], at: 16 })
    }))

  it.effect("a full batch that waits goes at once; the rest follows a window later", () =>
    Effect.gen(function*() {
      const { queue, taking } = yield* setUp
      const first = yield* taking
      yield* Queue.offer(queue, 1)
      yield* TestClock.adjust("5 millis")
      assert.deepStrictEqual((yield* Fiber.join(first)).batch, [1])
      yield* Queue.offerAll(queue, [2, 3, 4, 5])
      assert.deepStrictEqual(yield* Fiber.join(yield* taking), { batch: [2, 3, 4], at: 5 })
      const last = yield* taking
      yield* TestClock.adjust("4 millis")
      assert.isUndefined(last.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(last), { batch: [5], at: 10 })
    }))

  it.effect("what waits when the batches start goes at once; the end of the queue ends the batches after it", () =>
    Effect.gen(function*() {
      const { queue, taking } = yield* setUp
      yield* Queue.offerAll(queue, [1, 2])
      yield* Queue.end(queue)
      assert.deepStrictEqual(yield* Fiber.join(yield* taking), { batch: [1, 2], at: 0 })
      const exit = yield* Fiber.await(yield* taking)
      assert.isTrue(Exit.isFailure(exit) && Cause.isDone(Cause.squash(exit.cause)))
    }))
})
