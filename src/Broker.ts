/**
 * The message broker as the runtime sees it: confirmed batch publishing, and subscriptions that deliver
 * with manual `ack` / `nack` / `deadLetter(reason)`. Implemented by RabbitMQ and by the in-memory broker.
 *
 * @since 0.1.0
 */
import { Context, type Effect, type Stream } from "effect"
import type { BrokerUnavailable, PublishRejected } from "./Errors.ts"

/** A message to publish. */
export interface OutgoingMessage {
  readonly messageId: string
  /** `<producer>.<Entity>.<action>` for entity events. */
  readonly routingKey: string
  /** `<Entity>.<action>` for entity events. */
  readonly type: string
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/** A queue and the routing-key patterns bound to it (`*` matches one word, `#` zero or more). */
export interface QueueSpec {
  readonly name: string
  readonly bindings: ReadonlyArray<string>
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
  /** Settles the delivery: the message is done. */
  readonly ack: Effect.Effect<void, BrokerUnavailable>
  /** Gives the message back: requeued for another delivery, or dead-lettered as rejected. */
  readonly nack: (options: { readonly requeue: boolean }) => Effect.Effect<void, BrokerUnavailable>
  /** Moves the message to the queue's dead-letter store with a readable reason. */
  readonly deadLetter: (reason: string) => Effect.Effect<void, BrokerUnavailable>
}

/** A message in a queue's dead-letter store. */
export interface DeadLetter {
  readonly queue: string
  readonly messageId: string
  readonly routingKey: string
  readonly type: string
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
  readonly reason: string
  /** Epoch milliseconds. */
  readonly deadLetteredAt: number
}

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
  /** The messages dead-lettered from a queue, oldest first. */
  readonly deadLetters: (queue: string) => Effect.Effect<ReadonlyArray<DeadLetter>, BrokerUnavailable>
  /** Moves a dead-lettered message back to its queue; false when no such message is dead-lettered. */
  readonly replayDeadLetter: (queue: string, messageId: string) => Effect.Effect<boolean, BrokerUnavailable>
}>()("entity-sync/Broker") {}

/** The reason given to messages rejected with `nack({ requeue: false })`. */
export const rejectedReason = "rejected by the consumer"

/** The reason given to messages dead-lettered by the queue's delivery limit. */
export const deliveryLimitReason = "delivery limit reached"

/** The name of the header that carries a dead-letter reason. */
export const reasonHeader = "x-sync-dead-letter-reason"

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
