/**
 * R10: trace context travels from the owner's request to the consumer's apply.
 *
 * * In memory (TestClock, a recording tracer): the write span is the events' traceparent, the relay's
 *   publish span links to it, the consumer's apply span is its child inside a receive span that links to
 *   every event; waiting, parking, waking and dead-lettering show as span events; a sampled-out trace stays
 *   sampled out; without a recording tracer no span is made; the OTLP settings from the environment.
 * * The demo services on PostgreSQL and RabbitMQ, exporting over OTLP/HTTP to a receiver of the test's:
 *   an HTTP request to accounts and the directory's apply share one trace; a sampled-out request exports
 *   no span of its trace.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, type Exit, Option, References, Schema, type Scope, Tracer } from "effect"
import { createServer, type IncomingMessage } from "node:http"
import * as AccountsService from "../services/accounts/AccountsService.ts"
import * as DirectoryService from "../services/directory/DirectoryService.ts"
import { Broker } from "../src/Broker.ts"
import * as Envelope from "../src/Envelope.ts"
import { Outbox } from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as SyncConfig from "../src/SyncConfig.ts"
import * as Tracing from "../src/Tracing.ts"
import { Company, User } from "./fixtures.ts"
import { consumerName, copyOf, eventually, relay, settle, sync, systemLayer } from "./harness.ts"
import * as Stack from "./services/stack.ts"

const companies = Producer.make("accounts").repository(Company)
const users = Producer.make("accounts").repository(User)

// ---------------------------------------------------------------------------------------------------------
// A tracer that records every span it makes, ended or not.

class RecordedSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly name: string
  readonly spanId: string
  readonly traceId: string
  readonly parent: Option.Option<Tracer.AnySpan>
  readonly annotations: Tracer.Span["annotations"]
  readonly links: Array<Tracer.SpanLink>
  readonly sampled: boolean
  readonly kind: Tracer.SpanKind
  readonly attributes = new Map<string, unknown>()
  readonly events: Array<{ readonly name: string; readonly attributes: Record<string, unknown> }> = []
  status: Tracer.SpanStatus
  constructor(options: Parameters<Tracer.Tracer["span"]>[0], id: number) {
    this.name = options.name
    this.parent = options.parent
    this.annotations = options.annotations
    this.links = [...options.links]
    this.sampled = options.sampled
    this.kind = options.kind
    this.spanId = id.toString(16).padStart(16, "0")
    this.traceId = Option.isSome(options.parent)
      ? options.parent.value.traceId
      : id.toString(16).padStart(32, "a")
    this.status = { _tag: "Started", startTime: options.startTime }
  }
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    if (this.status._tag === "Ended") throw new Error(`span ${this.name} ended twice`)
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
  }
  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
  }
  event(name: string, _startTime: bigint, attributes?: Record<string, unknown>): void {
    this.events.push({ name, attributes: attributes ?? {} })
  }
  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
  }
}

const recording = () => {
  const spans: Array<RecordedSpan> = []
  const tracer = Tracer.make({
    span: (options) => {
      const span = new RecordedSpan(options, spans.length + 1)
      spans.push(span)
      return span
    }
  })
  return { spans, tracer }
}

const named = (spans: ReadonlyArray<RecordedSpan>, name: string) => spans.filter((span) => span.name === name)
const parentId = (span: RecordedSpan) => Option.getOrUndefined(Option.map(span.parent, (p) => p.spanId))
const linked = (span: RecordedSpan) => span.links.map((link) => `${link.span.traceId}/${link.span.spanId}`)
const ended = (span: RecordedSpan | undefined) => span?.status._tag === "Ended"

const company = (id: string) => ({ id, name: `Company ${id}` })
const user = (id: string, companyId: string) => ({ id, companyId, email: `${id}@x.test`, name: id, active: true })

describe("tracing in memory", () => {
  it.effect("the write's span travels to the apply: publish and receive spans link to it", () => {
    const { spans, tracer } = recording()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const request = Tracer.externalSpan({ traceId: "1".repeat(32), spanId: "2".repeat(16), sampled: true })
      yield* outbox.transaction(companies.create(company("c-1"))).pipe(Effect.withParentSpan(request))
      const [row] = yield* outbox.rows()
      yield* sync
      assert.strictEqual((yield* copyOf("Company", "c-1"))?.version, 1)

      const [write] = named(spans, Tracing.spanNames.write("Company"))
      assert.isDefined(write)
      assert.strictEqual(write!.traceId, request.traceId)
      assert.strictEqual(parentId(write!), request.spanId)
      assert.strictEqual(write!.kind, "producer")
      assert.strictEqual(row?.envelope.traceparent, `00-${request.traceId}-${write!.spanId}-01`)
      assert.deepInclude(Object.fromEntries(write!.attributes), {
        [Tracing.attributes.messagingSystem]: "rabbitmq",
        [Tracing.attributes.operationType]: "create",
        [Tracing.attributes.entity]: "Company",
        [Tracing.attributes.entityId]: "c-1",
        [Tracing.attributes.messageId]: row!.envelope.messageId,
        [Tracing.attributes.action]: "created"
      })

      const [publish] = named(spans, Tracing.spanNames.publish)
      assert.strictEqual(publish?.kind, "producer")
      assert.isTrue(Option.isNone(publish!.parent))
      assert.deepStrictEqual(linked(publish!), [`${write!.traceId}/${write!.spanId}`])
      assert.strictEqual(publish!.attributes.get(Tracing.attributes.operationType), "publish")
      assert.strictEqual(publish!.attributes.get(Tracing.attributes.destinationName), "sync.events")
      assert.strictEqual(publish!.attributes.get(Tracing.attributes.messageId), row!.envelope.messageId)

      const [receive] = named(spans, Tracing.spanNames.receive)
      assert.strictEqual(receive?.kind, "consumer")
      assert.deepStrictEqual(linked(receive!), [`${write!.traceId}/${write!.spanId}`])
      assert.strictEqual(receive!.attributes.get(Tracing.attributes.destinationName), `${consumerName}.sync`)

      const [apply] = named(spans, Tracing.spanNames.apply("Company"))
      assert.strictEqual(apply?.kind, "consumer")
      assert.strictEqual(apply!.traceId, request.traceId)
      assert.strictEqual(parentId(apply!), write!.spanId)
      assert.deepStrictEqual(linked(apply!), [`${receive!.traceId}/${receive!.spanId}`])
      assert.deepInclude(Object.fromEntries(apply!.attributes), {
        [Tracing.attributes.operationType]: "process",
        [Tracing.attributes.messageId]: row!.envelope.messageId,
        [Tracing.attributes.entity]: "Company",
        [Tracing.attributes.entityId]: "c-1",
        [Tracing.attributes.version]: 1,
        [Tracing.attributes.outcome]: "applied"
      })
      for (const span of [write, publish, receive, apply]) assert.isTrue(ended(span), span?.name)
    }).pipe(Effect.provide(systemLayer()), Effect.withTracer(tracer))
  })

  it.effect("a sampled-out traceparent stays sampled out at the consumer", () => {
    const { spans, tracer } = recording()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      const request = Tracer.externalSpan({ traceId: "3".repeat(32), spanId: "4".repeat(16), sampled: false })
      yield* outbox.transaction(companies.create(company("c-1"))).pipe(Effect.withParentSpan(request))
      const [row] = yield* outbox.rows()
      assert.match(row?.envelope.traceparent ?? "", /^00-3{32}-[0-9a-f]{16}-00$/)
      yield* sync
      const ofTrace = spans.filter((span) => span.traceId === request.traceId)
      assert.deepStrictEqual(ofTrace.map((span) => [span.name, span.sampled]), [
        [Tracing.spanNames.write("Company"), false],
        [Tracing.spanNames.apply("Company"), false]
      ])
      // the relay's and the consumer's batch spans do not link to a trace nobody records
      for (const span of spans) assert.deepStrictEqual(linked(span).filter((l) => l.startsWith("3")), [])
    }).pipe(Effect.provide(systemLayer()), Effect.withTracer(tracer))
  })

  it.effect("waiting, parking, waking and dead-lettering are span events", () => {
    const { spans, tracer } = recording()
    return Effect.gen(function*() {
      const outbox = yield* Outbox
      yield* outbox.transaction(users.create(user("u-1", "c-1")))
      yield* relay
      // the User waits in process, then is parked; its Company arrives and wakes it
      yield* eventually(
        Effect.succeed(spans),
        (all) => all.some((span) => span.events.some((e) => e.name === Tracing.events.parked))
      )
      const broker = yield* Broker
      yield* broker.publish([{
        messageId: "poison-1",
        routingKey: "accounts.User.created",
        type: "entitysync.User.created",
        contentType: Envelope.contentType,
        body: new TextEncoder().encode("{ not json"),
        headers: {}
      }])
      yield* outbox.transaction(companies.create(company("c-1")))
      yield* relay
      yield* eventually(copyOf("User", "u-1"), (copy) => copy !== null, { step: "100 millis" })
      yield* settle()

      const applies = named(spans, Tracing.spanNames.apply("User"))
      const first = applies[0]
      assert.deepStrictEqual(first?.events.map((e) => e.name), [Tracing.events.waiting, Tracing.events.parked])
      assert.match(String(first?.events[1]?.attributes[Tracing.attributes.reason]), /Company:c-1/)
      assert.strictEqual(first?.attributes.get(Tracing.attributes.outcome), "parked")
      const woken = applies.find((span) => span.attributes.get(Tracing.attributes.outcome) === "applied")
      assert.deepStrictEqual(woken?.events.map((e) => e.name), [Tracing.events.woken])
      // in process once, parked at the second attempt, applied at the third
      assert.strictEqual(woken?.attributes.get(Tracing.attributes.attempt), 3)
      assert.strictEqual(woken?.traceId, first?.traceId)
      const companyApply = named(spans, Tracing.spanNames.apply("Company"))[0]
      assert.deepStrictEqual(companyApply?.events.map((e) => e.name), [Tracing.events.wokeParked])
      const poisoned = named(spans, Tracing.spanNames.receive).flatMap((span) => span.events)
        .filter((e) => e.name === Tracing.events.deadLettered)
      assert.strictEqual(poisoned.length, 1)
      assert.strictEqual(poisoned[0]?.attributes[Tracing.attributes.messageId], "poison-1")
      assert.strictEqual(poisoned[0]?.attributes[Tracing.attributes.outcome], "malformed")
      for (const span of spans) assert.isTrue(ended(span), span.name)
    }).pipe(
      Effect.provide(systemLayer({
        inProcessRetries: 1,
        dependencyRetry: SyncConfig.backoff({ base: "10 millis", maxDelay: "1 second", budget: "1 hour" })
      })),
      Effect.withTracer(tracer)
    )
  })

  it.effect("without a recording tracer no span is made: events carry the traceparent of the caller's span", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox
      yield* outbox.transaction(companies.create(company("c-1")))
      const span = yield* outbox.transaction(Effect.andThen(companies.create(company("c-2")), Effect.currentSpan))
        .pipe(Effect.withSpan("signup"))
      const [plain, traced] = yield* Effect.map(outbox.rows(), (rows) => rows.map((row) => row.envelope))
      assert.isUndefined(plain?.traceparent)
      assert.strictEqual(traced?.traceparent, `00-${span.traceId}-${span.spanId}-01`)
      assert.strictEqual(span.name, "signup")
      yield* sync
      assert.strictEqual((yield* copyOf("Company", "c-2"))?.version, 1)
    }).pipe(Effect.provide(systemLayer())))

  it("parses traceparents strictly", () => {
    const parent = Tracing.parentOf(`00-${"a".repeat(32)}-${"b".repeat(16)}-01`)
    assert.deepStrictEqual([parent?.traceId, parent?.spanId, parent?.sampled], ["a".repeat(32), "b".repeat(16), true])
    assert.strictEqual(Tracing.parentOf(`00-${"a".repeat(32)}-${"b".repeat(16)}-00`)?.sampled, false)
    for (
      const bad of [
        undefined,
        "",
        `01-${"a".repeat(32)}-${"b".repeat(16)}-01`,
        `00-${"0".repeat(32)}-${"b".repeat(16)}-01`,
        `00-${"a".repeat(32)}-${"0".repeat(16)}-01`,
        `00-${"A".repeat(32)}-${"b".repeat(16)}-01`,
        `00-${"a".repeat(32)}-${"b".repeat(16)}-01-extra`,
        "x".repeat(10_000)
      ]
    ) assert.isUndefined(Tracing.parentOf(bad), String(bad).slice(0, 80))
  })

  it.effect("OTLP settings come from the standard variables; none without an endpoint", () =>
    Effect.gen(function*() {
      const settings = (env: Record<string, string>) =>
        Effect.provideService(
          Effect.orDie(Effect.gen(function*() {
            return yield* Tracing.otlpConfig("accounts")
          })),
          ConfigProvider.ConfigProvider,
          ConfigProvider.fromEnv({ env })
        )
      assert.isTrue(Option.isNone(yield* settings({})))
      assert.deepStrictEqual(
        yield* settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/", OTEL_BSP_SCHEDULE_DELAY: "200" }),
        Option.some({ url: "http://collector:4318/v1/traces", serviceName: "accounts", exportIntervalMillis: 200 })
      )
      assert.deepStrictEqual(
        yield* settings({
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://traces:4318/custom",
          OTEL_SERVICE_NAME: "accounts-eu",
          OTEL_EXPORTER_OTLP_HEADERS: "api-key=s%3Dcret,x-team=sync"
        }),
        Option.some({
          url: "http://traces:4318/custom",
          serviceName: "accounts-eu",
          headers: { "api-key": "s=cret", "x-team": "sync" }
        })
      )
      const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }
      assert.isTrue(Option.isNone(yield* settings({ ...endpoint, OTEL_TRACES_EXPORTER: "none" })))
      assert.isTrue(Option.isNone(yield* settings({ ...endpoint, OTEL_SDK_DISABLED: "true" })))
      // without the variable the layer installs nothing: the native tracer stays
      const tracer = yield* Effect.tracer.pipe(
        Effect.provide(Tracing.layerOtlpFromEnv({ serviceName: "accounts" })),
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env: {} }))
      )
      assert.strictEqual(tracer, Tracer.nativeTracer)
    }))
})

// ---------------------------------------------------------------------------------------------------------
// An OTLP/HTTP receiver (JSON, as Effect's exporter sends it with `OtlpSerialization.layerJson`).

const AnyValue = Schema.Struct({
  stringValue: Schema.optional(Schema.String),
  intValue: Schema.optional(Schema.Union([Schema.Number, Schema.String])),
  boolValue: Schema.optional(Schema.Boolean),
  doubleValue: Schema.optional(Schema.Number)
})
const KeyValues = Schema.Array(Schema.Struct({ key: Schema.String, value: AnyValue }))
const OtlpTraces = Schema.Struct({
  resourceSpans: Schema.Array(Schema.Struct({
    resource: Schema.Struct({ attributes: KeyValues }),
    scopeSpans: Schema.Array(Schema.Struct({
      spans: Schema.Array(Schema.Struct({
        traceId: Schema.String,
        spanId: Schema.String,
        parentSpanId: Schema.optional(Schema.String),
        name: Schema.String,
        kind: Schema.Number,
        attributes: KeyValues,
        links: Schema.Array(Schema.Struct({ traceId: Schema.String, spanId: Schema.String })),
        events: Schema.Array(Schema.Struct({ name: Schema.String }))
      }))
    }))
  }))
})
const decodeTraces = Schema.decodeUnknownSync(Schema.fromJsonString(OtlpTraces))

interface Exported {
  readonly service: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly name: string
  readonly kind: number
  readonly attributes: Readonly<Record<string, string | number | boolean | undefined>>
  readonly links: ReadonlyArray<string>
}

const valueOf = (value: typeof AnyValue.Type) =>
  value.stringValue ?? (value.intValue === undefined ? undefined : Number(value.intValue)) ?? value.boolValue ??
    value.doubleValue
const recordOf = (kvs: typeof KeyValues.Type) => Object.fromEntries(kvs.map((kv) => [kv.key, valueOf(kv.value)]))

/** A receiver on a free port of 127.0.0.1 until the scope closes: its URL and the spans posted to /v1/traces. */
const otlpReceiver: Effect.Effect<
  { readonly url: string; readonly spans: Array<Exported>; readonly paths: Array<string> },
  never,
  Scope.Scope
