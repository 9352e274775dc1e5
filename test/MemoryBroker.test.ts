import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Queue, Stream } from "effect"
import { TestClock } from "effect/testing"
import {
  Broker,
  type Delivery,
  deliveryLimitReason,
  type OutgoingMessage,
  type QueueSpec,
  reasonHeader,
  rejectedReason
} from "../src/Broker.ts"
import { type Faults, layer, MemoryBroker, type MemoryBrokerOptions } from "../src/memory/MemoryBroker.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const message = (id: string, routingKey = "users.User.created"): OutgoingMessage => ({
  messageId: id,
  routingKey,
  type: "User.created",
  body: encoder.encode(JSON.stringify({ id })),
  headers: { "x-id": id }
})

const ids = (n: number, prefix = "m"): Array<string> => Array.from({ length: n }, (_, i) => `${prefix}${i}`)

const queueSpec: QueueSpec = { name: "q", bindings: ["users.#"] }

const withBroker = <A, E>(
  effect: Effect.Effect<A, E, Broker | MemoryBroker>,
  options?: MemoryBrokerOptions
): Effect.Effect<A, E> => Effect.provide(effect, layer(options))

const sorted = (xs: ReadonlyArray<string>): Array<string> => [...xs].sort()

/** Subscribes in a background fiber that pushes every delivery (unsettled) into the returned queue. */
const collect = (spec: QueueSpec, prefetch?: number) =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const received = yield* Queue.unbounded<Delivery>()
    const fiber = yield* broker.subscribe(spec, prefetch === undefined ? {} : { prefetch }).pipe(
      Stream.runForEach((delivery) => Queue.offer(received, delivery)),
      Effect.forkChild
    )
    return { received, fiber }
  })

const takeN = (received: Queue.Queue<Delivery>, n: number) =>
  Effect.forEach(Array.from({ length: n }), () => Queue.take(received))

/** Subscribes, takes `n` deliveries and settles each with `settle`. */
const drainWith = (spec: QueueSpec, n: number, settle: (d: Delivery) => Effect.Effect<void, unknown>) =>
  Effect.flatMap(Broker, (broker) =>
    broker.subscribe(spec).pipe(
      Stream.take(n),
      Stream.mapEffect((d) => Effect.as(settle(d), d)),
      Stream.runCollect
    ))

/** Subscribes, takes `n` deliveries and acks each. */
const drain = (spec: QueueSpec, n: number) =>
  Effect.flatMap(Broker, (broker) =>
    broker.subscribe(spec).pipe(
      Stream.take(n),
      Stream.mapEffect((d) => Effect.as(d.ack, d)),
      Stream.runCollect
    ))

/** Lets every runnable fiber run until it blocks. */
const settle = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow, { discard: true })

