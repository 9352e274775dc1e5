/**
 * R10: every outcome of the runtime is a metric, named by Prometheus conventions (base units, `_total`
 * counters) and labelled only by bounded sets: the producer, the consumer, the subscribed entity (`unknown`
 * for anything else), the outcome and the store — never an entity id or a message id. Counters and the
 * apply latency are updated where things happen; the backlog gauges (outbox, parked events, dead letters,
 * in-flight deliveries) are refreshed by `Gauges.layer`, which polls the stores. Read them with
 * `Metric.value`, or serve them with `PrometheusEndpoint`.
 *
 * @since 0.1.0
 */
import { Effect, Metric } from "effect"

/** What a consumer did with a message. */
export type Outcome =
  | "applied"
  | "duplicate"
  | "stale"
  | "waiting"
  | "parked"
  | "woken"
  | "deadLettered"
  | "malformed"
  | "unsupportedVersion"
  | "forged"
  | "defect"
  | "failed"

/** Messages handled by consumers, by `outcome`, `entity` and `consumer`. */
export const consumerMessages = Metric.counter("entity_sync_consumer_messages_total", {
  description: "messages handled by sync consumers, by outcome",
  incremental: true
})

/** Events published by relays, by `producer`. */
export const relayPublished = Metric.counter("entity_sync_relay_published_total", {
  description: "outbox events published and confirmed by the broker",
  incremental: true
})

/** Failed publish attempts of relays, by `producer`. */
export const relayFailures = Metric.counter("entity_sync_relay_publish_failures_total", {
  description: "outbox events whose publish failed and was rescheduled",
  incremental: true
})

/**
 * Age in seconds of the oldest unpublished outbox event, by `producer` (0 when none waits): set by the
 * relay as it runs and by `Gauges.layer`, so that it keeps growing when the relay is stuck.
 */
export const relayLag = Metric.gauge("entity_sync_relay_lag_seconds", {
  description: "age of the oldest unpublished outbox event, in seconds"
})

/** Seconds from the owner's commit (occurredAt) to the consumer's apply, by `entity`. */
export const applyLatency = Metric.histogram("entity_sync_apply_latency_seconds", {
  description: "time from an event's occurrence at the owner to its apply at the consumer, in seconds",
  boundaries: Metric.exponentialBoundaries({ start: 0.001, factor: 2, count: 16 })
})

/** Unpublished outbox events, by `producer` (set by `Gauges.layer`). */
export const outboxUnpublished = Metric.gauge("entity_sync_outbox_unpublished_events", {
  description: "outbox events not yet published"
})

/** Events parked until their dependencies arrive, by `consumer` (set by `Gauges.layer`). */
export const parkedEvents = Metric.gauge("entity_sync_inbox_parked_events", {
  description: "events parked in the inbox until their dependencies arrive"
})

/** Seconds since the longest-parked event was first seen, by `consumer` (0 when none is parked). */
export const oldestParkedAge = Metric.gauge("entity_sync_inbox_oldest_parked_age_seconds", {
  description: "time since the longest-parked event was first seen, in seconds"
})

/** Where a consumer's dead letters are kept: its inbox (given up on) or the broker (rejected before the inbox). */
export type DeadLetterStore = "inbox" | "broker"

/** Dead letters of a consumer, by `consumer` and `store` (set by `Gauges.layer`). */
export const deadLetters = Metric.gauge("entity_sync_dead_letters", {
  description: "dead letters of a consumer, by store (inbox or broker)"
})

/** Deliveries a consumer is handling or holding right now, by `consumer` (set by `Gauges.layer`). */
export const inFlightDeliveries = Metric.gauge("entity_sync_consumer_in_flight_deliveries", {
  description: "deliveries taken by a consumer and not settled yet"
})

/** Sets a gauge's series for one set of labels. */
const setGauge = (gauge: Metric.Gauge<number>, labels: Readonly<Record<string, string>>, value: number) =>
  Metric.update(Metric.withAttributes(gauge, labels), value)

/** Records the outbox backlog of `producer`: its unpublished events and the age of the oldest, in milliseconds. */
export const recordOutboxBacklog = (producer: string, count: number, oldestAgeMillis: number): Effect.Effect<void> =>
  Effect.andThen(setGauge(outboxUnpublished, { producer }, count), recordRelayLag(producer, oldestAgeMillis))

/** Records the parked events of `consumer`: how many, and the age of the oldest, in milliseconds. */
export const recordParked = (consumer: string, count: number, oldestAgeMillis: number): Effect.Effect<void> =>
  Effect.andThen(
    setGauge(parkedEvents, { consumer }, count),
    setGauge(oldestParkedAge, { consumer }, oldestAgeMillis / 1_000)
  )

/** Records how many dead letters `consumer` has in `store`. */
export const recordDeadLetters = (consumer: string, store: DeadLetterStore, count: number): Effect.Effect<void> =>
  setGauge(deadLetters, { consumer, store }, count)

/** Records the deliveries `consumer` holds unsettled. */
export const recordInFlight = (consumer: string, count: number): Effect.Effect<void> =>
  setGauge(inFlightDeliveries, { consumer }, count)

// The attributed metrics of the hot paths, made once per attribute set: a metric computes its series key
// (a JSON encoding of its attributes) once per instance.
const outcomeCounters = new Map<string, Metric.Counter<number>>()
const publishedCounters = new Map<string, Metric.Counter<number>>()
const applyLatencies = new Map<string, Metric.Histogram<number>>()

const cached = <M>(cache: Map<string, M>, key: string, make: () => M): M => {
  const found = cache.get(key)
  if (found !== undefined) return found
  const made = make()
  cache.set(key, made)
  return made
}

const outcomeCounter = (consumer: string, entity: string, outcome: Outcome) =>
  cached(
    outcomeCounters,
    JSON.stringify([consumer, entity, outcome]),
    () => Metric.withAttributes(consumerMessages, { consumer, entity, outcome })
  )

/** Counts consumer outcomes (one by default). */
export const countOutcome = (consumer: string, entity: string, outcome: Outcome, n = 1): Effect.Effect<void> =>
  Metric.update(outcomeCounter(consumer, entity, outcome), n)

/** Counts events the relay of `producer` published (`relayPublished`). */
export const countPublished = (producer: string, n: number): Effect.Effect<void> =>
  Metric.update(cached(publishedCounters, producer, () => Metric.withAttributes(relayPublished, { producer })), n)

/** Records the apply latencies of events of `entity`, given in milliseconds (`applyLatency` is in seconds). */
export const recordApplyLatencies = (entity: string, millis: ReadonlyArray<number>): Effect.Effect<void> => {
  const histogram = cached(applyLatencies, entity, () => Metric.withAttributes(applyLatency, { entity }))
  return Effect.contextWith((context) =>
    Effect.sync(() => {
      for (const value of millis) histogram.updateUnsafe(value / 1_000, context)
    })
  )
}

/** Records the relay lag of `producer`, given in milliseconds (`relayLag` is in seconds). */
export const recordRelayLag = (producer: string, millis: number): Effect.Effect<void> =>
  Metric.update(Metric.withAttributes(relayLag, { producer }), millis / 1_000)

/** The count of one consumer outcome so far. */
export const outcomeCount = (consumer: string, entity: string, outcome: Outcome): Effect.Effect<number> =>
  Effect.map(Metric.value(outcomeCounter(consumer, entity, outcome)), (s) => s.count)
