/**
 * Wire format 2 (DESIGN §3) checked with the official CloudEvents SDK (`cloudevents`):
 *
 * * on the real stack, an owner on PostgreSQL writes events of every kind, a relay publishes them to
 *   RabbitMQ (its own broker login on a virtual host of the test), and the raw messages read from a queue
 *   of the test's own are CloudEvents the SDK accepts (strict, and in HTTP structured mode), attribute by
 *   attribute what the owner wrote, with the AMQP properties of §3;
 * * the consumer's decoder agrees with the SDK: from valid events, mutated attribute by attribute, every
 *   body `Envelope.decodeResult` accepts the SDK accepts too, and every body the SDK rejects is a
 *   `MalformedMessage` (`InvalidEnvelope`, or `TooLarge` / `NotJson` / `TooComplex` where that applies).
 */
import { assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import { CloudEvent, type CloudEventV1, HTTP } from "cloudevents"
import { Arbitrary, Effect, Layer, Result, Schema } from "effect"
import * as Permissions from "../src/amqp/Permissions.ts"
import * as RabbitBroker from "../src/amqp/RabbitBroker.ts"
import * as RabbitConfig from "../src/amqp/RabbitConfig.ts"
import * as Envelope from "../src/Envelope.ts"
import * as Outbox from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import { makeVhost } from "./faults/vhost.ts"
import { Company, User } from "./fixtures.ts"
import { ownerSide } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

// --- the SDK's verdict on a body ---

/** What the SDK makes of a message body: the event it accepts (strict), or why it rejects it. */
type Verdict =
  | { readonly accepted: true; readonly event: CloudEvent<unknown> }
  | { readonly accepted: false; readonly error: string }

const errorText = (error: unknown): string =>
  (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? ""

/** The properties of a parsed body as the SDK's constructor copies them (`{ ...event }`). */
const propertiesOf = (json: unknown): Partial<CloudEventV1<unknown>> =>
  typeof json === "object" && json !== null
    ? { ...json }
    : typeof json === "string"
    ? Object.fromEntries(Object.entries(json))
    : {}

/**
 * The SDK accepts a body when both of its readings accept it: the strict constructor on the parsed JSON
 * (`new CloudEvent(json, true)`, then `validate()`), and HTTP structured mode with the wire format's content
 * type (`HTTP.toEvent`, then `validate()`).
 */
const sdkVerdict = (body: string): Verdict => {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch (error) {
    return { accepted: false, error: `not JSON: ${errorText(error)}` }
  }
  let event: CloudEvent<unknown>
  try {
    event = new CloudEvent<unknown>(propertiesOf(json), true)
    if (!event.validate()) return { accepted: false, error: `strict: specversion ${String(event.specversion)}` }
  } catch (error) {
    return { accepted: false, error: `strict: ${errorText(error)}` }
  }
  try {
    const structured = HTTP.toEvent({ headers: { "content-type": Envelope.contentType }, body })
    if (!(structured instanceof CloudEvent)) return { accepted: false, error: "structured: not one event" }
    if (!structured.validate()) return { accepted: false, error: "structured: not validated" }
  } catch (error) {
    return { accepted: false, error: `structured: ${errorText(error)}` }
  }
  return { accepted: true, event }
}

// --- on the real stack ---

const database = TestPostgres.forFile()
const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const users = accounts.repository(User)
const ann = { id: "u-1", companyId: "c-1", email: "ann@test", name: "Ann", active: true }
const exchange = RabbitConfig.defaults.exchange
const uuidV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

/** A queue of the test's own bound to every event of "accounts", and what it received (acknowledged). */
const openTap = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const connection = await amqp.connect(url)
      const channel = await connection.createChannel()
      await channel.assertExchange(exchange, "topic", { durable: true })
      const { queue } = await channel.assertQueue("", { exclusive: true })
      await channel.bindQueue(queue, exchange, "accounts.#")
      const received: Array<amqp.ConsumeMessage> = []
      await channel.consume(queue, (message) => {
        if (message === null) return
        received.push(message)
        channel.ack(message)
      })
      return { connection, received }
    }),
    ({ connection }) => Effect.promise(() => connection.close().catch(() => undefined))
  )

/** What the owner wrote for one event: the attributes its CloudEvent must carry. */
interface Written {
  readonly entity: string
  readonly action: Envelope.Action
  readonly subject: string
  readonly entityversion: number
  readonly contractversion: number
  readonly data: unknown
  readonly time: string
  readonly forcesync: boolean
  readonly reset?: boolean
  /** The trace of the span the write ran in, when the test opened one. */
  readonly traceId?: string
  readonly context?: Readonly<Record<string, string>>
}

