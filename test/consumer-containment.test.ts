/**
 * The consumer under input and faults it was not built for (in memory, virtual time):
 * R6 — a defect or a hostile body touches only its own delivery; R11 — signed owners' events are checked;
 * R12 — a database outage pauses consumption: nothing is dead-lettered or loses a delivery attempt.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Metric } from "effect"
import { SqlError } from "effect/sql"
import { Broker, type OutgoingMessage } from "../src/Broker.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import * as Envelope from "../src/Envelope.ts"
import * as MemoryCopyRepository from "../src/memory/CopyRepository.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Signature from "../src/Signature.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Transactor } from "../src/Transactor.ts"
import { Company, User } from "./fixtures.ts"
import {
  consumerName,
  copyOf,
  eventually,
  memoryStores,
  queueName,
  settle,
  sync,
  systemLayer,
  tick
} from "./harness.ts"

const freshMetrics = Effect.provideServiceEffect(Metric.MetricRegistry, Effect.sync(() => new Map()))
const outcome = (entity: string, name: Metrics.Outcome) => Metrics.outcomeCount(consumerName, entity, name)

let sequence = 0
/** An event of the accounts service, as the relay would publish it. */
const event = (
  entity: "Company" | "User",
  entityId: string,
  version: number,
  payload: Envelope.Envelope["payload"]
): Envelope.Envelope => ({
  contractVersion: 1,
  messageId: `m-${++sequence}`,
  entity,
  entityId,
  action: version === 1 ? "created" : "updated",
  version,
  occurredAt: "2026-12-03T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload
})
const company = (id: string, version: number, name = `Company ${id}`) => event("Company", id, version, { id, name })

const message = (
  envelope: Pick<Envelope.Envelope, "messageId" | "entity" | "producer" | "action">,
  body: Uint8Array,
  headers: Readonly<Record<string, string>> = {}
): OutgoingMessage => ({
  messageId: envelope.messageId,
  routingKey: Envelope.routingKey(envelope),
  type: Envelope.messageType(envelope),
  body,
  headers
})
const publish = (...messages: ReadonlyArray<OutgoingMessage>) => Broker.use((broker) => broker.publish(messages))

/** The consumer's dead letters on the broker: reasons, oldest first. */
const deadReasons = Broker.use((broker) => broker.deadLetters(queueName, { limit: 1000 })).pipe(
  Effect.map((page) => page.items.map((d) => d.reason))
)

/** A consumer of Company and User in memory, with options of the test. */
const consumerLayer = (
  options: Partial<SyncConsumer.ConsumerOptions<never>> = {},
  consumerStores = memoryStores.consumer
) =>
  SyncConsumer.layer({
    service: consumerName,
    subscriptions: [Subscription.subscribe(Company), Subscription.subscribe(User)],
    ...options
  }).pipe(Layer.provideMerge(consumerStores), Layer.provideMerge(MemoryBroker.layer()))

