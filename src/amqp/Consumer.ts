/**
 * The adapter's consumer (internal: not exported by the package): each subscription consumes on a channel
 * of its own with manual acks, and each message becomes a `Delivery` that settles through `Settlements`.
 *
 * @since 0.1.0
 */
import type { Channel, ChannelModel, Message } from "amqplib"
import { Cause, Clock, Effect, Queue, type Scope } from "effect"
import {
  boundBody,
  boundHeaders,
  boundReason,
  type Delivery,
  type QueueSpec,
  reasonHeader,
  truncatedFromHeader
} from "../Broker.ts"
import type { BrokerUnavailable } from "../Errors.ts"
import { attempt, closeChannel, openChannel, unavailable } from "./AmqpCall.ts"
import {
  applicationHeaders,
  countHeader,
  deadLetteredAtHeader,
  deliveryCountHeader,
  originalRoutingKey,
  propertiesOf,
  publishedByHeader,
  publisherOf,
  type RawHeaders,
  routingKeyHeader
} from "./AmqpMessage.ts"
import type { Mover } from "./Mover.ts"
import {
  ackLater,
  type ChannelState,
  flushAcks,
  settle,
  settleByCopy,
  type Settlements,
  settleNow,
  type Settling
} from "./Settlements.ts"
import { deadQueueOf } from "./Topology.ts"

/** How many times the message of this delivery has been delivered, this delivery included. */
const deliveryNumber = (headers: RawHeaders): number => (countHeader(headers, "x-delivery-count") ?? 0) + 1

/**
 * A message consumed from `queue` as a `Delivery`. Each delivery settles at most once (later settles are
 * no-ops); settling on a closed channel is `BrokerUnavailable` (the broker redelivers the message). Acks
 * made in the same turn of the event loop are sent together at its end (see `Settlements`); nacks are
 * sent at once. `nack({ requeue: false })` and the delivery limit use RabbitMQ's own dead-lettering.
 *
 * `release` publishes a copy back into `queue` through the replay exchange, confirmed, then acks the
 * original: a quorum queue counts every return of a message (a nack, a closed channel) against its
 * delivery limit, a fresh copy starts from zero (R12). `deadLetter(reason)` publishes a bounded copy
 * through the dead-letter exchange to `<queue>.dead` — the reason cut to `maxReasonBytes`, the body to
 * `maxDeadLetterBodyBytes` (its original size in `truncatedFromHeader`), at most 32 headers of at most
 * 1 KiB each — confirmed, then acks the original; a connection lost between the two leaves a second copy
 * in the dead queue. Both keep the original publisher in `publishedByHeader`. When the copy cannot be
 * published while the delivery's channel is still open (no write access to the exchange, a nack, headers
 * amqplib cannot encode), the delivery is rejected instead — without requeue for a dead letter, to
 * RabbitMQ's own dead-lettering (the same route, so a topology without that binding loses dead letters
 * either way); with requeue for a release — so it is never left unsettled.
 * (Built without a named closure per delivery: this runs for every message consumed.)
 */
