/**
 * Ordered lanes on the memory broker and stores, on the TestClock: a consumer service with 4 lanes read by
 * two instances (each in a scope of its own, sharing the service's stores), fed by two relays draining at
 * once with `orderedByEntity`. Each lane is delivered to one instance at a time (the oldest subscription);
 * every entity's handler calls see strictly increasing versions; when the instance holding the lanes stops,
 * the other takes them over and goes on in order. And an event waits behind an earlier event of its entity
 * that waits for a dependency: its handler never sees the later versions first.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Metric, Scope } from "effect"
import { TestClock } from "effect/testing"
import { Broker } from "../src/Broker.ts"
import { Inbox } from "../src/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as MemorySourceRepository from "../src/memory/SourceRepository.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company, User } from "./fixtures.ts"
import { memoryStores } from "./harness.ts"

const companies = Producer.make("accounts").repository(Company)
const users = Producer.make("accounts").repository(User)
const service = "directory"
const ids = Array.from({ length: 20 }, (_, i) => `c-${i}`)

interface Call {
  readonly instance: string
  readonly id: string
  readonly version: number
}

/** The owner's stores, and the consumer service's stores with the broker (shared by its instances). */
const stores = Effect.all({
  owner: Layer.build(
    Layer.mergeAll(MemoryOutbox.layer(), MemorySourceRepository.layer([])).pipe(
      Layer.provide(Layer.fresh(MemoryDatabase.layer))
    )
  ),
  shared: Layer.build(Layer.mergeAll(memoryStores.consumer, MemoryBroker.layer()))
})

describe("ordered lanes (memory)", () => {
  it.effect("one instance per lane, versions in order per entity; the other instance takes the lanes over", () =>
    Effect.gen(function*() {
      const calls: Array<Call> = []
      const { owner, shared } = yield* stores
      const instance = (name: string) =>
        Effect.gen(function*() {
          const scope = yield* Scope.fork(yield* Scope.Scope)
          yield* Layer.buildWithScope(
            SyncConsumer.layer({
              service,
              lanes: 4,
              subscriptions: [
                Subscription.subscribe(Company, {
                  handler: ({ envelope }) =>
                    Effect.sync(() => calls.push({ instance: name, id: envelope.entityId, version: envelope.version }))
                })
              ]
            }).pipe(Layer.provide(Layer.succeedContext(shared))),
            scope
          )
          return { stop: Scope.close(scope, Exit.void) }
        })
      const relays = Effect.all(
        [1, 2].map(() => Relay.drain({ producer: "accounts", orderedByEntity: true, batchSize: 7 })),
        { concurrency: "unbounded" }
      ).pipe(Effect.provide(owner), Effect.provide(shared))
      const create = Outbox.transaction(companies.createMany(ids.map((id) => ({ id, name: `${id} v1` }))))
      const update = (round: number) =>
        Outbox.transaction(companies.updateMany(ids, (c) => ({ ...c, name: `${c.id} r${round}` })))
      const write = (round: number): Effect.Effect<void> =>
        round === 0
          ? Effect.orDie(Effect.provide(Effect.asVoid(create), owner))
          : Effect.orDie(Effect.provide(Effect.asVoid(update(round)), owner))
      const settle = (expected: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < 1_000 && calls.length < expected; i++) yield* TestClock.adjust("1 millis")
          assert.strictEqual(calls.length, expected)
        })

      const a = yield* instance("a")
      yield* Effect.yieldNow
      yield* instance("b")
      for (let round = 0; round < 5; round++) {
        yield* write(round)
        yield* relays
      }
      yield* settle(100)
      // a subscribed first: it is the active consumer of every lane, b waits
      assert.deepStrictEqual([...new Set(calls.map((call) => call.instance))], ["a"])
      yield* a.stop
      for (let round = 5; round < 10; round++) {
        yield* write(round)
        yield* relays
      }
      yield* settle(200)
      assert.deepStrictEqual([...new Set(calls.slice(100).map((call) => call.instance))], ["b"])
      for (const id of ids) {
        const versions = calls.filter((call) => call.id === id).map((call) => call.version)
        assert.deepStrictEqual(versions, Array.from({ length: 10 }, (_, i) => i + 1), id)
      }
      assert.strictEqual(yield* Metrics.outcomeCount(service, "Company", "stale"), 0)
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map())))

  it.effect("an event waits behind an earlier event of its entity that waits for a dependency", () =>
    Effect.gen(function*() {
      const calls: Array<number> = []
      const { owner, shared } = yield* stores
      yield* Layer.buildWithScope(
        SyncConsumer.layer({
          service,
          lanes: 2,
          subscriptions: [
            Subscription.subscribe(Company),
            Subscription.subscribe(User, { handler: ({ envelope }) => Effect.sync(() => calls.push(envelope.version)) })
          ]
        }).pipe(Layer.provide(Layer.succeedContext(shared))),
        yield* Scope.Scope
      )
      // u-1 v1 belongs to c-1, which the consumer gets last; v2 moves u-1 to c-2, which it has
      const [c1, c2, v1, v2, v3] = yield* Effect.gen(function*() {
        yield* Outbox.transaction(companies.createMany([{ id: "c-1", name: "one" }, { id: "c-2", name: "two" }]))
        const user = { id: "u-1", companyId: "c-1", email: "u@example.com", name: "u", active: true }
        yield* Outbox.transaction(users.create(user))
        yield* Outbox.transaction(users.update("u-1", (u) => ({ ...u, companyId: "c-2" })))
        yield* Outbox.transaction(users.update("u-1", (u) => ({ ...u, name: "u again" })))
        return (yield* Effect.flatMap(Outbox.Outbox, (outbox) => outbox.claim(10))).map((row) => Relay.toMessage(row))
      }).pipe(Effect.orDie, Effect.provide(owner))
      const broker = Context.get(shared, Broker)
      const inbox = Context.get(shared, Inbox)
      const run = Effect.gen(function*() {
        for (let i = 0; i < 100; i++) yield* TestClock.adjust("100 millis")
      })
      yield* broker.publish([c2!, v1!, v2!, v3!])
      yield* run
      // v1 waits for c-1 (in process, then parked); v2 and v3 are parked behind it, not applied
      assert.deepStrictEqual(calls, [])
      const waiting = yield* inbox.waiting(service)
      assert.deepStrictEqual(waiting.map((row) => [row.envelope.version, row.waitingFor]).sort(), [
        [1, [{ entity: "Company", id: "c-1" }, { entity: "User", id: "u-1" }]],
        [2, [{ entity: "User", id: "u-1" }]],
        [3, [{ entity: "User", id: "u-1" }]]
      ])
      yield* broker.publish([c1!])
      yield* run
      assert.deepStrictEqual(calls, [1, 2, 3])
      assert.deepStrictEqual(yield* inbox.waiting(service), [])
      assert.strictEqual(yield* Metrics.outcomeCount(service, "User", "stale"), 0)
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map())))
})
