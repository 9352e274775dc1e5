/**
 * The broker conformance suite: every implementation of `Broker` must pass it unchanged. Its tests port the
 * ideas of the universal pub/sub test suites (Watermill's `tests.TestPubSub` and its kin): publish then
 * subscribe, concurrent publishers and subscribers, redelivery after nack, no loss when a subscriber closes
 * without acking, continuing across subscriber lifetimes, concurrent closes, continuing after errors,
 * per-key order, publisher close, routing by topic, dead letters, unroutable messages and reconnects; and
 * the runtime's own needs: `release` without spending delivery attempts (R12), bounded dead letters and a
 * fallback when moving one fails (R6), paged listing and bulk replay, publishers kept through moves (R11).
 *
 * Each test gets a fresh layer and its own queues and routing keys. Sets of message ids are compared
 * exactly, after removing duplicates unless the test is about duplicates. "Nothing else arrives" is
 * checked with a sentinel message published last and read last: queues are FIFO per publisher, so
 * whatever sits in the queue is delivered before it — no sleeping, so the memory broker runs on the
 * TestClock.
 *
 * @since 0.1.0
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Clock, Data, Deferred, Effect, Exit, Fiber, type Layer, type Scope, Stream } from "effect"
import {
  Broker,
  type DeadLetter,
  type DeadLetterPage,
  defaultMaxDeadLetterBodyBytes,
  type Delivery,
  entityKeyHeader,
  laneQueues,
  maxDeadLetterHeaders,
  maxReasonBytes,
  type OutgoingMessage,
  type QueueSpec,
  reasonHeader,
  rejectedReason
} from "../../src/Broker.ts"
import type { BrokerUnavailable } from "../../src/Errors.ts"

/** What the suite needs to know about the broker under test; `R` is what its layer adds besides `Broker`. */
export interface BrokerConformanceOptions<R> {
  /** Drops the broker connection(s) the way a network failure would: subscriptions and in-flight publishes fail. */
  readonly forceDisconnect: Effect.Effect<void, never, Broker | R>
  /**
   * Another client of the test's broker, for tests that close a client and go on with a new one. A real
   * broker opens a new connection; the memory broker's state lives in its layer, so it can only re-expose
   * the same service.
   */
  readonly newClient: Layer.Layer<Broker, never, Broker | R>
  /** What a retrying caller waits between attempts (memory: `Effect.yieldNow`; a real broker: a short sleep). */
  readonly pause: Effect.Effect<void>
  /** A unique queue name for `base` (default: `base` and a counter); a real broker records it for cleanup. */
  readonly queueName?: (base: string) => string
  /** Run on the live clock with this timeout per test, in milliseconds (default: TestClock, `it.effect`). */
  readonly liveTimeout?: number
  /** The delivery limit of the broker's queues (a message returned more often is dead-lettered). */
  readonly deliveryLimit: number
  /** Lets at least a millisecond of the broker's clock pass (memory: `TestClock.adjust`; a real broker: a sleep). */
  readonly elapse: Effect.Effect<void>
  /** Makes the next `deadLetter` move of `queue` fail while its delivery's channel stays open (when the broker can). */
  readonly failDeadLetterMoves?: (queue: string) => Effect.Effect<void, never, Broker | R | Scope.Scope>
}

/** The failure of a handler that crashes mid-stream. */
class HandlerCrashed extends Data.TaggedError("HandlerCrashed") {}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

const sorted = (ids: Iterable<string>): Array<string> => Array.from(ids).sort()
const unique = (ids: Iterable<string>): Array<string> => sorted(new Set(ids))
const range = (n: number, prefix: string): Array<string> => Array.from({ length: n }, (_, i) => `${prefix}-${i}`)

let queues = 0

