/**
 * R10: the backlog gauges of `Metrics`, kept fresh by polling the stores every few seconds — the outbox
 * backlog of a producer and the age of its oldest unpublished event; the parked events of a consumer and the
 * age of the oldest; its dead letters in the inbox and in the broker; its in-flight deliveries. Each read is
 * bounded by a timeout; a failed read leaves its gauges at their last value and is logged (when it starts
 * failing and when it answers again), it never stops the polling nor the service.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, Layer, Schedule } from "effect"
import { Broker } from "./Broker.ts"
import { Inbox } from "./Inbox.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox } from "./Outbox.ts"
import { SyncConsumer } from "./SyncConsumer.ts"
import * as Tracing from "./Tracing.ts"

/** Which gauges to keep fresh: a producer's, a consumer's (or both), and how often. */
export interface GaugeOptions {
  /** The producer whose outbox backlog is read (its service needs an `Outbox`). */
  readonly producer?: string
  /** The consumer whose inbox and dead letters are read (its service needs an `Inbox` and the `Broker`). */
  readonly consumer?: string
  /** How often the stores are read (default 5 seconds). */
  readonly interval?: Duration.Input
  /** How long one read may take before it counts as failed (default 5 seconds). */
  readonly readTimeout?: Duration.Input
}

/** The default of `GaugeOptions.interval`. */
export const defaultInterval: Duration.Input = "5 seconds"

/** The default of `GaugeOptions.readTimeout`. */
export const defaultReadTimeout: Duration.Input = "5 seconds"

/** Options with a producer. */
export type ProducerGaugeOptions = GaugeOptions & { readonly producer: string }

/** Options with a consumer. */
export type ConsumerGaugeOptions = GaugeOptions & { readonly consumer: string }

const ageOf = (now: number, since: number | null) => (since === null ? 0 : Math.max(0, now - since))

/** Reads the outbox of `producer` once and records its backlog gauges. */
export const refreshProducer = (producer: string) =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const pending = yield* outbox.pending
    const now = yield* Clock.currentTimeMillis
    yield* Metrics.recordOutboxBacklog(producer, pending.count, ageOf(now, pending.oldestCreatedAt))
  })

/** Reads the inbox of `consumer` once and records its parked and dead-letter gauges (`store="inbox"`). */
export const refreshInbox = (consumer: string) =>
  Effect.gen(function*() {
    const inbox = yield* Inbox
    const stats = yield* inbox.stats(consumer)
    const now = yield* Clock.currentTimeMillis
    yield* Metrics.recordParked(consumer, stats.waiting, ageOf(now, stats.oldestWaitingSince))
    yield* Metrics.recordDeadLetters(consumer, "inbox", stats.dead)
  })

/** Reads the broker's dead letters of `consumer`'s queue (`<consumer>.sync`) once (`store="broker"`). */
export const refreshBrokerDeadLetters = (consumer: string) =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const page = yield* broker.deadLetters(`${consumer}.sync`, { limit: 0 })
    yield* Metrics.recordDeadLetters(consumer, "broker", page.total)
  })

/** Records the in-flight deliveries of `consumer` when its `SyncConsumer` runs in this context (0 otherwise). */
export const refreshInFlight = (consumer: string): Effect.Effect<void> =>
  Effect.flatMap(
    Effect.serviceOption(SyncConsumer),
    (running) =>
      running._tag === "Some" && running.value.service === consumer
        ? Effect.flatMap(running.value.inFlight, (n) => Metrics.recordInFlight(consumer, n))
        : Metrics.recordInFlight(consumer, 0)
  )

/** One read of the poll: its name for the logs, and the effect. */
interface Read<R> {
  readonly name: string
  readonly run: Effect.Effect<void, unknown, R>
}

/**
 * Runs the reads every `interval`, forever: each read on its own timeout; a failure is logged as a warning
 * when the read starts failing and as information when it answers again, never more often.
 */
const poll = <R>(reads: ReadonlyArray<Read<R>>, options: GaugeOptions): Effect.Effect<never, never, R> =>
  Effect.gen(function*() {
    const timeout = Duration.fromInputUnsafe(options.readTimeout ?? defaultReadTimeout)
    const failing = new Set<string>()
    const once = Effect.forEach(reads, (read) =>
      read.run.pipe(
        Effect.timeout(timeout),
        Effect.matchCauseEffect({
          onSuccess: () =>
            failing.delete(read.name)
              ? Effect.logInfo(`metrics: the ${read.name} answers again; its gauges are fresh`)
              : Effect.void,
          onFailure: (cause) => {
            if (failing.has(read.name)) return Effect.logDebug(`metrics: the ${read.name} still fails`, cause)
            failing.add(read.name)
            return Effect.logWarning(`metrics: cannot read the ${read.name}; its gauges keep their last value`, cause)
          }
        })
      ), { discard: true })
    return yield* Effect.repeat(once, Schedule.spaced(options.interval ?? defaultInterval)).pipe(
      Effect.andThen(Effect.never)
    )
  })

const readsOf = (options: GaugeOptions): ReadonlyArray<Read<Outbox | Inbox | Broker>> => [
  ...(options.producer === undefined ? [] : [{
    name: `outbox of ${options.producer}`,
    run: refreshProducer(options.producer)
  }]),
  ...(options.consumer === undefined ? [] : [
    { name: `inbox of ${options.consumer}`, run: refreshInbox(options.consumer) },
    { name: `broker's dead letters of ${options.consumer}`, run: refreshBrokerDeadLetters(options.consumer) },
    { name: `in-flight deliveries of ${options.consumer}`, run: refreshInFlight(options.consumer) }
  ])
]

/**
 * Keeps the backlog gauges of a producer and/or a consumer fresh for the lifetime of the layer: the stores
 * are read at once, then every `interval` (see the module's description). The gauges go to the
 * `Metric.MetricRegistry` of the context the layer is built in.
 */
export function layer(
  options: ProducerGaugeOptions & ConsumerGaugeOptions
): Layer.Layer<never, never, Outbox | Inbox | Broker>
export function layer(options: ProducerGaugeOptions): Layer.Layer<never, never, Outbox>
export function layer(options: ConsumerGaugeOptions): Layer.Layer<never, never, Inbox | Broker>
export function layer(options: GaugeOptions): Layer.Layer<never, never, Outbox | Inbox | Broker> {
  // background reads: no trace of their queries (see `Tracing.untraced`)
  return Layer.effectDiscard(Effect.forkScoped(Tracing.untraced(poll(readsOf(options), options))))
}
