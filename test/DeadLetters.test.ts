/**
 * `DeadLetters`: one paged listing of a consumer service's dead letters (inbox and broker) with their real
 * causes, and bulk replay by reason, entity and time window — on the memory stores and broker, and on
 * PostgreSQL and RabbitMQ (a virtual host of its own).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Layer, Result, Stream } from "effect"
import * as RabbitBroker from "../src/amqp/RabbitBroker.ts"
import { Broker, maxDeadLetterPage, maxReasonBytes, type QueueSpec } from "../src/Broker.ts"
import * as DeadLetters from "../src/DeadLetters.ts"
import * as Envelope from "../src/Envelope.ts"
import { type DeadRow, Inbox } from "../src/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemorySync from "../src/memory/MemorySync.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import { createdEnvelope } from "./fixtures.ts"
import * as TestPostgres from "./postgres.ts"
import * as Stack from "./services/stack.ts"

const service = "directory"
const queue: QueueSpec = { name: "directory.sync", bindings: ["accounts.#"] }
const encoder = new TextEncoder()

/** The page sizes the broker was asked for, to check that no call reads more than one window. */
const asked: Array<number | undefined> = []

/** The broker under test, recording the limit of every `deadLetters` call. */
const recording = Layer.effect(
  Broker,
  Effect.map(Broker, (broker) =>
    Broker.of({
      ...broker,
      deadLetters: (name, options) => {
        asked.push(options?.limit)
        return broker.deadLetters(name, options)
      }
    }))
)

const deadRow = (messageId: string, fields: Partial<DeadRow> = {}): DeadRow => ({
  consumer: service,
  messageId,
  envelope: createdEnvelope(messageId),
  error: "DependencyMissing",
  reason: `DependencyMissing: User:${messageId} waits for Company:c-1`,
  waitingFor: [{ entity: "Company", id: "c-1" }],
  attempts: 7,
  firstSeenAt: 1_000,
  lastSeenAt: 2_000,
  ...fields
})

/** Publishes each message to the queue and dead-letters it with its reason, as a consumer would. */
const deadLetterOnBroker = (
  messages: ReadonlyArray<{
    readonly messageId: string
    readonly routingKey: string
    readonly body: Uint8Array
    readonly reason: string
  }>
) =>
  Effect.gen(function*() {
    const broker = yield* Broker
    yield* broker.declare(queue)
    yield* broker.publish(messages.map((m) => ({
      messageId: m.messageId,
      routingKey: m.routingKey,
      type: "User.created",
      body: m.body,
      headers: {}
    })))
    const reasons = new Map(messages.map((m) => [m.messageId, m.reason]))
    yield* broker.subscribe(queue, { prefetch: 50 }).pipe(
      Stream.take(messages.length),
      Stream.runForEach((delivery) => delivery.deadLetter(reasons.get(delivery.messageId) ?? "unexpected"))
    )
    yield* broker.deadLetters(queue.name, { limit: 0 }).pipe(
      Effect.repeat({ until: (page) => page.total >= messages.length, times: 200 })
    )
  })

const envelopeBody = (messageId: string, entity = "User") =>
  Envelope.encode({ ...createdEnvelope(messageId), entity, entityId: `${entity}-${messageId}` })

/** Every page of the listing, following `next`. */
const allPages = (limit: number, filter?: DeadLetters.Filter) =>
  Effect.gen(function*() {
    const pages: Array<DeadLetters.Listing> = []
    let after: string | null = null
    do {
      const page: DeadLetters.Listing = yield* DeadLetters.list({ service }, {
        limit,
        ...(after !== null ? { after } : {}),
        ...(filter !== undefined ? { filter } : {})
      })
      pages.push(page)
      after = page.next
    } while (after !== null && pages.length < 100)
    return pages
  })