/** Runs the suite on the brokers `makeLayer` makes (a fresh one per test). */
export const brokerConformance = <R>(
  name: string,
  makeLayer: () => Layer.Layer<Broker | R>,
  options: BrokerConformanceOptions<R>
): void => {
  const live = options.liveTimeout
  const queueName = options.queueName ?? ((base: string) => `${base}-${queues++}`)

  /** A fresh queue and the routing-key prefix only its test uses. */
  const fresh = (base: string) => {
    const name = queueName(base)
    return { name, prefix: name.replace(/[^A-Za-z0-9-]/g, "_") }
  }

  const test = (title: string, body: () => Effect.Effect<void, unknown, Broker | R | Scope.Scope>) =>
    live === undefined
      ? it.effect(title, () => Effect.provide(body(), makeLayer()))
      : it.live(title, () => Effect.provide(body(), makeLayer()), live)

  /** On a real broker, fails loudly instead of hanging until the test times out. */
  const within = <A, E, R2>(what: () => string, effect: Effect.Effect<A, E, R2>): Effect.Effect<A, E, R2> =>
    live === undefined ? effect : effect.pipe(
      Effect.timeoutOrElse({
        duration: Math.floor(live * 0.8),
        orElse: () => Effect.die(new Error(`timed out waiting for ${what()}`))
      })
    )

  const message = (id: string, routingKey: string, extra: Readonly<Record<string, string>> = {}): OutgoingMessage => ({
    messageId: id,
    routingKey,
    type: "User.created",
    body: encoder.encode(JSON.stringify({ id, note: "payload ✓" })),
    headers: { "x-id": id, traceparent, ...extra }
  })

  /** Publishes a batch, retrying on `BrokerUnavailable` like the relay; returns how many attempts failed. */
  const publishRetrying = (messages: ReadonlyArray<OutgoingMessage>) =>
    Effect.gen(function*() {
      const broker = yield* Broker
      let failures = 0
      while (true) {
        const result = yield* Effect.result(broker.publish(messages))
        if (result._tag === "Success") return failures
        if (result.failure._tag !== "BrokerUnavailable") return yield* result.failure
        failures++
        yield* options.pause
      }
    })

  /**
   * Subscribes, acks everything and returns the deliveries until (and without) the sentinel it publishes
   * first: exactly what the queue held, duplicates included.
   */
  const drain = (spec: QueueSpec, routingKey: string) =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const sentinel = `sentinel-${queues++}`
      yield* broker.publish([message(sentinel, routingKey)])
      const got: Array<Delivery> = []
      return yield* within(
        () => `the sentinel of ${spec.name} (${got.length} before it)`,
        broker.subscribe(spec).pipe(
          Stream.mapEffect((d) => Effect.as(d.ack, d)),
          Stream.takeUntil((d) => d.messageId === sentinel, { excludeLast: true }),
          Stream.tap((d) => Effect.sync(() => got.push(d))),
          Stream.runCollect
        )
      )
    })

  /** Subscribes, takes `n` deliveries (settling each with `settle`) and ends the subscription. */
  const take = (
    spec: QueueSpec,
    n: number,
    settle: (d: Delivery) => Effect.Effect<void, BrokerUnavailable> = (d) => d.ack,
    subscribeOptions: { readonly prefetch?: number } = {}
  ) =>
    Effect.flatMap(Broker, (broker) =>
      within(
        () => `${n} deliveries from ${spec.name}`,
        broker.subscribe(spec, subscribeOptions).pipe(
          Stream.take(n),
          Stream.mapEffect((d) => Effect.as(settle(d), d)),
          Stream.runCollect
        )
      ))

  describe(name, () => {
    test("publish then subscribe: 100 messages arrive with payload, type, routing key and headers intact", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("publish-subscribe")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.User.*`] }
        yield* broker.declare(spec)
        const ids = range(100, "ps")
        yield* broker.publish(ids.map((id) => message(id, `${q.prefix}.User.created`)))
        const got = yield* take(spec, 100)
        assert.deepStrictEqual(unique(got.map((d) => d.messageId)), sorted(ids))
        for (const d of got) {
          assert.strictEqual(d.routingKey, `${q.prefix}.User.created`)
          assert.strictEqual(d.type, "User.created")
          assert.deepStrictEqual(d.headers, { "x-id": d.messageId, traceparent })
          assert.deepStrictEqual(JSON.parse(decoder.decode(d.body)), { id: d.messageId, note: "payload ✓" })
          assert.isFalse(d.redelivered)
        }
        assert.deepStrictEqual(yield* drain(spec, `${q.prefix}.User.created`), [])
      }))

    test("many concurrent publishers and subscribers on one queue: all 2,000 messages are received", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("concurrent")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const publishers = 8
        const perPublisher = 250
        const total = publishers * perPublisher
        const received = new Set<string>()
        const all = yield* Deferred.make<void>()
        const subscribers = yield* Effect.forEach(
          range(4, "sub"),
          () =>
            broker.subscribe(spec, { prefetch: 50 }).pipe(
              Stream.runForEach((d) =>
                Effect.andThen(d.ack, () => {
                  received.add(d.messageId)
                  return received.size === total ? Deferred.succeed(all, undefined) : Effect.void
                })
              ),
              Effect.forkChild
            )
        )
        const published = yield* Effect.forEach(range(publishers, "pub"), (publisher) =>
          Effect.gen(function*() {
            const ids = range(perPublisher, publisher)
            for (let i = 0; i < ids.length; i += 50) {
              yield* broker.publish(ids.slice(i, i + 50).map((id) => message(id, `${q.prefix}.${publisher}.created`)))
            }
            return ids
          }), { concurrency: "unbounded" })
        yield* within(() => `${total} messages (got ${received.size})`, Deferred.await(all))
        yield* Fiber.interruptAll(subscribers)
        assert.deepStrictEqual(sorted(received), sorted(published.flat()))
        assert.deepStrictEqual(yield* drain(spec, `${q.prefix}.end.created`), [])
      }))

    test("nack with requeue: every message is redelivered, marked redelivered, and all still arrive", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("nack")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(50, "nack")
        yield* broker.publish(ids.map((id) => message(id, `${q.prefix}.User.updated`)))
        const nacked = new Set<string>()
        const acked: Array<Delivery> = []
        yield* within(
          () => `every message acked after one nack (${acked.length} acked)`,
          broker.subscribe(spec).pipe(
            Stream.mapEffect((d) => {
              if (!nacked.has(d.messageId)) {
                nacked.add(d.messageId)
                return Effect.as(d.nack({ requeue: true }), false)
              }
              acked.push(d)
              return Effect.as(d.ack, true)
            }),
            Stream.filter((wasAcked) => wasAcked),
            Stream.take(ids.length),
            Stream.runDrain
          )
        )
        assert.deepStrictEqual(sorted(nacked), sorted(ids))
        assert.deepStrictEqual(unique(acked.map((d) => d.messageId)), sorted(ids))
        assert.isTrue(acked.every((d) => d.redelivered), "a message given back is delivered again as redelivered")
        assert.deepStrictEqual(yield* drain(spec, `${q.prefix}.end.created`), [])
      }))

    test("no ack: messages of a closed subscriber are not lost, a new subscriber gets them", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("no-ack")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(10, "noack")
        yield* broker.publish(ids.map((id) => message(id, `${q.prefix}.User.created`)))
        const first = yield* take(spec, ids.length, () => Effect.void)
        assert.deepStrictEqual(unique(first.map((d) => d.messageId)), sorted(ids))
        const again = yield* drain(spec, `${q.prefix}.end.created`)
        assert.deepStrictEqual(unique(again.map((d) => d.messageId)), sorted(ids))
        assert.isTrue(again.every((d) => d.redelivered))
      }))

    test("continue after subscriber close: batches read by successive subscribers add up to everything", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("continue-after-close")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(100, "cont")
        yield* broker.publish(ids.map((id) => message(id, `${q.prefix}.User.created`)))
        const acked = new Set<string>()
        let lifetimes = 0
        while (acked.size < ids.length && lifetimes < 30) {
          lifetimes++
          const got = yield* take(spec, Math.min(15, ids.length - acked.size))
          got.forEach((d) => acked.add(d.messageId))
        }
        assert.deepStrictEqual(sorted(acked), sorted(ids))
        assert.isAtLeast(lifetimes, 7)
        assert.deepStrictEqual(yield* drain(spec, `${q.prefix}.end.created`), [])
      }))

    test("concurrent close does not swallow messages: what was not acked goes to the next subscriber", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("concurrent-close")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(100, "close")
        yield* broker.publish(ids.map((id) => message(id, `${q.prefix}.User.created`)))
        const held = new Set<string>()
        const acked = new Set<string>()
        const allDelivered = yield* Deferred.make<void>()
        const subscribers = yield* Effect.forEach(range(10, "sub"), () =>
          broker.subscribe(spec, { prefetch: 20 }).pipe(
            Stream.runForEach((d) =>
              Effect.gen(function*() {
                const index = Number(d.messageId.split("-")[1])
                if (index % 2 === 0) {
                  yield* d.ack
                  acked.add(d.messageId)
                } else {
                  held.add(d.messageId)
                }
                if (acked.size + held.size === ids.length) yield* Deferred.succeed(allDelivered, undefined)
              })
            ),
            Effect.forkChild
          ))
        yield* within(() => `all delivered (${acked.size + held.size})`, Deferred.await(allDelivered))
        yield* Fiber.interruptAll(subscribers)
        const after = yield* drain(spec, `${q.prefix}.end.created`)
        assert.deepStrictEqual(unique(after.map((d) => d.messageId)), sorted(held))
        assert.deepStrictEqual(sorted([...acked, ...held]), sorted(ids))
        assert.isTrue(after.every((d) => d.redelivered))
      }))

    test("continue after errors: after repeated nacks and a crashed handler, a healthy subscriber gets everything", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("errors")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(50, "err")
        yield* broker.publish(ids.map((id) => message(id, `${q.prefix}.User.created`)))
        /** Receives every message once, holding them, then gives them all back by running `fail` on them. */
        const failingRound = (fail: (held: ReadonlyArray<Delivery>) => Effect.Effect<void, unknown>) =>
          Effect.gen(function*() {
            const seen = new Map<string, Delivery>()
            const exit = yield* within(
              () => `a failing round (${seen.size} held)`,
              broker.subscribe(spec, { prefetch: 100 }).pipe(
                Stream.filter((d) => !seen.has(d.messageId)),
                Stream.mapEffect((d) => {
                  seen.set(d.messageId, d)
                  return seen.size === ids.length ? fail(Array.from(seen.values())) : Effect.void
                }),
                Stream.take(ids.length),
                Stream.runDrain,
                Effect.exit
              )
            )
            assert.deepStrictEqual(sorted(seen.keys()), sorted(ids))
            return exit
          })
        const nackAll = (held: ReadonlyArray<Delivery>) =>
          Effect.forEach(held, (d) => d.nack({ requeue: true }), { discard: true })
        assert.isTrue(Exit.isSuccess(yield* failingRound(nackAll)))
        const crashed = yield* failingRound(() => Effect.fail(new HandlerCrashed()))
        assert.isTrue(Exit.isFailure(crashed))
        assert.isTrue(Exit.isSuccess(yield* failingRound(nackAll)))
        const healthy = yield* drain(spec, `${q.prefix}.end.created`)
        assert.deepStrictEqual(unique(healthy.map((d) => d.messageId)), sorted(ids))
        assert.isTrue(healthy.every((d) => d.redelivered))
        assert.deepStrictEqual(yield* broker.deadLetters(q.name), { total: 0, items: [] })
      }))

    test("per-key order with a single subscriber (prefetch 1)", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("order")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const keys = range(10, "key")
        const published: Array<OutgoingMessage> = []
        for (let seq = 0; seq < 30; seq++) {
          for (const key of keys) {
            published.push(
              message(`${key}-v${seq}`, `${q.prefix}.User.updated`, { "x-key": key, "x-seq": String(seq) })
            )
          }
        }
        for (let i = 0; i < published.length; i += 25) yield* broker.publish(published.slice(i, i + 25))
        const got = yield* take(spec, published.length, (d) => d.ack, { prefetch: 1 })
        assert.deepStrictEqual(unique(got.map((d) => d.messageId)), sorted(published.map((m) => m.messageId)))
        for (const key of keys) {
          const seqs = got.filter((d) => d.headers["x-key"] === key).map((d) => Number(d.headers["x-seq"]))
          assert.deepStrictEqual(seqs, Array.from({ length: 30 }, (_, i) => i), `order of ${key}`)
        }
      }))

    test("ordered lanes: a key stays in one lane, one instance at a time takes a lane, in order; another takes over", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("lanes")
        const lanes = laneQueues(q.name, { name: `${q.name}.sync`, bindings: [`${q.prefix}.#`] }, 4)
        yield* Effect.forEach(lanes, (lane) => broker.declare(lane), { discard: true })
        const keys = range(8, "key")
        const batch = (from: number, to: number) =>
          Array.from({ length: to - from }, (_, i) => i + from).flatMap((n) =>
            keys.map((key) => message(`${key}/${n}`, `${q.prefix}.User.updated`, { [entityKeyHeader]: key }))
          )
        interface Receipt {
          readonly instance: string
          readonly lane: string
          readonly id: string
          readonly redelivered: boolean
        }
        const receipts: Array<Receipt> = []
        // the last message of each key in the first batch is held (never acked) by the first instance
        const held = new Set(keys.map((key) => `${key}/4`))
        const instance = (name: string) =>
          Effect.forkChild(
            Effect.forEach(lanes, (lane) =>
              broker.subscribe(lane, { prefetch: 100 }).pipe(
                Stream.runForEach((d) =>
                  Effect.andThen(
                    Effect.sync(() =>
                      receipts.push({ instance: name, lane: lane.name, id: d.messageId, redelivered: d.redelivered })
                    ),
                    name === "a" && held.has(d.messageId) ? Effect.void : d.ack
                  )
                )
              ), { concurrency: "unbounded", discard: true }),
            { startImmediately: true }
          )
        const until = (what: string, done: () => boolean) =>
          within(
            () => `${what} (${receipts.length} received)`,
            Effect.gen(function*() {
              while (!done()) yield* options.pause
            })
          )
        const a = yield* instance("a")
        yield* publishRetrying(batch(0, 5))
        yield* until("the first batch at instance a", () => receipts.length === 40)
        const b = yield* instance("b")
        // b waits while a is the active consumer of every lane
        for (let i = 0; i < 5; i++) yield* options.pause
        assert.strictEqual(receipts.filter((r) => r.instance === "b").length, 0)
        yield* Fiber.interrupt(a)
        yield* publishRetrying(batch(5, 10))
        yield* until("the held messages and the second batch at instance b", () => receipts.length === 88)
        const laneOf = new Map<string, string>()
        for (const key of keys) {
          const mine = receipts.filter((r) => r.id.startsWith(`${key}/`))
          // one lane per key, and that lane's messages in order: a up to the held one, then b from it
          assert.strictEqual(new Set(mine.map((r) => r.lane)).size, 1, key)
          laneOf.set(key, mine[0]!.lane)
          const byA = mine.filter((r) => r.instance === "a").map((r) => r.id)
          const byB = mine.filter((r) => r.instance === "b")
          const ids = Array.from({ length: 10 }, (_, n) => `${key}/${n}`)
          assert.deepStrictEqual(byA, ids.slice(0, 5))
          assert.deepStrictEqual(byB.map((r) => r.id), ids.slice(4))
          assert.isTrue(byB[0]!.redelivered, `${key}: the held message is redelivered`)
        }
        // keys spread over more than one lane
        assert.isAbove(new Set(laneOf.values()).size, 1)
        yield* Fiber.interrupt(b)
      }))

    test("pipelined publishes keep their order: calls begun one after another, awaiting confirms together", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("pipelined")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const published = range(1_500, "p").map((id) => message(id, `${q.prefix}.User.updated`))
        // one call larger than a confirm window, then 20 calls of 15, all in flight at once
        const calls = [
          published.slice(0, 1_200),
          ...Array.from({ length: 20 }, (_, i) => published.slice(1_200 + i * 15, 1_215 + i * 15))
        ]
        const fibers: Array<Fiber.Fiber<void, unknown>> = []
        for (const call of calls) fibers.push(yield* Effect.forkChild(broker.publish(call), { startImmediately: true }))
        yield* Fiber.joinAll(fibers)
        const got = yield* take(spec, published.length, (d) => d.ack, { prefetch: 1 })
        assert.deepStrictEqual(got.map((d) => d.messageId), published.map((m) => m.messageId))
      }))

    test("publisher close flushes: publish, close the client, a new client's subscriber gets everything", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("publisher-close")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(200, "flush")
        yield* Effect.gen(function*() {
          const publisher = yield* Broker
          yield* Effect.forEach(
            [0, 50, 100, 150],
            (i) => publisher.publish(ids.slice(i, i + 50).map((id) => message(id, `${q.prefix}.User.created`))),
            { concurrency: "unbounded", discard: true }
          )
        }).pipe(Effect.provide(options.newClient))
        const got = yield* drain(spec, `${q.prefix}.end.created`).pipe(Effect.provide(options.newClient))
        assert.deepStrictEqual(unique(got.map((d) => d.messageId)), sorted(ids))
      }))

    test("routing by key: a queue gets exactly the messages its bindings match (* one word, # zero or more)", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const qa = fresh("route-a")
        const qb = fresh("route-b")
        const qc = fresh("route-c")
        const p = qa.prefix
        const a: QueueSpec = { name: qa.name, bindings: [`${p}.*.created`] }
        const b: QueueSpec = { name: qb.name, bindings: [`${p}.User.#`] }
        const c: QueueSpec = { name: qc.name, bindings: [`${p}.#.deleted`] }
        yield* Effect.forEach([a, b, c], broker.declare, { discard: true })
        // declaring again adds bindings
        yield* broker.declare({ name: qc.name, bindings: [`${p}.Company.*`] })
        const cWithAll: QueueSpec = { name: qc.name, bindings: [`${p}.#.deleted`, `${p}.Company.*`] }
        yield* broker.publish([
          message("r1", `${p}.User.created`),
          message("r2", `${p}.User.deleted`),
          message("r3", `${p}.Company.created`),
          message("r4", `${p}.Company.a.b.deleted`),
          message("r5", `${p}.User`),
          message("r6", `${p}.User.created.v2`)
        ])
        const ids = (ds: ReadonlyArray<Delivery>) => sorted(ds.map((d) => d.messageId))
        // each sentinel matches only its own queue
        assert.deepStrictEqual(ids(yield* drain(a, `${p}.Sentinel.created`)), ["r1", "r3"])
        assert.deepStrictEqual(ids(yield* drain(b, `${p}.User.updated`)), ["r1", "r2", "r5", "r6"])
        assert.deepStrictEqual(ids(yield* drain(cWithAll, `${p}.Company.updated`)), ["r2", "r3", "r4"])
      }))

    test("dead letters carry the reason and can be replayed", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("dead")
        const key = `${q.prefix}.User.created`
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        yield* broker.publish([message("a", key), message("b", key), message("c", key)])
        const before = yield* Clock.currentTimeMillis
        yield* take(spec, 3, (d) =>
          d.messageId === "a"
            ? d.deadLetter("payload is not valid")
            : d.messageId === "b"
            ? d.nack({ requeue: false })
            : d.ack)
        const dead = yield* within(
          () => "both dead letters",
          Effect.gen(function*() {
            while (true) {
              const found = (yield* broker.deadLetters(q.name)).items
              if (found.length >= 2) return found
              yield* options.pause
            }
          })
        )
        const after = yield* Clock.currentTimeMillis
        assert.deepStrictEqual(dead.map((d) => [d.messageId, d.reason, d.queue, d.routingKey, d.type]), [
          ["a", "payload is not valid", q.name, key, "User.created"],
          ["b", rejectedReason, q.name, key, "User.created"]
        ])
        for (const d of dead) {
          assert.deepStrictEqual(d.headers, { "x-id": d.messageId, traceparent, [reasonHeader]: d.reason })
          assert.deepStrictEqual(JSON.parse(decoder.decode(d.body)), { id: d.messageId, note: "payload ✓" })
          // a broker may keep whole seconds
          assert.isAtLeast(d.deadLetteredAt, Math.floor(before / 1000) * 1000)
          assert.isAtMost(d.deadLetteredAt, after)
        }
        // listing does not consume
        assert.deepStrictEqual((yield* broker.deadLetters(q.name)).items.map((d) => d.messageId), ["a", "b"])
        assert.isFalse(yield* broker.replayDeadLetter(q.name, "nope"))
        assert.isFalse(yield* broker.replayDeadLetter(fresh("never-declared").name, "a"))
        assert.deepStrictEqual(yield* broker.deadLetters(fresh("never-declared").name), { total: 0, items: [] })
        assert.isTrue(yield* broker.replayDeadLetter(q.name, "a"))
        assert.isFalse(yield* broker.replayDeadLetter(q.name, "a"))
        assert.deepStrictEqual((yield* broker.deadLetters(q.name)).items.map((d) => d.messageId), ["b"])
        const replayed = yield* drain(spec, `${q.prefix}.end.created`)
        assert.deepStrictEqual(replayed.map((d) => d.messageId), ["a"])
        const [again] = replayed
        assert.strictEqual(again?.routingKey, key)
        assert.strictEqual(again?.type, "User.created")
        assert.deepStrictEqual(again?.headers, { "x-id": "a", traceparent })
        assert.isFalse(again?.redelivered)
      }))

    test("acks in any order settle exactly their deliveries; the unsettled and the nacked come back", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("ack-order")
        const key = `${q.prefix}.User.created`
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(20, "a")
        yield* broker.publish(ids.map((id) => message(id, key)))
        const byId = (got: ReadonlyArray<Delivery>, n: number) => got.find((d) => d.messageId === `a-${n}`)
        const ack = (got: ReadonlyArray<Delivery>, ns: ReadonlyArray<number>) =>
          Effect.forEach(ns, (n) => byId(got, n)?.ack ?? Effect.void, { discard: true })
        yield* within(
          () => `20 deliveries from ${spec.name}`,
          broker.subscribe(spec, { prefetch: 20 }).pipe(
            Stream.take(20),
            Stream.grouped(20),
            Stream.mapEffect((got) =>
              Effect.gen(function*() {
                yield* ack(got, [19, 0, 1, 2, 5, 3, 4, 12]) // one turn: a run from the oldest, and strays
                yield* options.pause
                yield* byId(got, 6)?.nack({ requeue: true }) ?? Effect.void
                yield* ack(got, [7, 8, 9, 11, 13, 14, 15, 16, 17]) // 10 and 18 stay unsettled
                yield* options.pause
              })
            ),
            Stream.runDrain
          )
        )
        const rest = yield* drain(spec, `${q.prefix}.end.created`)
        assert.deepStrictEqual(unique(rest.map((d) => d.messageId)), ["a-10", "a-18", "a-6"])
      }))

    test("settling twice, or after the subscription ended, neither loses nor duplicates", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("settle-once")
        const key = `${q.prefix}.User.created`
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        yield* broker.publish([message("s1", key), message("s2", key), message("s3", key), message("s4", key)])
        const got = yield* take(spec, 4, (d) =>
          d.messageId === "s1"
            ? Effect.all([d.ack, d.ack, d.nack({ requeue: true })], { discard: true })
            : d.messageId === "s2"
            ? Effect.andThen(d.deadLetter("once"), d.ack)
            : Effect.void)
        // the subscription has ended: late settles are no-ops or BrokerUnavailable, never a loss
        for (const d of got.filter((d) => d.messageId === "s3")) {
          const exit = yield* Effect.exit(d.ack)
          if (Exit.isFailure(exit)) {
            const error = Cause.findErrorOption(exit.cause)
            assert.isTrue(error._tag === "Some" && error.value._tag === "BrokerUnavailable")
          }
        }
        const rest = yield* drain(spec, `${q.prefix}.end.created`)
        assert.deepStrictEqual(unique(rest.map((d) => d.messageId)), ["s3", "s4"])
        assert.deepStrictEqual((yield* broker.deadLetters(q.name)).items.map((d) => [d.messageId, d.reason]), [[
          "s2",
          "once"
        ]])
      }))

    test("unroutable publish fails with PublishRejected naming exactly the unroutable ids; the others arrive", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("unroutable")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.*.created`] }
        yield* broker.declare(spec)
        const error = yield* broker.publish([
          message("u1", `${q.prefix}.User.created`),
          message("u2", `${q.prefix}-nobody.User.created`),
          message("u3", `${q.prefix}.Company.created`),
          message("u4", `${q.prefix}.User.deleted`),
          message("u5", `${q.prefix}.Invoice.created`)
        ]).pipe(Effect.flip)
        assert.strictEqual(error._tag, "PublishRejected")
        if (error._tag === "PublishRejected") assert.deepStrictEqual(sorted(error.messageIds), ["u2", "u4"])
        const got = yield* drain(spec, `${q.prefix}.End.created`)
        assert.deepStrictEqual(unique(got.map((d) => d.messageId)), ["u1", "u3", "u5"])
      }))

    test("reconnect: ≥ 5,000 messages published while the connection drops twice; every confirmed one arrives", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("reconnect")
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const minimum = 5_000
        const batchSize = 100
        const received = new Set<string>()
        const confirmed: Array<string> = []
        let target = Number.POSITIVE_INFINITY
        let deliveries = 0
        let subscriptionFailures = 0
        const allReceived = yield* Deferred.make<void>()
        const checkDone = Effect.suspend(() =>
          received.size >= target ? Deferred.succeed(allReceived, undefined) : Effect.void
        )
        // a consumer that resubscribes after failures, like SyncConsumer
        const consumer = yield* broker.subscribe(spec, { prefetch: 200 }).pipe(
          Stream.runForEach((d) =>
            Effect.gen(function*() {
              deliveries++
              received.add(d.messageId)
              yield* Effect.ignore(d.ack) // an ack lost with the connection means a redelivery
              yield* checkDone
            })
          ),
          Effect.catchTag("BrokerUnavailable", () =>
            Effect.andThen(
              Effect.sync(() => {
                subscriptionFailures++
              }),
              options.pause
            )),
          Effect.forever,
          Effect.forkChild
        )
        // publish without a break, like a busy relay, until 5,000 are confirmed and both drops are over:
        // the first drop starts after 1,000 messages, the second 1,000 messages after the first one ended
        let publishFailures = 0
        let first: Fiber.Fiber<void> | undefined
        let second: Fiber.Fiber<void> | undefined
        let secondAt = Number.POSITIVE_INFINITY
        let n = 0
        while (n < minimum || second === undefined || second.pollUnsafe() === undefined) {
          if (n >= 50_000) return yield* Effect.die(new Error("the forced disconnects did not finish"))
          if (first === undefined && n >= 1_000) {
            first = yield* Effect.forkChild(options.forceDisconnect)
            yield* Effect.yieldNow
          }
          if (first !== undefined && first.pollUnsafe() !== undefined && secondAt === Number.POSITIVE_INFINITY) {
            secondAt = n + 1_000
          }
          if (second === undefined && n >= secondAt) {
            second = yield* Effect.forkChild(options.forceDisconnect)
            yield* Effect.yieldNow
          }
          const batch = range(batchSize, `rc-${n / batchSize}`)
          publishFailures += yield* publishRetrying(batch.map((id) => message(id, `${q.prefix}.User.created`)))
          confirmed.push(...batch)
          n += batchSize
          yield* Effect.yieldNow // lets the consumer run between batches on a broker without I/O
        }
        yield* Fiber.joinAll([first, second].filter((f) => f !== undefined))
        target = confirmed.length
        yield* checkDone
        yield* within(
          () => `all ${target} messages (got ${received.size}; ${subscriptionFailures} subscription failures)`,
          Deferred.await(allReceived)
        )
        yield* Fiber.interrupt(consumer)
        assert.isAtLeast(confirmed.length, minimum)
        assert.deepStrictEqual(sorted(received), sorted(confirmed))
        assert.isAtLeast(deliveries, confirmed.length)
        assert.isAtLeast(subscriptionFailures, 1, "the subscription saw the connection drop")
        yield* Effect.logDebug("reconnect test", {
          published: confirmed.length,
          deliveries,
          subscriptionFailures,
          publishFailures
        })
      }))

    /** Waits until the dead-letter store of `queue` holds `n` messages; returns the page of all of them. */
    const deadCount = (queue: string, n: number): Effect.Effect<DeadLetterPage, BrokerUnavailable, Broker> =>
      Effect.flatMap(Broker, (broker) =>
        within(
          () => `${n} dead letters in ${queue}`,
          Effect.gen(function*() {
            while (true) {
              const page = yield* broker.deadLetters(queue, { limit: 1_000 })
              if (page.total >= n && page.items.length >= n) return page
              yield* options.pause
            }
          })
        ))

    test("release gives a message back without spending a delivery attempt: released past the limit, never dead-lettered", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("release")
        const key = `${q.prefix}.User.updated`
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        yield* broker.publish([message("r", key), message("other", key)])
        const releases = options.deliveryLimit + 3
        let released = 0
        const seen: Array<Delivery> = []
        yield* within(
          () => `${releases} releases (${released} so far)`,
          broker.subscribe(spec, { prefetch: 1 }).pipe(
            Stream.mapEffect((d) => {
              seen.push(d)
              if (d.messageId === "r" && released < releases) {
                released++
                return Effect.as(d.release, false)
              }
              return Effect.as(d.ack, d.messageId === "r")
            }),
            Stream.takeUntil((done) => done),
            Stream.runDrain
          )
        )
        assert.strictEqual(released, releases)
        const copies = seen.filter((d) => d.messageId === "r")
        assert.lengthOf(copies, releases + 1)
        for (const d of copies) {
          assert.strictEqual(d.routingKey, key)
          assert.strictEqual(d.type, "User.created")
          assert.deepStrictEqual(d.headers, { "x-id": "r", traceparent })
          assert.deepStrictEqual(JSON.parse(decoder.decode(d.body)), { id: "r", note: "payload ✓" })
          assert.strictEqual(d.publisher, copies[0]?.publisher, "a released message keeps its publisher")
        }
        assert.strictEqual(typeof copies[0]?.publisher, broker.vouchesForPublishers ? "string" : "undefined")
        assert.deepStrictEqual(yield* broker.deadLetters(q.name), { total: 0, items: [] })
        assert.deepStrictEqual(yield* drain(spec, `${q.prefix}.end.created`), [])
      }))

    test("a dead letter's reason is cut to maxReasonBytes, its body to a prefix, its headers to a bounded set", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("bounded")
        const key = `${q.prefix}.User.created`
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const big = new Uint8Array(defaultMaxDeadLetterBodyBytes + 40_000).fill(0x61)
        const manyHeaders = Object.fromEntries(
          Array.from({ length: 40 }, (_, i) => [`x-h${String(i).padStart(2, "0")}`, `v${i}`])
        )
        yield* broker.publish([
          message("long-reason", key),
          { ...message("big-body", key), body: big },
          message("headers", key, { "x-long": "y".repeat(2_000), ...manyHeaders })
        ])
        const longReason = `Malformed: ${"é".repeat(100_000)}`
        yield* take(spec, 3, (d) => d.deadLetter(d.messageId === "long-reason" ? longReason : `because ${d.messageId}`))
        const page = yield* deadCount(q.name, 3)
        const byId = new Map(page.items.map((d) => [d.messageId, d]))
        const reason = byId.get("long-reason")?.reason ?? ""
        assert.isAtMost(encoder.encode(reason).byteLength, maxReasonBytes)
        assert.isTrue(reason.startsWith("Malformed: é"), reason.slice(0, 20))
        assert.isTrue(reason.endsWith("…"))
        assert.strictEqual(byId.get("long-reason")?.headers[reasonHeader], reason)
        assert.isUndefined(byId.get("long-reason")?.truncatedFrom)
        const body = byId.get("big-body")
        assert.strictEqual(body?.truncatedFrom, big.byteLength)
        assert.strictEqual(body?.body.byteLength, defaultMaxDeadLetterBodyBytes)
        assert.strictEqual(body?.reason, "because big-body")
        const headers = byId.get("headers")?.headers ?? {}
        assert.isUndefined(headers["x-long"], "a header longer than 1 KiB is left out")
        assert.strictEqual(headers[reasonHeader], "because headers")
        assert.isAtMost(Object.keys(headers).length, maxDeadLetterHeaders + 1)
        assert.isAtLeast(Object.keys(headers).length, maxDeadLetterHeaders - 2)
        for (const [name, value] of Object.entries(headers)) {
          if (name.startsWith("x-h")) assert.strictEqual(value, manyHeaders[name])
        }
      }))

    test("dead letters come in pages: the total, and at most `limit` of the oldest", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("paged")
        const key = `${q.prefix}.User.created`
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        const ids = range(7, "page")
        for (const id of ids) {
          yield* broker.publish([message(id, key)])
          yield* take(spec, 1, (d) => d.deadLetter(`reason ${d.messageId}`))
        }
        yield* deadCount(q.name, ids.length)
        const first = yield* broker.deadLetters(q.name, { limit: 3 })
        assert.strictEqual(first.total, 7)
        assert.deepStrictEqual(first.items.map((d) => d.messageId), ids.slice(0, 3))
        const all = yield* broker.deadLetters(q.name)
        assert.strictEqual(all.total, 7)
        assert.deepStrictEqual(all.items.map((d) => d.messageId), ids)
        assert.deepStrictEqual(all.items.map((d) => d.reason), ids.map((id) => `reason ${id}`))
        assert.isTrue(all.items.every((d) => d.deliveryCount === 1), "dead-lettered at its first delivery")
        const none = yield* broker.deadLetters(q.name, { limit: 0 })
        assert.deepStrictEqual(none, { total: 7, items: [] })
        // reading a page consumes nothing
        assert.strictEqual((yield* broker.deadLetters(q.name, { limit: 1 })).total, 7)
      }))

    test("bulk replay by reason, by entity, by time window and up to a limit; the rest stays dead-lettered", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("bulk")
        const p = q.prefix
        const spec: QueueSpec = { name: q.name, bindings: [`${p}.#`] }
        yield* broker.declare(spec)
        const reasons: Record<string, string> = {
          "u1": "DependencyMissing: c-1",
          "u2": "DependencyMissing: c-1",
          "c1": "InvalidPayload",
          "c2": "DependencyMissing: c-1",
          "u3": "InvalidPayload"
        }
        const keyOf = (id: string) => `${p}.${id.startsWith("u") ? "User" : "Company"}.updated`
        const early = ["u1", "u2", "c1"]
        const late = ["c2", "u3"]
        yield* broker.publish(early.map((id) => message(id, keyOf(id))))
        yield* take(spec, early.length, (d) => d.deadLetter(reasons[d.messageId] ?? "?"))
        yield* deadCount(q.name, early.length)
        yield* options.elapse
        const boundary = yield* Clock.currentTimeMillis
        yield* options.elapse
        yield* broker.publish([...late.map((id) => message(id, keyOf(id))), message("n1", keyOf("n1"))])
        yield* take(
          spec,
          late.length + 1,
          (d) => d.messageId === "n1" ? d.nack({ requeue: false }) : d.deadLetter(reasons[d.messageId] ?? "?")
        )
        yield* deadCount(q.name, 6)
        const dead = (yield* broker.deadLetters(q.name)).items
        assert.isTrue(dead.filter((d) => early.includes(d.messageId)).every((d) => d.deadLetteredAt < boundary))
        assert.isTrue(dead.filter((d) => late.includes(d.messageId)).every((d) => d.deadLetteredAt >= boundary))
        const remaining = Effect.map(broker.deadLetters(q.name), (page) => sorted(page.items.map((d) => d.messageId)))

        // by reason and entity: only u1, u2
        assert.strictEqual(
          yield* broker.replayDeadLetters(q.name, { reasons: ["DependencyMissing: c-1"], entities: ["User"] }),
          2
        )
        assert.deepStrictEqual(yield* remaining, ["c1", "c2", "n1", "u3"])
        assert.deepStrictEqual(unique((yield* drain(spec, `${p}.End.created`)).map((d) => d.messageId)), ["u1", "u2"])
        // nothing matches: nothing moves, nothing is lost
        assert.strictEqual(yield* broker.replayDeadLetters(q.name, { entities: ["Invoice"] }), 0)
        assert.strictEqual(yield* broker.replayDeadLetters(q.name, { reasons: [] }), 0)
        assert.deepStrictEqual(yield* remaining, ["c1", "c2", "n1", "u3"])
        // the time window: from the boundary on, at most one
        assert.strictEqual(
          yield* broker.replayDeadLetters(q.name, {
            from: boundary,
            reasons: ["DependencyMissing: c-1", "InvalidPayload"],
            limit: 1
          }),
          1
        )
        const afterOne = yield* remaining
        assert.lengthOf(afterOne, 3)
        assert.include(afterOne, "c1", "dead-lettered before the window")
        const first = late.find((id) => !afterOne.includes(id))
        assert.isDefined(first)
        // before the boundary: c1 (a broker may date its own dead letters in whole seconds: n1 is left out by reason)
        assert.strictEqual(yield* broker.replayDeadLetters(q.name, { to: boundary, reasons: ["InvalidPayload"] }), 1)
        assert.deepStrictEqual(yield* remaining, sorted(["n1", ...late.filter((id) => id !== first)]))
        // the rejected one keeps its broker reason through the moves, and replays by it
        const rejected = (yield* broker.deadLetters(q.name)).items.find((d) => d.messageId === "n1")
        assert.strictEqual(rejected?.reason, rejectedReason)
        assert.strictEqual(rejected?.routingKey, keyOf("n1"))
        assert.strictEqual(yield* broker.replayDeadLetters(q.name, { reasons: [rejectedReason] }), 1)
        assert.strictEqual(yield* broker.replayDeadLetters(q.name, {}), 1)
        assert.deepStrictEqual(yield* broker.deadLetters(q.name), { total: 0, items: [] })
        const replayed = yield* drain(spec, `${p}.End.created`)
        assert.deepStrictEqual(unique(replayed.map((d) => d.messageId)), sorted(["c1", "n1", ...late]))
        for (const d of replayed) {
          assert.strictEqual(d.routingKey, keyOf(d.messageId))
          assert.deepStrictEqual(d.headers, { "x-id": d.messageId, traceparent })
        }
      }))

    test("a replayed dead letter keeps its publisher", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const q = fresh("publisher")
        const key = `${q.prefix}.User.created`
        const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
        yield* broker.declare(spec)
        yield* broker.publish([message("moved", key), message("rejected", key)])
        const first = yield* take(spec, 2, (d) =>
          d.messageId === "moved" ? d.deadLetter("why") : d.nack({ requeue: false }))
        const dead = (yield* deadCount(q.name, 2)).items
        const publisher = first[0]?.publisher
        assert.strictEqual(typeof publisher, broker.vouchesForPublishers ? "string" : "undefined")
        assert.deepStrictEqual(
          dead.map((d: DeadLetter) =>
            d.publisher
          ),
          [publisher, publisher]
        )
        assert.strictEqual(yield* broker.replayDeadLetters(q.name, {}), 2)
        const again = yield* drain(spec, `${q.prefix}.end.created`)
        assert.deepStrictEqual(again.map((d) => [d.messageId, d.publisher]), [["moved", publisher], [
          "rejected",
          publisher
        ]])
      }))

    if (options.failDeadLetterMoves !== undefined) {
      const failDeadLetterMoves = options.failDeadLetterMoves
      test("when moving a dead letter fails, the delivery is rejected to the broker's own dead-lettering, never left unsettled", () =>
        Effect.gen(function*() {
          const broker = yield* Broker
          const q = fresh("fallback")
          const key = `${q.prefix}.User.created`
          const spec: QueueSpec = { name: q.name, bindings: [`${q.prefix}.#`] }
          yield* broker.declare(spec)
          yield* broker.publish([message("f1", key)])
          yield* failDeadLetterMoves(q.name)
          yield* take(spec, 1, (d) => d.deadLetter("the reason that could not be stored"))
          const dead = (yield* deadCount(q.name, 1)).items
          assert.deepStrictEqual(dead.map((d) => [d.messageId, d.reason, d.routingKey]), [["f1", rejectedReason, key]])
          assert.deepStrictEqual(yield* drain(spec, `${q.prefix}.end.created`), [])
        }))
    }
  })
}
