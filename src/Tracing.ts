/**
 * R10: trace context travels from the owner's request to the consumer's apply. The owner's write runs in a
 * span whose W3C `traceparent` every event it appends carries; the relay publishes each batch in a span
 * linked to the events' traces; the consumer applies each event in a span whose parent is that
 * `traceparent` (so a sampled-out trace stays sampled out), inside a batch span linked to every event it
 * holds. Names and attributes follow OpenTelemetry's messaging semantic conventions.
 *
 * Spans are made only while a tracer that records them is installed (any tracer but Effect's native one):
 * without one the hot paths do no tracing work. `layerOtlpFromEnv` installs Effect's OTLP exporter (OTLP
 * over HTTP, JSON) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nothing otherwise.
 *
 * @since 0.1.0
 */
import { Config, Effect, type Fiber, Layer, Option, References, Schema, Tracer } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpSerialization, OtlpTracer } from "effect/observability"

/** The span names. Entity names come from the contracts the service knows (never from a message as is). */
export const spanNames = {
  /** The owner's repository write of an entity of `entity` (kind producer): its events carry this span. */
  write: (entity: string): string => `entity-sync.write ${entity}`,
  /** One batch of outbox rows published by the relay (kind producer), linked to every event's trace. */
  publish: "entity-sync.publish",
  /** One batch of deliveries received and applied by a consumer (kind consumer), linked to every event. */
  receive: "entity-sync.receive",
  /** One event applied by a consumer (kind consumer), a child of the event's `traceparent`. */
  apply: (entity: string): string => `entity-sync.apply ${entity}`
} as const

/** The attribute keys: OpenTelemetry's messaging conventions, then entity-sync's own. */
export const attributes = {
  messagingSystem: "messaging.system",
  operationType: "messaging.operation.type",
  operationName: "messaging.operation.name",
  destinationName: "messaging.destination.name",
  messageId: "messaging.message.id",
  batchMessageCount: "messaging.batch.message_count",
  consumerGroup: "messaging.consumer.group.name",
  routingKey: "messaging.rabbitmq.destination.routing_key",
  /** The contract's entity name. */
  entity: "entity_sync.entity",
  /** The entity's id (bounded). */
  entityId: "entity_sync.entity_id",
  /** The event's action (`created`, `updated`, …). */
  action: "entity_sync.action",
  /** The entity version the event carries. */
  version: "entity_sync.entity_version",
  /** The repository operation of a write (`create`, `update`, `track`, …). */
  operation: "entity_sync.operation",
  /** The producing service. */
  producer: "entity_sync.producer",
  /** What became of an event at the consumer: applied, duplicate, stale, waiting, parked, deadLettered. */
  outcome: "entity_sync.outcome",
  /** How many attempts an event took at the consumer (parked events). */
  attempt: "entity_sync.attempt",
  /** Why an event was dead-lettered or why it waits (bounded). */
  reason: "entity_sync.reason"
} as const

/** The value of `messaging.system`. */
export const messagingSystem = "rabbitmq"

/** The values of `messaging.operation.type`. */
export const operationTypes = {
  /** The owner's write: the events' creation context. */
  create: "create",
  /** The relay's batch publish. */
  publish: "publish",
  /** A consumer's batch of deliveries. */
  receive: "receive",
  /** A consumer's apply of one event. */
  process: "process"
} as const

/** The span events the consumer records on an event's span (or on its batch's, for undecodable messages). */
export const events = {
  /** The event's dependencies are missing: it waits in process. */
  waiting: "entity-sync.waiting",
  /** The event was parked in the inbox until its dependencies arrive (R5). */
  parked: "entity-sync.parked",
  /** The event had waited for a dependency and was applied once it arrived. */
  woken: "entity-sync.woken",
  /** Applying the event made parked events due. */
  wokeParked: "entity-sync.woke_parked",
  /** The event (or an undecodable message) was dead-lettered, with its reason. */
  deadLettered: "entity-sync.dead_lettered"
} as const

