/**
 * The relay: claims due outbox rows, publishes them as one confirmed batch and marks them published
 * (R3). It wakes when events are committed and polls as a fallback; a failed publish is rescheduled
 * per row on a `Schedule`, so a broker outage backs off and loses nothing.
 *
 * @since 0.1.0
 */
import { Clock, type Config, Duration, Effect, Fiber, Layer, Metric, Option, Schedule } from "effect"
import type { SqlError } from "effect/sql"
import { Broker, type OutgoingMessage } from "./Broker.ts"
import * as Envelope from "./Envelope.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox, type OutboxRow } from "./Outbox.ts"
import * as RetrySchedule from "./RetrySchedule.ts"
import * as Supervisor from "./Supervisor.ts"
import * as SyncConfig from "./SyncConfig.ts"

/** Relay settings. */
export interface RelayOptions {
  /** The producing service, for metrics and logs. */
  readonly producer: string
  /** Rows claimed and published per batch (default 100). */
  readonly batchSize?: number
  /** How often to look for due rows when no commit woke the relay (default 1 second). */
  readonly pollInterval?: Duration.Input
  /** Backoff of a row whose publish failed, by its attempts (default exponential from 100 ms, at most 30 s). */
  readonly retry?: RetrySchedule.RetrySchedule
  /** How long published rows stay in the outbox for replays (R9; default 7 days). */
  readonly retention?: Duration.Input
  /** How often published rows past the retention are deleted (default 1 hour). */
  readonly pruneInterval?: Duration.Input
}

/** The default publish backoff: 100 ms doubling, capped at 30 s, never giving up. */
export const defaultRetry: RetrySchedule.RetrySchedule = SyncConfig.backoff({ base: "100 millis", maxDelay: "30 seconds" })

/** The broker message of an outbox row (DESIGN §3). */
export const toMessage = (row: OutboxRow): OutgoingMessage => ({
  messageId: row.envelope.messageId,
  routingKey: Envelope.routingKey(row.envelope),
  type: Envelope.messageType(row.envelope),
  body: Envelope.encode(row.envelope),
  headers: row.envelope.traceparent !== undefined ? { traceparent: row.envelope.traceparent } : {}
})

/**
 * Claims and publishes one batch; returns how many rows were claimed. Rows the broker did not take (it was
 * unavailable, or nothing is bound to their routing key) are rescheduled on the retry schedule; that is
 * not an error of the relay.
 */
export const publishBatch = (options: RelayOptions): Effect.Effect<number, SqlError.SqlError, Outbox | Broker> =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const broker = yield* Broker
    const rows = yield* outbox.claim(options.batchSize ?? 100)
    if (rows.length === 0) return 0
    const failure = yield* broker.publish(rows.map(toMessage)).pipe(
      Effect.as(null),
      Effect.catchTags({
        BrokerUnavailable: (error) => Effect.succeed({ rows, error: error.message }),
        PublishRejected: (error) => {
          const rejected = new Set(error.messageIds)
          return Effect.succeed({ rows: rows.filter((row) => rejected.has(row.envelope.messageId)), error: error.message })
        }
      })
    )
    const failed = new Set(failure?.rows.map((row) => row.seq))
    const published = rows.filter((row) => !failed.has(row.seq)).map((row) => row.seq)
    if (published.length > 0) {
      yield* outbox.markPublished(published)
      yield* Metric.update(Metric.withAttributes(Metrics.relayPublished, { producer: options.producer }), published.length)
    }
    if (failure !== null && failure.rows.length > 0) yield* reschedule(options, failure.rows, failure.error)
    return rows.length
  })

const reschedule = (options: RelayOptions, rows: ReadonlyArray<OutboxRow>, error: string) =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const now = yield* Clock.currentTimeMillis
    const attempts = Math.max(...rows.map((row) => row.attempts)) + 1
    const delay = yield* RetrySchedule.delayAfter(options.retry ?? defaultRetry, attempts)
    const millis = Option.match(delay, { onNone: () => 30_000, onSome: Duration.toMillis })
    yield* outbox.markFailed(rows.map((row) => row.seq), { error, nextAttemptAt: now + millis })
    yield* Metric.update(Metric.withAttributes(Metrics.relayFailures, { producer: options.producer }), rows.length)
    yield* Effect.logWarning("relay: publish failed, rescheduled", {
      producer: options.producer,
      events: rows.length,
      attempts,
      retryInMillis: millis,
      error
    })
  })

/** Publishes until no row is due. Returns how many rows were claimed in all. */
export const drain = (options: RelayOptions): Effect.Effect<number, SqlError.SqlError, Outbox | Broker> =>
  Effect.gen(function*() {
    let total = 0
    while (true) {
      const n = yield* publishBatch(options)
      total += n
      if (n === 0) return total
    }
  })

const recordLag = (producer: string) =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const { oldestCreatedAt } = yield* outbox.pending
    const now = yield* Clock.currentTimeMillis
    yield* Metric.update(
      Metric.withAttributes(Metrics.relayLag, { producer }),
      oldestCreatedAt === null ? 0 : now - oldestCreatedAt
    )
  })

/** Runs the relay forever: publish what is due, then wait for a commit or the poll interval. */
export const run = (options: RelayOptions): Effect.Effect<never, SqlError.SqlError, Outbox | Broker> =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const batchSize = options.batchSize ?? 100
    const pollInterval = Duration.fromInputUnsafe(options.pollInterval ?? "1 second")
    while (true) {
      const woken = yield* Effect.forkChild(outbox.awaitAppended, { startImmediately: true })
      let claimed = batchSize
      while (claimed === batchSize) claimed = yield* publishBatch(options)
      yield* recordLag(options.producer)
      yield* Fiber.join(woken).pipe(Effect.timeoutOption(pollInterval))
      yield* Fiber.interrupt(woken)
    }
  })

/** Deletes published rows older than the retention (R9); returns how many. */
export const prune = (options: RelayOptions): Effect.Effect<number, SqlError.SqlError, Outbox> =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const now = yield* Clock.currentTimeMillis
    const retention = Duration.toMillis(Duration.fromInputUnsafe(options.retention ?? "7 days"))
    return yield* outbox.prune(now - retention)
  })

const restartable = <R>(name: string, effect: Effect.Effect<unknown, SqlError.SqlError, R>) =>
  Effect.forkScoped(Supervisor.restarting(`relay: ${name}`, effect))

/**
 * A relay running in the background for the lifetime of the layer, with its retention clean-up; both
 * restart after database errors.
 */
export const layer = (options: RelayOptions): Layer.Layer<never, never, Outbox | Broker> =>
  Layer.effectDiscard(Effect.gen(function*() {
    yield* restartable("publishing", run(options))
    yield* restartable(
      "retention clean-up",
      prune(options).pipe(Effect.repeat(Schedule.spaced(options.pruneInterval ?? "1 hour")))
    )
  }))

/** `layer` with its settings read from `SyncConfig.relay` (environment variables, documented there). */
export const layerConfig = (options: { readonly producer: string }): Layer.Layer<never, Config.ConfigError, Outbox | Broker> =>
  Layer.unwrap(Effect.map(SyncConfig.relay, (settings) =>
    layer({
      producer: options.producer,
      batchSize: settings.batchSize,
      pollInterval: settings.pollInterval,
      retention: settings.retention,
      retry: SyncConfig.backoff({ base: "100 millis", maxDelay: settings.retryMaxDelay })
    })))
