/**
 * Every crash point of the handover, one at a time, on the memory stores and on PostgreSQL: the consumer
 * dies between receive and apply, between apply and commit, between commit and ack; the relay dies as it
 * publishes and between the broker's confirm and marking the rows published. A crashed process does
 * nothing more; a new one takes over. Nothing may be lost and nothing applied twice. And a statement that
 * fails while the database answers gives the event back to the broker (R3): it is never acked unapplied.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Layer, Metric, Scope, Stream } from "effect"
import { SqlError } from "effect/sql"
import { Broker } from "../src/Broker.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import type { Inbox } from "../src/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Transactor } from "../src/Transactor.ts"
import { Company } from "./fixtures.ts"
import { consumerName, copyOf, eventually, memoryStores, Pump, settle, type Stores, tick } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const companies = Producer.make("accounts").repository(Company)
const outcome = (name: Metrics.Outcome) => Metrics.outcomeCount(consumerName, "Company", name)
const relay = Relay.drain({ producer: "accounts" })

/** A consumer of Companies whose handler records every event it applies (a side effect, once per event). */
const consumerLayer = (handled: Array<string>) =>
  SyncConsumer.layer({
    service: consumerName,
    subscriptions: [
      Subscription.subscribe(Company, {
        handler: ({ envelope }) => Effect.sync(() => void handled.push(`${envelope.entityId} v${envelope.version}`))
      })
    ]
  })

/** Where a consumer process dies: it signals `died`, and from then on does nothing more. */
type ConsumerCrash = "receive/apply" | "apply/commit" | "commit/ack"
const consumerCrashes: ReadonlyArray<ConsumerCrash> = ["receive/apply", "apply/commit", "commit/ack"]

/** Where a relay dies: as it publishes (the broker never gets the batch), or after the broker's confirm. */
type RelayCrash = "publish" | "publish/mark"
const relayCrashes: ReadonlyArray<RelayCrash> = ["publish", "publish/mark"]

/** The consumer's transaction boundary, dying before its first apply or after it, before the commit. */
const dyingTransactor = (point: "receive/apply" | "apply/commit", died: Deferred.Deferred<void>) =>
  Layer.effect(
    Transactor,
    Effect.gen(function*() {
      const transactor = yield* Transactor
      const dead = Effect.andThen(Deferred.succeed(died, undefined), Effect.interrupt)
      return Transactor.of({
        ...transactor,
        withTransaction: (effect) =>
          Effect.suspend(() => {
            if (Deferred.isDoneUnsafe(died)) return dead
            return point === "receive/apply"
              ? dead // the deliveries are taken; nothing of them is applied
              : transactor.withTransaction(Effect.tap(effect, () => dead)) // applied, rolled back by the crash
          })
      })
    })
  )

/** The consumer's broker: acks die (after the apply committed). */
const dyingAtAck = (died: Deferred.Deferred<void>) =>
  Layer.effect(
    Broker,
    Effect.gen(function*() {
      const broker = yield* Broker
      const dead = Effect.andThen(Deferred.succeed(died, undefined), Effect.interrupt)
      return Broker.of({
        ...broker,
        subscribe: (queue, options) =>
          Stream.map(broker.subscribe(queue, options), (delivery) => ({ ...delivery, ack: dead }))
      })
    })
  )

/** A consumer process that dies at `point`. */
const crashingConsumer = (
  handled: Array<string>,
  point: ConsumerCrash,
  died: Deferred.Deferred<void>
): Layer.Layer<SyncConsumer.SyncConsumer, never, Broker | Inbox | CopyRepository | Transactor> =>
  point === "commit/ack"
    ? consumerLayer(handled).pipe(Layer.provide(dyingAtAck(died)))
    : consumerLayer(handled).pipe(Layer.provide(dyingTransactor(point, died)))

/** The relay's broker: dies before the batch reaches the broker, or after the broker confirmed it. */
const dyingRelayBroker = (point: RelayCrash) =>
  Layer.effect(
    Broker,
    Effect.gen(function*() {
      const broker = yield* Broker
      return Broker.of({
        ...broker,
        publish: (batch) =>
          point === "publish" ? Effect.interrupt : Effect.andThen(broker.publish(batch), Effect.interrupt)
      })
    })
  )

/** Consumer copies whose first `failures` writes fail with an `SqlError` (the database itself answers). */
const failingWrites = (failures: number) =>
  Layer.effect(
    CopyRepository,
    Effect.gen(function*() {
      const copies = yield* CopyRepository
      let left = failures
      const fail = <A>(write: Effect.Effect<A, SqlError.SqlError>) =>
        Effect.suspend(() =>
          left-- > 0
            ? Effect.fail(
              new SqlError.SqlError({
                reason: new SqlError.UnknownError({ cause: "injected", message: "write failed" })
              })
            )
            : write
        )
      return CopyRepository.of({
        ...copies,
        upsert: (row, guard) => fail(copies.upsert(row, guard)),
        upsertMany: (rows) => fail(copies.upsertMany(rows))
      })
    })
  )

