/**
 * Settings of the RabbitMQ broker adapter, as plain values (`RabbitOptions`) or read from the environment
 * with Effect `Config` (`config`).
 *
 * | key | default | meaning |
 * |---|---|---|
 * | `AMQP_URL` | (required) | `amqp://` or `amqps://` URL, `Redacted` |
 * | `SYNC_EXCHANGE` | `sync.events` | durable topic exchange the events are published to |
 * | `SYNC_DEAD_EXCHANGE` | `sync.dead` | durable direct exchange RabbitMQ dead-letters through |
 * | `AMQP_PREFETCH` | `200` | unsettled deliveries per subscription, unless `subscribe` says otherwise |
 * | `AMQP_PUBLISH_WINDOW` | `1000` | publishes awaiting their confirm at once, over all `publish` calls |
 * | `AMQP_DELIVERY_LIMIT` | `20` | `x-delivery-limit` of the quorum queues |
 * | `AMQP_HEARTBEAT` | `30` | heartbeat in seconds (0 turns it off); a `heartbeat` in the URL wins |
 * | `AMQP_CONNECTION_NAME` | `entity-sync` | connection name shown by the management tools |
 *
 * @since 0.1.0
 */
import { Config, Redacted } from "effect"

/** Settings of the RabbitMQ broker adapter; everything but `url` has a default. */
export interface RabbitOptions {
  /** `amqp://user:pass@host:5672/vhost` or `amqps://…`. */
  readonly url: string | Redacted.Redacted<string>
  /** The topic exchange events are published to (default `sync.events`). */
  readonly exchange?: string
  /** The direct exchange RabbitMQ dead-letters through, routed by queue name (default `sync.dead`). */
  readonly deadLetterExchange?: string
  /** Unsettled deliveries per subscription when `subscribe` gives no `prefetch` (default 200). */
  readonly prefetch?: number
  /** Most publishes awaiting their confirm at once, over all `publish` calls (default 1000). */
  readonly publishWindow?: number
  /** `x-delivery-limit` of the quorum queues (default 20; RabbitMQ 3.x has no default). */
  readonly deliveryLimit?: number
  /** Heartbeat in seconds, 0 for none (default 30); a `heartbeat` query parameter in `url` wins. */
  readonly heartbeatSeconds?: number
  /** The `connection_name` client property, shown by `rabbitmqctl` and the management UI (default `entity-sync`). */
  readonly connectionName?: string
}

/** The settings with every default filled in. */
export interface ResolvedRabbitOptions {
  readonly url: Redacted.Redacted<string>
  readonly exchange: string
  readonly deadLetterExchange: string
  readonly prefetch: number
  readonly publishWindow: number
  readonly deliveryLimit: number
  readonly heartbeatSeconds: number
  readonly connectionName: string
}

/** The defaults of every optional setting. */
export const defaults = {
  exchange: "sync.events",
  deadLetterExchange: "sync.dead",
  prefetch: 200,
  publishWindow: 1000,
  deliveryLimit: 20,
  heartbeatSeconds: 30,
  connectionName: "entity-sync"
} as const

/** Fills in the defaults (counts below 1 become 1). */
export const resolve = (options: RabbitOptions): ResolvedRabbitOptions => ({
  url: typeof options.url === "string" ? Redacted.make(options.url) : options.url,
  exchange: options.exchange ?? defaults.exchange,
  deadLetterExchange: options.deadLetterExchange ?? defaults.deadLetterExchange,
  prefetch: Math.max(1, options.prefetch ?? defaults.prefetch),
  publishWindow: Math.max(1, options.publishWindow ?? defaults.publishWindow),
  deliveryLimit: Math.max(1, options.deliveryLimit ?? defaults.deliveryLimit),
  heartbeatSeconds: Math.max(0, options.heartbeatSeconds ?? defaults.heartbeatSeconds),
  connectionName: options.connectionName ?? defaults.connectionName
})

/** The settings read from the environment (keys and defaults in the module comment). */
export const config: Config.Config<RabbitOptions> = Config.all({
  url: Config.Redacted("AMQP_URL"),
  exchange: Config.String("SYNC_EXCHANGE").pipe(Config.withDefault(defaults.exchange)),
  deadLetterExchange: Config.String("SYNC_DEAD_EXCHANGE").pipe(Config.withDefault(defaults.deadLetterExchange)),
  prefetch: Config.Int("AMQP_PREFETCH").pipe(Config.withDefault(defaults.prefetch)),
  publishWindow: Config.Int("AMQP_PUBLISH_WINDOW").pipe(Config.withDefault(defaults.publishWindow)),
  deliveryLimit: Config.Int("AMQP_DELIVERY_LIMIT").pipe(Config.withDefault(defaults.deliveryLimit)),
  heartbeatSeconds: Config.Int("AMQP_HEARTBEAT").pipe(Config.withDefault(defaults.heartbeatSeconds)),
  connectionName: Config.String("AMQP_CONNECTION_NAME").pipe(Config.withDefault(defaults.connectionName))
})

/** The URL amqplib connects to: `url` with `heartbeat` added unless it already has one. */
export const connectUrl = (options: ResolvedRabbitOptions): string => {
  const raw = Redacted.value(options.url)
  try {
    const url = new URL(raw)
    if (!url.searchParams.has("heartbeat")) url.searchParams.set("heartbeat", String(options.heartbeatSeconds))
    return url.toString()
  } catch {
    return raw // amqplib reports the bad URL when it connects
  }
}