describe("SyncConsumer containment", () => {
  it.effect("R6: a body nested thousands of levels deep or with too many keys is dead-lettered alone", () =>
    Effect.gen(function*() {
      const deep = `${"{\"nested\":".repeat(5_000)}{}${"}".repeat(5_000)}`
      const tooDeep = company("c-deep", 1)
      const manyKeys: Record<string, string> = { id: "c-keys", name: "Keys" }
      for (let i = 0; i < 20_000; i++) manyKeys[`k${i}`] = "x"
      const tooMany = company("c-keys", 1)
      const good = [company("c-1", 1), company("c-2", 1)]
      yield* publish(
        message(good[0]!, Envelope.encode(good[0]!)),
        message(
          tooDeep,
          new TextEncoder().encode(
            JSON.stringify({ ...Envelope.toCloudEvent(tooDeep), data: "DEEP" }).replace("\"DEEP\"", deep)
          )
        ),
        message(tooMany, Envelope.encode({ ...tooMany, payload: manyKeys })),
        message(good[1]!, Envelope.encode(good[1]!))
      )
      yield* settle()
      assert.strictEqual((yield* copyOf("Company", "c-1"))?.version, 1)
      assert.strictEqual((yield* copyOf("Company", "c-2"))?.version, 1)
      assert.isNull(yield* copyOf("Company", "c-deep"))
      const reasons = yield* deadReasons
      assert.strictEqual(reasons.length, 2)
      assert.match(reasons[0]!, /^TooComplex .*nests deeper than 32 levels/)
      assert.match(reasons[1]!, /^TooComplex .*more than 10000 object keys/)
      assert.strictEqual(yield* (yield* SyncConsumer.SyncConsumer).inFlight, 0)
    }).pipe(Effect.provide(consumerLayer()), freshMetrics))

  it.effect("R6: the copy keeps the payload as the contract's schema shapes it, without unknown keys", () =>
    Effect.gen(function*() {
      const e = company("c-1", 1)
      yield* publish(
        message(e, Envelope.encode({ ...e, payload: { id: "c-1", name: "Acme", smuggled: { a: [1, 2] } } }))
      )
      yield* settle()
      assert.deepStrictEqual((yield* copyOf("Company", "c-1"))?.payload, { id: "c-1", name: "Acme" })
    }).pipe(Effect.provide(consumerLayer()), freshMetrics))

  it.effect("R6: a defect in one event's handler dead-letters that event alone; its batch is applied, the loop goes on", () =>
    Effect.gen(function*() {
      const events = [company("c-1", 1), company("c-boom", 1), company("c-2", 1)]
      yield* publish(...events.map((e) => message(e, Envelope.encode(e))))
      yield* settle()
      assert.strictEqual((yield* copyOf("Company", "c-1"))?.version, 1)
      assert.strictEqual((yield* copyOf("Company", "c-2"))?.version, 1)
      assert.isNull(yield* copyOf("Company", "c-boom"))
      const reasons = yield* deadReasons
      assert.strictEqual(reasons.length, 1)
      assert.match(reasons[0]!, /^Defect \(message m-\d+, entity Company\): Error: handler exploded/)
      assert.strictEqual(yield* outcome("Company", "defect"), 1)
      // the loop was not restarted: later events are applied at once
      const later = company("c-3", 1)
      yield* publish(message(later, Envelope.encode(later)))
      yield* settle()
      assert.strictEqual((yield* copyOf("Company", "c-3"))?.version, 1)
      assert.strictEqual(yield* (yield* SyncConsumer.SyncConsumer).inFlight, 0)
    }).pipe(
      Effect.provide(
        SyncConsumer.layer({
          service: consumerName,
          subscriptions: [
            Subscription.subscribe(Company, {
              handler: (e) =>
                Effect.sync(() => {
                  if (e.envelope.entityId === "c-boom") throw new Error("handler exploded")
                })
            }),
            Subscription.subscribe(User)
          ]
        }).pipe(Layer.provideMerge(memoryStores.consumer), Layer.provideMerge(MemoryBroker.layer()))
      ),
      freshMetrics
    ))

  it.effect("R6: entity names from messages never become metric labels; long ones are cut in reasons", () =>
    Effect.gen(function*() {
      const names = Array.from({ length: 50 }, (_, i) => `Evil${i}${"x".repeat(10_000)}`)
      for (const entity of names) {
        const e = { ...company("c-1", 1), entity: entity.slice(0, 200) }
        yield* publish({ ...message(e, Envelope.encode(e)), routingKey: "accounts.Company.created" })
      }
      yield* settle()
      assert.strictEqual(yield* outcome("unknown", "malformed"), 50)
      const reasons = yield* deadReasons
      assert.strictEqual(reasons.length, 50)
      for (const reason of reasons) assert.isAtMost(new TextEncoder().encode(reason).byteLength, 1024)
      const labels = (yield* Metric.snapshot).flatMap((m) => Object.values(m.attributes ?? {}).map(String))
      assert.isFalse(labels.some((label) => label.startsWith("Evil")))
    }).pipe(Effect.provide(consumerLayer()), freshMetrics))

  it.effect("R8: a full sync with reset repairs a copy that is ahead of its owner; a plain one never regresses it", () =>
    Effect.gen(function*() {
      const companies = Producer.make("accounts").repository(Company)
      yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
      yield* sync
      const copy = yield* copyOf("Company", "c-1")
      assert.strictEqual(copy?.version, 1)
      // the copy got ahead of its owner (say, a forged event applied before R11 was enforced)
      yield* CopyRepository.use((copies) =>
        copies.upsert({ ...copy!, version: 99, payload: { id: "c-1", name: "Forged" } }, "newer")
      )
      yield* companies.fullSync()
      yield* sync
      assert.deepStrictEqual((yield* copyOf("Company", "c-1"))?.payload, { id: "c-1", name: "Forged" })
      yield* companies.fullSync({ reset: true })
      yield* sync
      const repaired = yield* copyOf("Company", "c-1")
      assert.strictEqual(repaired?.version, 1)
      assert.deepStrictEqual(repaired?.payload, { id: "c-1", name: "Acme" })
      yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
      yield* sync
      assert.strictEqual((yield* copyOf("Company", "c-1"))?.version, 2)
    }).pipe(Effect.provide(systemLayer()), freshMetrics))

  describe("R11 with signatures", () => {
    const now = 0 // the TestClock's start
    const day = 24 * 60 * 60 * 1000
    const old = Signature.generateKeyPair("accounts-2026-11")
    const rotated = Signature.generateKeyPair("accounts-2026-12")
    const intruder = Signature.generateKeyPair("accounts-2026-11")
    const verifyingKeys: Signature.VerifyingKeys = {
      accounts: [
        { ...old.verifying, notAfter: now + day },
        { ...rotated.verifying, notBefore: now - day }
      ]
    }
    const signed = (e: Envelope.Envelope, key: Signature.SigningKey) => {
      const body = Envelope.encode(e)
      return message(e, body, Signature.sign(key, body))
    }

    it.effect("accepts events signed by a key of the owner valid now, and dead-letters the others as ForgedProducer", () =>
      Effect.gen(function*() {
        const byOld = company("c-old", 1)
        const byNew = company("c-new", 1)
        const unsigned = company("c-unsigned", 1)
        const tampered = company("c-tampered", 1)
        const wrongKey = company("c-intruder", 1)
        const tamperedMessage = signed(tampered, rotated.signing)
        yield* publish(
          signed(byOld, old.signing),
          signed(byNew, rotated.signing),
          message(unsigned, Envelope.encode(unsigned)),
          {
            ...tamperedMessage,
            body: Envelope.encode({ ...tampered, payload: { id: "c-tampered", name: "Changed" } })
          },
          signed(wrongKey, intruder.signing)
        )
        yield* settle()
        assert.strictEqual((yield* copyOf("Company", "c-old"))?.version, 1, "the old key is valid in its overlap")
        assert.strictEqual((yield* copyOf("Company", "c-new"))?.version, 1)
        for (const id of ["c-unsigned", "c-tampered", "c-intruder"]) assert.isNull(yield* copyOf("Company", id))
        const reasons = yield* deadReasons
        assert.strictEqual(reasons.length, 3)
        for (const reason of reasons) assert.match(reason, /^ForgedProducer/)
        assert.strictEqual(yield* outcome("Company", "forged"), 3)
        // after the old key's window, its signatures are refused
        yield* tick(`${2 * day} millis`)
        const late = company("c-late", 1)
        yield* publish(signed(late, old.signing))
        yield* settle()
        assert.isNull(yield* copyOf("Company", "c-late"))
        assert.strictEqual((yield* deadReasons).length, 4)
      }).pipe(Effect.provide(consumerLayer({ verifyingKeys })), freshMetrics))
  })

  describe("R12: a database outage pauses consumption", () => {
    /** Consumer stores whose database can be taken down: transactions and probes fail with `SqlError`. */
    const outageStores = (database: { down: boolean; probes: number }) => {
      const unreachable = new SqlError.SqlError({
        reason: new SqlError.ConnectionError({ message: "connection refused", cause: undefined })
      })
      const stores = Layer.mergeAll(MemoryInbox.layer, MemoryCopyRepository.layer).pipe(
        Layer.provideMerge(Layer.fresh(MemoryDatabase.layer))
      )
      return Layer.effectContext(Effect.map(Layer.build(stores), (context) => {
        const inner = Context.get(context, Transactor)
        return Context.add(
          context,
          Transactor,
          Transactor.of({
            withTransaction: (effect) =>
              Effect.suspend(() => database.down ? Effect.fail(unreachable) : inner.withTransaction(effect)),
            probe: Effect.suspend(() => {
              database.probes++
              return database.down ? Effect.fail(unreachable) : inner.probe
            })
          })
        )
      }))
    }

    it.effect("an outage far longer than the delivery limit allows dead-letters nothing, and everything is applied after", () => {
      const database = { down: false, probes: 0 }
      return Effect.gen(function*() {
        const broker = yield* MemoryBroker.MemoryBroker
        const consumer = yield* SyncConsumer.SyncConsumer
        const first = company("c-0", 1)
        yield* publish(message(first, Envelope.encode(first)))
        yield* settle()
        database.down = true
        const events = Array.from({ length: 30 }, (_, i) => company(`c-${i + 1}`, 1))
        yield* publish(...events.map((e) => message(e, Envelope.encode(e))))
        const status = yield* eventually(consumer.status, (s) => s.paused !== null, { step: "10 millis" })
        assert.strictEqual(status.paused?.dependency, "database")
        assert.match(status.paused?.error ?? "", /connection refused/)
        // two hours down: the hold limit (10 minutes) gives the deliveries back twelve times
        for (let minute = 0; minute < 120; minute++) yield* tick("1 minute")
        assert.isAbove(database.probes, 100)
        assert.deepStrictEqual(yield* deadReasons, [])
        database.down = false
        yield* eventually(consumer.status, (s) => s.paused === null, { step: "1 second" })
        yield* settle({ step: "10 millis" })
        for (const e of events) assert.strictEqual((yield* copyOf("Company", e.entityId))?.version, 1)
        assert.deepStrictEqual(yield* deadReasons, [])
        const stats = yield* broker.stats
        assert.isAtLeast(stats.published, 31)
        assert.strictEqual(yield* consumer.inFlight, 0)
      }).pipe(Effect.provide(consumerLayer({ holdLimit: "10 minutes" }, outageStores(database))), freshMetrics)
    })
  })
})
