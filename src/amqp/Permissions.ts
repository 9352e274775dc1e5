/**
 * Least privilege on RabbitMQ (R11): the permissions one service's broker login needs, and nothing more,
 * as RabbitMQ's `configure` / `write` / `read` regexes on the service's virtual host plus its topic
 * permissions on the events exchange — for the adapter's `declare` topology mode and for `passive` mode
 * (where an administrator declares the topology and the service gets no configure permission at all).
 *
 * ```ts
 * const m = Permissions.matrix({ service: "directory", queues: [SyncConsumer.queueOf("directory", subscriptions)] })
 * for (const args of Permissions.rabbitmqctlArguments(m, { user: "directory", vhost: "/" })) run("rabbitmqctl", args)
 * ```
 *
 * @since 0.1.0
 */
import type { QueueSpec } from "../Broker.ts"
import * as RabbitConfig from "./RabbitConfig.ts"

/** What a service does on the bus; its permissions follow from it. */
export interface ServiceRole {
  /** The service's name: the first word of the routing keys of its events. */
  readonly service: string
  /** It owns contracts and publishes their events (it runs a relay, or answers resync requests). */
  readonly publishesEvents?: boolean
  /**
   * The queues it consumes: its sync queue (`SyncConsumer.queueOf`) and, for an owner answering resync
   * requests, its resync queue (`Resync.queueOf`). Each comes with its dead queue `<queue>.dead`.
   */
  readonly queues?: ReadonlyArray<QueueSpec>
  /** The resync requests it sends: to which owner, about which entity (`Resync.request`). */
  readonly resyncRequests?: ReadonlyArray<{ readonly owner: string; readonly entity: string }>
}

/** The exchange names and topology mode the service runs with (defaults as in `RabbitConfig`). */
export interface MatrixOptions {
  readonly exchange?: string
  readonly deadLetterExchange?: string
  readonly replayExchange?: string
  readonly topology?: RabbitConfig.Topology
}

/** RabbitMQ's three permission regexes of a login on a virtual host. */
export interface ResourcePermissions {
  /** Declaring (and deleting) exchanges and queues. */
  readonly configure: string
  /** Publishing to exchanges, binding queues (the queue side). */
  readonly write: string
  /** Consuming from queues, binding queues (the exchange side). */
  readonly read: string
}

/** Topic permissions of a login on one topic exchange: regexes over routing keys and binding keys. */
export interface TopicPermissions {
  readonly exchange: string
  /** Routing keys the login may publish with. */
  readonly write: string
  /** Binding keys the login may bind its queues with. */
  readonly read: string
}

/** Everything a service's broker login is granted on its virtual host. */
export interface PermissionMatrix {
  readonly service: string
  readonly topology: RabbitConfig.Topology
  readonly permissions: ResourcePermissions
  readonly topic: TopicPermissions
}

/** The regex that matches no resource: RabbitMQ's way of granting nothing. */
export const nothing = "^$"

/** A name as a regex matching exactly that text. */
export const escape = (name: string): string => name.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&")

/** A regex matching exactly the given names (each escaped); `nothing` for none. */
const exactly = (names: Iterable<string>): string => {
  const unique = Array.from(new Set(names))
  return unique.length === 0 ? nothing : `^(${unique.map(escape).join("|")})$`
}

/** A regex matching any of the given regexes; `nothing` for none. */
const anyOf = (regexes: ReadonlyArray<string>): string =>
  regexes.length === 0 ? nothing : regexes.length === 1 ? regexes.join("") : `(${regexes.join("|")})`

const deadQueueOf = (queue: string): string => `${queue}.dead`

