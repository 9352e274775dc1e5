/**
 * The message broker as the runtime sees it: confirmed batch publishing, and subscriptions that deliver
 * with manual `ack` / `nack` / `deadLetter(reason)`. Implemented by RabbitMQ and by the in-memory broker.
 *
 * @since 0.1.0
 */
import { Context, type Effect, type Stream } from "effect"
import * as NodeCrypto from "node:crypto"
import type { BrokerUnavailable, PublishRejected } from "./Errors.ts"

/** A message to publish. */
export interface OutgoingMessage {
  readonly messageId: string
  /** `<producer>.<Entity>.<action>` for entity events. */
  readonly routingKey: string
  /** The CloudEvents type (`entitysync.<Entity>.<action>`) for entity events. */
  readonly type: string
  /** The body's media type (default `application/json`; `Envelope.contentType` for entity events). */
  readonly contentType?: string
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/**
 * The header of an entity event that names its entity, `<Entity>:<id>` (`entityKey`): ordered lanes hash
 * it to pick a lane, so that all events of an entity go to one lane.
 */
export const entityKeyHeader = "x-entity-key"

/** The longest `entityKeyHeader` value, in UTF-16 code units; a longer key is shortened by a hash of it. */
export const maxEntityKeyLength = 256

/**
 * The entity key of an event, `<Entity>:<id>`, for `entityKeyHeader`. A key longer than
 * `maxEntityKeyLength` keeps its first 192 characters followed by `#` and a hex SHA-256 of the whole key,
 * so it stays bounded and still tells entities apart.
 */
export const entityKey = (entity: string, id: string): string => {
  const key = `${entity}:${id}`
  if (key.length <= maxEntityKeyLength) return key
  return `${key.slice(0, 192)}#${NodeCrypto.createHash("sha256").update(key).digest("hex")}`
}

/** A queue and the routing-key patterns bound to it (`*` matches one word, `#` zero or more). */
export interface QueueSpec {
  readonly name: string
  readonly bindings: ReadonlyArray<string>
  /**
   * Set on the queues of ordered lanes (`laneQueues`): the bindings then bind the lanes' exchange to the
   * events exchange, and the queue takes the entity keys its lane's share of the hash gives it, delivered
   * to one subscriber at a time (the single active consumer).
   */
  readonly lane?: Lane
}

/**
 * A lane of a consumer service's ordered lanes: a queue behind the service's consistent-hash exchange,
 * which spreads entity keys (`entityKeyHeader`) over `count` lanes, each with one active consumer.
 */
export interface Lane {
  /** The service's consistent-hash exchange (`lanesExchangeOf`). */
  readonly exchange: string
  /** This lane, from 0. */
  readonly index: number
  /** How many lanes the service has. */
  readonly count: number
}

/** The most lanes a consumer service may have. */
export const maxLanes = 1024

/** The consistent-hash exchange of a consumer service's lanes: `<service>.lanes`. */
export const lanesExchangeOf = (service: string): string => `${service}.lanes`

/** The queue of a service's lane `index`: `<queue>.lane-<index>` (`<service>.sync.lane-<index>`). */
export const laneQueueOf = (queue: string, index: number): string => `${queue}.lane-${index}`

/**
 * The `count` lane queues of a consumer service (`1 ≤ count ≤ maxLanes`), from its queue (name and
 * bindings): `<queue>.lane-<i>` behind the exchange `<service>.lanes`.
 */
export const laneQueues = (service: string, queue: QueueSpec, count: number): ReadonlyArray<QueueSpec> => {
  const lanes = Math.min(maxLanes, Math.max(1, Math.floor(count)))
  const exchange = lanesExchangeOf(service)
  return Array.from({ length: lanes }, (_, index) => ({
    name: laneQueueOf(queue.name, index),
    bindings: queue.bindings,
    lane: { exchange, index, count: lanes }
  }))
}

/**
 * The lane of an entity key among `count` lanes, as the in-memory broker picks it (FNV-1a of the key's
 * UTF-16 code units, modulo `count`). RabbitMQ's consistent-hash exchange picks with a hash of its own:
 * both keep every event of a key in one lane, which is what ordered lanes need.
 */
export const laneOfKey = (key: string, count: number): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash % Math.max(1, Math.floor(count))
}