const written = (
  contract: { readonly name: string; readonly version: number },
  action: Envelope.Action,
  entity: Producer.Entity<unknown>,
  data: unknown,
  extra: Partial<Written> = {}
): Written => ({
  entity: contract.name,
  action,
  subject: entity.id,
  entityversion: entity.version,
  contractversion: contract.version,
  data,
  time: new Date(entity.updatedAt).toISOString(),
  forcesync: false,
  ...extra
})

/** Every kind of event: the owner's writes, in order, with what each event must say. */
const writeEverything = Effect.gen(function*() {
  const events: Array<Written> = []
  const acme = yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
  events.push(written(Company, "created", acme, { id: "c-1", name: "Acme" }))
  const acmeCorp = yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
  events.push(written(Company, "updated", acmeCorp, { id: "c-1", name: "Acme Corp" }))
  const annCreated = yield* Outbox.transaction(users.create(ann))
  events.push(written(User, "created", annCreated, ann))
  const annSoftDeleted = yield* Outbox.transaction(users.softDelete("u-1"))
  events.push(written(User, "softDeleted", annSoftDeleted, ann))
  const beta = yield* Outbox.transaction(companies.create({ id: "c-2", name: "Beta" }))
  events.push(written(Company, "created", beta, { id: "c-2", name: "Beta" }))
  const betaDeleted = yield* Outbox.transaction(companies.delete("c-2"))
  events.push(written(Company, "deleted", betaDeleted, null))
  assert.strictEqual(yield* companies.fullSync({ ids: ["c-1"] }), 1)
  events.push(written(Company, "snapshot", acmeCorp, { id: "c-1", name: "Acme Corp" }, { forcesync: true }))
  assert.strictEqual(yield* companies.fullSync({ ids: ["c-1"], reset: true }), 1)
  events.push(
    written(Company, "snapshot", acmeCorp, { id: "c-1", name: "Acme Corp" }, { forcesync: true, reset: true })
  )
  // the request context: its keys that are CloudEvents extension names travel, the others do not
  const gamma = yield* Outbox.transaction(companies.create({ id: "c-3", name: "Gamma" })).pipe(
    Effect.provideService(Producer.RequestContext, { correlationid: "c-1", tenant: "t-1", "Not-An-Extension": "x" })
  )
  events.push(
    written(Company, "created", gamma, { id: "c-3", name: "Gamma" }, {
      context: { correlationid: "c-1", tenant: "t-1" }
    })
  )
  // a write in a traced span: its event carries a traceparent of the span's trace (the span of the write, or
  // one inside it such as the store's transaction span)
  const traced = yield* Effect.gen(function*() {
    const span = yield* Effect.currentSpan
    const entity = yield* Outbox.transaction(companies.update("c-3", (c) => ({ ...c, name: "Gamma 2" })))
    return { entity, traceId: span.traceId }
  }).pipe(Effect.withSpan("cloudevents.test.write"))
  events.push(written(Company, "updated", traced.entity, { id: "c-3", name: "Gamma 2" }, { traceId: traced.traceId }))
  return events
})

/** The attributes of the wire format, of its extensions included: anything else on an event is request context. */
const formatAttributes = new Set([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "data",
  "entityversion",
  "contractversion",
  "forcesync",
  "reset",
  "traceparent",
  "tracestate"
])

/** The extension attributes of an SDK event that are not attributes of the format, with their values. */
const contextOf = (event: CloudEvent<unknown>): Record<string, unknown> => {
  const context: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(event)) {
    if (value !== undefined && !formatAttributes.has(key)) context[key] = value
  }
  return context
}