/** The exchange named in `messaging.destination.name` when none is configured (`SYNC_EXCHANGE`'s default). */
export const defaultExchange = "sync.events"

/**
 * Whether `fiber` records spans: a tracer other than Effect's native one is installed and tracing is on.
 * With the native tracer nothing reads spans, so the library makes none.
 */
export const isTracing = (fiber: Fiber.Fiber<unknown, unknown>): boolean =>
  fiber.getRef(References.TracerEnabled) && fiber.getRef(Tracer.Tracer) !== Tracer.nativeTracer

/**
 * Runs `effect` without spans: for background polls (a relay's claims, a consumer's look at parked events,
 * clean-ups), which would otherwise export a trace of their queries every poll interval.
 */
export const untraced = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withTracerEnabled(effect, false)

/**
 * Runs `body` in a span named `name` that becomes the current span, when the fiber records spans
 * (`isTracing`); otherwise runs `body(undefined)` and makes nothing (the options are not even built).
 */
export const span = <A, E, R>(
  name: string,
  options: () => Tracer.SpanOptionsNoTrace,
  body: (span: Tracer.Span | undefined) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) =>
    isTracing(fiber)
      ? Effect.useSpan(name, options(), (current) => Effect.withParentSpan(body(current), current))
      : body(undefined)
  )

const w3cTraceparent = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/
const zeroTraceId = "00000000000000000000000000000000"
const zeroSpanId = "0000000000000000"

/**
 * The span a W3C `traceparent` names (version `00`), or undefined when it is absent or malformed (it
 * comes from a message: anything but the exact format is ignored). Flags `00` give an unsampled span.
 */
export const parentOf = (traceparent: string | undefined): Tracer.ExternalSpan | undefined => {
  if (traceparent === undefined || traceparent.length !== 55) return undefined
  const parts = w3cTraceparent.exec(traceparent)
  if (parts === null) return undefined
  const traceId = parts[1]!
  const spanId = parts[2]!
  if (traceId === zeroTraceId || spanId === zeroSpanId) return undefined
  return Tracer.externalSpan({ traceId, spanId, sampled: (Number.parseInt(parts[3]!, 16) & 1) === 1 })
}

/** The W3C `traceparent` of a span. */
export const traceparentOf = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/**
 * Links to the sampled spans named by `traceparents` (each trace once): links to sampled-out traces would
 * point at spans nobody records.
 */
export const linksOf = (traceparents: Iterable<string | undefined>): Array<Tracer.SpanLink> => {
  const links: Array<Tracer.SpanLink> = []
  const seen = new Set<string>()
  for (const traceparent of traceparents) {
    if (traceparent === undefined || seen.has(traceparent)) continue
    seen.add(traceparent)
    const parent = parentOf(traceparent)
    if (parent !== undefined && parent.sampled) links.push({ span: parent, attributes: {} })
  }
  return links
}

/** Settings of the OTLP exporter. */
export interface OtlpOptions {
  /** The traces endpoint, e.g. `http://collector:4318/v1/traces`. */
  readonly url: string
  /** The `service.name` resource attribute. */
  readonly serviceName: string
  /** Headers sent with every export (e.g. an API key). */
  readonly headers?: Readonly<Record<string, string>>
  /** How often spans are exported (default 5 seconds). */
  readonly exportIntervalMillis?: number
}

/**
 * Exports spans with Effect's OTLP tracer (OTLP over HTTP, JSON, posted to `url`) for the lifetime of the
 * layer; what is left is flushed when it ends.
 */
export const layerOtlp = (options: OtlpOptions): Layer.Layer<never> =>
  OtlpTracer.layer({
    url: options.url,
    resource: { serviceName: options.serviceName },
    ...(options.headers === undefined ? {} : { headers: options.headers }),
    ...(options.exportIntervalMillis === undefined ? {} : { exportInterval: options.exportIntervalMillis })
  }).pipe(Layer.provide([OtlpSerialization.layerJson, FetchHttpClient.layer]))