> = Effect.acquireRelease(
  Effect.callback<
    { readonly url: string; readonly spans: Array<Exported>; readonly paths: Array<string> } & {
      readonly close: () => void
    }
  >((resume) => {
    const spans: Array<Exported> = []
    const paths: Array<string> = []
    const read = (request: IncomingMessage) =>
      new Promise<string>((done) => {
        let body = ""
        request.setEncoding("utf8")
        request.on("data", (chunk: string) => (body += chunk))
        request.on("end", () => done(body))
      })
    const server = createServer((request, response) => {
      paths.push(`${request.method} ${request.url} ${request.headers["content-type"]}`)
      void read(request).then((body) => {
        if (request.url === "/v1/traces") {
          for (const resource of decodeTraces(body).resourceSpans) {
            const service = String(recordOf(resource.resource.attributes)["service.name"])
            for (const scope of resource.scopeSpans) {
              for (const span of scope.spans) {
                spans.push({
                  service,
                  traceId: span.traceId,
                  spanId: span.spanId,
                  parentSpanId: span.parentSpanId,
                  name: span.name,
                  kind: span.kind,
                  attributes: recordOf(span.attributes),
                  links: span.links.map((link) => `${link.traceId}/${link.spanId}`)
                })
              }
            }
          }
        }
        response.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, spans, paths, close: () => server.close() }))
    })
  }),
  (receiver) => Effect.sync(receiver.close)
)