const toDelivery = (
  queue: string,
  channel: Channel,
  state: ChannelState,
  settlements: Settlements,
  message: Message,
  mover: Mover
): Delivery => {
  settlements.unsettled.set(message.fields.deliveryTag, message)
  const properties = propertiesOf(message)
  const headers = properties.headers
  const messageId = properties.messageId ?? ""
  const routingKey = originalRoutingKey(properties, mover.login, message.fields.routingKey)
  const type = properties.type ?? ""
  const contentType = properties.contentType ?? "application/json"
  const body = new Uint8Array(message.content)
  const publisher = publisherOf(properties, mover.login)
  const s: Settling = { queue, channel, state, settlements, message, messageId, settled: false }
  return {
    messageId,
    routingKey,
    type,
    body,
    headers: applicationHeaders(headers),
    redelivered: message.fields.redelivered,
    publisher,
    ack: settle(s, "ack", ackLater),
    nack(options) {
      return settle(s, "nack", (s) => settleNow(s, (channel, message) => channel.nack(message, false, options.requeue)))
    },
    deadLetter(reason) {
      const bounded = boundReason(reason)
      return settleByCopy(
        s,
        "deadLetter",
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const kept = boundBody(body, mover.maxDeadLetterBodyBytes)
          return mover.toDeadQueue(queue, {
            messageId,
            type,
            contentType,
            body: kept.body,
            headers: {
              ...boundHeaders(applicationHeaders(headers)),
              [reasonHeader]: bounded,
              [routingKeyHeader]: routingKey,
              [deadLetteredAtHeader]: String(now),
              [deliveryCountHeader]: String(deliveryNumber(headers)),
              [publishedByHeader]: publisher ?? "",
              ...(kept.truncatedFrom === undefined ? {} : { [truncatedFromHeader]: String(kept.truncatedFrom) })
            }
          })
        }),
        {
          requeue: false,
          warning: `could not move the message to ${deadQueueOf(queue)} (reason: ${bounded}); ` +
            "rejecting it to RabbitMQ's own dead-lettering instead"
        }
      )
    },
    release: Effect.suspend(() =>
      settleByCopy(
        s,
        "release",
        mover.toQueue(queue, {
          messageId,
          type,
          contentType,
          body,
          headers: {
            ...applicationHeaders(headers),
            [routingKeyHeader]: routingKey,
            [publishedByHeader]: publisher ?? ""
          }
        }),
        {
          requeue: true,
          warning: `could not give the message back to ${queue} through the replay exchange; ` +
            "requeueing it, which counts as a delivery attempt"
        }
      )
    )
  }
}

/**
 * Consumes `spec` on a channel of its own (opened on `model`), with manual acks and at most `prefetch`
 * unsettled deliveries, into the stream's `queue` until the stream's scope closes (cancel, then close:
 * the unsettled deliveries go back to the queue). A closed channel or a consumer cancelled by the broker
 * fails the stream with `BrokerUnavailable`. Returns how to stop it at shutdown.
 */
export const consume = (
  model: ChannelModel,
  spec: QueueSpec,
  prefetch: number,
  queue: Queue.Queue<Delivery, BrokerUnavailable | Cause.Done>,
  mover: Mover
): Effect.Effect<Effect.Effect<void>, BrokerUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const state: ChannelState = { closed: false, stopping: false }
    const settlements: Settlements = { unsettled: new Map(), acked: new Set(), scheduled: false }
    const fail = (detail: string) => {
      if (!state.stopping) Queue.failCauseUnsafe(queue, Cause.fail(unavailable("subscribe", detail)))
    }
    const channel = yield* Effect.acquireRelease(openChannel(model), closeChannel)
    // after the consumer is cancelled, before the channel closes: the acks of this turn go out first
    yield* Effect.addFinalizer(() => Effect.sync(() => flushAcks(settlements, channel)))
    let lastError = ""
    channel.on("error", (error: Error) => {
      lastError = `: ${error.message}`
    })
    channel.on("close", () => {
      state.closed = true
      fail(`the channel consuming ${spec.name} closed${lastError}`)
    })
    yield* attempt("prefetch", () => channel.prefetch(prefetch))
    const { consumerTag } = yield* attempt("consume", () =>
      channel.consume(spec.name, (message) => {
        if (message === null) return fail(`the broker cancelled the consumer of ${spec.name} (queue deleted?)`)
        Queue.offerUnsafe(queue, toDelivery(spec.name, channel, state, settlements, message, mover))
      }, { noAck: false }))
    let cancelled = false
    const cancel = Effect.suspend(() => {
      state.stopping = true
      if (cancelled || state.closed) return Effect.void
      cancelled = true
      return attempt("cancel", () => channel.cancel(consumerTag)).pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)
    })
    yield* Effect.addFinalizer(() => cancel)
    return Effect.andThen(Effect.sync(() => Queue.endUnsafe(queue)), cancel)
  })
