/**
 * The adapter's topology on RabbitMQ (internal: `RabbitBroker` re-exports its public part): a durable
 * topic exchange for the events, a durable direct exchange for dead letters and one for messages given
 * back to their queue; per queue, a durable quorum queue and its classic dead queue, with their bindings.
 * Described as plain JSON (`topology`), declared (`declareTopology`, `ensureQueue`), or in passive mode
 * only checked.
 *
 * @since 0.1.0
 */
import amqp from "amqplib"
import type { Channel, ChannelModel } from "amqplib"
import { Effect, Redacted } from "effect"
import { entityKeyHeader, type QueueSpec } from "../Broker.ts"
import type { BrokerUnavailable } from "../Errors.ts"
import { attempt, closeConnection, connectTimeoutMillis, isNotFound, unavailable, withChannel } from "./AmqpCall.ts"
import * as RabbitConfig from "./RabbitConfig.ts"

/** The dead-letter queue of a queue: `<queue>.dead`. */
export const deadQueueOf = (queue: string): string => `${queue}.dead`

type Settings = RabbitConfig.ResolvedRabbitOptions

/** An exchange of the topology (`x-consistent-hash`: a service's ordered lanes, see `Broker.Lane`). */
export interface ExchangeDescription {
  readonly name: string
  readonly type: "topic" | "direct" | "x-consistent-hash"
  readonly durable: true
  /** Declared with these arguments (the lanes' exchange: `hash-header`). */
  readonly arguments?: Readonly<Record<string, string>>
}

/** A queue of the topology, with the arguments it must be declared with. */
export interface QueueDescription {
  readonly name: string
  readonly durable: true
  readonly arguments: Readonly<Record<string, string | number | boolean>>
}

/** A binding of a queue to an exchange under a routing key (a pattern on a topic exchange). */
export interface BindingDescription {
  readonly exchange: string
  readonly queue: string
  readonly routingKey: string
}

/** A binding of an exchange (`destination`) to another (`source`) under a routing key. */
export interface ExchangeBindingDescription {
  readonly source: string
  readonly destination: string
  readonly routingKey: string
}

/** What a service needs declared on RabbitMQ: plain JSON, for an administrator or a deployment tool. */
export interface TopologyDescription {
  readonly exchanges: ReadonlyArray<ExchangeDescription>
  readonly queues: ReadonlyArray<QueueDescription>
  readonly bindings: ReadonlyArray<BindingDescription>
  /** Present with ordered lanes: the lanes' exchange bound to the events exchange. */
  readonly exchangeBindings?: ReadonlyArray<ExchangeBindingDescription>
}

/** The plugin that provides the `x-consistent-hash` exchange type, which ordered lanes need. */
export const consistentHashPlugin = "rabbitmq_consistent_hash_exchange"

/** What to do when RabbitMQ does not know the `x-consistent-hash` exchange type. */
export const consistentHashHint = `ordered lanes need RabbitMQ's consistent-hash exchange: enable it on every ` +
  `node with \`rabbitmq-plugins enable ${consistentHashPlugin}\``

/** What `topology` needs: the service's queues and the exchange settings it runs with (defaults as in `RabbitConfig`). */
export interface TopologyOptions {
  readonly queues: ReadonlyArray<QueueSpec>
  readonly exchange?: string
  readonly deadLetterExchange?: string
  readonly replayExchange?: string
  readonly deliveryLimit?: number
}

type TopologySettings = Pick<Settings, "exchange" | "deadLetterExchange" | "replayExchange" | "deliveryLimit">

const exchangesOf = (settings: TopologySettings): ReadonlyArray<ExchangeDescription> => [
  { name: settings.exchange, type: "topic", durable: true },
  { name: settings.deadLetterExchange, type: "direct", durable: true },
  { name: settings.replayExchange, type: "direct", durable: true }
]

/**
 * A queue's part of the topology: a durable quorum queue with an explicit delivery limit that dead-letters
 * to the dead-letter exchange under its own name, bound to the events exchange by its patterns and to the
 * replay exchange under its name; and its classic dead queue, bound to the dead-letter exchange under the
 * queue's name, so each queue's dead letters land in its own dead queue. The dead queue is classic on
 * purpose: browsing it requeues, which must not count deliveries.
 *
 * A lane queue (`spec.lane`) is bound instead, with weight "1", to its service's consistent-hash exchange
 * (hashing `entityKeyHeader`), which the patterns bind to the events exchange; it is declared with
 * `x-single-active-consumer`, so one subscriber at a time takes its messages, in order.
 */
