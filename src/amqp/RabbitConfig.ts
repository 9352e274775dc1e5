/**
 * Settings of the RabbitMQ broker adapter, as plain values (`RabbitOptions`) or read from the environment
 * with Effect `Config` (`config`).
 *
 * | key | default | meaning |
 * |---|---|---|
 * | `AMQP_URL` | (required) | `amqp://` or `amqps://` URL, `Redacted`; several nodes of one cluster as comma-separated URLs |
 * | `SYNC_EXCHANGE` | `sync.events` | durable topic exchange the events are published to |
 * | `SYNC_DEAD_EXCHANGE` | `sync.dead` | durable direct exchange dead letters go through, by queue name, to `<queue>.dead` |
 * | `SYNC_REPLAY_EXCHANGE` | `sync.replay` | durable direct exchange released and replayed messages go back through, by queue name |
 * | `AMQP_PREFETCH` | `200` | unsettled deliveries per subscription, unless `subscribe` says otherwise |
 * | `AMQP_PUBLISH_WINDOW` | `1000` | publishes awaiting their confirm at once, over all `publish` calls |
 * | `AMQP_DELIVERY_LIMIT` | `20` | `x-delivery-limit` of the quorum queues |
 * | `AMQP_HEARTBEAT` | `30` | heartbeat in seconds (0 turns it off); a `heartbeat` in the URL wins |
 * | `AMQP_RESPONSE_TIMEOUT` | `30` | seconds the broker may take to confirm a publish or to answer a new connection's declarations; past it the connection is given up and opened again |
 * | `AMQP_CONNECTION_NAME` | `entity-sync` | connection name shown by the management tools |
 * | `AMQP_MAX_DEAD_LETTER_BODY_BYTES` | `65536` | longest body a dead letter keeps; a longer one keeps this prefix |
 * | `AMQP_TOPOLOGY` | `declare` | `declare`: the adapter declares exchanges, queues and bindings; `passive`: it only checks that they exist |
 *
 * The adapter publishes every message with the AMQP `user-id` property set to the login of `AMQP_URL`
 * (`guest` when the URL names none), which RabbitMQ checks against the connection. Permissions a login
 * needs (RabbitMQ's configure / write / read regexes):
 *
 * | | configure | write | read |
 * |---|---|---|---|
 * | publishes only (a relay) | — | `sync.events` | — |
 * | consumes (`passive`) | — | `sync.events`, `sync.dead`, `sync.replay` | its queues `<queue>`, `<queue>.dead` |
 * | consumes (`declare`) | the three exchanges, its queues | the three exchanges, its queues (to bind them) | its queues, the three exchanges (to bind to them) |
 *
 * Never the default exchange (`amq.default`). With `passive`, an administrator declares the topology
 * (`RabbitBroker.topology` describes it, `RabbitBroker.declareTopology` declares it).
 *
 * Several nodes (a RabbitMQ cluster): `AMQP_URL=amqp://u:p@rabbit-1:5672,amqp://u:p@rabbit-2:5672,…` or
 * `urls: [...]`. The adapter connects to the first; when its connection is lost or an attempt fails, the next
 * attempt goes to the next URL in turn (round robin), on the same reconnect schedule, declaring the topology
 * again and resuming as on any reconnect. The URLs must use the same login (the `user-id` of the messages
 * is the first URL's login); a comma inside a URL must be percent-encoded (`%2C`). The quorum queues are
 * replicated by RabbitMQ; the dead queues (`<queue>.dead`) are classic queues that live on one node, so mirror
 * them with a policy (RabbitMQ 3.x: `rabbitmqctl set_policy --apply-to queues dead '\.dead$'
 * '{"ha-mode":"all","ha-sync-mode":"automatic"}'`): otherwise a consumer cannot declare its topology again,
 * and waits, while that node is down (`scripts/rabbitmq-cluster.sh` sets it).
 *
 * RabbitMQ's own bound on a message body is its `max_message_size` setting (`rabbitmq.conf`; 128 MiB by
 * default in 3.10). Set it to what the largest legitimate event needs, e.g. `max_message_size = 16777216`
 * (16 MiB): a larger publish is refused by the broker before any consumer buffers it. Below that bound a
 * consumer dead-letters a body larger than its own `maxBytes` as `TooLarge`, keeping only a prefix of
 * `AMQP_MAX_DEAD_LETTER_BODY_BYTES`.
 *
 * @since 0.1.0
 */
import { Config, Redacted } from "effect"

