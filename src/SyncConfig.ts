/**
 * The runtime's settings read with Effect `Config` (environment variables by default), with their
 * defaults. `Relay.layerConfig` and `SyncConsumer.layerConfig` use them; the PostgreSQL and RabbitMQ layers
 * read their own connection settings.
 *
 * @since 0.1.0
 */
import { Config, Duration, Schedule, Schema } from "effect"
import type { RetrySchedule } from "./RetrySchedule.ts"
import * as Signature from "./Signature.ts"

const positiveInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), name).pipe(Config.withDefault(fallback))

const duration = (name: string, fallback: Duration.Input) =>
  Config.Duration(name).pipe(Config.withDefault(Duration.fromInputUnsafe(fallback)))

/** The broker logins allowed to publish each owner's events, read from JSON text. */
const ProducerLogins = Schema.fromJsonString(
  Schema.Record(Schema.String, Schema.Array(Schema.String.check(Schema.isMinLength(1))))
)

/**
 * The relay's settings:
 *
 * * `SYNC_RELAY_BATCH_SIZE` (default 100): rows claimed and published per batch;
 * * `SYNC_RELAY_BATCHES_IN_FLIGHT` (default 8): batches awaiting their broker confirms at once;
 * * `SYNC_RELAY_POLL_INTERVAL` (default `1 second`): polling when no commit woke the relay;
 * * `SYNC_OUTBOX_RETENTION` (default `7 days`): how long published rows stay for replays (R9);
 * * `SYNC_RELAY_RETRY_MAX_DELAY` (default `30 seconds`): the longest backoff of a failed publish.
 */
export const relay = Config.all({
  batchSize: positiveInt("SYNC_RELAY_BATCH_SIZE", 100),
  batchesInFlight: positiveInt("SYNC_RELAY_BATCHES_IN_FLIGHT", 8),
  pollInterval: duration("SYNC_RELAY_POLL_INTERVAL", "1 second"),
  retention: duration("SYNC_OUTBOX_RETENTION", "7 days"),
  retryMaxDelay: duration("SYNC_RELAY_RETRY_MAX_DELAY", "30 seconds")
})

/**
 * The consumer's settings:
 *
 * * `SYNC_CONSUMER_BATCH_SIZE` (default 250) and `SYNC_CONSUMER_BATCH_WINDOW` (default `5 millis`);
 * * `SYNC_PREFETCH` (default 500): unsettled deliveries held from the broker;
 * * `SYNC_DEPENDENCY_RETRY_BASE` (default `200 millis`), `SYNC_DEPENDENCY_RETRY_MAX_DELAY` (default
 *   `5 minutes`) and `SYNC_DEPENDENCY_RETRY_BUDGET` (default `24 hours`): the dependency schedule (R5),
 *   exponential from the base, capped, until the budget is spent;
 * * `SYNC_IN_PROCESS_RETRIES` (default 3): retries before an event is parked in the inbox;
 * * `SYNC_MAX_MESSAGE_BYTES` (default 262144): the largest accepted body (R6);
 * * `SYNC_MAX_JSON_DEPTH` (default 32) and `SYNC_MAX_JSON_KEYS` (default 10000): the deepest nesting and
 *   the most object keys accepted in a body (R6);
 * * `SYNC_PRODUCER_LOGINS` (default none): the broker logins allowed to publish each owner's events, as
 *   JSON, e.g. `{"accounts":["accounts","accounts-relay"]}`; an owner not named may publish under its
 *   own service name only (R11);
 * * `SYNC_VERIFYING_KEYS` (default none): the public keys of owners that sign their events (see
 *   `Signature.verifyingKeysConfig`; R11);
 * * `SYNC_HOLD_LIMIT` (default `10 minutes`): how long deliveries are held during a database outage
 *   before they are given back to the broker without spending a delivery attempt (R12);
 * * `SYNC_INBOX_RETENTION` (default `7 days`): how long dedupe records are kept.
 */
export const consumer = Config.all({
  batchSize: positiveInt("SYNC_CONSUMER_BATCH_SIZE", 250),
  batchWindow: duration("SYNC_CONSUMER_BATCH_WINDOW", "5 millis"),
  prefetch: positiveInt("SYNC_PREFETCH", 500),
  retryBase: duration("SYNC_DEPENDENCY_RETRY_BASE", "200 millis"),
  retryMaxDelay: duration("SYNC_DEPENDENCY_RETRY_MAX_DELAY", "5 minutes"),
  retryBudget: duration("SYNC_DEPENDENCY_RETRY_BUDGET", "24 hours"),
  inProcessRetries: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), "SYNC_IN_PROCESS_RETRIES").pipe(
    Config.withDefault(3)
  ),
  maxBytes: positiveInt("SYNC_MAX_MESSAGE_BYTES", 256 * 1024),
  maxDepth: positiveInt("SYNC_MAX_JSON_DEPTH", 32),
  maxKeys: positiveInt("SYNC_MAX_JSON_KEYS", 10_000),
  producers: Config.schema(ProducerLogins, "SYNC_PRODUCER_LOGINS").pipe(Config.withDefault({})),
  verifyingKeys: Signature.verifyingKeysConfig,
  holdLimit: duration("SYNC_HOLD_LIMIT", "10 minutes"),
  retention: duration("SYNC_INBOX_RETENTION", "7 days")
})

/** Exponential backoff from `base`, each delay at most `maxDelay`, until `budget` has elapsed (if given). */
export const backoff = (options: {
  readonly base: Duration.Input
  readonly maxDelay: Duration.Input
  readonly budget?: Duration.Input
}): RetrySchedule => {
  const capped = Schedule.min([Schedule.exponential(options.base, 2), Schedule.spaced(options.maxDelay)])
  return options.budget === undefined ? capped : capped.pipe(Schedule.upTo({ duration: options.budget }))
}