const crashSuite = (name: string, stores: () => Stores, pump: Effect.Effect<void>) =>
  describe(name, () => {
    const run = <A, E, R>(effect: Effect.Effect<A, E, R>) => {
      const { consumer, owner } = stores()
      return effect.pipe(
        Effect.provide(Layer.mergeAll(owner, consumer, MemoryBroker.layer())),
        Effect.provideService(Metric.MetricRegistry, new Map()),
        Effect.provideService(Pump, pump)
      )
    }
    const acme = { id: "c-1", name: "Acme" }

    for (const point of consumerCrashes) {
      it.effect(`a consumer that dies between ${point}: a new one applies every event, each once`, () =>
        run(Effect.gen(function*() {
          const handled: Array<string> = []
          const handledAfter: Array<string> = []
          const died = yield* Deferred.make<void>()
          const first = yield* Scope.make()
          yield* Layer.build(crashingConsumer(handled, point, died)).pipe(Scope.provide(first))
          yield* Outbox.transaction(companies.create(acme))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
          assert.strictEqual(yield* relay, 2)
          yield* eventually(Deferred.isDone(died), (done) => done)
          const committed = point === "commit/ack" ? 2 : 0
          assert.strictEqual((yield* copyOf("Company", "c-1"))?.version ?? 0, committed)
          yield* Scope.close(first, Exit.void) // the process is gone: its unsettled deliveries go back
          const second = yield* Layer.build(consumerLayer(handledAfter))
          yield* settle().pipe(Effect.provide(second))
          const copy = yield* copyOf("Company", "c-1")
          assert.deepStrictEqual(copy && [copy.version, copy.payload], [2, { id: "c-1", name: "Acme Corp" }])
          // each event handled once in effect: by the first process if it committed, else by the second
          assert.deepStrictEqual(point === "commit/ack" ? [handled, handledAfter] : [handledAfter], [
            ...(point === "commit/ack" ? [["c-1 v1", "c-1 v2"]] : []),
            point === "commit/ack" ? [] : ["c-1 v1", "c-1 v2"]
          ])
          assert.strictEqual(yield* outcome("applied"), 2)
          // after commit/ack the redeliveries are known to the inbox; before, nothing had committed
          assert.strictEqual(yield* outcome("duplicate"), committed)
          assert.strictEqual(yield* outcome("stale"), 0)
        })))
    }

    for (const point of relayCrashes) {
      const where = point === "publish" ? "as it publishes" : "between the broker's confirm and mark-published"
      it.effect(`a relay that dies ${where}: a new one publishes again, the event is applied once`, () =>
        run(Effect.gen(function*() {
          const handled: Array<string> = []
          const consumer = yield* Layer.build(consumerLayer(handled))
          yield* Outbox.transaction(companies.create(acme))
          const died = yield* relay.pipe(Effect.provide(dyingRelayBroker(point)), Effect.exit)
          assert.isTrue(Exit.hasInterrupts(died))
          yield* settle().pipe(Effect.provide(consumer))
          const outbox = yield* Outbox.Outbox
          assert.strictEqual((yield* outbox.pending).count, 1) // not marked: the dead relay's lease holds it
          yield* tick("1 minute")
          assert.strictEqual(yield* relay, 1)
          yield* settle().pipe(Effect.provide(consumer))
          assert.strictEqual((yield* outbox.pending).count, 0)
          assert.deepStrictEqual((yield* copyOf("Company", "c-1"))?.payload, acme)
          assert.deepStrictEqual(handled, ["c-1 v1"])
          assert.strictEqual(yield* outcome("applied"), 1)
          assert.strictEqual(yield* outcome("duplicate"), point === "publish" ? 0 : 1)
        })))
    }

    it.effect("a statement failing while the database answers: the event goes back to the broker, then applies", () =>
      run(Effect.gen(function*() {
        const handled: Array<string> = []
        // the batch, then the event on its own with its retries: every attempt of the first delivery fails
        const consumer = yield* Layer.build(consumerLayer(handled).pipe(Layer.provide(failingWrites(7))))
        yield* Outbox.transaction(companies.create(acme))
        assert.strictEqual(yield* relay, 1)
        const copy = yield* eventually(copyOf("Company", "c-1"), (c) => c !== null, { step: "100 millis" })
        assert.deepStrictEqual(copy?.payload, acme)
        yield* settle().pipe(Effect.provide(consumer))
        const broker = yield* MemoryBroker.MemoryBroker
        const stats = yield* broker.stats
        assert.deepStrictEqual([stats.requeued, stats.acked, stats.deadLettered], [1, 1, 0])
        assert.strictEqual(yield* outcome("failed"), 1)
        assert.deepStrictEqual(handled, ["c-1 v1"])
      })))
  })

crashSuite("crash points (memory stores)", () => memoryStores, Effect.void)

const database = TestPostgres.forFile()

crashSuite("crash points (PostgreSQL stores)", database.stores, TestPostgres.pump)
