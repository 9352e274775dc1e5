/**
 * The adapter's dead queues, `<queue>.dead` (internal: not exported by the package): their messages read
 * as `DeadLetter`s, whether this adapter or RabbitMQ itself dead-lettered them; browsing a page of them;
 * replaying them into their queue.
 *
 * @since 0.1.0
 */
import type { Channel, ChannelModel, GetMessage, Message } from "amqplib"
import { Effect, Option, Schema, Semaphore } from "effect"
import {
  boundBody,
  boundHeaders,
  boundReason,
  type Broker,
  type DeadLetter,
  type DeadLetterFilter,
  deadLetterPageSize,
  deliveryLimitReason,
  matchesFilter,
  reasonHeader,
  rejectedReason,
  replayLimit,
  truncatedFromHeader
} from "../Broker.ts"
import type { BrokerUnavailable, PublishRejected } from "../Errors.ts"
import { attempt, closeChannel, isNotFound, messageOf, openChannel, unavailable } from "./AmqpCall.ts"
import {
  applicationHeaders,
  countHeader,
  deadLetteredAtHeader,
  deliveryCountHeader,
  originalRoutingKey,
  propertiesOf,
  publishedByHeader,
  publisherOf,
  routingKeyHeader,
  stringHeader
} from "./AmqpMessage.ts"
import type { Session } from "./Connection.ts"
import type { Mover } from "./Mover.ts"
import { deadQueueOf } from "./Topology.ts"

/** One entry of RabbitMQ's `x-death` header (the most recent death comes first). */
const Death = Schema.Struct({
  reason: Schema.String,
  "routing-keys": Schema.optional(Schema.Array(Schema.String)),
  time: Schema.optional(Schema.Union([Schema.Number, Schema.Struct({ value: Schema.Number })]))
})
const decodeDeaths = Schema.decodeUnknownOption(Schema.Array(Death))

/** RabbitMQ's dead-letter reasons, worded like the memory broker's. */
const nativeReason = (reason: string): string => {
  switch (reason) {
    case "rejected":
      return rejectedReason
    case "delivery_limit":
      return deliveryLimitReason
    case "expired":
      return "message expired"
    case "maxlen":
      return "queue length limit reached"
    default:
      return reason
  }
}

/** A view of a buffer's bytes, without copying them. */
const bytesOf = (content: Buffer): Uint8Array => new Uint8Array(content.buffer, content.byteOffset, content.byteLength)

/**
 * How many times RabbitMQ had delivered a message it dead-lettered itself: past the delivery limit, one
 * more than the limit; rejected, at least once (RabbitMQ keeps no count of earlier returns); else unknown.
 */
const nativeDeliveryCount = (reason: string | undefined, deliveryLimit: number): number =>
  reason === "delivery_limit" ? deliveryLimit + 1 : reason === "rejected" ? 1 : 0

/** What `toDeadLetter` needs of the adapter's settings. */
export interface DeadLetterSettings {
  readonly login: string
  readonly maxDeadLetterBodyBytes: number
  readonly deliveryLimit: number
}

/**
 * A message of `<queue>.dead` as a `DeadLetter`: dead-lettered by this adapter (its headers say why, when
 * and after how many deliveries) or by RabbitMQ itself (its `x-death` reason, mapped; the delivery count
 * as `nativeDeliveryCount` infers it). A body longer than `maxDeadLetterBodyBytes` (a message RabbitMQ
 * dead-lettered whole) is cut to that prefix.
 */
const toDeadLetter = (queue: string, message: Message, settings: DeadLetterSettings): DeadLetter => {
  const properties = propertiesOf(message)
  const headers = properties.headers
  const death = Option.getOrUndefined(decodeDeaths(headers["x-death"]))?.[0]
  const reason = boundReason(
    stringHeader(headers, reasonHeader) ?? (death === undefined ? "unknown" : nativeReason(death.reason))
  )
  const deathSeconds = death?.time === undefined
    ? undefined
    : typeof death.time === "number"
    ? death.time
    : death.time.value
  const stampedAt = Number(stringHeader(headers, deadLetteredAtHeader))
  // a cut body is a copy of its prefix; a whole one is copied out of amqplib's buffer
  const bounded = boundBody(bytesOf(message.content), settings.maxDeadLetterBodyBytes)
  const truncatedFrom = bounded.truncatedFrom
  const body = truncatedFrom === undefined ? new Uint8Array(message.content) : bounded.body
  return {
    queue,
    messageId: properties.messageId ?? "",
    routingKey: originalRoutingKey(
      properties,
      settings.login,
      death?.["routing-keys"]?.[0] ?? message.fields.routingKey
    ),
    type: properties.type ?? "",
    body,
    headers: { ...boundHeaders(applicationHeaders(headers)), [reasonHeader]: reason },
    reason,
    deadLetteredAt: Number.isFinite(stampedAt) && stampedAt > 0 ? stampedAt : (deathSeconds ?? 0) * 1000,
    deliveryCount: countHeader(headers, deliveryCountHeader) ??
      nativeDeliveryCount(death?.reason, settings.deliveryLimit),
    publisher: publisherOf(properties, settings.login),
    truncatedFrom: countHeader(headers, truncatedFromHeader) ?? truncatedFrom
  }
}

/**
 * Runs `f` on a channel of its own with the number of messages in `<queue>.dead` (`whenAbsent` when there
 * is no such dead queue), then requeues whatever `f` took and did not ack (a classic queue puts them back
 * in place, in order) and closes the channel.
 */