describe("wire format 2 on PostgreSQL and RabbitMQ, read with the CloudEvents SDK", () => {
  it.live(
    "every event the relay publishes is a valid CloudEvent carrying exactly what the owner wrote",
    () =>
      Effect.gen(function*() {
        const vhost = yield* makeVhost("cloudevents")
        const login = `accounts-${vhost.name.slice(-6)}`
        yield* vhost.addUser(login, Permissions.matrix({ service: "accounts", publishesEvents: true }))
        const tap = yield* openTap(vhost.adminUrl)

        const stack = Relay.layer({ producer: "accounts", pollInterval: "100 millis" }).pipe(
          Layer.provideMerge(Layer.mergeAll(
            ownerSide(PostgresSync.layer({ prefix: database.prefix("owner") }).pipe(Layer.provide(database.layer))),
            RabbitBroker.layer({ url: vhost.urlOf(login), connectionName: `entity-sync-test-${vhost.name}` })
          ))
        )
        const { expected, rows } = yield* Effect.gen(function*() {
          const expected = yield* writeEverything
          const outbox = yield* Outbox.Outbox
          // until every message arrived and the relay marked every row published
          for (let waited = 0;; waited += 50) {
            const pending = (yield* outbox.pending).count
            if (tap.received.length >= expected.length && pending === 0) break
            if (waited > 20_000) {
              return yield* Effect.die(
                new Error(`after 20 s: ${tap.received.length} of ${expected.length} messages, ${pending} rows pending`)
              )
            }
            yield* Effect.sleep("50 millis")
          }
          return { expected, rows: yield* outbox.rows() }
        }).pipe(Effect.provide(stack))
        // the relay is stopped: nothing more arrives
        yield* Effect.sleep("200 millis")
        assert.strictEqual(tap.received.length, expected.length)
        assert.strictEqual(rows.length, expected.length)
        const traced = expected.at(-1)?.traceId ?? ""
        assert.match(traced, /^[0-9a-f]{32}$/)
        assert.strictEqual(new Set(rows.map((row) => row.envelope.messageId)).size, rows.length, "unique ids")

        for (const [i, want] of expected.entries()) {
          const message = tap.received[i]!
          const row = rows[i]!
          const label = `event ${i} (${want.entity} ${want.action})`
          const body = message.content.toString("utf8")

          // the SDK, strict
          const event = new CloudEvent<unknown>(propertiesOf(JSON.parse(body)), true)
          assert.isTrue(event.validate(), label)
          // the SDK, HTTP structured mode with the message's own content type
          const contentType = message.properties.contentType
          assert.strictEqual(contentType, "application/cloudevents+json; charset=utf-8", label)
          const structured = HTTP.toEvent({ headers: { "content-type": String(contentType) }, body })
          assert.instanceOf(structured, CloudEvent, label)
          if (structured instanceof CloudEvent) {
            assert.isTrue(structured.validate(), label)
            // HTTP structured mode copies only attributes with truthy values: a null `data` reads as undefined
            const { data: structuredData, ...structuredRest } = structured.toJSON()
            const { data: strictData, ...strictRest } = event.toJSON()
            assert.deepStrictEqual(structuredRest, strictRest, `${label}: both readings agree`)
            assert.deepStrictEqual(structuredData ?? null, strictData, `${label}: both readings agree on data`)
          }

          // every attribute, against what the owner wrote
          const type = `entitysync.${want.entity}.${want.action}`
          assert.strictEqual(event.specversion, "1.0", label)
          assert.strictEqual(event.id, row.envelope.messageId, label)
          assert.match(event.id, uuidV7, label)
          assert.strictEqual(event.source, "accounts", label)
          assert.strictEqual(event.type, type, label)
          assert.strictEqual(event.subject, want.subject, label)
          assert.strictEqual(event.time, want.time, label)
          assert.strictEqual(event.datacontenttype, "application/json", label)
          if (want.action === "deleted") assert.isNull(event.data, label)
          assert.deepStrictEqual(event.data, want.data, label)
          assert.strictEqual(event["entityversion"], want.entityversion, label)
          assert.strictEqual(event["contractversion"], want.contractversion, label)
          assert.strictEqual(event["forcesync"], want.forcesync, label)
          assert.strictEqual(event["reset"], want.reset, label)
          const traceparent = event["traceparent"]
          assert.strictEqual(traceparent, row.envelope.traceparent, label)
          if (want.traceId !== undefined) {
            assert.match(String(traceparent), new RegExp(`^00-${want.traceId}-[0-9a-f]{16}-01$`), label)
          } else if (traceparent !== undefined) {
            assert.match(String(traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/, label)
            assert.notInclude(String(traceparent), traced, `${label}: not of the traced write's trace`)
          }
          assert.isUndefined(event["tracestate"], label)
          assert.isUndefined(event.dataschema, label)
          assert.isUndefined(event.data_base64, label)
          assert.deepStrictEqual(contextOf(event), want.context ?? {}, `${label}: the request context`)

          // the AMQP properties
          assert.strictEqual(message.properties.messageId, event.id, label)
          assert.strictEqual(message.properties.type, type, label)
          assert.strictEqual(message.properties.userId, login, `${label}: the relay's login`)
          assert.strictEqual(message.properties.deliveryMode, 2, `${label}: persistent`)
          assert.strictEqual(message.fields.exchange, exchange, label)
          assert.strictEqual(message.fields.routingKey, `accounts.${want.entity}.${want.action}`, label)
          const headers: Record<string, unknown> = message.properties.headers ?? {}
          assert.strictEqual(headers["traceparent"], traceparent, `${label}: the traceparent header`)

          // and the consumer reads back the event the owner kept, with the request context that travels
          const decoded = Envelope.decodeResult(message.content)
          assert.isTrue(Result.isSuccess(decoded), label)
          if (Result.isSuccess(decoded)) {
            const kept = want.context === undefined ? row.envelope : { ...row.envelope, context: want.context }
            assert.deepStrictEqual(decoded.success, kept, label)
          }
        }
      }),
    90_000
  )
})

// --- the consumer's decoder against the SDK ---

const seed = 20_261_122
const runs = 2_000

const Index = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 10_000 }))