/** POSTs JSON with a traceparent header (plain fetch: no client span of the test's own). */
const post = (url: string, json: unknown, traceparent: string) =>
  Effect.promise(async () => {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent },
      body: JSON.stringify(json)
    })
    await response.arrayBuffer()
    return response.status
  })

const getStatus = (url: string) =>
  Effect.promise(async () => {
    const response = await fetch(url)
    await response.arrayBuffer()
    return response.status
  })

const waitFor = <A>(what: string, check: Effect.Effect<A>, until: (a: A) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 400; i++) {
      const a = yield* check
      if (until(a)) return a
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

const hex = (n: number, length: number) => Array.from({ length }, (_, i) => ((n + i) % 16).toString(16)).join("")

describe("tracing the demo services on PostgreSQL and RabbitMQ", () => {
  it.live(
    "an HTTP request to accounts and the directory's apply share one trace; sampled-out stays out",
    () =>
      Effect.gen(function*() {
        const receiver = yield* otlpReceiver
        const vhost = yield* Stack.virtualHost
        const accountsDb = yield* Stack.database
        const directoryDb = yield* Stack.database
        const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "100" }
        const accounts = yield* Stack.startInProcess(AccountsService, {
          ...Stack.environment({ databaseUrl: accountsDb, amqpUrl: vhost.url }),
          ...otel
        })
        const directory = yield* Stack.startInProcess(DirectoryService, {
          ...Stack.environment({ databaseUrl: directoryDb, amqpUrl: vhost.url }),
          ...otel
        })

        const traceId = hex(3, 32)
        const sampledOut = hex(7, 32)
        assert.strictEqual(
          yield* post(`${accounts.url}/companies`, { id: "c-1", name: "Acme" }, `00-${traceId}-${hex(5, 16)}-01`),
          201
        )
        assert.strictEqual(
          yield* post(`${accounts.url}/companies`, { id: "c-2", name: "Initech" }, `00-${sampledOut}-${hex(9, 16)}-00`),
          201
        )
        yield* waitFor("the directory's copies", getStatus(`${directory.url}/companies/c-2`), (s) => s === 200)
        yield* waitFor("the directory's copies", getStatus(`${directory.url}/companies/c-1`), (s) => s === 200)
        const ofTrace = () => receiver.spans.filter((span) => span.traceId === traceId)
        const applyName = Tracing.spanNames.apply("Company")
        // each service exports its spans in batches of its own: the request's span may come after the apply's
        yield* waitFor(
          "the request's and the directory's apply spans",
          Effect.sync(ofTrace),
          (spans) =>
            spans.some((span) => span.name === applyName) &&
            spans.some((span) => span.service === "accounts" && span.kind === 2)
        )
        const spans = ofTrace()
        const request = spans.find((span) => span.service === "accounts" && span.kind === 2)
        const write = spans.find((span) => span.name === Tracing.spanNames.write("Company"))
        const apply = spans.find((span) => span.name === applyName)
        assert.isDefined(request, JSON.stringify(spans.map((s) => s.name)))
        assert.strictEqual(request?.parentSpanId, hex(5, 16))
        assert.strictEqual(write?.service, "accounts")
        assert.strictEqual(write?.kind, 4)
        // the write runs under the request (in the outbox transaction's span)
        const ancestors = (span: Exported | undefined): Array<string> => {
          const parent = spans.find((s) => s.spanId === span?.parentSpanId)
          return parent === undefined ? [] : [parent.spanId, ...ancestors(parent)]
        }
        assert.include(ancestors(write), request?.spanId)
        assert.strictEqual(write?.attributes[Tracing.attributes.entityId], "c-1")
        assert.strictEqual(apply?.service, "directory")
        assert.strictEqual(apply?.kind, 5)
        assert.strictEqual(apply?.parentSpanId, write?.spanId)
        assert.deepInclude(apply?.attributes, {
          [Tracing.attributes.messagingSystem]: "rabbitmq",
          [Tracing.attributes.operationType]: "process",
          [Tracing.attributes.destinationName]: "directory.sync",
          [Tracing.attributes.entityId]: "c-1",
          [Tracing.attributes.outcome]: "applied"
        })
        const messageId = apply?.attributes[Tracing.attributes.messageId]
        assert.isString(messageId)
        assert.strictEqual(write?.attributes[Tracing.attributes.messageId], messageId)

        // the relay's publish span and the directory's receive span are traces of their own, linked to the write
        const writeLink = `${traceId}/${write?.spanId}`
        const publish = yield* waitFor(
          "the relay's publish span",
          Effect.sync(() =>
            receiver.spans.find((span) => span.name === Tracing.spanNames.publish && span.links.includes(writeLink))
          ),
          (span) => span !== undefined
        )
        assert.strictEqual(publish?.service, "accounts")
        assert.strictEqual(publish?.kind, 4)
        assert.strictEqual(publish?.attributes[Tracing.attributes.destinationName], "sync.events")
        const receive = receiver.spans.find((span) =>
          span.name === Tracing.spanNames.receive && span.links.includes(writeLink)
        )
        assert.strictEqual(receive?.service, "directory")
        assert.include(apply?.links ?? [], `${receive?.traceId}/${receive?.spanId}`)

        // the sampled-out request: the copy is there, and nothing of its trace was exported, nor linked to it
        yield* Effect.sleep("500 millis")
        assert.deepStrictEqual(receiver.spans.filter((span) => span.traceId === sampledOut).map((s) => s.name), [])
        assert.deepStrictEqual(receiver.spans.flatMap((span) => span.links).filter((l) => l.startsWith(sampledOut)), [])
        assert.isTrue(receiver.paths.every((path) => path.startsWith("POST /v1/traces application/json")))
        // the relay's claims and the consumer's looks at parked events (every poll interval) export nothing
        const polls = receiver.spans.filter((span) => {
          const text = String(span.attributes["db.query.text"] ?? "")
          return /SKIP LOCKED|claim|next_attempt_at|LISTEN/i.test(text) && span.parentSpanId === undefined
        })
        assert.deepStrictEqual(polls.map((span) => span.attributes["db.query.text"]), [])
      }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")),
    { timeout: 120_000 }
  )
})