const suite = <E>(name: string, makeLayer: () => Layer.Layer<Inbox | Broker, E>, timeout: number) =>
  describe(name, () => {
    it.live("one listing of both stores, each dead letter with its real cause, bounded", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox
        yield* inbox.deadLetter(deadRow("m-inbox-1"))
        yield* inbox.deadLetter(deadRow("m-inbox-2", { error: "InvalidPayload", reason: "InvalidPayload: no name" }))
        const before = yield* Clock.currentTimeMillis
        yield* deadLetterOnBroker([
          {
            messageId: "m-json",
            routingKey: "accounts.User.created",
            body: encoder.encode("{not json"),
            reason: "NotJson (message m-json): Unexpected token"
          },
          {
            messageId: "m-forged",
            routingKey: "accounts.Company.created",
            body: envelopeBody("m-forged", "Company"),
            reason: "ForgedProducer (message m-forged, entity Company): published by billing"
          },
          {
            messageId: "m-long",
            routingKey: `accounts.${"E".repeat(200)}.created`,
            body: encoder.encode(`{"entity":"${"x".repeat(5000)}","version":3`),
            reason: `InvalidPayload: ${"y".repeat(5000)}`
          },
          {
            messageId: "m-array",
            routingKey: "accounts",
            body: encoder.encode("[1,2,3]"),
            reason: "delivery limit reached"
          }
        ])
        const after = yield* Clock.currentTimeMillis
        asked.length = 0
        const listing = yield* DeadLetters.list({ service })
        assert.deepStrictEqual(listing.totals, { inbox: 2, broker: 4 })
        assert.strictEqual(listing.brokerUnlisted, 0)
        assert.isNull(listing.next)
        const byId = new Map(listing.items.map((entry) => [entry.messageId, entry]))
        assert.strictEqual(listing.items.length, 6)
        // inbox rows first: they were dead-lettered (and first seen) long before
        assert.deepStrictEqual(listing.items.slice(0, 2).map((e) => e.messageId), ["m-inbox-1", "m-inbox-2"])
        assert.deepStrictEqual(byId.get("m-inbox-1"), {
          store: "inbox",
          messageId: "m-inbox-1",
          error: "DependencyMissing",
          reason: "DependencyMissing: User:m-inbox-1 waits for Company:c-1",
          entity: "User",
          entityId: "m-inbox-1",
          version: 1,
          attempts: 7,
          firstSeenAt: 1_000,
          deadLetteredAt: 2_000,
          publisher: null,
          truncatedFrom: null
        })
        assert.strictEqual(byId.get("m-inbox-2")?.error, "InvalidPayload")
        const json = byId.get("m-json")
        assert.include(json, { store: "broker", error: "NotJson", entity: "User", entityId: null, version: null })
        assert.isAtLeast(json?.attempts ?? 0, 1)
        assert.isAtLeast(json?.deadLetteredAt ?? 0, before - 1)
        assert.isAtMost(json?.deadLetteredAt ?? 0, after + 1)
        assert.include(byId.get("m-forged"), {
          error: "ForgedProducer",
          entity: "Company",
          entityId: "Company-m-forged",
          version: 1
        })
        const long = byId.get("m-long")
        assert.strictEqual(long?.error, "InvalidPayload")
        assert.isAtMost(encoder.encode(long?.reason ?? "").byteLength, maxReasonBytes)
        // a truncated body: the entity comes from the routing key, bounded
        assert.isAtMost(long?.entity?.length ?? 0, 256)
        assert.match(long?.entity ?? "", /^E+…?$/)
        assert.include(byId.get("m-array"), { error: "DeliveryLimit", reason: "delivery limit reached", entity: null })
        // one bounded read of the broker's dead letters
        assert.deepStrictEqual(asked, [100])
      }).pipe(Effect.provide(makeLayer())), timeout)

    it.live(
      "paged: every dead letter once, at most the limit per page, the broker read one window at a time",
      () =>
        Effect.gen(function*() {
          const inbox = yield* Inbox
          yield* Effect.forEach(
            Array.from({ length: 7 }, (_, i) => deadRow(`m-inbox-${i}`, { firstSeenAt: 1_000 + i })),
            inbox.deadLetter
          )
          yield* deadLetterOnBroker(Array.from({ length: 6 }, (_, i) => ({
            messageId: `m-broker-${i}`,
            routingKey: "accounts.User.created",
            body: envelopeBody(`m-broker-${i}`),
            reason: `InvalidPayload: number ${i}`
          })))
          asked.length = 0
          const pages = yield* allPages(3)
          const ids = pages.flatMap((page) => page.items.map((entry) => entry.messageId))
          assert.strictEqual(pages.length, 5)
          for (const page of pages) assert.isAtMost(page.items.length, 3)
          assert.deepStrictEqual(ids, [
            ...Array.from({ length: 7 }, (_, i) => `m-inbox-${i}`),
            ...Array.from({ length: 6 }, (_, i) => `m-broker-${i}`)
          ])
          for (const limit of asked) assert.isAtMost(limit ?? 0, 3 + 6)
          // a filtered listing pages the same way
          const broker = (yield* allPages(4, { reasons: ["InvalidPayload"], entities: ["User"] }))
            .flatMap((page) => page.items.map((entry) => entry.messageId))
          assert.deepStrictEqual(broker, Array.from({ length: 6 }, (_, i) => `m-broker-${i}`))
          // limit 0: the totals only
          const counts = yield* DeadLetters.list({ service }, { limit: 0 })
          assert.deepStrictEqual([counts.items, counts.next, counts.totals], [[], null, { inbox: 7, broker: 6 }])
          // a cursor nobody made
          const bad = yield* DeadLetters.list({ service }, { after: "eyJub3QiOiJhIGN1cnNvciJ9" }).pipe(Effect.flip)
          assert.strictEqual(bad._tag, "InvalidCursor")
          assert.isTrue(Result.isFailure(DeadLetters.decodeCursor("%%%")))
        }).pipe(Effect.provide(makeLayer())),
      timeout
    )

    it.live("bulk replay by reason, entity and time window across both stores", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox
        const broker = yield* Broker
        yield* inbox.deadLetter(deadRow("m-old", { lastSeenAt: 2_000 }))
        yield* inbox.deadLetter(deadRow("m-new", { lastSeenAt: 9_000 }))
        yield* inbox.deadLetter(deadRow("m-company", {
          envelope: { ...createdEnvelope("m-company"), entity: "Company" },
          error: "InvalidPayload"
        }))
        yield* deadLetterOnBroker([
          {
            messageId: "b-json",
            routingKey: "accounts.User.created",
            body: encoder.encode("{"),
            reason: "NotJson (message b-json): end of input"
          },
          {
            messageId: "b-user",
            routingKey: "accounts.User.created",
            body: envelopeBody("b-user"),
            reason: "DependencyMissing: User:b-user"
          },
          {
            messageId: "b-company",
            routingKey: "accounts.Company.created",
            body: envelopeBody("b-company", "Company"),
            reason: "InvalidPayload: bad"
          }
        ])
        const remaining = Effect.map(
          DeadLetters.list({ service }),
          (listing) => listing.items.map((entry) => entry.messageId).sort()
        )

        assert.deepStrictEqual(yield* DeadLetters.replay({ service }, { reasons: ["NoSuchReason"] }), {
          inbox: 0,
          broker: 0,
          brokerUnread: 0
        })
        // a time window: only the inbox row dead-lettered before 5 000 (broker dead letters are recent)
        assert.deepStrictEqual(yield* DeadLetters.replay({ service }, { reasons: ["DependencyMissing"], to: 5_000 }), {
          inbox: 1,
          broker: 0,
          brokerUnread: 0
        })
        const due = yield* inbox.due(service, Number.MAX_SAFE_INTEGER, 10)
        assert.deepStrictEqual(due.map((row) => [row.messageId, row.attempts]), [["m-old", 0]])
        // a reason across both stores
        assert.deepStrictEqual(yield* DeadLetters.replay({ service }, { reasons: ["DependencyMissing"] }), {
          inbox: 1,
          broker: 1,
          brokerUnread: 0
        })
        assert.deepStrictEqual(yield* remaining, ["b-company", "b-json", "m-company"])
        // an entity across both stores
        assert.deepStrictEqual(yield* DeadLetters.replay({ service }, { entities: ["Company"] }), {
          inbox: 1,
          broker: 1,
          brokerUnread: 0
        })
        assert.deepStrictEqual(yield* remaining, ["b-json"])
        // the broker's replayed messages are back in the queue
        const back = yield* broker.subscribe(queue).pipe(
          Stream.take(2),
          Stream.mapEffect((delivery) => Effect.as(delivery.ack, delivery.messageId)),
          Stream.runCollect
        )
        assert.deepStrictEqual([...back].sort(), ["b-company", "b-user"])
        assert.deepStrictEqual(yield* DeadLetters.replay({ service }, { reasons: ["NotJson"] }), {
          inbox: 0,
          broker: 1,
          brokerUnread: 0
        })
        assert.deepStrictEqual((yield* DeadLetters.list({ service }, { limit: 0 })).totals, { inbox: 0, broker: 0 })
      }).pipe(Effect.provide(makeLayer())), timeout)
  })