/** A valid event, as the owner keeps it (the fields `Envelope.Envelope` takes, in generatable form). */
const Base = Schema.Struct({
  messageId: Schema.String.check(Schema.isBetweenLength(1, 40)),
  entity: Schema.Literals(["User", "Company", "Invoice", "A1", "Order.Line"]),
  entityId: Schema.String.check(Schema.isBetweenLength(1, 40)),
  action: Envelope.Action,
  version: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1_000_000_000 })),
  contractVersion: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 9 })),
  // epoch milliseconds up to the end of year 9999
  millis: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 253_402_300_799_999 })),
  producer: Schema.Literals(["accounts", "billing-2", "a.b_c~d", "urn:svc:x", "/sensors/1", "%41ccounts"]),
  forceSync: Schema.Boolean,
  reset: Schema.Boolean,
  traced: Schema.Boolean,
  payload: Schema.Record(
    Schema.String.check(Schema.isMaxLength(12)),
    Schema.Union([Schema.String, Schema.Finite, Schema.Boolean, Schema.Null])
  ),
  context: Schema.Struct({
    correlationid: Schema.optionalKey(Schema.String),
    tenant: Schema.optionalKey(Schema.String),
    region7: Schema.optionalKey(Schema.String)
  })
})
type Base = typeof Base.Type

const envelopeOf = (base: Base): Envelope.Envelope => ({
  messageId: base.messageId,
  entity: base.entity,
  entityId: base.entityId,
  action: base.action,
  version: base.version,
  contractVersion: base.contractVersion,
  occurredAt: new Date(base.millis).toISOString(),
  producer: base.producer,
  forceSync: base.forceSync,
  ...(base.forceSync && base.reset ? { reset: true } : {}),
  payload: base.action === "deleted" ? null : base.payload,
  ...(base.traced ? { traceparent: `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01` } : {}),
  ...(Object.keys(base.context).length > 0 ? { context: base.context } : {})
})

/** The same event in the retired wire format 1 (a JSON envelope of its own). */
const formatOneOf = (e: Envelope.Envelope): Record<string, unknown> => ({
  specVersion: 1,
  messageId: e.messageId,
  entity: e.entity,
  entityId: e.entityId,
  action: e.action,
  version: e.version,
  occurredAt: e.occurredAt,
  producer: e.producer,
  forceSync: e.forceSync,
  payload: e.payload
})

const mutationKinds = [
  "drop",
  "replace",
  "retype",
  "rename",
  "extension",
  "time",
  "source",
  "type",
  "specversion",
  "datacontenttype",
  "data",
  "formatOne",
  "notAnObject",
  "truncate"
] as const
type MutationKind = (typeof mutationKinds)[number]

const Mutation = Schema.Struct({ kind: Schema.Literals(mutationKinds), at: Index, pick: Index })
type Mutation = typeof Mutation.Type

const Case = Schema.Struct({
  base: Base,
  mutations: Schema.Array(Mutation).check(Schema.isMaxLength(3))
})
type Case = typeof Case.Type