/** One delivery of a message to a subscriber. Unsettled deliveries are redelivered when the subscription ends. */
export interface Delivery {
  readonly messageId: string
  readonly routingKey: string
  readonly type: string
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
  /** True when the message was delivered before and not settled. */
  readonly redelivered: boolean
  /**
   * The broker login that published the message, as the broker vouches for it (RabbitMQ: the `user-id`
   * property, which RabbitMQ checks against the publishing connection's login; for a message this
   * service's own adapter returned, dead-lettered or replayed, the login of its original publisher).
   * Undefined when nobody vouches for the publisher (see `Broker.vouchesForPublishers`).
   */
  readonly publisher: string | undefined
  /** Settles the delivery: the message is done. */
  readonly ack: Effect.Effect<void, BrokerUnavailable>
  /** Gives the message back: requeued for another delivery, or dead-lettered as rejected. */
  readonly nack: (options: { readonly requeue: boolean }) => Effect.Effect<void, BrokerUnavailable>
  /**
   * Moves the message to the queue's dead-letter store with a readable reason (cut to `maxReasonBytes`).
   * When the move itself fails for another reason than a lost connection, the message is rejected to the
   * broker's own dead-letter store instead: a delivery is never left unsettled by a dead letter.
   */
  readonly deadLetter: (reason: string) => Effect.Effect<void, BrokerUnavailable>
  /**
   * Gives the message back to its queue without spending one of its delivery attempts (R12: an outage
   * must not dead-letter). The message keeps its publisher; it is delivered again later, maybe after
   * messages that arrived after it.
   */
  readonly release: Effect.Effect<void, BrokerUnavailable>
}

/** A message in a queue's dead-letter store. */
export interface DeadLetter {
  readonly queue: string
  readonly messageId: string
  readonly routingKey: string
  readonly type: string
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
  /** Why it was dead-lettered: the consumer's reason, or the broker's own (e.g. the delivery limit). */
  readonly reason: string
  /** Epoch milliseconds. */
  readonly deadLetteredAt: number
  /** How many times the message had been delivered when it was dead-lettered (0 when unknown). */
  readonly deliveryCount: number
  /** The publisher the broker vouched for (see `Delivery.publisher`). */
  readonly publisher: string | undefined
  /** The size of the original body when only a prefix of it was kept (`maxDeadLetterBodyBytes`). */
  readonly truncatedFrom: number | undefined
}

/** One page of a queue's dead letters. */
export interface DeadLetterPage {
  /** How many messages the dead-letter store holds in all. */
  readonly total: number
  /** The oldest dead letters, at most the page's limit. */
  readonly items: ReadonlyArray<DeadLetter>
}

/** Which dead letters a bulk replay moves back; every given condition must hold. */
export interface DeadLetterFilter {
  /** Only these reasons: the whole reason, or its leading tag (`ForgedProducer` matches `ForgedProducer: …`). */
  readonly reasons?: ReadonlyArray<string>
  /** Only messages of these entities (the second word of an entity event's routing key). */
  readonly entities?: ReadonlyArray<string>
  /** Only messages dead-lettered at or after this time (epoch milliseconds). */
  readonly from?: number
  /** Only messages dead-lettered before this time (epoch milliseconds). */
  readonly to?: number
  /** Only these messages. */
  readonly messageIds?: ReadonlyArray<string>
  /** At most this many messages are replayed. */
  readonly limit?: number
}

/** The longest dead-letter reason kept, in UTF-8 bytes; a longer one is cut and ends with "…". */
export const maxReasonBytes = 1024