const withDeadQueue = <A>(
  model: ChannelModel,
  queue: string,
  whenAbsent: A,
  f: (channel: Channel, messageCount: number) => Effect.Effect<A, BrokerUnavailable>
): Effect.Effect<A, BrokerUnavailable> =>
  Effect.acquireUseRelease(
    openChannel(model),
    (channel) =>
      Effect.gen(function*() {
        const checked = yield* attempt("checkQueue", () => channel.checkQueue(deadQueueOf(queue))).pipe(
          Effect.map((ok): number | undefined => ok.messageCount),
          Effect.catchIf((error) => isNotFound(error.cause), () => Effect.succeed(undefined))
        )
        return checked === undefined ? whenAbsent : yield* f(channel, checked)
      }),
    (channel) =>
      Effect.sync(() => {
        try {
          channel.nackAll(true)
        } catch {
          // the channel is gone: the broker has requeued everything already
        }
      }).pipe(Effect.andThen(closeChannel(channel)))
  )

/** Takes the next message of `<queue>.dead` without acking it; undefined when the queue is empty. */
const takeDead = (channel: Channel, queue: string): Effect.Effect<GetMessage | undefined, BrokerUnavailable> =>
  Effect.map(
    attempt("get", () => channel.get(deadQueueOf(queue), { noAck: false })),
    (m) => m === false ? undefined : m
  )

/** Acks a message taken from a dead queue (once its copy is confirmed). */
const ackDead = (channel: Channel, message: Message, operation: string): Effect.Effect<void, BrokerUnavailable> =>
  Effect.try({ try: () => channel.ack(message), catch: (cause) => unavailable(operation, messageOf(cause), cause) })

/** A move that must succeed: an unroutable copy is `BrokerUnavailable` (the topology is not there). */
const mustMove = (effect: Effect.Effect<void, BrokerUnavailable | PublishRejected>) =>
  Effect.catchTag(effect, "PublishRejected", (rejected) => Effect.fail(unavailable("publish", rejected.detail)))

/** The dead-letter operations of the broker. */
export type DeadQueues = Pick<Broker["Service"], "deadLetters" | "replayDeadLetter" | "replayDeadLetters">

/**
 * The dead-letter operations of an adapter, on the connection `acquire` gives, moving copies with `mover`.
 * One browse or replay runs at a time per adapter: each holds messages of a dead queue while it runs.
 */
export const makeDeadQueues = (
  settings: DeadLetterSettings,
  acquire: Effect.Effect<Session, BrokerUnavailable>,
  mover: Mover
): Effect.Effect<DeadQueues> =>
  Effect.gen(function*() {
    const browseLock = yield* Semaphore.make(1)

    /** One browse or replay at a time per adapter: each holds messages of a dead queue while it runs. */
    const onDeadQueue = <A>(
      queue: string,
      whenAbsent: A,
      f: (channel: Channel, messageCount: number) => Effect.Effect<A, BrokerUnavailable>
    ) => browseLock.withPermit(Effect.flatMap(acquire, (session) => withDeadQueue(session.model, queue, whenAbsent, f)))

    const asDeadLetter = (queue: string, message: Message) => toDeadLetter(queue, message, settings)

    /**
     * At most one page of the oldest dead letters (`basic.get` without ack, then requeued in place) and the
     * dead queue's depth (from a passive `queue.declare`).
     */
    const deadLetters = (queue: string, page?: { readonly limit?: number }) =>
      onDeadQueue(queue, { total: 0, items: [] }, (channel, total) =>
        Effect.gen(function*() {
          const limit = Math.min(total, deadLetterPageSize(page))
          const items: Array<DeadLetter> = []
          while (items.length < limit) {
            const message = yield* takeDead(channel, queue)
            if (message === undefined) break
            items.push(asDeadLetter(queue, message))
          }
          return { total, items }
        }))

    /**
     * Goes once through the dead queue, one message at a time: a match is published back into its queue
     * through the replay exchange (keeping its routing key in `routingKeyHeader`), a non-match to the tail
     * of the dead queue (its headers unchanged), each confirmed before the dead copy is acked. Stops after
     * the messages the dead queue held at the start, or at the filter's limit.
     */
    const replayDeadLetters = (queue: string, filter: DeadLetterFilter) =>
      onDeadQueue(queue, 0, (channel, total) =>
        Effect.gen(function*() {
          const limit = replayLimit(filter)
          let replayed = 0
          for (let seen = 0; seen < total && replayed < limit; seen++) {
            const message = yield* takeDead(channel, queue)
            if (message === undefined) break
            const dead = asDeadLetter(queue, message)
            const properties = propertiesOf(message)
            const copy = {
              messageId: dead.messageId,
              type: dead.type,
              contentType: properties.contentType ?? "application/json",
              body: new Uint8Array(message.content)
            }
            if (matchesFilter(filter, dead)) {
              yield* mustMove(mover.toQueue(queue, {
                ...copy,
                headers: {
                  ...applicationHeaders(properties.headers),
                  [routingKeyHeader]: dead.routingKey,
                  [publishedByHeader]: dead.publisher ?? ""
                }
              }))
              replayed++
            } else {
              const { BCC: _bcc, CC: _cc, ...headers } = properties.headers
              yield* mustMove(mover.toDeadQueue(queue, {
                ...copy,
                headers: { ...headers, [routingKeyHeader]: dead.routingKey, [publishedByHeader]: dead.publisher ?? "" }
              }))
            }
            yield* ackDead(channel, message, "replayDeadLetters")
          }
          return replayed
        }))

    const replayDeadLetter = (queue: string, messageId: string) =>
      Effect.map(replayDeadLetters(queue, { messageIds: [messageId], limit: 1 }), (n) => n > 0)

    return { deadLetters, replayDeadLetter, replayDeadLetters }
  })
