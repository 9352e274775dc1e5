/**
 * The pattern's checklist, one test each, with the TestClock: one suite, run on the memory stores and on
 * PostgreSQL — with copies that keep their payloads, and with ledger-only subscriptions
 * (`keepPayload: false`) whose handlers keep the data in a table of the consumer's own.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Metric, Schedule, type Schema } from "effect"
import { Broker } from "../src/Broker.ts"
import { CopyRepository, type CopyRow } from "../src/CopyRepository.ts"
import * as Envelope from "../src/Envelope.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company, Invoice, User } from "./fixtures.ts"
import {
  consumerName,
  copyOf,
  eventually,
  Pump,
  queueName,
  relay,
  settle,
  type Stores,
  sync,
  systemLayer,
  type SystemOptions,
  tick
} from "./harness.ts"

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const users = accounts.repository(User)
const acme = { id: "c-1", name: "Acme" }
const ann = { id: "u-1", companyId: "c-1", email: "ann@acme.test", name: "Ann", active: true }

/**
 * Claims every due outbox row and publishes them in waves (indexes of the claimed rows); the consumer
 * settles after each wave, so a later wave arrives after the earlier ones were handled.
 */
const publishInWaves = (waves: (n: number) => ReadonlyArray<ReadonlyArray<number>>) =>
  Effect.gen(function*() {
    const outbox = yield* Outbox.Outbox
    const broker = yield* Broker
    const rows = yield* outbox.claim(1000)
    yield* outbox.markPublished(rows.map((r) => r.seq))
    for (const wave of waves(rows.length)) {
      yield* broker.publish(wave.map((i) => Relay.toMessage(rows[i]!)))
      yield* settle()
    }
    return rows
  })

const outcome = (entity: string, name: Metrics.Outcome) => Metrics.outcomeCount(consumerName, entity, name)

/**
 * The consumer's own table of a ledger-only run: the payload of each entity its handlers were given, by
 * `entity:id` (a soft-deleted entity keeps its row, a hard-deleted one has none). In memory, also on
 * PostgreSQL: nothing in the checklist rolls a transaction back after its handlers ran.
 */
const OwnTable = Context.Reference<Map<string, Schema.Json>>("test/checklist/OwnTable", {
  defaultValue: () => new Map()
})

/** A ledger-only handler: keeps the event's data in the consumer's own table, as a real one would in SQL. */
const keepIn =
  (own: Map<string, Schema.Json>) =>
  ({ envelope, payload }: { readonly envelope: Envelope.Envelope; readonly payload: Schema.Json | null }) =>
    Effect.sync(() => {
      const key = `${envelope.entity}:${envelope.entityId}`
      if (payload === null) own.delete(key)
      else own.set(key, payload)
    })

/** Where the suite keeps its data, and how real I/O is let through between virtual-time steps. */
export interface ChecklistStores {
  /** Fresh stores for one test. */
  readonly stores: () => Stores
  readonly pump: Effect.Effect<void>
}

/** How the checklist's consumer keeps its copies. */
export interface ChecklistOptions {
  /**
   * Whether the subscriptions keep payloads in their copies (default true). With false, they keep a ledger
   * only (`keepPayload: false`) and their handlers keep the data in the consumer's own table: every
   * assertion on a copy's payload reads that table instead, after checking the copy keeps none.
   */
  readonly keepPayload?: boolean
}