/** The largest page of dead letters one call returns. */
export const maxDeadLetterPage = 1000

/** The page size of `deadLetters` when the caller gives none. */
export const defaultDeadLetterPage = 100

/** The longest body a dead letter keeps by default, in bytes (64 KiB); a longer one keeps only this prefix. */
export const defaultMaxDeadLetterBodyBytes = 64 * 1024

/** The header of a dead letter whose body was cut: the size of the original body, in bytes. */
export const truncatedFromHeader = "x-sync-truncated-from"

/** A message header longer than this (name and value, in UTF-8 bytes) is not copied into a dead letter. */
export const maxDeadLetterHeaderBytes = 1024

/** At most this many of a message's headers are copied into a dead letter. */
export const maxDeadLetterHeaders = 32

/** The page size a `deadLetters` call asks for, within `0 … maxDeadLetterPage` (default 100). */
export const deadLetterPageSize = (options?: { readonly limit?: number }): number => {
  const limit = options?.limit ?? defaultDeadLetterPage
  return Number.isFinite(limit) ? Math.max(0, Math.min(maxDeadLetterPage, Math.floor(limit))) : defaultDeadLetterPage
}

const utf8 = new TextEncoder()
const utf8Length = (text: string): number =>
  text.length > maxDeadLetterHeaderBytes ? text.length : utf8.encode(text).byteLength

/**
 * The headers of a message as a dead letter keeps them: at most `maxDeadLetterHeaders`, each at most
 * `maxDeadLetterHeaderBytes` (longer ones are left out, not cut: a cut value would be a different value).
 */
export const boundHeaders = (headers: Readonly<Record<string, string>>): Record<string, string> => {
  const kept: Record<string, string> = {}
  let count = 0
  for (const [name, value] of Object.entries(headers)) {
    if (count >= maxDeadLetterHeaders) break
    if (utf8Length(name) + utf8Length(value) > maxDeadLetterHeaderBytes) continue
    kept[name] = value
    count++
  }
  return kept
}

/**
 * A body as a dead letter keeps it: at most `maxBytes`, and the original size when it was cut. A cut body
 * is a copy of the prefix, so that the original can be freed.
 */
export const boundBody = (
  body: Uint8Array,
  maxBytes: number = defaultMaxDeadLetterBodyBytes
): { readonly body: Uint8Array; readonly truncatedFrom: number | undefined } =>
  body.byteLength <= maxBytes
    ? { body, truncatedFrom: undefined }
    : { body: body.slice(0, Math.max(0, maxBytes)), truncatedFrom: body.byteLength }

/** The entity of an entity event's routing key `<producer>.<Entity>.<action>` (its second word). */
export const entityOfRoutingKey = (routingKey: string): string | undefined => routingKey.split(".")[1]

/** Whether a dead letter's reason is `reason`, or starts with it as its tag (`ForgedProducer: …`, `Defect (…`). */
const hasReason = (actual: string, reason: string): boolean =>
  actual === reason || (actual.startsWith(reason) && [" ", ":", "("].includes(actual.charAt(reason.length)))

/** Whether a dead letter meets every condition of a filter (`limit` aside). */
export const matchesFilter = (filter: DeadLetterFilter, deadLetter: DeadLetter): boolean => {
  if (filter.reasons !== undefined && !filter.reasons.some((reason) => hasReason(deadLetter.reason, reason))) {
    return false
  }
  if (filter.messageIds !== undefined && !filter.messageIds.includes(deadLetter.messageId)) return false
  if (filter.from !== undefined && deadLetter.deadLetteredAt < filter.from) return false
  if (filter.to !== undefined && deadLetter.deadLetteredAt >= filter.to) return false
  if (filter.entities !== undefined) {
    const entity = entityOfRoutingKey(deadLetter.routingKey)
    if (entity === undefined || !filter.entities.includes(entity)) return false
  }
  return true
}

