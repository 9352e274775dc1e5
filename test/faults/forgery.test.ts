/**
 * Forgery (R11) on per-service RabbitMQ users holding exactly their permission matrix (`Permissions`): an
 * owner ("ledger", its relay publishing as the owner's login), a consumer (consuming as its own login) and
 * a third service's login (the intruder: it owns events of its own, consumes the owner's `Item`s and may
 * request resyncs). The intruder publishes forged events — a version of 2^53-1, deletes — through every
 * path: RabbitMQ refuses the owner's routing keys, the default exchange and the owner's user-id; what
 * reaches the consumer (through the replay and dead-letter exchanges, then an operator's replay) is
 * dead-lettered `ForgedProducer`, and no copy changes. The owner's events, a full sync and the replay of a
 * legitimately dead-lettered event still apply. Then the same consumer with the `passive` matrix, on a
 * topology an administrator declared.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Schema } from "effect"
import * as Permissions from "../../src/amqp/Permissions.ts"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import type { Topology } from "../../src/amqp/RabbitConfig.ts"
import { Broker, type DeadLetter, maxDeadLetterPage } from "../../src/Broker.ts"
import * as Metrics from "../../src/Metrics.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import * as SyncConsumer from "../../src/SyncConsumer.ts"
import { Item, owner } from "./contract.ts"
import { type Fixture, quiet, setup } from "./fixture.ts"
import { attempts, forgedVersion } from "./forgery.ts"
import { brokerOf, consumerWith, type Failing, relayWith, subscriptionsFailing } from "./service-users.ts"
import { tables } from "./stack.ts"
import { awaitQuiescence, judge, tally } from "./verify.ts"
import { makeVhost, publishRaw, type TestVhost } from "./vhost.ts"
import { writeStream } from "./writer.ts"

const items = Producer.make(owner).repository(Item)

/** The logins and matrices of the three services in one topology mode. */
const services = (fixture: Fixture, topology: Topology) => {
  const run = fixture.names.service.slice(-6)
  const queue = SyncConsumer.queueOf(fixture.names.service, subscriptionsFailing(new Set()))
  const intruderService = `intruder-${run}`
  return {
    ownerLogin: `${owner}-${run}`,
    consumerLogin: fixture.names.service,
    intruderLogin: intruderService,
    intruderService,
    queue,
    owner: Permissions.matrix({ service: owner, publishesEvents: true }, { topology }),
    consumer: Permissions.matrix({ service: fixture.names.service, queues: [queue] }, { topology }),
    intruder: Permissions.matrix({
      service: intruderService,
      publishesEvents: true,
      queues: [{ name: `${intruderService}.sync`, bindings: [`${owner}.Item.*`] }],
      resyncRequests: [{ owner, entity: "Item" }]
    }, { topology })
  }
}

/** Creates the three users; gives the running stack's pieces. */
const startServices = (fixture: Fixture, vhost: TestVhost, topology: Topology, failing: Failing) =>
  Effect.gen(function*() {
    const s = services(fixture, topology)
    yield* vhost.addUser(s.ownerLogin, s.owner)
    yield* vhost.addUser(s.consumerLogin, s.consumer)
    yield* vhost.addUser(s.intruderLogin, s.intruder)
    const prefix = fixture.names.connectionPrefix
    yield* Layer.build(consumerWith(fixture.url, fixture.names, {
      broker: brokerOf(vhost.urlOf(s.consumerLogin), topology, `${prefix}-consumer`),
      ownerLogins: [s.ownerLogin],
      failing
    }))
    yield* Layer.build(
      relayWith(fixture.url, fixture.names, brokerOf(vhost.urlOf(s.ownerLogin), topology, `${prefix}-relay`))
    )
    /** The consumer's own login, as an operator uses it (the demo's admin routes run in the consumer). */
    const operator = Context.get(
      yield* Layer.build(brokerOf(vhost.urlOf(s.consumerLogin), topology, `${prefix}-operator`)),
      Broker
    )
    return { ...s, operator }
  })