/** The checklist, on the given stores. */
export const checklist = (name: string, kit: ChecklistStores, checklistOptions: ChecklistOptions = {}) => {
  const keepPayload = checklistOptions.keepPayload !== false

  /**
   * The consumer's subscriptions to Company and User; with `handled`, the Company handler records the
   * message id of every event it applies (a side effect).
   */
  const subscriptions = (own: Map<string, Schema.Json>, handled?: Array<string>) => {
    const record = (envelope: Envelope.Envelope) =>
      Effect.sync(() => {
        if (handled !== undefined) handled.push(envelope.messageId)
      })
    if (keepPayload) {
      return [
        handled === undefined ?
          Subscription.subscribe(Company) :
          Subscription.subscribe(Company, { handler: ({ envelope }) => record(envelope) }),
        Subscription.subscribe(User)
      ]
    }
    const keep = keepIn(own)
    return [
      Subscription.subscribe(Company, {
        keepPayload: false,
        handler: (event) => Effect.andThen(record(event.envelope), keep(event))
      }),
      Subscription.subscribe(User, { keepPayload: false, handler: keep })
    ]
  }

  /** Runs a test on a fresh system with its own metrics (`handled`: see `subscriptions`). */
  const inSystem = <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    options?: Omit<SystemOptions, "stores" | "subscriptions"> & { readonly handled?: Array<string> }
  ) => {
    const own = new Map<string, Schema.Json>()
    const { handled, ...systemOptions } = options ?? {}
    const layer = systemLayer({
      ...systemOptions,
      stores: kit.stores(),
      ...(keepPayload && handled === undefined ? {} : { subscriptions: subscriptions(own, handled) })
    })
    return effect.pipe(
      Effect.provide(layer),
      Effect.provideService(OwnTable, own),
      Effect.provideService(Metric.MetricRegistry, new Map()),
      Effect.provideService(Pump, kit.pump)
    )
  }

  /**
   * The consumer's copy of an entity with the payload it holds: the copy's own, or — ledger only — the one
   * in the consumer's table, once it is checked that the copy keeps no payload.
   */
  const viewOf = (entity: string, id: string): Effect.Effect<CopyRow | null, never, CopyRepository> =>
    Effect.gen(function*() {
      const copy = yield* copyOf(entity, id)
      if (keepPayload || copy === null) return copy
      assert.isNull(copy.payload, `the ledger row of ${entity}:${id} keeps no payload`)
      const own = yield* OwnTable
      return { ...copy, payload: own.get(`${entity}:${id}`) ?? null }
    })

  /**
   * Makes a copy drift from the owner: its payload becomes `payload` (ledger only: the consumer's table
   * does), and its version `version` when given.
   */
  const drift = (copy: CopyRow, payload: Schema.Json, version?: number) =>
    Effect.gen(function*() {
      const copies = yield* CopyRepository
      const changed = { ...copy, version: version ?? copy.version }
      if (keepPayload) return yield* copies.upsert({ ...changed, payload }, "any")
      ;(yield* OwnTable).set(`${copy.entity}:${copy.id}`, payload)
      return yield* copies.upsert({ ...changed, payload: null }, "any")
    })

  const deadLetterPolicy = {
    dependencyRetry: Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 4 })),
    inProcessRetries: 2
  }

  describe(name, () => {
    it.effect("create flows: the consumer holds a copy at version 1", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* sync
        const copy = yield* viewOf("Company", "c-1")
        assert.deepStrictEqual(copy && [copy.version, copy.state, copy.payload], [1, "live", acme])
        assert.strictEqual(yield* outcome("Company", "applied"), 1)
      })))

    it.effect("update flows: the copy follows the owner's version and payload", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
        yield* sync
        const copy = yield* viewOf("Company", "c-1")
        assert.deepStrictEqual(copy && [copy.version, copy.state, copy.payload], [2, "live", {
          id: "c-1",
          name: "Acme Corp"
        }])
      })))

    it.effect("a no-op update writes nothing and raises no event", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        const same = yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c })))
        const outbox = yield* Outbox.Outbox
        assert.strictEqual(same.version, 1)
        assert.lengthOf(yield* outbox.rows(), 1)
      })))

    it.effect("delete flows: a tombstone keeps the version and an older update never resurrects the entity", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
        yield* Outbox.transaction(companies.delete("c-1"))
        // created and deleted, then the older update
        yield* publishInWaves(() => [[0, 2], [1]])
        const copy = yield* viewOf("Company", "c-1")
        assert.deepStrictEqual(copy && [copy.version, copy.state, copy.payload], [3, "deleted", null])
        assert.strictEqual(yield* outcome("Company", "stale"), 1)
      })))

    it.effect("soft delete: the copy keeps its row and payload with deletedAt", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* tick("1 minute")
        const deleted = yield* Outbox.transaction(companies.softDelete("c-1"))
        yield* sync
        const copy = yield* viewOf("Company", "c-1")
        assert.deepStrictEqual(copy && [copy.version, copy.state, copy.payload, copy.deletedAt], [
          2,
          "softDeleted",
          acme,
          deleted.deletedAt
        ])
        assert.strictEqual(deleted.deletedAt, 60_000)
      })))

    it.effect("out-of-order messages: the older one is StaleMessage and leaves the copy unchanged", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* sync
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v2" })))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v3" })))
        yield* publishInWaves((n) => [[n - 1], [n - 2]])
        const copy = yield* viewOf("Company", "c-1")
        assert.deepStrictEqual(copy && [copy.version, copy.payload], [3, { id: "c-1", name: "v3" }])
        assert.strictEqual(yield* outcome("Company", "stale"), 1)
        assert.strictEqual(yield* outcome("Company", "applied"), 2)
      })))

    it.effect("one batch applies an entity's events in version order, whatever their arrival order", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v2" })))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v3" })))
        yield* publishInWaves(() => [[2, 1, 0]])
        const copy = yield* viewOf("Company", "c-1")
        assert.deepStrictEqual(copy && [copy.version, copy.payload], [3, { id: "c-1", name: "v3" }])
        assert.strictEqual(yield* outcome("Company", "applied"), 3)
        assert.strictEqual(yield* outcome("Company", "stale"), 0)
      })))

    it.effect("duplicates: a message delivered again, in its batch or in a later one, is applied once", () => {
      const handled: Array<string> = []
      return inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v2" })))
          // twice in the first batch, then again after both were applied: only the inbox tells these
          // redeliveries from stale events
          const rows = yield* publishInWaves(() => [[0, 0, 1], [0], [1], [1, 0]])
          assert.deepStrictEqual(handled, rows.map((r) => r.envelope.messageId))
          assert.strictEqual(yield* outcome("Company", "applied"), 2)
          assert.strictEqual(yield* outcome("Company", "duplicate"), 5)
          assert.strictEqual(yield* outcome("Company", "stale"), 0)
          const copy = yield* viewOf("Company", "c-1")
          assert.deepStrictEqual(copy && [copy.version, copy.payload], [2, { id: "c-1", name: "v2" }])
        }),
        { handled }
      )
    })

    it.effect("duplicates: a force-sync event delivered twice at the copy's version changes it once", () => {
      const handled: Array<string> = []
      return inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          yield* sync
          assert.strictEqual(yield* companies.fullSync({ batchSize: 10 }), 1)
          // R8 applies a snapshot at an equal version; only the inbox keeps its redelivery from applying again
          const syncedAt = (copy: CopyRow | null) => copy && [copy.version, copy.syncedAt, copy.messageId]
          const [snapshot] = yield* publishInWaves(() => [[0]])
          const repaired = syncedAt(yield* viewOf("Company", "c-1"))
          assert.deepStrictEqual(repaired?.[2], snapshot!.envelope.messageId)
          yield* tick("1 minute")
          yield* (yield* Broker).publish([Relay.toMessage(snapshot!)])
          yield* settle()
          assert.deepStrictEqual(syncedAt(yield* viewOf("Company", "c-1")), repaired)
          assert.strictEqual(handled.length, 2) // the create, then the snapshot once
          assert.strictEqual(yield* outcome("Company", "applied"), 2)
          assert.strictEqual(yield* outcome("Company", "duplicate"), 1)
        }),
        { handled }
      )
    })

    it.effect("missing dependency: a User before its Company waits, never points to a missing Company, then applies", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* Outbox.transaction(users.create(ann))
        // only the User is delivered
        const outbox = yield* Outbox.Outbox
        const broker = yield* Broker
        const [companyRow, userRow] = yield* outbox.claim(10)
        yield* broker.publish([Relay.toMessage(userRow!)])
        // in process, then parked: still no copy that references the missing Company
        for (let i = 0; i < 20; i++) {
          yield* tick("100 millis")
          assert.isNull(yield* viewOf("User", "u-1"))
        }
        yield* eventually(outcome("User", "parked"), (n) => n === 1, { step: "100 millis" })
        assert.isNull(yield* viewOf("User", "u-1"))
        assert.strictEqual(yield* outcome("User", "waiting"), 1)
        const consumer = yield* SyncConsumer.SyncConsumer
        const waiting = yield* consumer.waiting
        assert.deepStrictEqual(waiting.map((w) => [w.messageId, w.waitingFor]), [[userRow!.envelope.messageId, [
          { entity: "Company", id: "c-1" },
          { entity: "User", id: "u-1" }
        ]]])
        // the Company arrives: the parked User is woken at once, not at its next scheduled attempt
        yield* broker.publish([Relay.toMessage(companyRow!)])
        yield* settle()
        assert.strictEqual(yield* eventually(outcome("User", "woken"), (n) => n === 1), 1)
        const user = yield* viewOf("User", "u-1")
        assert.deepStrictEqual(user && [user.version, user.payload], [1, ann])
        assert.lengthOf(yield* consumer.waiting, 0)
      })))

    it.effect("dependency never arrives: dead-lettered as DependencyMissing after the budget, then replayed", () =>
      inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          yield* Outbox.transaction(users.create(ann))
          const outbox = yield* Outbox.Outbox
          const broker = yield* Broker
          const [companyRow, userRow] = yield* outbox.claim(10)
          yield* broker.publish([Relay.toMessage(userRow!)])
          const consumer = yield* SyncConsumer.SyncConsumer
          const dead = yield* eventually(consumer.deadLetters, (rows) => rows.length > 0, { step: "100 millis" })
          assert.deepStrictEqual(dead.map((d) => [d.messageId, d.error, d.attempts]), [[
            userRow!.envelope.messageId,
            "DependencyMissing",
            5
          ]])
          assert.match(dead[0]!.reason, /User:u-1 v1 .* waits for Company:c-1 after 5 attempt/)
          assert.strictEqual(yield* outcome("User", "deadLettered"), 1)
          assert.lengthOf(yield* consumer.waiting, 0)
          assert.isNull(yield* viewOf("User", "u-1"))
          // the operator fixes the cause and replays
          yield* broker.publish([Relay.toMessage(companyRow!)])
          yield* settle()
          assert.isTrue(yield* consumer.replay(userRow!.envelope.messageId))
          assert.isFalse(yield* consumer.replay("no-such-message"))
          const user = yield* eventually(viewOf("User", "u-1"), (copy) => copy !== null)
          assert.deepStrictEqual(user && user.payload, ann)
          assert.lengthOf(yield* consumer.deadLetters, 0)
        }),
        deadLetterPolicy
      ))

    it.effect("a hard delete waits while copies still reference the entity", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* Outbox.transaction(companies.create({ id: "c-2", name: "Beta" }))
        yield* Outbox.transaction(users.create(ann))
        yield* sync
        yield* Outbox.transaction(users.update("u-1", (u) => ({ ...u, companyId: "c-2" })))
        yield* Outbox.transaction(companies.delete("c-1"))
        const outbox = yield* Outbox.Outbox
        const broker = yield* Broker
        const [move, remove] = yield* outbox.claim(10)
        // the delete overtakes the move: it waits, the copy of c-1 stays while u-1 references it
        yield* broker.publish([Relay.toMessage(remove!)])
        for (let i = 0; i < 10; i++) {
          yield* tick("100 millis")
          assert.strictEqual((yield* viewOf("Company", "c-1"))?.state, "live")
        }
        // the move arrives: nothing references c-1 any more, the delete is woken and applies
        yield* broker.publish([Relay.toMessage(move!)])
        yield* settle()
        yield* eventually(viewOf("Company", "c-1"), (copy) => copy?.state === "deleted")
        assert.deepStrictEqual((yield* viewOf("User", "u-1"))?.payload, { ...ann, companyId: "c-2" })
        assert.strictEqual(yield* outcome("Company", "woken"), 1)
      })))

    it.effect("force sync repairs a drifted copy at an equal version and never regresses a newer one", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme))
        yield* Outbox.transaction(companies.create({ id: "c-2", name: "Beta" }))
        yield* sync
        yield* drift((yield* copyOf("Company", "c-1"))!, { id: "c-1", name: "drifted" })
        yield* drift((yield* copyOf("Company", "c-2"))!, { id: "c-2", name: "newer" }, 9)
        const queued = yield* companies.fullSync({ batchSize: 1 })
        assert.strictEqual(queued, 2)
        yield* sync
        assert.deepStrictEqual((yield* viewOf("Company", "c-1"))?.payload, acme)
        assert.deepStrictEqual((yield* viewOf("Company", "c-2"))?.payload, { id: "c-2", name: "newer" })
        assert.strictEqual(yield* outcome("Company", "stale"), 1)
      })))

    it.effect("handleWhen: an inactive user produces no event unless it is deleted", () =>
      inSystem(Effect.gen(function*() {
        const visibleUsers = accounts.repository(User, {
          handleWhen: ({ action, after, before }) =>
            after?.active === true || before?.active === true || action === "deleted"
        })
        yield* Outbox.transaction(companies.create(acme))
        yield* Outbox.transaction(visibleUsers.create({ ...ann, active: false }))
        yield* Outbox.transaction(visibleUsers.update("u-1", (u) => ({ ...u, name: "still hidden" })))
        const outbox = yield* Outbox.Outbox
        const types = () =>
          Effect.map(outbox.rows(), (rows) => rows.map((r) => `${r.envelope.entity}.${r.envelope.action}`))
        assert.deepStrictEqual(yield* types(), ["Company.created"])
        yield* Outbox.transaction(visibleUsers.delete("u-1"))
        assert.deepStrictEqual(yield* types(), ["Company.created", "User.deleted"])
        yield* sync
        assert.strictEqual((yield* viewOf("User", "u-1"))?.state, "deleted")
      })))

    it.effect("dismissSendEvent: the write happens, no event is raised", () =>
      inSystem(Effect.gen(function*() {
        yield* Outbox.transaction(companies.create(acme, { dismissSendEvent: true }))
        const renamed = yield* Outbox.transaction(
          companies.update("c-1", (c) => ({ ...c, name: "quiet" }), { dismissSendEvent: true })
        )
        const outbox = yield* Outbox.Outbox
        assert.lengthOf(yield* outbox.rows(), 0)
        assert.deepStrictEqual([renamed.version, renamed.payload], [2, { id: "c-1", name: "quiet" }])
        assert.deepStrictEqual((yield* companies.get("c-1"))?.payload, { id: "c-1", name: "quiet" })
      })))

    it.effect("a rolled-back write publishes nothing", () =>
      inSystem(Effect.gen(function*() {
        const failed = yield* Outbox.transaction(
          Effect.andThen(companies.create(acme), Effect.fail("business rule broken" as const))
        ).pipe(Effect.flip)
        assert.strictEqual(failed, "business rule broken")
        const outbox = yield* Outbox.Outbox
        assert.lengthOf(yield* outbox.rows(), 0)
        assert.isNull(yield* companies.get("c-1"))
        assert.strictEqual(yield* relay, 0)
      })))

    it.effect("malformed, oversized, retired, too-new and unknown-entity messages are dead-lettered with reasons; the consumer goes on", () =>
      inSystem(Effect.gen(function*() {
        const broker = yield* Broker
        const text = (s: string) => new TextEncoder().encode(s)
        const poison = (messageId: string, body: Uint8Array) => ({
          messageId,
          routingKey: "accounts.Company.created",
          type: "entitysync.Company.created",
          body,
          headers: {}
        })
        yield* Outbox.transaction(companies.create(acme))
        const [good] = yield* (yield* Outbox.Outbox).claim(10)
        const event = Envelope.toCloudEvent(good!.envelope)
        const json = (value: unknown) => text(JSON.stringify(value))
        yield* broker.publish([
          poison("p-1", text("{not json")),
          poison("p-2", json({ ...event, id: "p-2", entityversion: "seven" })),
          poison("p-3", json({ ...event, id: "p-3", data: { id: "c-1", name: "x".repeat(300_000) } })),
          poison("p-4", json({ ...event, id: "p-4", type: "entitysync.Unknown.created" })),
          poison("p-5", json({ ...event, id: "p-5", data: { id: "c-1" } })),
          poison("p-6", json({ ...event, id: "p-6", source: "billing" })),
          poison("p-7", json({ specVersion: 1, messageId: "p-7", entity: "Company", entityId: "c-1", version: 1 })),
          poison("p-8", json({ ...event, id: "p-8", contractversion: 2 })),
          Relay.toMessage(good!)
        ])
        yield* settle()
        const dead = (yield* broker.deadLetters(queueName)).items
        const reasons = Object.fromEntries(dead.map((d) => [d.messageId, d.reason]))
        assert.match(reasons["p-1"]!, /^NotJson: /)
        assert.match(reasons["p-2"]!, /^InvalidEnvelope \(message p-2, entity Company\): .*entityversion/)
        assert.match(reasons["p-3"]!, /^TooLarge: the body is \d+ bytes; the limit is 262144/)
        assert.match(reasons["p-4"]!, /^UnknownEntity .*does not subscribe to Unknown/)
        assert.match(reasons["p-5"]!, /^InvalidPayload .*name/)
        assert.match(reasons["p-6"]!, /owned by "accounts", but the message was produced by "billing"/)
        assert.match(reasons["p-7"]!, /^InvalidEnvelope \(message p-7, entity Company\): wire format 1 .* is retired/)
        assert.match(
          reasons["p-8"]!,
          /^UnsupportedContractVersion .*Company version 2 is newer than this consumer knows/
        )
        assert.lengthOf(dead, 8)
        assert.deepStrictEqual((yield* viewOf("Company", "c-1"))?.payload, acme)
      })))

    it.effect("the relay backs off on broker failures and loses nothing", () =>
      inSystem(Effect.gen(function*() {
        const broker = yield* MemoryBroker.MemoryBroker
        yield* Outbox.transaction(companies.create(acme))
        yield* broker.publishFails(2)
        assert.strictEqual(yield* relay, 1) // claimed, failed, rescheduled in 100 ms
        assert.strictEqual(yield* relay, 0) // not due yet
        yield* tick("100 millis")
        assert.strictEqual(yield* relay, 1) // failed again, rescheduled in 200 ms
        yield* tick("199 millis")
        assert.strictEqual(yield* relay, 0)
        yield* tick("1 millis")
        yield* sync
        assert.deepStrictEqual((yield* viewOf("Company", "c-1"))?.payload, acme)
        const outbox = yield* Outbox.Outbox
        assert.deepStrictEqual((yield* outbox.pending).count, 0)
      })))

    it.effect("events no queue takes are kept and retried; the rest of the batch is published", () =>
      inSystem(Effect.gen(function*() {
        const invoices = Producer.make("billing").repository(Invoice)
        yield* Outbox.transaction(invoices.create({ id: "i-1", amount: 10 }))
        yield* Outbox.transaction(companies.create(acme))
        assert.strictEqual(yield* relay, 2)
        const outbox = yield* Outbox.Outbox
        const [kept] = yield* outbox.rows()
        assert.deepStrictEqual([kept!.envelope.entity, kept!.publishedAt, kept!.attempts], ["Invoice", null, 1])
        assert.match(kept!.lastError!, /no queue is bound to billing\.Invoice\.created/)
        // a consumer of invoices appears; the row goes out at its next attempt
        const broker = yield* Broker
        yield* broker.declare({ name: "billing-reports.sync", bindings: ["billing.Invoice.*"] })
        yield* tick("100 millis")
        assert.strictEqual(yield* relay, 1)
        assert.strictEqual((yield* outbox.pending).count, 0)
        yield* settle()
        assert.deepStrictEqual((yield* viewOf("Company", "c-1"))?.payload, acme)
      })))

    it.effect("R9: published events stay for the retention window, then the relay deletes them", () =>
      inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          const outbox = yield* Outbox.Outbox
          const rows = Effect.map(outbox.rows(), (r) => r.map((row) => row.publishedAt !== null))
          yield* eventually(rows, (published) => published[0] === true)
          yield* tick("50 minutes")
          assert.deepStrictEqual(yield* rows, [true])
          yield* tick("20 minutes")
          assert.deepStrictEqual(
            yield* eventually(rows, (published) => published.length === 0, { step: "1 minute" }),
            []
          )
        }).pipe(Effect.provide(Relay.layer({ producer: "accounts", retention: "1 hour", pruneInterval: "10 minutes" })))
      ))

    it.effect("the relay layer publishes on commit without polling", () =>
      inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          const copy = yield* eventually(viewOf("Company", "c-1"), (c) => c !== null)
          assert.deepStrictEqual(copy?.payload, acme)
        }).pipe(Effect.provide(Relay.layer({ producer: "accounts", pollInterval: "1 hour" })))
      ))
  })
}