/** How many messages a bulk replay may move at most (`filter.limit`; no limit when absent). */
export const replayLimit = (filter: DeadLetterFilter): number =>
  filter.limit === undefined ? Number.POSITIVE_INFINITY : Math.max(0, Math.floor(filter.limit))

/** Options of a subscription. */
export interface SubscribeOptions {
  /** How many unsettled deliveries the subscriber may hold at once. */
  readonly prefetch?: number
}

/** The broker service. */
export class Broker extends Context.Service<Broker, {
  /**
   * Publishes a batch; succeeds only when every message is confirmed by the broker. Messages no queue
   * would take fail the call with `PublishRejected` naming them (the rest of the batch is confirmed).
   * Calls are sent in the order they begin, even while earlier ones still await their confirms: a queue
   * receives the messages of a call before those of any call begun after it (e.g. forked after it).
   */
  readonly publish: (batch: ReadonlyArray<OutgoingMessage>) => Effect.Effect<void, BrokerUnavailable | PublishRejected>
  /** Declares a queue, its bindings and its dead-letter store (idempotent). */
  readonly declare: (queue: QueueSpec) => Effect.Effect<void, BrokerUnavailable>
  /** Declares the queue and delivers its messages until the stream is interrupted or the connection fails. */
  readonly subscribe: (
    queue: QueueSpec,
    options?: SubscribeOptions
  ) => Stream.Stream<Delivery, BrokerUnavailable>
  /**
   * The oldest messages dead-lettered from a queue (at most `limit`, default 100, never more than
   * `maxDeadLetterPage`) and how many there are; never reads the whole dead-letter store.
   */
  readonly deadLetters: (
    queue: string,
    options?: { readonly limit?: number }
  ) => Effect.Effect<DeadLetterPage, BrokerUnavailable>
  /** Moves a dead-lettered message back to its queue; false when no such message is dead-lettered. */
  readonly replayDeadLetter: (queue: string, messageId: string) => Effect.Effect<boolean, BrokerUnavailable>
  /** Moves every dead letter of a queue that matches the filter back to its queue; returns how many. */
  readonly replayDeadLetters: (queue: string, filter: DeadLetterFilter) => Effect.Effect<number, BrokerUnavailable>
  /**
   * Whether deliveries name their publisher as the broker vouches for it (`Delivery.publisher`): true for
   * RabbitMQ, false for the in-memory broker (R11 then rests on signed events).
   */
  readonly vouchesForPublishers: boolean
}>()("entity-sync/Broker") {}

/** The reason given to messages rejected with `nack({ requeue: false })`. */
export const rejectedReason = "rejected by the consumer"

/** The reason given to messages dead-lettered by the queue's delivery limit. */
export const deliveryLimitReason = "delivery limit reached"

/** The name of the header that carries a dead-letter reason. */
export const reasonHeader = "x-sync-dead-letter-reason"

/** A reason cut to `maxReasonBytes` UTF-8 bytes (at a character boundary, ending with "…"). */
export const boundReason = (reason: string, maxBytes: number = maxReasonBytes): string => {
  if (reason.length * 3 <= maxBytes) return reason
  const bytes = new TextEncoder().encode(reason)
  if (bytes.byteLength <= maxBytes) return reason
  let end = maxBytes - 3
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--
  return `${new TextDecoder().decode(bytes.subarray(0, end))}…`
}

/** Whether a topic pattern (`*` one word, `#` zero or more words) matches a routing key. */
export const matchesBinding = (pattern: string, routingKey: string): boolean => {
  const p = pattern.split(".")
  const k = routingKey.split(".")
  const go = (i: number, j: number): boolean => {
    if (i === p.length) return j === k.length
    const word = p[i]
    if (word === "#") return go(i + 1, j) || (j < k.length && go(i, j + 1))
    return j < k.length && (word === "*" || word === k[j]) && go(i + 1, j + 1)
  }
  return go(0, 0)
}