describe("MemoryBroker", () => {
  it.effect("delivers 100 published messages intact, in order, with their metadata", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.declare(queueSpec)
      const published = ids(100)
      yield* broker.publish(published.map((id) => message(id)))
      const got = yield* drain(queueSpec, 100)
      assert.deepStrictEqual(got.map((d) => d.messageId), published)
      for (const d of got) {
        assert.strictEqual(d.routingKey, "users.User.created")
        assert.strictEqual(d.type, "User.created")
        assert.deepStrictEqual(d.headers, { "x-id": d.messageId })
        assert.deepStrictEqual(JSON.parse(decoder.decode(d.body)), { id: d.messageId })
        assert.isFalse(d.redelivered)
      }
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
      const stats = yield* memory.stats
      assert.strictEqual(stats.published, 100)
      assert.strictEqual(stats.routed, 100)
      assert.strictEqual(stats.delivered, 100)
      assert.strictEqual(stats.acked, 100)
    })))

  it.effect("routes by bindings with * and #, and rejects unroutable messages by id", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      const qa: QueueSpec = { name: "qa", bindings: ["a.*.created"] }
      const qb: QueueSpec = { name: "qb", bindings: ["a.#"] }
      const qc: QueueSpec = { name: "qc", bindings: ["#.deleted"] }
      const qd: QueueSpec = { name: "qd", bindings: ["x.y"] }
      yield* Effect.forEach([qa, qb, qc, qd], broker.declare)
      // declaring again adds bindings
      yield* broker.declare({ name: "qd", bindings: ["x.*.z"] })
      const rejected = yield* broker.publish([
        message("1", "a.User.created"),
        message("2", "a.User.deleted"),
        message("3", "a.b.c.deleted"),
        message("4", "a"),
        message("5", "z.deleted"),
        message("6", "x.y"),
        message("7", "x.q.z"),
        message("8", "nothing.here"),
        message("9", "a.User.created.v2")
      ]).pipe(Effect.flip)
      assert.deepStrictEqual(rejected._tag === "PublishRejected" ? rejected.messageIds : [], ["8"])
      assert.match(rejected.message, /no queue is bound to nothing\.here/)
      const depth = (q: string) => Effect.map(memory.queueDepth(q), (d) => d.ready)
      assert.deepStrictEqual(yield* Effect.forEach(["qa", "qb", "qc", "qd"], depth), [1, 5, 3, 2])
      assert.deepStrictEqual((yield* drain(qa, 1)).map((d) => d.messageId), ["1"])
      assert.deepStrictEqual((yield* drain(qb, 5)).map((d) => d.messageId), ["1", "2", "3", "4", "9"])
      assert.deepStrictEqual((yield* drain(qc, 3)).map((d) => d.messageId), ["2", "3", "5"])
      assert.deepStrictEqual((yield* drain(qd, 2)).map((d) => d.messageId), ["6", "7"])
      const stats = yield* memory.stats
      assert.strictEqual(stats.published, 9)
      assert.strictEqual(stats.unroutable, 1)
      assert.strictEqual(stats.routed, 11)
    })))

  it.effect("competing subscribers get distinct messages whose union is everything", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.declare(queueSpec)
      const a = yield* collect(queueSpec, 10)
      const b = yield* collect(queueSpec, 10)
      const published = ids(20)
      yield* broker.publish(published.map((id) => message(id)))
      const gotA = yield* takeN(a.received, 10)
      const gotB = yield* takeN(b.received, 10)
      yield* settle
      assert.strictEqual(yield* Queue.size(a.received), 0)
      assert.strictEqual(yield* Queue.size(b.received), 0)
      const idsA = gotA.map((d) => d.messageId)
      const idsB = gotB.map((d) => d.messageId)
      assert.deepStrictEqual(idsA.filter((id) => idsB.includes(id)), [])
      assert.deepStrictEqual(sorted([...idsA, ...idsB]), sorted(published))
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 20, delayed: 0 })
      yield* Effect.forEach([...gotA, ...gotB], (d) => d.ack)
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
      yield* Fiber.interrupt(a.fiber)
      yield* Fiber.interrupt(b.fiber)
      assert.strictEqual((yield* memory.stats).delivered, 20)
    })))

  it.effect("nack with requeue redelivers at the head, marked redelivered", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.publish([message("dropped")]).pipe(Effect.flip) // no queue yet: unroutable, rejected
      yield* broker.declare(queueSpec)
      yield* broker.publish([message("a"), message("b")])
      let nacked = false
      const got = yield* broker.subscribe(queueSpec).pipe(
        Stream.tap((d) => {
          if (d.messageId === "a" && !nacked) {
            nacked = true
            return d.nack({ requeue: true })
          }
          return d.ack
        }),
        Stream.take(3),
        Stream.runCollect
      )
      assert.deepStrictEqual(got.map((d) => [d.messageId, d.redelivered]), [["a", false], ["a", true], ["b", false]])
      const stats = yield* memory.stats
      assert.strictEqual(stats.unroutable, 1)
      assert.strictEqual(stats.requeued, 1)
      assert.strictEqual(stats.acked, 2)
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
    })))

  it.effect("unsettled deliveries of an interrupted subscriber go to the next one; late settles are no-ops", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.declare(queueSpec)
      yield* broker.publish(["m0", "m1", "m2", "m3"].map((id) => message(id)))
      const first = yield* collect(queueSpec)
      const firstGot = yield* takeN(first.received, 4)
      assert.deepStrictEqual(firstGot.map((d) => d.messageId), ["m0", "m1", "m2", "m3"])
      yield* firstGot[3]!.ack // m3 is done
      yield* Fiber.interrupt(first.fiber)
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 3, unsettled: 0, delayed: 0 })
      // settling after the subscription ended must neither lose nor duplicate
      yield* firstGot[0]!.ack
      yield* firstGot[1]!.nack({ requeue: true })
      yield* firstGot[2]!.deadLetter("late")
      yield* firstGot[3]!.ack // twice
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 3, unsettled: 0, delayed: 0 })
      assert.deepStrictEqual(yield* broker.deadLetters("q"), { total: 0, items: [] })
      const second = yield* drain(queueSpec, 3)
      assert.deepStrictEqual(second.map((d) => [d.messageId, d.redelivered]), [["m0", true], ["m1", true], [
        "m2",
        true
      ]])
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
      assert.strictEqual((yield* memory.stats).acked, 4)
    })))

  it.effect("dropSubscriptions fails the streams with BrokerUnavailable and redelivers their unsettled messages", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      const other: QueueSpec = { name: "other", bindings: ["orders.#"] }
      yield* broker.declare(queueSpec)
      yield* broker.publish(ids(3).map((id) => message(id)))
      const sub = yield* collect(queueSpec)
      const otherSub = yield* collect(other)
      const got = yield* takeN(sub.received, 3)
      yield* got[0]!.ack
      yield* settle
      assert.strictEqual(yield* memory.subscriberCount("q"), 1)
      yield* memory.dropSubscriptions("q")
      const exit = yield* Fiber.await(sub.fiber)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = Cause.findErrorOption(exit.cause)
        assert.isTrue(error._tag === "Some" && error.value._tag === "BrokerUnavailable")
      }
      // the subscription of another queue is untouched
      assert.strictEqual(yield* memory.subscriberCount("other"), 1)
      assert.isUndefined(otherSub.fiber.pollUnsafe())
      // late settles of the dropped subscription are no-ops
      yield* got[1]!.ack
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 2, unsettled: 0, delayed: 0 })
      const again = yield* drain(queueSpec, 2)
      assert.deepStrictEqual(again.map((d) => [d.messageId, d.redelivered]), [["m1", true], ["m2", true]])
      // dropping everything also reaches the other queue
      yield* memory.dropSubscriptions()
      const otherExit = yield* Fiber.await(otherSub.fiber)
      assert.isTrue(Exit.isFailure(otherExit))
    })))

  it.effect("deadLetter keeps the reason; replay brings the message back to the tail", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.declare(queueSpec)
      yield* TestClock.adjust("5 seconds")
      yield* broker.publish([message("a"), message("b"), message("c")])
      yield* broker.subscribe(queueSpec).pipe(
        Stream.take(3),
        Stream.runForEach((d) =>
          d.messageId === "a"
            ? d.deadLetter("payload is not valid")
            : d.messageId === "b"
            ? d.nack({ requeue: false })
            : d.ack
        )
      )
      const dead = (yield* broker.deadLetters("q")).items
      assert.deepStrictEqual(dead.map((d) => [d.messageId, d.reason, d.queue, d.deadLetteredAt]), [
        ["a", "payload is not valid", "q", 5000],
        ["b", rejectedReason, "q", 5000]
      ])
      assert.deepStrictEqual(dead[0]!.headers, { "x-id": "a", [reasonHeader]: "payload is not valid" })
      assert.deepStrictEqual(JSON.parse(decoder.decode(dead[0]!.body)), { id: "a" })
      assert.strictEqual((yield* memory.stats).deadLettered, 2)
      assert.isFalse(yield* broker.replayDeadLetter("q", "nope"))
      assert.isFalse(yield* broker.replayDeadLetter("unknown", "a"))
      yield* broker.publish([message("d")])
      assert.isTrue(yield* broker.replayDeadLetter("q", "a"))
      assert.isFalse(yield* broker.replayDeadLetter("q", "a"))
      assert.deepStrictEqual((yield* broker.deadLetters("q")).items.map((d) => d.messageId), ["b"])
      const replayed = yield* drain(queueSpec, 2)
      assert.deepStrictEqual(replayed.map((d) => d.messageId), ["d", "a"])
      assert.deepStrictEqual(replayed[1]!.headers, { "x-id": "a" })
      assert.isFalse(replayed[1]!.redelivered)
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
    })))

  it.effect("a message delivered more than deliveryLimit times is dead-lettered", () =>
    withBroker(
      Effect.gen(function*() {
        const broker = yield* Broker
        const memory = yield* MemoryBroker
        yield* broker.declare(queueSpec)
        yield* broker.publish([message("poison"), message("fine")])
        const got = yield* broker.subscribe(queueSpec).pipe(
          Stream.tap((d) => d.messageId === "poison" ? d.nack({ requeue: true }) : d.ack),
          Stream.take(5),
          Stream.runCollect
        )
        // deliveryLimit 3: the 4th delivery is the one over the limit; it is dead-lettered when it comes back
        assert.deepStrictEqual(got.map((d) => [d.messageId, d.redelivered]), [
          ["poison", false],
          ["poison", true],
          ["poison", true],
          ["poison", true],
          ["fine", false]
        ])
        const dead = (yield* broker.deadLetters("q")).items
        assert.deepStrictEqual(dead.map((d) => [d.messageId, d.reason]), [["poison", deliveryLimitReason]])
        assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })

        // subscriptions that end without settling count too
        yield* broker.publish([message("stuck")])
        for (let i = 0; i < 4; i++) {
          const taken = yield* broker.subscribe(queueSpec).pipe(Stream.take(1), Stream.runCollect)
          assert.deepStrictEqual(taken.map((d) => d.messageId), ["stuck"])
        }
        assert.deepStrictEqual((yield* broker.deadLetters("q")).items.map((d) => [d.messageId, d.reason]), [
          ["poison", deliveryLimitReason],
          ["stuck", deliveryLimitReason]
        ])
        assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
      }),
      { deliveryLimit: 3 }
    ))

  it.effect("release puts a message at the tail without spending an attempt; the dead letter counts the real ones", () =>
    withBroker(
      Effect.gen(function*() {
        const broker = yield* Broker
        const memory = yield* MemoryBroker
        yield* broker.declare(queueSpec)
        yield* broker.publish([message("held"), message("next")])
        // released ten times with a delivery limit of 3, then returned with nack: its dead letter says how
        // many deliveries counted (the three nacked ones and the one over the limit), not the releases
        const order: Array<string> = []
        let releases = 0
        yield* broker.subscribe(queueSpec, { prefetch: 1 }).pipe(
          Stream.tap((d) => {
            order.push(d.messageId)
            if (d.messageId === "next") return d.ack
            if (releases < 10) {
              releases++
              return d.release
            }
            return d.nack({ requeue: true })
          }),
          Stream.take(15),
          Stream.runDrain
        )
        assert.deepStrictEqual(order.slice(0, 3), ["held", "next", "held"], "a released message goes behind the others")
        assert.strictEqual((yield* memory.stats).released, 10)
        const page = yield* broker.deadLetters("q")
        assert.deepStrictEqual(page.items.map((d) => [d.messageId, d.reason, d.deliveryCount, d.publisher]), [
          ["held", deliveryLimitReason, 4, undefined]
        ])
        assert.isFalse(broker.vouchesForPublishers)
      }),
      { deliveryLimit: 3 }
    ))

  it.effect("a failed dead-letter move falls back to the broker's own dead-lettering, once per injected failure", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.declare(queueSpec)
      yield* broker.publish([message("a"), message("b")])
      yield* memory.deadLetterMovesFail(1)
      yield* drainWith(queueSpec, 2, (d) => d.deadLetter(`bad ${d.messageId}`))
      const page = yield* broker.deadLetters("q")
      assert.deepStrictEqual(page.items.map((d) => [d.messageId, d.reason]), [["a", rejectedReason], ["b", "bad b"]])
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
    })))

  it.effect("a subscriber holds at most prefetch unsettled deliveries", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.declare(queueSpec)
      yield* broker.publish(ids(5).map((id) => message(id)))
      const sub = yield* collect(queueSpec, 2)
      const firstTwo = yield* takeN(sub.received, 2)
      yield* settle
      assert.deepStrictEqual(firstTwo.map((d) => d.messageId), ["m0", "m1"])
      assert.strictEqual(yield* Queue.size(sub.received), 0)
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 3, unsettled: 2, delayed: 0 })
      assert.strictEqual((yield* memory.stats).delivered, 2)
      yield* firstTwo[0]!.ack
      const third = yield* takeN(sub.received, 1)
      yield* settle
      assert.deepStrictEqual(third.map((d) => d.messageId), ["m2"])
      assert.strictEqual(yield* Queue.size(sub.received), 0)
      assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 2, unsettled: 2, delayed: 0 })
      yield* Fiber.interrupt(sub.fiber)
    })))

  it.effect("a delayed message is released by TestClock.adjust", () =>
    withBroker(
      Effect.gen(function*() {
        const broker = yield* Broker
        const memory = yield* MemoryBroker
        yield* broker.declare(queueSpec)
        const sub = yield* collect(queueSpec)
        yield* broker.publish([message("late")])
        yield* settle
        assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 1 })
        assert.strictEqual(yield* Queue.size(sub.received), 0)
        yield* TestClock.adjust("10 seconds")
        const got = yield* takeN(sub.received, 1)
        assert.deepStrictEqual(got.map((d) => d.messageId), ["late"])
        assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 1, delayed: 0 })
        // faults can be turned off at runtime
        yield* memory.setFaults(undefined)
        yield* broker.publish([message("now")])
        assert.deepStrictEqual((yield* takeN(sub.received, 1)).map((d) => d.messageId), ["now"])
        yield* Fiber.interrupt(sub.fiber)
      }),
      { faults: { seed: 1, delay: { probability: 1, max: "10 seconds" } } }
    ))

  const faultRun = (faults: Faults) =>
    withBroker(
      Effect.gen(function*() {
        const broker = yield* Broker
        const memory = yield* MemoryBroker
        yield* broker.declare(queueSpec)
        const sub = yield* collect(queueSpec, 5)
        const published = ids(60)
        for (let i = 0; i < 60; i += 10) yield* broker.publish(published.slice(i, i + 10).map((id) => message(id)))
        const acker = yield* Stream.fromQueue(sub.received).pipe(
          Stream.mapEffect((d) => Effect.as(d.ack, d.messageId)),
          Stream.take(60 + (yield* memory.stats).duplicated),
          Stream.runCollect,
          Effect.forkChild
        )
        yield* TestClock.adjust("5 seconds")
        const order = yield* Fiber.join(acker)
        yield* settle
        const stats = yield* memory.stats
        assert.deepStrictEqual(yield* memory.queueDepth("q"), { ready: 0, unsettled: 0, delayed: 0 })
        assert.strictEqual(yield* Queue.size(sub.received), 0)
        assert.strictEqual(stats.delivered, 60 + stats.duplicated)
        assert.deepStrictEqual(sorted(Array.from(new Set(order))), sorted(published))
        yield* Fiber.interrupt(sub.fiber)
        return { order, duplicated: stats.duplicated }
      }),
      { faults }
    )

  it.effect("reorder alone changes the order deterministically and loses nothing", () =>
    Effect.gen(function*() {
      const first = yield* faultRun({ seed: 42, reorder: 0.5 })
      const second = yield* faultRun({ seed: 42, reorder: 0.5 })
      assert.deepStrictEqual(first.order, second.order)
      assert.strictEqual(first.duplicated, 0)
      assert.strictEqual(first.order.length, 60)
      assert.deepStrictEqual(sorted(first.order), sorted(ids(60)))
      assert.notDeepEqual(first.order, ids(60))
      const none = yield* faultRun({ seed: 42 })
      assert.deepStrictEqual(none.order, ids(60)) // no probabilities: plain FIFO
    }))

  it.effect("duplicate alone enqueues extra copies with the same messageId", () =>
    Effect.gen(function*() {
      const first = yield* faultRun({ seed: 3, duplicate: 0.3 })
      const second = yield* faultRun({ seed: 3, duplicate: 0.3 })
      assert.deepStrictEqual(first.order, second.order)
      assert.isAbove(first.duplicated, 0)
      assert.strictEqual(first.order.length, 60 + first.duplicated)
      assert.deepStrictEqual(Array.from(new Set(first.order)), ids(60)) // copies follow their original
    }))

  it.effect("reorder, duplicate and delay together are deterministic for a seed and lose nothing", () =>
    Effect.gen(function*() {
      const faults = (seed: number): Faults => ({
        seed,
        reorder: 0.5,
        duplicate: 0.2,
        delay: { probability: 0.3, max: "2 seconds" }
      })
      const first = yield* faultRun(faults(42))
      const second = yield* faultRun(faults(42))
      const other = yield* faultRun(faults(7))
      assert.deepStrictEqual(first.order, second.order)
      assert.notDeepEqual(first.order, other.order)
      assert.isAbove(first.duplicated, 0)
      assert.strictEqual(first.order.length, 60 + first.duplicated)
      assert.deepStrictEqual(sorted(Array.from(new Set(first.order))), sorted(ids(60)))
      assert.notDeepEqual(Array.from(new Set(first.order)), ids(60))
    }))

  it.effect("publishFails makes the next publish calls fail with BrokerUnavailable", () =>
    withBroker(Effect.gen(function*() {
      const broker = yield* Broker
      const memory = yield* MemoryBroker
      yield* broker.declare(queueSpec)
      yield* memory.publishFails(2)
      const e1 = yield* Effect.flip(broker.publish([message("a")]))
      const e2 = yield* Effect.flip(broker.publish([message("a")]))
      assert.strictEqual(e1._tag, "BrokerUnavailable")
      assert.strictEqual(e2._tag, "BrokerUnavailable")
      yield* broker.publish([message("a")])
      assert.deepStrictEqual((yield* drain(queueSpec, 1)).map((d) => d.messageId), ["a"])
      assert.strictEqual((yield* memory.stats).published, 1)
    })))
})
