/**
 * The runtime's settings: the relay's and the consumer's defaults, the environment variables that override
 * them (read with Effect `Config`), and the options they make for `Relay.layer` and `SyncConsumer.layer`.
 * The PostgreSQL and RabbitMQ layers read their own connection settings.
 *
 * @since 0.1.0
 */
import { Config, Duration, Option, Schedule, Schema } from "effect"
import { maxLanes } from "./Broker.ts"
import * as Envelope from "./Envelope.ts"
import type { RelayOptions } from "./Relay.ts"
import type { RetrySchedule } from "./RetrySchedule.ts"
import * as Signature from "./Signature.ts"
import type { ConsumerOptions } from "./SyncConsumer.ts"

/**
 * The relay's defaults: what `Relay` takes for an option not given, and `relay` for a variable not set.
 * The publish backoff is exponential from `retryBase` (not a setting), each delay at most `retryMaxDelay`;
 * the outage backoff likewise from `outageBase`, at most `outageMaxDelay`.
 */
export const relayDefaults = {
  batchSize: 100,
  batchesInFlight: 8,
  pollInterval: "1 second",
  retention: "7 days",
  retryBase: "100 millis",
  retryMaxDelay: "30 seconds",
  pruneInterval: "1 hour",
  outageBase: "100 millis",
  outageMaxDelay: "10 seconds"
} as const satisfies Readonly<Record<string, number | Duration.Input>>

/**
 * The consumer's defaults: what `SyncConsumer` takes for an option not given, and `consumer` for a variable
 * not set. The dependency schedule (R5) is exponential from `retryBase`, each delay at most `retryMaxDelay`,
 * until `retryBudget` is spent. The body limits are `Envelope`'s.
 */
export const consumerDefaults = {
  batchSize: 250,
  batchWindow: "5 millis",
  prefetch: 500,
  retryBase: "200 millis",
  retryMaxDelay: "5 minutes",
  retryBudget: "24 hours",
  inProcessRetries: 3,
  maxBytes: Envelope.defaultMaxBytes,
  maxDepth: Envelope.defaultMaxDepth,
  maxKeys: Envelope.defaultMaxKeys,
  holdLimit: "10 minutes",
  retention: "7 days",
  concurrency: 16,
  pollInterval: "5 seconds",
  parkedLease: "30 seconds"
} as const satisfies Readonly<Record<string, number | Duration.Input>>

/** Exponential backoff from `base`, each delay at most `maxDelay`, until `budget` has elapsed (if given). */
export const backoff = (options: {
  readonly base: Duration.Input
  readonly maxDelay: Duration.Input
  readonly budget?: Duration.Input
}): RetrySchedule => {
  const capped = Schedule.min([Schedule.exponential(options.base, 2), Schedule.spaced(options.maxDelay)])
  return options.budget === undefined ? capped : capped.pipe(Schedule.upTo({ duration: options.budget }))
}

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
 * * `SYNC_RELAY_RETRY_MAX_DELAY` (default `30 seconds`): the longest backoff of a failed publish;
 * * `SYNC_RELAY_ORDERED_BY_ENTITY` (default `false`): publish each entity's events in version order across
 *   relays (`RelayOptions.orderedByEntity`; for consumers with ordered lanes).
 *
 * `relayOptions` adds the signing key: `SYNC_SIGNING_KEY` and `SYNC_SIGNING_KEY_ID` (default none: no
 * signatures; see `Signature.signingKeyConfig`; R11).
 */
export const relay = Config.all({
  batchSize: positiveInt("SYNC_RELAY_BATCH_SIZE", relayDefaults.batchSize),
  batchesInFlight: positiveInt("SYNC_RELAY_BATCHES_IN_FLIGHT", relayDefaults.batchesInFlight),
  pollInterval: duration("SYNC_RELAY_POLL_INTERVAL", relayDefaults.pollInterval),
  retention: duration("SYNC_OUTBOX_RETENTION", relayDefaults.retention),
  retryMaxDelay: duration("SYNC_RELAY_RETRY_MAX_DELAY", relayDefaults.retryMaxDelay),
  orderedByEntity: Config.Boolean("SYNC_RELAY_ORDERED_BY_ENTITY").pipe(Config.withDefault(false))
})

/** The options of `Relay.layer` that the environment sets (see `relayOptions`). */
export type RelaySettings =
  & Required<
    Pick<RelayOptions, "batchSize" | "batchesInFlight" | "pollInterval" | "retention" | "retry" | "orderedByEntity">
  >
  & Pick<RelayOptions, "signing">

/** The publish backoff of the relay whose longest delay is `maxDelay`. */
export const relayRetry = (maxDelay: Duration.Input): RetrySchedule =>
  backoff({ base: relayDefaults.retryBase, maxDelay })

/**
 * The relay's options from the environment (`relay`, and the signing key from `Signature.signingKeyConfig`),
 * as `Relay.layer` takes them: what `Relay.layerConfig` starts the relay with, and the demo's accounts
 * service too. Give it the `producer`; spread other options over it to override them.
 */