/** Polls (every 200 ms, at most `seconds`) until `check` gives a value. */
const eventually = <A>(what: string, seconds: number, check: Effect.Effect<A | undefined, unknown>) =>
  Effect.gen(function*() {
    for (let i = 0; i < seconds * 5; i++) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep("200 millis")
    }
    return yield* Effect.die(new Error(`gave up waiting ${seconds} s for ${what}`))
  })

const CopyRow = Schema.Struct({ version: Schema.Number, state: Schema.String })
const decodeCopies = Schema.decodeUnknownEffect(Schema.Array(CopyRow))
const OutboxRow = Schema.Struct({ message_id: Schema.String })
const decodeOutbox = Schema.decodeUnknownEffect(Schema.Array(OutboxRow))

/** The consumer's copy of an item (version and state), undefined when it has none. */
const copyOf = (fixture: Fixture, id: string) =>
  fixture.sql`SELECT version::float8 AS version, state FROM ${fixture.sql(tables(fixture.names).copies)}
    WHERE entity = 'Item' AND id = ${id}`.pipe(Effect.flatMap(decodeCopies), Effect.map((rows) => rows[0]))

/** Creates an item in an outbox transaction of the owner; gives the message id of its event. */
const create = (fixture: Fixture, id: string) =>
  Outbox.transaction(items.create({ id, name: `item ${id}`, n: 0, tags: [] })).pipe(
    Effect.andThen(fixture.sql`SELECT message_id FROM ${fixture.sql(tables(fixture.names).outbox)}
      WHERE envelope->>'entityId' = ${id} ORDER BY seq DESC LIMIT 1`),
    Effect.flatMap(decodeOutbox),
    Effect.map((rows) => rows[0]?.message_id ?? ""),
    Effect.provide(fixture.writer)
  )

const reasonsById = (dead: ReadonlyArray<DeadLetter>) => {
  const byId = new Map<string, Array<string>>()
  for (const letter of dead) byId.set(letter.messageId, [...(byId.get(letter.messageId) ?? []), letter.reason])
  return byId
}