const nested = (depth: number): unknown => {
  let value: unknown = "bottom"
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

// Not generated: `datacontentencoding: "base64"`, which the SDK's strict constructor accepts and its HTTP
// reader fails on while decoding `data` (a quirk of the SDK, not of the format).

/** Values an attribute is replaced with or an extension is added with. */
const values: ReadonlyArray<unknown> = [
  "",
  "x",
  "1.0",
  "accounts",
  "entitysync.User.created",
  "2026-01-01T00:00:00Z",
  "application/json",
  0,
  1,
  -1,
  7,
  2 ** 53,
  1.5,
  "https://example.com/schema",
  "not a uri",
  true,
  false,
  null,
  [],
  {},
  ["x"],
  { a: 1 }
]

const attributeNames: ReadonlyArray<string> = [
  // not CloudEvents attribute names
  "entityVersion",
  "EntityVersion",
  "entity_version",
  "x-y",
  "ID",
  "Type",
  "sübject",
  "data-base64",
  " id",
  "",
  "specVersion",
  "forceSync",
  "correlationId",
  "a.b",
  "data_base64",
  // extension names
  "subjekt",
  "foo",
  "a1",
  "tenant",
  "correlationid",
  "averyveryverylongextensionname",
  "datacontentencoding",
  "tracestate",
  "reset",
  "schemaurl",
  "dataschema"
]

const times: ReadonlyArray<unknown> = [
  "yesterday",
  "2026-01-01",
  "2026-13-01T00:00:00Z",
  "2026-00-10T00:00:00Z",
  "2026-01-32T00:00:00Z",
  "2026-02-30T00:00:00Z",
  "2025-02-29T00:00:00Z",
  "2026-04-31T00:00:00Z",
  "2026-01-01T25:00:00Z",
  "2026-01-01T23:60:00Z",
  "2026-01-01T00:00:00",
  "2026-01-01 00:00:00Z",
  "2026-06-30T23:59:60Z",
  "2026-01-01T12:00:60Z",
  "1767225600000",
  1_767_225_600_000,
  "2026-01-01T00:00:00.Z",
  "2026-01-01T00:00:00+0100",
  "2026-01-01T00:00:00+01:00",
  "2026-01-01t00:00:00z",
  "2026-01-01T00:00:00.123456789Z",
  "+002026-01-01T00:00:00Z",
  "2026-1-1T0:0:0Z",
  "",
  " 2026-01-01T00:00:00Z",
  "2026-01-01T00:00:00Z ",
  "2026-01-01T00:00:00-00:00",
  "2026-01-01T00:00:00+24:00",
  "0000-01-01T00:00:00Z",
  "9999-12-31T23:59:59.999Z",
  "2024-02-29T12:00:00Z",
  null
]

const sources: ReadonlyArray<unknown> = [
  "",
  " ",
  "a b",
  "http://x y",
  "%zz",
  "%41ccounts",
  "ä",
  "<x>",
  "a\"b",
  "{x}",
  "a|b",
  "a\\b",
  "a^b",
  "a`b",
  "http://example.com/a",
  "urn:x:y",
  "/sensors/1",
  "accounts",
  "#frag",
  "a#b",
  "?q",
  "a?b",
  "//a:b",
  "//host/path",
  "mailto:x@y",
  "1-555-123-4567",
  "a".repeat(256),
  "http://[::1]/x",
  7,
  null
]

const types: ReadonlyArray<unknown> = [
  "",
  "User.created",
  "entitysync.User.renamed",
  "entitysync..created",
  "entitysync.User.",
  "entitysync.User.created.v2",
  "entitysync.A.B.created",
  "entitysync.User.Created",
  "com.example.User.created",
  "entitysync.User.deleted",
  "entitysync.User.created",
  " entitysync.User.created",
  "entitysync.User.snapshot",
  7,
  null
]

const specversions: ReadonlyArray<unknown> = ["1", "1.0.0", "0.3", "2", "", "1.0 ", 1, null, true, "1.0"]

const dataContentTypes: ReadonlyArray<unknown> = [
  "application/json; charset=utf-8",
  "application/json;charset=utf-8",
  "application/JSON",
  "text/plain",
  "",
  null,
  "application/jsonx",
  "application/cloudevents+json",
  7
]

const tooManyKeys = Object.fromEntries(Array.from({ length: Envelope.defaultMaxKeys + 1 }, (_, i) => [`k${i}`, i]))
const data: ReadonlyArray<unknown> = [
  null,
  {},
  [],
  "x",
  0,
  1.5,
  true,
  nested(Envelope.defaultMaxDepth - 2),
  nested(Envelope.defaultMaxDepth + 8),
  tooManyKeys,
  "x".repeat(Envelope.defaultMaxBytes)
]

const notObjects: ReadonlyArray<unknown> = [[], null, 1, "x", true, [{ specversion: "1.0" }]]

const pick = <A>(pool: ReadonlyArray<A>, i: number): A => pool[i % pool.length]!

/** A body on its way through the mutations: JSON, or text that may not be JSON. */
type Body = { readonly _tag: "Json"; readonly json: unknown } | { readonly _tag: "Text"; readonly text: string }

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const retyped = (value: unknown): unknown =>
  typeof value === "string"
    ? (Number.isNaN(Number(value)) ? value.length : Number(value))
    : typeof value === "number" || typeof value === "boolean"
    ? String(value)
    : value === null
    ? "null"
    : JSON.stringify(value)

/** Sets one attribute of an event object (a copy). */
const withAttribute = (json: Record<string, unknown>, key: string, value: unknown) => {
  const copy: Record<string, unknown> = { ...json }
  Object.defineProperty(copy, key, { value, enumerable: true, writable: true, configurable: true })
  return copy
}

const mutate = (body: Body, mutation: Mutation, base: Envelope.Envelope): Body => {
  const { at, kind, pick: p } = mutation
  if (body._tag === "Text") {
    return kind === "truncate" ? { _tag: "Text", text: body.text.slice(0, at % (body.text.length + 1)) } : body
  }
  const json = body.json
  const set = (key: string, pool: ReadonlyArray<unknown>): Body =>
    isRecord(json) ? { _tag: "Json", json: withAttribute(json, key, pick(pool, p)) } : body
  switch (kind) {
    case "formatOne":
      return { _tag: "Json", json: formatOneOf(base) }
    case "notAnObject":
      return { _tag: "Json", json: pick(notObjects, p) }
    case "truncate": {
      const text = JSON.stringify(json)
      return { _tag: "Text", text: text.slice(0, at % text.length) }
    }
    case "time":
      return set("time", times)
    case "source":
      return set("source", sources)
    case "type":
      return set("type", types)
    case "specversion":
      return set("specversion", specversions)
    case "datacontenttype":
      return set("datacontenttype", dataContentTypes)
    case "data":
      return set("data", data)
    case "extension":
      return set(pick(attributeNames, at), values)
  }
  if (!isRecord(json)) return body
  const keys = Object.keys(json)
  if (keys.length === 0) return body
  const key = pick(keys, at)
  const rest: Record<string, unknown> = { ...json }
  delete rest[key]
  switch (kind) {
    case "drop":
      return { _tag: "Json", json: rest }
    case "replace":
      return { _tag: "Json", json: withAttribute(json, key, pick(values, p)) }
    case "retype":
      return { _tag: "Json", json: withAttribute(json, key, retyped(json[key])) }
    case "rename":
      return { _tag: "Json", json: withAttribute(rest, pick(attributeNames, p), json[key]) }
  }
}

const textOf = (body: Body): string => body._tag === "Text" ? body.text : JSON.stringify(body.json) ?? ""

/** The body of a case: the event encoded by the library, then mutated. */
const bodyOf = (c: Case): string => {
  const envelope = envelopeOf(c.base)
  const encoded: unknown = JSON.parse(new TextDecoder().decode(Envelope.encode(envelope)))
  return textOf(c.mutations.reduce<Body>((body, m) => mutate(body, m, envelope), { _tag: "Json", json: encoded }))
}

/** Deepest nesting and object key count of a JSON value (what `Limits` bounds). */
const shape = (json: unknown): { readonly depth: number; readonly keys: number } => {
  if (typeof json !== "object" || json === null) return { depth: 0, keys: 0 }
  const children = Array.isArray(json) ? json : Object.values(json)
  let depth = 0
  let keys = Array.isArray(json) ? 0 : children.length
  for (const child of children) {
    const inner = shape(child)
    depth = Math.max(depth, inner.depth)
    keys += inner.keys
  }
  return { depth: depth + 1, keys }
}

/** Why the decoder must refuse a body it does not accept, in the order it looks. */
const expectedReason = (body: string): "TooLarge" | "NotJson" | "TooComplex" | "InvalidEnvelope" => {
  if (new TextEncoder().encode(body).byteLength > Envelope.defaultMaxBytes) return "TooLarge"
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch {
    return "NotJson"
  }
  const { depth, keys } = shape(json)
  return depth > Envelope.defaultMaxDepth || keys > Envelope.defaultMaxKeys ? "TooComplex" : "InvalidEnvelope"
}

const show = (body: string) => body.length <= 600 ? body : `${body.slice(0, 600)}… (${body.length} characters)`

/**
 * The agreement of one body: an accepted body is accepted by the SDK with the same attributes; a refused
 * one is a `MalformedMessage` with the reason that applies. Throws (an assertion) otherwise.
 */
const checkAgreement = (body: string, context: string) => {
  const ours = Envelope.decodeResult(body)
  const sdk = sdkVerdict(body)
  const about = `${context}\nbody: ${show(body)}\nSDK: ${sdk.accepted ? "accepts" : `rejects (${sdk.error})`}`
  if (Result.isSuccess(ours)) {
    assert.isTrue(sdk.accepted, `the decoder accepts what the SDK rejects\n${about}`)
    if (!sdk.accepted) return
    const e = ours.success
    const event = sdk.event
    assert.strictEqual(event.id, e.messageId, about)
    assert.strictEqual(event.source, e.producer, about)
    assert.strictEqual(event.type, Envelope.messageType(e), about)
    assert.strictEqual(event.subject, e.entityId, about)
    assert.strictEqual(event.time, e.occurredAt, about)
    assert.deepStrictEqual(event.data, e.payload, about)
    assert.strictEqual(event["entityversion"], e.version, about)
    assert.strictEqual(event["contractversion"], e.contractVersion, about)
    assert.strictEqual(event["forcesync"], e.forceSync, about)
    assert.strictEqual(event["traceparent"], e.traceparent, about)
    for (const [key, value] of Object.entries(e.context ?? {})) assert.strictEqual(event[key], value, about)
    return
  }
  const failure = ours.failure
  assert.strictEqual(failure._tag, "MalformedMessage", about)
  assert.strictEqual(failure.reason, expectedReason(body), `${about}\ndecoder: ${failure.message}`)
}

describe("the decoder agrees with the CloudEvents SDK", () => {
  it.prop(
    "every event the library encodes is a CloudEvent the SDK accepts, and decodes back to itself",
    { base: Base },
    ({ base }) => {
      const envelope = envelopeOf(base)
      const body = new TextDecoder().decode(Envelope.encode(envelope))
      const sdk = sdkVerdict(body)
      assert.isTrue(sdk.accepted, `seed ${seed}: the SDK rejects ${body}: ${sdk.accepted ? "" : sdk.error}`)
      const decoded = Envelope.decodeResult(body)
      assert.isTrue(Result.isSuccess(decoded), `seed ${seed}: the decoder refuses ${body}`)
      if (Result.isSuccess(decoded)) assert.deepStrictEqual(decoded.success, JSON.parse(JSON.stringify(envelope)))
      checkAgreement(body, `seed ${seed}`)
    },
    { arbitrary: { seed, runs: 500 } }
  )

  it.prop(
    "mutated events: what the decoder accepts the SDK accepts; what the SDK rejects the decoder refuses",
    { testCase: Case },
    ({ testCase }) => checkAgreement(bodyOf(testCase), `seed ${seed}`),
    { timeout: 120_000, arbitrary: { seed, runs } }
  )

  it.effect("the mutations reach both verdicts and every kind of refusal", () =>
    Effect.gen(function*() {
      const cases = yield* Arbitrary.sampleEffect(Arbitrary.schema(Case), { seed, count: 2_000 }).pipe(Effect.orDie)
      const outcomes = new Map<string, number>()
      const kinds = new Set<MutationKind>()
      const count = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
      for (const c of cases) {
        for (const m of c.mutations) kinds.add(m.kind)
        const body = bodyOf(c)
        const ours = Envelope.decodeResult(body)
        count(`decoder ${Result.isSuccess(ours) ? "accepts" : ours.failure.reason}`)
        count(`SDK ${sdkVerdict(body).accepted ? "accepts" : "rejects"}`)
      }
      const summary = `seed ${seed}: ${JSON.stringify(Object.fromEntries(outcomes))}`
      assert.deepStrictEqual([...kinds].sort(), [...mutationKinds].sort(), summary)
      for (const outcome of ["accepts", "InvalidEnvelope", "NotJson", "TooComplex", "TooLarge"]) {
        assert.isAbove(outcomes.get(`decoder ${outcome}`) ?? 0, 0, `decoder ${outcome}: ${summary}`)
      }
      assert.isAbove(outcomes.get("SDK rejects") ?? 0, 100, summary)
      assert.isAbove(outcomes.get("decoder accepts") ?? 0, 100, summary)
    }))

  /** A valid event of the wire format, as a plain object. */
  const valid: Record<string, unknown> = {
    specversion: "1.0",
    id: "0193a000-0000-7000-8000-000000000001",
    source: "accounts",
    type: "entitysync.User.updated",
    subject: "u-42",
    time: "2026-11-22T03:00:00.123Z",
    datacontenttype: "application/json",
    data: { id: "u-42", name: "Ann" },
    entityversion: 7,
    contractversion: 1,
    forcesync: false,
    traceparent: `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`,
    correlationid: "c-1"
  }
  const without = (key: string) => Object.fromEntries(Object.entries(valid).filter(([k]) => k !== key))

  /** Named cases: the body, and whether the SDK accepts it (the decoder must then agree as above). */
  const table: ReadonlyArray<readonly [string, unknown, boolean]> = [
    ["the valid event", valid, true],
    ["a deleted event with null data", { ...valid, type: "entitysync.User.deleted", data: null }, true],
    [
      "a full-sync snapshot with reset",
      { ...valid, type: "entitysync.User.snapshot", forcesync: true, reset: true },
      true
    ],
    ["an extension named entityVersion", { ...without("entityversion"), entityVersion: 7 }, false],
    ["an extension named x-y", { ...valid, "x-y": "z" }, false],
    ["an extension named x_y", { ...valid, x_y: "z" }, false],
    ["an extension named Tenant", { ...valid, Tenant: "t-1" }, false],
    ["a source that is no URI-reference", { ...valid, source: "a b" }, false],
    ["a source with a bad escape", { ...valid, source: "%zz" }, false],
    ["a source with a non-ASCII letter", { ...valid, source: "comptes-é" }, false],
    ["no source", without("source"), false],
    ["no type", without("type"), false],
    ["an empty type", { ...valid, type: "" }, false],
    ["an id that is a number", { ...valid, id: 7 }, false],
    ["an empty subject", { ...valid, subject: "" }, false],
    ["a time of 24 hours", { ...valid, time: "2026-11-22T24:00:00Z" }, false],
    ["a time in month 13", { ...valid, time: "2026-13-22T03:00:00Z" }, false],
    ["a leap second not at 23:59", { ...valid, time: "2026-11-22T03:00:60Z" }, false],
    ["a time that is a number", { ...valid, time: 1_767_225_600_000 }, false],
    ["specversion 2", { ...valid, specversion: "2" }, false],
    ["specversion 0.3", { ...valid, specversion: "0.3" }, false],
    ["entityversion 1.5", { ...valid, entityversion: 1.5 }, false],
    ["a datacontenttype that is a number", { ...valid, datacontenttype: 7 }, false],
    ["data_base64 that is no base64", { ...valid, data_base64: "%%%" }, false],
    ["an array of events", [valid], false],
    [
      "the retired format 1",
      formatOneOf(envelopeOf({
        messageId: "m-1",
        entity: "User",
        entityId: "u-1",
        action: "updated",
        version: 3,
        contractVersion: 1,
        millis: 0,
        producer: "accounts",
        forceSync: false,
        reset: false,
        traced: false,
        payload: { id: "u-1" },
        context: {}
      })),
      false
    ],
    ["a CloudEvent that also says specVersion 1", { ...valid, specVersion: 1 }, false]
  ]

  it.effect.each(table)("%s", ([name, json, accepted]) =>
    Effect.sync(() => {
      const body = JSON.stringify(json)
      assert.strictEqual(sdkVerdict(body).accepted, accepted, `the SDK on ${name}: ${body}`)
      checkAgreement(body, name)
    }))

  it("a body of the retired format 1 is InvalidEnvelope, saying that format 1 is retired", () => {
    const body = JSON.stringify({
      specVersion: 1,
      messageId: "0190a000-0000-7000-8000-000000000001",
      entity: "User",
      entityId: "u-1",
      action: "updated",
      version: 3,
      occurredAt: "2026-01-01T00:00:00.000Z",
      producer: "accounts",
      forceSync: false,
      payload: { id: "u-1" }
    })
    assert.isFalse(sdkVerdict(body).accepted)
    const decoded = Envelope.decodeResult(body)
    assert.isTrue(Result.isFailure(decoded))
    if (Result.isFailure(decoded)) {
      assert.strictEqual(decoded.failure.reason, "InvalidEnvelope")
      assert.match(decoded.failure.detail, /wire format 1 .*is retired/)
      assert.match(decoded.failure.detail, /CloudEvents 1\.0/)
    }
  })
})
