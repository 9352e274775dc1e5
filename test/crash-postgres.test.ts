/**
 * Crash safety on PostgreSQL: a relay interrupted between publish and mark-published, and a consumer
 * interrupted between apply (committed) and ack. After a restart everything is delivered and nothing is
 * applied twice.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Metric, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import { Broker } from "../src/Broker.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company } from "./fixtures.ts"
import { consumerName, consumerSide, copyOf, ownerSide, Pump, queueName, settle, tick } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()
const databaseLayer = database.layer
const prefix = database.prefix

const companies = Producer.make("accounts").repository(Company)
const subscriptions = [Subscription.subscribe(Company)]
const outcome = (name: Metrics.Outcome) => Metrics.outcomeCount(consumerName, "Company", name)

/** A broker whose publishes are confirmed and then the publisher dies, before it can mark anything. */
const dyingAfterPublish = Layer.effect(
  Broker,
  Effect.gen(function*() {
    const broker = yield* Broker
    return Broker.of({ ...broker, publish: (batch) => Effect.andThen(broker.publish(batch), Effect.interrupt) })
  })
)

/** A broker whose consumer dies when it acks its first delivery (after the apply committed). */
const dyingAtFirstAck = Layer.effect(
  Broker,
  Effect.gen(function*() {
    const broker = yield* Broker
    let died = false
    return Broker.of({
      ...broker,
      subscribe: (queue, options) =>
        Stream.map(broker.subscribe(queue, options), (delivery) => ({
          ...delivery,
          ack: died ? delivery.ack : Effect.suspend(() => {
            died = true
            return Effect.interrupt
          })
        }))
    })
  })
)

const stores = () =>
  Layer.mergeAll(
    ownerSide(PostgresSync.layer({ prefix: prefix("owner") }).pipe(Layer.provide(databaseLayer))),
    consumerSide(PostgresSync.layer({ prefix: prefix("directory") }).pipe(Layer.provide(databaseLayer))),
    MemoryBroker.layer()
  )

const run = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.provideService(Metric.MetricRegistry, new Map()),
    Effect.provideService(Pump, TestClock.withLive(Effect.sleep("3 millis")))
  )

describe("crash safety (PostgreSQL)", () => {
  it.effect("a relay that dies between publish and mark-published: the event is republished, applied once", () =>
    run(
      Effect.gen(function*() {
        const consumer = yield* Layer.build(SyncConsumer.layer({ service: consumerName, subscriptions }))
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        const died = yield* Relay.drain({ producer: "accounts" }).pipe(
          Effect.provide(dyingAfterPublish),
          Effect.exit
        )
        assert.isTrue(Exit.hasInterrupts(died))
        yield* settle().pipe(Effect.provide(consumer))
        const outbox = yield* Outbox.Outbox
        assert.strictEqual((yield* outbox.pending).count, 1) // published, but not marked
        // the relay restarts; the row is claimable again once the dead relay's lease ends
        assert.strictEqual(yield* Relay.drain({ producer: "accounts" }), 0)
        yield* TestClock.adjust("30 seconds")
        assert.strictEqual(yield* Relay.drain({ producer: "accounts" }), 1)
        yield* settle().pipe(Effect.provide(consumer))
        assert.strictEqual((yield* outbox.pending).count, 0)
        assert.strictEqual(yield* outcome("applied"), 1)
        assert.strictEqual(yield* outcome("duplicate"), 1)
        assert.deepStrictEqual((yield* copyOf("Company", "c-1"))?.version, 1)
      }).pipe(Effect.provide(stores()))
    ))

  it.effect("a consumer that dies between apply and ack: the redelivery is a duplicate, applied once", () =>
    run(
      Effect.gen(function*() {
        const first = yield* Scope.make()
        yield* Layer.build(SyncConsumer.layer({ service: consumerName, subscriptions })).pipe(
          Effect.provide(dyingAtFirstAck),
          Scope.provide(first)
        )
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
        yield* Relay.drain({ producer: "accounts" })
        const version = Effect.map(copyOf("Company", "c-1"), (copy) => copy?.version)
        for (let i = 0; i < 100 && (yield* version) !== 2; i++) yield* tick("1 millis")
        assert.strictEqual(yield* version, 2) // both applied and committed; no ack reached the broker
        const appliedBefore = yield* outcome("applied")
        const memory = yield* MemoryBroker.MemoryBroker
        yield* Scope.close(first, Exit.void) // the process is gone: its unacked deliveries go back to the queue
        assert.strictEqual((yield* memory.queueDepth(queueName)).ready, 2)
        // a new consumer process
        const second = yield* Layer.build(SyncConsumer.layer({ service: consumerName, subscriptions }))
        yield* settle().pipe(Effect.provide(second))
        assert.strictEqual(yield* outcome("applied"), appliedBefore) // nothing applied again
        assert.strictEqual(yield* outcome("duplicate"), 2)
        assert.deepStrictEqual((yield* copyOf("Company", "c-1"))?.payload, { id: "c-1", name: "Acme Corp" })
      }).pipe(Effect.provide(stores()))
    ))
})