describe("faults: forged events on per-service RabbitMQ users", () => {
  it.live(
    "RabbitMQ refuses what the matrix does not allow; the consumer dead-letters every other forgery",
    () =>
      Effect.gen(function*() {
        const fixture = yield* setup("forgery")
        const vhost = yield* makeVhost("forgery")
        const failing: Failing = new Set()
        const s = yield* startServices(fixture, vhost, "declare", failing)
        const queue = s.queue.name

        const realMessageId = yield* create(fixture, "target-1")
        yield* create(fixture, "target-2")
        yield* eventually("the owner's first events", 30, copyOf(fixture, "target-2"))
        const writer = yield* writeStream({ events: 1_500, ratePerSecond: 400, idPrefix: "item-" }).pipe(
          Effect.provide(fixture.writer),
          Effect.forkChild
        )

        // the intruder, through every path
        const tried = attempts({
          queue,
          intruderLogin: s.intruderLogin,
          intruderService: s.intruderService,
          ownerLogin: s.ownerLogin,
          entityId: "target-1",
          realMessageId,
          otherEntityId: "target-2"
        }, fixture.names.service.slice(-6))
        const outcomes = yield* publishRaw(vhost.urlOf(s.intruderLogin), tried.map((a) => a.publish))
        const table = tried.map((a, i) => {
          const outcome = outcomes[i]
          const got = outcome === undefined
            ? "missing"
            : outcome._tag === "Confirmed"
            ? "confirmed"
            : outcome.reason.includes("ACCESS_REFUSED")
            ? "ACCESS_REFUSED"
            : outcome.reason.includes("PRECONDITION_FAILED")
            ? "PRECONDITION_FAILED"
            : outcome.reason
          return { name: a.name, expected: a.expected, got, messageId: a.messageId }
        })
        for (const row of table) console.log(`[forgery] ${row.name}: expected ${row.expected}, RabbitMQ: ${row.got}`)
        assert.deepStrictEqual(
          table.filter((row) =>
            row.expected === "reaches" || row.expected === "confirmedElsewhere"
              ? row.got !== "confirmed"
              : row.got !== row.expected
          ),
          [],
          "RabbitMQ did not do what the permission matrix says"
        )
        const reaching = tried.filter((a) => a.expected === "reaches")

        // a legitimate event dead-lettered for a transient cause (a defect of the handler), replayed below
        failing.add("special-1")
        const special = yield* create(fixture, "special-1")
        const deadLetters = Effect.map(
          s.operator.deadLetters(queue, { limit: maxDeadLetterPage }),
          (page) => page.items
        )
        yield* eventually(
          "the dead letters of the forgeries and of the failing event",
          60,
          Effect.map(deadLetters, (dead) => {
            const byId = reasonsById(dead)
            const forgedDone = reaching.every((a) => (byId.get(a.messageId) ?? []).length > 0)
            return forgedDone && (byId.get(special)?.[0] ?? "").startsWith("Defect") ? dead : undefined
          })
        )
        failing.delete("special-1")
        const written = yield* Fiber.join(writer)

        // the operator replays every dead letter: the failing event applies, the forgeries come back rejected
        const replayed = yield* s.operator.replayDeadLetters(queue, {})
        const dead = yield* eventually(
          "the replayed forgeries to be dead-lettered again",
          60,
          Effect.map(deadLetters, (dead) => {
            const byId = reasonsById(dead)
            return reaching.every((a) => (byId.get(a.messageId)?.[0] ?? "").startsWith("ForgedProducer"))
              ? dead
              : undefined
          })
        )
        const first = yield* awaitQuiescence(fixture.sql, fixture.names, { amqpUrl: vhost.adminUrl })
        assert.isFalse(first.stalled, "the consumer stopped")

        // a full sync still applies (snapshots at the copies' versions)
        const snapshots = yield* items.fullSync().pipe(Effect.provide(fixture.writer))
        const t = yield* awaitQuiescence(fixture.sql, fixture.names, { amqpUrl: vhost.adminUrl })
        const forged = yield* Metrics.outcomeCount(fixture.names.service, "Item", "forged")
        const byId = reasonsById(dead)
        const target = yield* copyOf(fixture, "target-1")
        const other = yield* copyOf(fixture, "target-2")
        const specialCopy = yield* copyOf(fixture, "special-1")
        console.log(
          `[forgery] ${tried.length} attempts: ${reaching.length} reached the consumer (all dead-lettered ` +
            `${
              reaching.filter((a) => (byId.get(a.messageId)?.[0] ?? "").startsWith("ForgedProducer")).length
            }× ForgedProducer), ` +
            `${table.filter((r) => r.got === "ACCESS_REFUSED").length} refused ACCESS_REFUSED, ` +
            `${table.filter((r) => r.got === "PRECONDITION_FAILED").length} refused PRECONDITION_FAILED, ` +
            `${
              table.filter((r) => r.expected === "confirmedElsewhere").length
            } confirmed elsewhere; forged outcomes ${forged}; ` +
            `operator replayed ${replayed}; full sync ${snapshots} snapshots (applies ${first.applies} → ${t.applies}); ` +
            `target-1 copy v${target?.version} ${target?.state}, target-2 v${other?.version} ${other?.state}, ` +
            `special-1 v${specialCopy?.version}`
        )
        for (const letter of dead) {
          console.log(`[forgery] dead letter ${letter.messageId}: ${letter.reason.slice(0, 160)}`)
        }
        yield* judge(
          "forgery",
          t,
          {
            injected: tried.length,
            detail: `${reaching.length} forgeries reached the consumer, ${
              tried.length - reaching.length
            } stopped by RabbitMQ`
          },
          written,
          fixture.names
        )
        // every forgery that reached the consumer is dead-lettered once, as ForgedProducer; nothing else is
        assert.deepStrictEqual(
          reaching.map((
            a
          ) => [a.name, (byId.get(a.messageId) ?? []).length, (byId.get(a.messageId)?.[0] ?? "").split(" ")[0]]),
          reaching.map((a) => [a.name, 1, "ForgedProducer"])
        )
        assert.strictEqual(dead.length, reaching.length, "dead letters other than the forgeries")
        assert.isAtLeast(forged, reaching.length + 2, "forgeries counted (and again after the operator's replay)")
        assert.strictEqual(replayed, reaching.length + 1, "the operator's replay: the forgeries and the failing event")
        // the copies are the owner's: no forged version, no forged delete
        assert.isDefined(target)
        assert.isDefined(other)
        assert.isBelow(target?.version ?? forgedVersion, forgedVersion)
        assert.isBelow(other?.version ?? forgedVersion, forgedVersion)
        assert.strictEqual(target?.state, "live")
        assert.strictEqual(other?.state, "live")
        // the replayed legitimate event and the full sync applied
        assert.deepStrictEqual(specialCopy, { version: 1, state: "live" })
        assert.isAbove(snapshots, 0)
        assert.strictEqual(t.applies - first.applies, snapshots, "every snapshot of the full sync applied")
        const tallied = yield* tally(fixture.sql, fixture.names)
        assert.strictEqual(tallied.foreign, 0, "applies of forged message ids")
      }).pipe(quiet),
    180_000
  )

  it.live(
    "the consumer and the relay work with exactly the passive matrix on a topology an administrator declared",
    () =>
      Effect.gen(function*() {
        const fixture = yield* setup("passive")
        const vhost = yield* makeVhost("passive")
        const s = services(fixture, "passive")
        // with the passive matrix, declaring is refused
        yield* vhost.addUser(s.consumerLogin, s.consumer)
        const refused = yield* Effect.scoped(Effect.gen(function*() {
          const broker = yield* RabbitBroker.make({ url: vhost.urlOf(s.consumerLogin), topology: "declare" })
          return yield* Effect.flip(broker.declare(s.queue))
        }))
        // the administrator declares the topology
        yield* RabbitBroker.declareTopology(vhost.adminUrl, RabbitBroker.topology({ queues: [s.queue] }))
        const failing: Failing = new Set(["special-1"])
        const running = yield* startServices(fixture, vhost, "passive", failing)
        const written = yield* writeStream({ events: 500, ratePerSecond: 400 }).pipe(Effect.provide(fixture.writer))
        const special = yield* create(fixture, "special-1")
        yield* eventually(
          "the failing event's dead letter",
          30,
          Effect.map(
            running.operator.deadLetters(s.queue.name),
            (page) => page.items.some((d) => d.messageId === special) ? page : undefined
          )
        )
        failing.delete("special-1")
        const replayed = yield* running.operator.replayDeadLetters(s.queue.name, {})
        const t = yield* awaitQuiescence(fixture.sql, fixture.names, { amqpUrl: vhost.adminUrl })
        const remaining = yield* running.operator.deadLetters(s.queue.name)
        console.log(
          `[forgery] passive matrix: configure ${s.consumer.permissions.configure}, write ${s.consumer.permissions.write}, ` +
            `read ${s.consumer.permissions.read}; declaring refused: ${refused.detail.slice(0, 120)}; ` +
            `replayed ${replayed}, dead letters left ${remaining.total}`
        )
        assert.include(refused.detail, "ACCESS_REFUSED")
        yield* judge("passive topology", t, { injected: 1, detail: "one dead letter replayed" }, written, fixture.names)
        assert.strictEqual(replayed, 1)
        assert.strictEqual(remaining.total, 0)
        assert.deepStrictEqual(yield* copyOf(fixture, "special-1"), { version: 1, state: "live" })
      }).pipe(quiet),
    120_000
  )
})