/** Settings of the RabbitMQ broker adapter; everything but `url` has a default. */
export interface RabbitOptions {
  /**
   * `amqp://user:pass@host:5672/vhost` or `amqps://…`; for a cluster, several URLs separated by commas,
   * tried in turn (see the module comment).
   */
  readonly url: string | Redacted.Redacted<string>
  /** More nodes of the same cluster, tried after those of `url`, in this order (each may hold commas too). */
  readonly urls?: ReadonlyArray<string | Redacted.Redacted<string>>
  /** The topic exchange events are published to (default `sync.events`). */
  readonly exchange?: string
  /** The direct exchange dead letters go through, routed by queue name to `<queue>.dead` (default `sync.dead`). */
  readonly deadLetterExchange?: string
  /** The direct exchange released and replayed messages go back through, routed by queue name (default `sync.replay`). */
  readonly replayExchange?: string
  /** Unsettled deliveries per subscription when `subscribe` gives no `prefetch` (default 200). */
  readonly prefetch?: number
  /** Most publishes awaiting their confirm at once, over all `publish` calls (default 1000). */
  readonly publishWindow?: number
  /** `x-delivery-limit` of the quorum queues (default 20; RabbitMQ 3.x has no default). */
  readonly deliveryLimit?: number
  /** Heartbeat in seconds, 0 for none (default 30); a `heartbeat` query parameter in `url` wins. */
  readonly heartbeatSeconds?: number
  /**
   * Seconds the broker may take to confirm a publish or to answer a new connection's declarations (default
   * 30): past it the publish fails with `BrokerUnavailable` (the relay publishes it again) and the connection
   * is given up and opened again. Bounds the stall when a confirm never comes, e.g. a quorum queue's leader
   * lost with the publish.
   */
  readonly responseTimeoutSeconds?: number
  /** The `connection_name` client property, shown by `rabbitmqctl` and the management UI (default `entity-sync`). */
  readonly connectionName?: string
  /** The longest body a dead letter keeps, in bytes (default 64 KiB); a longer one keeps only this prefix. */
  readonly maxDeadLetterBodyBytes?: number
  /**
   * `declare` (default): the adapter declares its exchanges, queues and bindings. `passive`: it only checks
   * that they exist and fails with `BrokerUnavailable` naming what an administrator must declare.
   */
  readonly topology?: Topology
}

/** Whether the adapter declares its topology or only checks it (see `RabbitOptions.topology`). */
export type Topology = "declare" | "passive"

/** The settings with every default filled in. */
export interface ResolvedRabbitOptions {
  /** The first node's URL. */
  readonly url: Redacted.Redacted<string>
  /** Every node's URL, `url` first, in the order reconnects go round them. */
  readonly urls: readonly [Redacted.Redacted<string>, ...Array<Redacted.Redacted<string>>]
  readonly exchange: string
  readonly deadLetterExchange: string
  readonly replayExchange: string
  readonly prefetch: number
  readonly publishWindow: number
  readonly deliveryLimit: number
  readonly heartbeatSeconds: number
  readonly responseTimeoutSeconds: number
  readonly connectionName: string
  readonly maxDeadLetterBodyBytes: number
  readonly topology: Topology
  /** The broker login of `url`: the `user-id` of every message the adapter publishes. */
  readonly login: string
}

/** The defaults of every optional setting. */
export const defaults = {
  exchange: "sync.events",
  deadLetterExchange: "sync.dead",
  replayExchange: "sync.replay",
  prefetch: 200,
  publishWindow: 1000,
  deliveryLimit: 20,
  heartbeatSeconds: 30,
  responseTimeoutSeconds: 30,
  connectionName: "entity-sync",
  maxDeadLetterBodyBytes: 64 * 1024,
  topology: "declare"
} as const satisfies Omit<ResolvedRabbitOptions, "url" | "urls" | "login">

/** The login amqplib uses for a URL: its user name, `guest` when it names neither user nor password. */
export const loginOf = (url: Redacted.Redacted<string>): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    if (parsed.username === "" && parsed.password === "") return "guest"
    return decodeURIComponent(parsed.username)
  } catch {
    return "guest" // amqplib reports the bad URL when it connects
  }
}

/**
 * The URLs of a comma-separated list, trimmed, empty entries dropped (`"a, b,"` → `["a", "b"]`). A list with
 * no URL at all stays one (empty) entry, for amqplib to report when it connects.
 */
export const splitUrls = (list: string): readonly [string, ...Array<string>] => {
  const [first, ...rest] = list.split(",").map((url) => url.trim()).filter((url) => url !== "")
  return first === undefined ? [list.trim()] : [first, ...rest]
}