/** `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas, URI-encoded. */
const parseHeaders = (text: string): Record<string, string> => {
  const headers: Record<string, string> = {}
  for (const pair of text.split(",")) {
    const at = pair.indexOf("=")
    if (at <= 0) continue
    try {
      headers[decodeURIComponent(pair.slice(0, at).trim())] = decodeURIComponent(pair.slice(at + 1).trim())
    } catch {
      // a malformed escape: the pair is left out
    }
  }
  return headers
}

/** The traces endpoint from the base endpoint: `<endpoint>/v1/traces` (OpenTelemetry's rule). */
const tracesUrl = (endpoint: string): string => `${endpoint.replace(/\/+$/, "")}/v1/traces`

/**
 * The OTLP settings from the standard environment variables, or none when traces are not to be exported:
 *
 * * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is
 *   appended); neither set: no export;
 * * `OTEL_SERVICE_NAME` (default: `serviceName`);
 * * `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,…`);
 * * `OTEL_BSP_SCHEDULE_DELAY` (milliseconds between exports, default 5000);
 * * `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER` without `otlp` (e.g. `none`): no export.
 */
export const otlpConfig = (serviceName: string): Config.Config<Option.Option<OtlpOptions>> =>
  Config.all({
    disabled: Config.Boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false)),
    exporters: Config.option(Config.String("OTEL_TRACES_EXPORTER")),
    tracesEndpoint: Config.option(Config.String("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
    endpoint: Config.option(Config.String("OTEL_EXPORTER_OTLP_ENDPOINT")),
    serviceName: Config.String("OTEL_SERVICE_NAME").pipe(Config.withDefault(serviceName)),
    tracesHeaders: Config.option(Config.String("OTEL_EXPORTER_OTLP_TRACES_HEADERS")),
    headers: Config.option(Config.String("OTEL_EXPORTER_OTLP_HEADERS")),
    scheduleDelay: Config.option(
      Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), "OTEL_BSP_SCHEDULE_DELAY")
    )
  }).pipe(Config.map((env): Option.Option<OtlpOptions> => {
    const exporters = Option.map(env.exporters, (list) => list.split(",").map((s) => s.trim().toLowerCase()))
    if (env.disabled || Option.exists(exporters, (list) => !list.includes("otlp"))) return Option.none()
    const url = Option.orElse(
      Option.filter(Option.map(env.tracesEndpoint, (s) => s.trim()), (s) => s !== ""),
      () => Option.map(Option.filter(Option.map(env.endpoint, (s) => s.trim()), (s) => s !== ""), tracesUrl)
    )
    if (Option.isNone(url)) return Option.none()
    const headers = Option.orElse(env.tracesHeaders, () => env.headers)
    return Option.some({
      url: url.value,
      serviceName: env.serviceName.trim() === "" ? serviceName : env.serviceName,
      ...(Option.isSome(headers) ? { headers: parseHeaders(headers.value) } : {}),
      ...(Option.isSome(env.scheduleDelay) ? { exportIntervalMillis: env.scheduleDelay.value } : {})
    })
  }))

/**
 * Effect's OTLP exporter configured by the standard environment variables (`otlpConfig`), for the
 * lifetime of the layer: spans of every fiber run with it are exported. Without
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) it does nothing, and the
 * library makes no spans. `serviceName` is the `service.name` unless `OTEL_SERVICE_NAME` is set.
 */
export const layerOtlpFromEnv = (options: { readonly serviceName: string }): Layer.Layer<never, Config.ConfigError> =>
  Layer.unwrap(Effect.gen(function*() {
    const settings = yield* otlpConfig(options.serviceName)
    return Option.isSome(settings) ? layerOtlp(settings.value) : Layer.empty
  }))