export const relayOptions: Config.Config<RelaySettings> = Config.all({
  settings: relay,
  signing: Signature.signingKeyConfig
}).pipe(Config.map(({ settings, signing }): RelaySettings => ({
  batchSize: settings.batchSize,
  batchesInFlight: settings.batchesInFlight,
  pollInterval: settings.pollInterval,
  retention: settings.retention,
  retry: relayRetry(settings.retryMaxDelay),
  orderedByEntity: settings.orderedByEntity,
  ...(Option.isSome(signing) ? { signing: signing.value } : {})
})))

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
 * * `SYNC_INBOX_RETENTION` (default `7 days`): how long dedupe records are kept;
 * * `SYNC_CONSUMER_LANES` (default none: one queue, competing instances): ordered lanes, from 1 to
 *   `Broker.maxLanes` (`ConsumerOptions.lanes`; the same on every instance of the service);
 * * `SYNC_PARKED_LEASE` (default `30 seconds`): how long an instance's claim of parked events keeps them
 *   from the other instances.
 */
export const consumer = Config.all({
  batchSize: positiveInt("SYNC_CONSUMER_BATCH_SIZE", consumerDefaults.batchSize),
  batchWindow: duration("SYNC_CONSUMER_BATCH_WINDOW", consumerDefaults.batchWindow),
  prefetch: positiveInt("SYNC_PREFETCH", consumerDefaults.prefetch),
  retryBase: duration("SYNC_DEPENDENCY_RETRY_BASE", consumerDefaults.retryBase),
  retryMaxDelay: duration("SYNC_DEPENDENCY_RETRY_MAX_DELAY", consumerDefaults.retryMaxDelay),
  retryBudget: duration("SYNC_DEPENDENCY_RETRY_BUDGET", consumerDefaults.retryBudget),
  inProcessRetries: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), "SYNC_IN_PROCESS_RETRIES").pipe(
    Config.withDefault(consumerDefaults.inProcessRetries)
  ),
  maxBytes: positiveInt("SYNC_MAX_MESSAGE_BYTES", consumerDefaults.maxBytes),
  maxDepth: positiveInt("SYNC_MAX_JSON_DEPTH", consumerDefaults.maxDepth),
  maxKeys: positiveInt("SYNC_MAX_JSON_KEYS", consumerDefaults.maxKeys),
  producers: Config.schema(ProducerLogins, "SYNC_PRODUCER_LOGINS").pipe(Config.withDefault({})),
  verifyingKeys: Signature.verifyingKeysConfig,
  holdLimit: duration("SYNC_HOLD_LIMIT", consumerDefaults.holdLimit),
  retention: duration("SYNC_INBOX_RETENTION", consumerDefaults.retention),
  lanes: Config.option(
    Config.schema(
      Schema.Int.check(Schema.isGreaterThanOrEqualTo(1), Schema.isLessThanOrEqualTo(maxLanes)),
      "SYNC_CONSUMER_LANES"
    )
  ),
  parkedLease: duration("SYNC_PARKED_LEASE", consumerDefaults.parkedLease)
})

/** The options of `SyncConsumer.layer` that the environment sets (see `consumerOptions`). */
export type ConsumerSettings =
  & Required<
    Pick<
      ConsumerOptions<never>,
      | "batchSize"
      | "batchWindow"
      | "prefetch"
      | "dependencyRetry"
      | "inProcessRetries"
      | "maxBytes"
      | "maxDepth"
      | "maxKeys"
      | "producers"
      | "verifyingKeys"
      | "holdLimit"
      | "retention"
      | "parkedLease"
    >
  >
  & Pick<ConsumerOptions<never>, "lanes">

/**
 * The consumer's options from the environment (`consumer`), as `SyncConsumer.layer` takes them: what
 * `SyncConsumer.layerConfig` starts the consumer with, and the demo's directory service too. Give it the
 * `service` and `subscriptions`; spread other options over it to override them.
 */
export const consumerOptions: Config.Config<ConsumerSettings> = Config.map(consumer, (settings): ConsumerSettings => ({
  batchSize: settings.batchSize,
  batchWindow: settings.batchWindow,
  prefetch: settings.prefetch,
  dependencyRetry: backoff({
    base: settings.retryBase,
    maxDelay: settings.retryMaxDelay,
    budget: settings.retryBudget
  }),
  inProcessRetries: settings.inProcessRetries,
  maxBytes: settings.maxBytes,
  maxDepth: settings.maxDepth,
  maxKeys: settings.maxKeys,
  producers: settings.producers,
  verifyingKeys: settings.verifyingKeys,
  holdLimit: settings.holdLimit,
  retention: settings.retention,
  parkedLease: settings.parkedLease,
  ...(Option.isSome(settings.lanes) ? { lanes: settings.lanes.value } : {})
}))