const queueTopology = (settings: TopologySettings, spec: QueueSpec) => {
  const { name, lane } = spec
  const dead = deadQueueOf(name)
  const queues: ReadonlyArray<QueueDescription> = [
    {
      name,
      durable: true,
      arguments: {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.deliveryLimit,
        "x-dead-letter-exchange": settings.deadLetterExchange,
        "x-dead-letter-routing-key": name,
        ...(lane === undefined ? {} : { "x-single-active-consumer": true })
      }
    },
    // classic on purpose: browsing requeues, which must not count deliveries
    { name: dead, durable: true, arguments: { "x-queue-type": "classic" } }
  ]
  const bound: Array<BindingDescription> = [
    { exchange: settings.deadLetterExchange, queue: dead, routingKey: name },
    { exchange: settings.replayExchange, queue: name, routingKey: name }
  ]
  if (lane === undefined) {
    for (const binding of spec.bindings) bound.push({ exchange: settings.exchange, queue: name, routingKey: binding })
    return { exchanges: [], queues, bindings: bound, exchangeBindings: [] }
  }
  bound.push({ exchange: lane.exchange, queue: name, routingKey: "1" })
  const exchanges: ReadonlyArray<ExchangeDescription> = [
    { name: lane.exchange, type: "x-consistent-hash", durable: true, arguments: { "hash-header": entityKeyHeader } }
  ]
  const exchangeBindings = spec.bindings.map((routingKey) => ({
    source: settings.exchange,
    destination: lane.exchange,
    routingKey
  }))
  return { exchanges, queues, bindings: bound, exchangeBindings }
}