/** Every node's URL of `url` and `urls`, in order, each list split at its commas. */
export const urlsOf = (
  options: Pick<RabbitOptions, "url" | "urls">
): readonly [Redacted.Redacted<string>, ...Array<Redacted.Redacted<string>>] => {
  const split = (url: string | Redacted.Redacted<string>) =>
    splitUrls(typeof url === "string" ? url : Redacted.value(url)).map((one) => Redacted.make(one))
  const [first, ...rest] = splitUrls(typeof options.url === "string" ? options.url : Redacted.value(options.url))
  return [Redacted.make(first), ...rest.map((one) => Redacted.make(one)), ...(options.urls ?? []).flatMap(split)]
}

/** The index of the URL a reconnect tries after the one at `index`, going round `count` URLs. */
export const nextUrlIndex = (index: number, count: number): number => count <= 1 ? 0 : (index + 1) % count

/** Where a URL points, `host:port` with amqplib's default port, without login or password (for logs). */
export const addressOf = (url: Redacted.Redacted<string>): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    const port = parsed.port !== "" ? parsed.port : parsed.protocol === "amqps:" ? "5671" : "5672"
    return `${parsed.hostname}:${port}`
  } catch {
    return "(a URL that does not parse)"
  }
}

/** Fills in the defaults (counts below 1 become 1). */
export const resolve = (options: RabbitOptions): ResolvedRabbitOptions => {
  const urls = urlsOf(options)
  const url = urls[0]
  return {
    url,
    urls,
    exchange: options.exchange ?? defaults.exchange,
    deadLetterExchange: options.deadLetterExchange ?? defaults.deadLetterExchange,
    replayExchange: options.replayExchange ?? defaults.replayExchange,
    prefetch: Math.max(1, options.prefetch ?? defaults.prefetch),
    publishWindow: Math.max(1, options.publishWindow ?? defaults.publishWindow),
    deliveryLimit: Math.max(1, options.deliveryLimit ?? defaults.deliveryLimit),
    heartbeatSeconds: Math.max(0, options.heartbeatSeconds ?? defaults.heartbeatSeconds),
    responseTimeoutSeconds: Math.max(1, options.responseTimeoutSeconds ?? defaults.responseTimeoutSeconds),
    connectionName: options.connectionName ?? defaults.connectionName,
    maxDeadLetterBodyBytes: Math.max(0, options.maxDeadLetterBodyBytes ?? defaults.maxDeadLetterBodyBytes),
    topology: options.topology ?? defaults.topology,
    login: loginOf(url)
  }
}

/** The settings read from the environment (keys and defaults in the module comment). */
export const config: Config.Config<RabbitOptions> = Config.all({
  url: Config.Redacted("AMQP_URL"),
  exchange: Config.String("SYNC_EXCHANGE").pipe(Config.withDefault(defaults.exchange)),
  deadLetterExchange: Config.String("SYNC_DEAD_EXCHANGE").pipe(Config.withDefault(defaults.deadLetterExchange)),
  replayExchange: Config.String("SYNC_REPLAY_EXCHANGE").pipe(Config.withDefault(defaults.replayExchange)),
  prefetch: Config.Int("AMQP_PREFETCH").pipe(Config.withDefault(defaults.prefetch)),
  publishWindow: Config.Int("AMQP_PUBLISH_WINDOW").pipe(Config.withDefault(defaults.publishWindow)),
  deliveryLimit: Config.Int("AMQP_DELIVERY_LIMIT").pipe(Config.withDefault(defaults.deliveryLimit)),
  heartbeatSeconds: Config.Int("AMQP_HEARTBEAT").pipe(Config.withDefault(defaults.heartbeatSeconds)),
  responseTimeoutSeconds: Config.Int("AMQP_RESPONSE_TIMEOUT").pipe(
    Config.withDefault(defaults.responseTimeoutSeconds)
  ),
  connectionName: Config.String("AMQP_CONNECTION_NAME").pipe(Config.withDefault(defaults.connectionName)),
  maxDeadLetterBodyBytes: Config.Int("AMQP_MAX_DEAD_LETTER_BODY_BYTES").pipe(
    Config.withDefault(defaults.maxDeadLetterBodyBytes)
  ),
  topology: Config.Literals(["declare", "passive"], "AMQP_TOPOLOGY").pipe(Config.withDefault(defaults.topology))
})

/**
 * The URL amqplib connects to: the node's URL (`options.url`, or the one given) with `heartbeat` added
 * unless it already has one.
 */
export const connectUrl = (
  options: ResolvedRabbitOptions,
  node: Redacted.Redacted<string> = options.url
): string => {
  const raw = Redacted.value(node)
  try {
    const url = new URL(raw)
    if (!url.searchParams.has("heartbeat")) url.searchParams.set("heartbeat", String(options.heartbeatSeconds))
    return url.toString()
  } catch {
    return raw // amqplib reports the bad URL when it connects
  }
}