describe("DeadLetters", () => {
  it("causes of broker reasons: the leading tag, or the broker's own cause", () => {
    assert.strictEqual(DeadLetters.causeOf("NotJson (message m): x"), "NotJson")
    assert.strictEqual(DeadLetters.causeOf("ForgedProducer (message m, entity E): x"), "ForgedProducer")
    assert.strictEqual(DeadLetters.causeOf("Defect: boom"), "Defect")
    assert.strictEqual(DeadLetters.causeOf("TooLarge"), "TooLarge")
    assert.strictEqual(DeadLetters.causeOf("delivery limit reached"), "DeliveryLimit")
    assert.strictEqual(DeadLetters.causeOf("rejected by the consumer"), "Rejected")
    assert.strictEqual(DeadLetters.causeOf("something else"), "Unknown")
    assert.strictEqual(DeadLetters.causeOf(`A${"b".repeat(100)}: long tag`), "Unknown")
    assert.isAtMost(maxDeadLetterPage, 1000)
  })

  suite(
    "memory stores and broker",
    () => Layer.mergeAll(MemorySync.layer(), recording.pipe(Layer.provide(MemoryBroker.layer()))),
    20_000
  )

  const postgres = TestPostgres.forFile({ maxConnections: 10 })
  suite(
    "PostgreSQL and RabbitMQ",
    () =>
      Layer.unwrap(Effect.map(Stack.virtualHost, (vhost) =>
        Layer.mergeAll(
          PostgresSync.layer({ prefix: postgres.prefix("dl") }).pipe(Layer.provide(postgres.layer)),
          recording.pipe(Layer.provide(RabbitBroker.layer({ url: vhost.url })))
        ))),
    60_000
  )
})