/**
 * The permissions of a service's login:
 *
 * * `declare` mode: configure on the three exchanges and on its queues and their dead queues; write on
 *   the exchanges it publishes to and on its queues (to bind them); read on its queues and on the
 *   exchanges it binds them to;
 * * `passive` mode: configure on nothing; write on the exchanges it publishes to; read on its queues;
 * * both: topic write on `sync.events` for `^<service>\.` (when it publishes events) and the resync
 *   requests it sends; topic read for the binding keys of its queues on `sync.events` (`declare` mode;
 *   nothing in `passive` mode, where it binds nothing).
 *
 * What each AMQP operation of the adapter needs (RabbitMQ's access-control rules):
 *
 * | operation | configure | write | read |
 * |---|---|---|---|
 * | declare an exchange (`declare` mode) | the exchange | | |
 * | declare a queue with its dead-letter exchange (`declare` mode) | the queue | the dead-letter exchange | the queue |
 * | bind a queue (`declare` mode) | | the queue | the exchange (+ topic read on the binding key) |
 * | check an exchange or queue (`passive` mode) | | | |
 * | publish an event or a resync request | | `sync.events` (+ topic write on the routing key) | |
 * | dead-letter, release, replay (the adapter's moves) | | `sync.dead`, `sync.replay` | |
 * | consume, browse and replay dead letters | | | the queue, `<queue>.dead` |
 *
 * RabbitMQ's own dead-lettering (the delivery limit, a rejection) is not checked against any login. The
 * default exchange is never granted: the adapter does not use it. Topic permissions apply to the topic
 * exchange only (`sync.events`): its `write` regex is matched against the routing key of every publish (a
 * service may publish its own events, `<service>.<Entity>.<action>`, and the resync requests it sends,
 * `<owner>.resync.<Entity>`); its `read` regex against the binding key of every `queue.bind` (the
 * patterns the service subscribes to). `sync.dead` and `sync.replay` are direct exchanges: any login that
 * may write to them can route a message to any queue by name, which is why a consumer trusts the
 * publisher RabbitMQ vouches for (`user-id`), never the exchange a message came through.
 */
export const matrix = (role: ServiceRole, options: MatrixOptions = {}): PermissionMatrix => {
  const events = options.exchange ?? RabbitConfig.defaults.exchange
  const dead = options.deadLetterExchange ?? RabbitConfig.defaults.deadLetterExchange
  const replay = options.replayExchange ?? RabbitConfig.defaults.replayExchange
  const topology = options.topology ?? RabbitConfig.defaults.topology
  const queues = role.queues ?? []
  const requests = role.resyncRequests ?? []
  const ownQueues = queues.flatMap((queue) => [queue.name, deadQueueOf(queue.name)])
  const publishes = role.publishesEvents === true || requests.length > 0
  const consumes = queues.length > 0
  const publishedTo = [...(publishes ? [events] : []), ...(consumes ? [dead, replay] : [])]
  const bindings = queues.flatMap((queue) => queue.bindings)
  const permissions: ResourcePermissions = topology === "declare"
    ? {
      configure: exactly([events, dead, replay, ...ownQueues]),
      write: exactly([...publishedTo, ...ownQueues]),
      read: exactly([...(consumes ? [events, dead, replay] : []), ...ownQueues])
    }
    : { configure: nothing, write: exactly(publishedTo), read: exactly(ownQueues) }
  const topicWrite = [
    ...(role.publishesEvents === true ? [`^${escape(role.service)}\\.`] : []),
    ...(requests.length === 0 ? [] : [exactly(requests.map((r) => `${r.owner}.resync.${r.entity}`))])
  ]
  return {
    service: role.service,
    topology,
    permissions,
    topic: {
      exchange: events,
      write: anyOf(topicWrite),
      read: topology === "declare" ? exactly(bindings) : nothing
    }
  }
}

/** Where a matrix is applied: the broker user and its virtual host. */
export interface Grantee {
  readonly user: string
  /** Default `/`. */
  readonly vhost?: string
}

/**
 * The `rabbitmqctl` argument lists that grant a matrix to a user — `set_permissions` and
 * `set_topic_permissions` — each replacing what the user had on that virtual host (and topic exchange).
 * Run each as `rabbitmqctl <args…>` (no shell: the regexes are single arguments).
 */
export const rabbitmqctlArguments = (
  m: PermissionMatrix,
  grantee: Grantee
): ReadonlyArray<ReadonlyArray<string>> => {
  const vhost = grantee.vhost ?? "/"
  return [
    ["set_permissions", "-p", vhost, grantee.user, m.permissions.configure, m.permissions.write, m.permissions.read],
    ["set_topic_permissions", "-p", vhost, grantee.user, m.topic.exchange, m.topic.write, m.topic.read]
  ]
}