/** Items with the same JSON once, in their first order. */
const distinct = <A>(items: ReadonlyArray<A>): ReadonlyArray<A> => {
  const seen = new Set<string>()
  return items.filter((item) => {
    const key = JSON.stringify(item)
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

/**
 * The topology a service needs for its queues: the three exchanges, each queue with its dead queue, and
 * their bindings. Hand it to an administrator, or to `declareTopology`, when services run with
 * `topology: "passive"` (no configure permission). The default exchange is never used, so a service needs
 * write permission on the three exchanges only.
 */
export const topology = (options: TopologyOptions): TopologyDescription => {
  const settings: TopologySettings = {
    exchange: options.exchange ?? RabbitConfig.defaults.exchange,
    deadLetterExchange: options.deadLetterExchange ?? RabbitConfig.defaults.deadLetterExchange,
    replayExchange: options.replayExchange ?? RabbitConfig.defaults.replayExchange,
    deliveryLimit: Math.max(1, options.deliveryLimit ?? RabbitConfig.defaults.deliveryLimit)
  }
  const parts = options.queues.map((queue) => queueTopology(settings, queue))
  const exchangeBindings = distinct(parts.flatMap((part) => part.exchangeBindings))
  return {
    exchanges: distinct([...exchangesOf(settings), ...parts.flatMap((part) => part.exchanges)]),
    queues: parts.flatMap((part) => part.queues),
    bindings: parts.flatMap((part) => part.bindings),
    ...(exchangeBindings.length === 0 ? {} : { exchangeBindings })
  }
}

/**
 * `BrokerUnavailable` naming the plugin to enable when RabbitMQ refused an exchange type it does not know
 * (`COMMAND_INVALID`, which closes the connection: the channel's call then only says it ended, the
 * connection's error, given as `connectionError`, tells why).
 */
const withPluginHint = (error: BrokerUnavailable, connectionError?: string): BrokerUnavailable => {
  const detail = connectionError ?? error.detail
  return detail.includes("unknown exchange type")
    ? unavailable(error.operation, `${consistentHashHint} (${detail})`, error.cause)
    : error
}

/** Asserts every exchange, queue and binding of a description (idempotent). */
const assertTopology = (channel: Channel, description: Partial<TopologyDescription>) =>
  Effect.gen(function*() {
    for (const exchange of description.exchanges ?? []) {
      yield* attempt("assertExchange", () =>
        channel.assertExchange(exchange.name, exchange.type, {
          durable: true,
          ...(exchange.arguments === undefined ? {} : { arguments: exchange.arguments })
        })).pipe(Effect.mapError((error) => withPluginHint(error)))
    }
    for (const queue of description.queues ?? []) {
      yield* attempt(
        "assertQueue",
        () => channel.assertQueue(queue.name, { durable: true, arguments: queue.arguments })
      )
    }
    for (const binding of description.exchangeBindings ?? []) {
      yield* attempt(
        "bindExchange",
        () => channel.bindExchange(binding.destination, binding.source, binding.routingKey)
      )
    }
    for (const binding of description.bindings ?? []) {
      yield* attempt("bindQueue", () => channel.bindQueue(binding.queue, binding.exchange, binding.routingKey))
    }
  })

/**
 * Declares the consistent-hash exchanges of a description that do not exist yet on a connection of their
 * own (`connect`): RabbitMQ closes the whole connection when it does not know an exchange type, and the
 * adapter's connection must not go down with it. Fails with `consistentHashHint` when the plugin is off.
 */
const assertLanesExchanges = (
  model: ChannelModel,
  description: Partial<TopologyDescription>,
  connect: Effect.Effect<OwnConnection, BrokerUnavailable>
) =>
  Effect.gen(function*() {
    const lanes = (description.exchanges ?? []).filter((exchange) => exchange.type === "x-consistent-hash")
    const missing: Array<ExchangeDescription> = []
    for (const exchange of lanes) {
      const found = yield* withChannel(model, (channel) =>
        attempt("checkExchange", () => channel.checkExchange(exchange.name))).pipe(
          Effect.as(true),
          Effect.catch((error) =>
            isNotFound(error.cause) ? Effect.succeed(false) : Effect.fail(error)
          )
        )
      if (!found) missing.push(exchange)
    }
    if (missing.length === 0) return
    yield* Effect.acquireUseRelease(
      connect,
      ({ model: own, lastError }) =>
        withChannel(own, (channel) => assertTopology(channel, { exchanges: missing })).pipe(
          Effect.mapError((error) => withPluginHint(error, lastError()))
        ),
      ({ model: own }) => closeConnection(own)
    )
  })

const passiveHint = "with topology \"passive\" (AMQP_TOPOLOGY=passive) an administrator must declare it " +
  "(RabbitBroker.topology describes what this service needs, RabbitBroker.declareTopology declares it)"

/**
 * Checks that every exchange and queue of a description exists, without declaring anything (bindings cannot
 * be checked over AMQP). Fails with `BrokerUnavailable` naming the first one missing. A failed check closes
 * the channel, so this opens its own.
 */
const checkTopology = (model: ChannelModel, description: Partial<TopologyDescription>) =>
  withChannel(model, (channel) =>
    Effect.gen(function*() {
      const check = (operation: string, what: string, f: () => PromiseLike<unknown>) =>
        attempt(operation, f).pipe(
          Effect.mapError((error) =>
            isNotFound(error.cause)
              ? unavailable(operation, `${what} does not exist; ${passiveHint}`, error.cause)
              : unavailable(operation, `cannot check ${what}: ${error.detail}`, error.cause)
          )
        )
      for (const exchange of description.exchanges ?? []) {
        yield* check("checkExchange", `the exchange ${exchange.name}`, () => channel.checkExchange(exchange.name))
      }
      for (const queue of description.queues ?? []) {
        yield* check("checkQueue", `the queue ${queue.name}`, () => channel.checkQueue(queue.name))
      }
    }))

/**
 * Declares, or in passive mode checks, a queue, its dead queue and their bindings. In passive mode a
 * missing exchange or queue is `BrokerUnavailable` naming what an administrator must declare.
 */
export const ensureQueue = (
  settings: Settings,
  model: ChannelModel,
  spec: QueueSpec,
  nodeUrl: Redacted.Redacted<string>
): Effect.Effect<void, BrokerUnavailable> => {
  const part = queueTopology(settings, spec)
  return settings.topology === "passive"
    ? checkTopology(model, part)
    : Effect.andThen(
      assertLanesExchanges(model, part, connectTo(settings, nodeUrl)),
      withChannel(model, (channel) => assertTopology(channel, part))
    )
}

/** A connection of the topology's own, with the last error it closed with. */
interface OwnConnection {
  readonly model: ChannelModel
  readonly lastError: () => string | undefined
}

/** A connection of its own to the node at `nodeUrl`, for declaring what could close the connection. */
const connectTo = (settings: Settings, nodeUrl: Redacted.Redacted<string>) =>
  attempt("connect", () =>
    amqp.connect(RabbitConfig.connectUrl(settings, nodeUrl), {
      timeout: connectTimeoutMillis,
      clientProperties: { connection_name: `${settings.connectionName} (topology)` }
    })).pipe(Effect.map((model): OwnConnection => {
      let lastError: string | undefined
      model.on("error", (error: Error) => {
        lastError = error.message
      })
      return { model, lastError: () => lastError }
    }))

/** Declares, or in passive mode checks, the three exchanges and every queue declared so far. */
export const ensureTopology = (
  settings: Settings,
  model: ChannelModel,
  queues: ReadonlyMap<string, QueueSpec>,
  nodeUrl: Redacted.Redacted<string>
): Effect.Effect<void, BrokerUnavailable> =>
  Effect.gen(function*() {
    const description = topology({ ...settings, queues: Array.from(queues.values()) })
    return yield* settings.topology === "passive"
      ? checkTopology(model, description)
      : Effect.andThen(
        assertLanesExchanges(model, description, connectTo(settings, nodeUrl)),
        withChannel(model, (channel) => assertTopology(channel, description))
      )
  })

/**
 * Declares a topology (see `topology`) on the broker at `url`, on a connection of its own that is closed
 * afterwards: what an administrator runs, with configure permission, for services in passive mode.
 */
export const declareTopology = (
  url: string | Redacted.Redacted<string>,
  description: TopologyDescription
): Effect.Effect<void, BrokerUnavailable> =>
  Effect.acquireUseRelease(
    attempt("connect", () =>
      amqp.connect(Redacted.value(typeof url === "string" ? Redacted.make(url) : url), {
        timeout: connectTimeoutMillis
      })),
    (model) =>
      Effect.suspend(() => {
        let lastError: string | undefined
        model.on("error", (error: Error) => {
          lastError = error.message
        })
        return withChannel(model, (channel) => assertTopology(channel, description)).pipe(
          Effect.mapError((error) => withPluginHint(error, lastError))
        )
      }),
    closeConnection
  )
