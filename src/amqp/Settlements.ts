/**
 * The settling of the deliveries of one consuming channel (internal: not exported by the package): each
 * delivery settles once; acks made in the same turn of the event loop go out together, nacks at once; a
 * release or a dead-letter settles by a confirmed copy, then an ack.
 *
 * @since 0.1.0
 */
import type { Channel, Message } from "amqplib"
import { Effect } from "effect"
import type { BrokerUnavailable, PublishRejected } from "../Errors.ts"
import { messageOf, unavailable } from "./AmqpCall.ts"

/** What a delivery needs to know about its subscription's channel. */
export interface ChannelState {
  /** The channel is closed: settling is impossible, unsettled deliveries are back in the queue. */
  closed: boolean
  /** The subscription is ending on purpose: a closing channel is not a failure. */
  stopping: boolean
}

/**
 * The settling of one consuming channel's deliveries. Nacks and dead-letter acks go out at once. Acks made
 * in the same turn of the event loop go out together at its end: the longest run of acked deliveries from
 * the oldest unsettled one as one cumulative ack (`multiple`), the others one by one. That is the same as
 * acking each of them: delivery tags grow with every delivery on a channel, the broker handles a channel's
 * frames in order, and the run stops before the first delivery the application has not acked, so a
 * cumulative ack settles exactly the deliveries of the run.
 */
export interface Settlements {
  /** Deliveries not settled towards the broker yet, by delivery tag (in delivery order). */
  readonly unsettled: Map<number, Message>
  /** Tags acked by the application and not sent yet. */
  readonly acked: Set<number>
  /** A flush is scheduled for the end of this turn. */
  scheduled: boolean
}

/** Sends the pending acks; a closed channel drops them (the broker redelivers those messages). */
export const flushAcks = (settlements: Settlements, channel: Channel): void => {
  settlements.scheduled = false
  if (settlements.acked.size === 0) return
  const run: Array<number> = []
  let last: Message | undefined
  for (const [tag, message] of settlements.unsettled) {
    if (!settlements.acked.has(tag)) break
    run.push(tag)
    last = message
  }
  for (const tag of run) {
    settlements.unsettled.delete(tag)
    settlements.acked.delete(tag)
  }
  const single = Array.from(settlements.acked, (tag) => settlements.unsettled.get(tag))
  for (const tag of settlements.acked) settlements.unsettled.delete(tag)
  settlements.acked.clear()
  try {
    if (last !== undefined) channel.ack(last, run.length > 1)
    for (const message of single) if (message !== undefined) channel.ack(message)
  } catch {
    // the channel closed: unsettled deliveries go back to the queue
  }
}

/** A delivery's settling: its subscription's channel and state, the message, and whether it is settled. */
export interface Settling {
  readonly queue: string
  readonly channel: Channel
  readonly state: ChannelState
  readonly settlements: Settlements
  readonly message: Message
  readonly messageId: string
  settled: boolean
}

/** The failure of a settle once the delivery's channel has closed. */
const ended = (s: Settling, operation: string) =>
  unavailable(operation, `the subscription to ${s.queue} has ended; message ${s.messageId} will be redelivered`)

/** Settles a delivery with `f`, once (later settles are no-ops); fails when its channel has closed. */
export const settle = (
  s: Settling,
  operation: string,
  f: (s: Settling) => void
): Effect.Effect<void, BrokerUnavailable> =>
  Effect.suspend(() => {
    if (s.settled) return Effect.void
    if (s.state.closed) return Effect.fail(ended(s, operation))
    try {
      f(s)
    } catch (cause) {
      return Effect.fail(unavailable(operation, messageOf(cause), cause))
    }
    s.settled = true
    return Effect.void
  })

/** Acks at the end of this turn, with the other acks made in it (see `Settlements`). */
export const ackLater = (s: Settling): void => {
  const { settlements } = s
  settlements.acked.add(s.message.fields.deliveryTag)
  if (settlements.scheduled) return
  settlements.scheduled = true
  setImmediate(() => flushAcks(settlements, s.channel))
}

/** Acks or nacks towards the broker at once. */
export const settleNow = (s: Settling, f: (channel: Channel, message: Message) => void): void => {
  f(s.channel, s.message)
  s.settlements.unsettled.delete(s.message.fields.deliveryTag)
}

/**
 * Settles a delivery by publishing a copy of it (`publishCopy`, confirmed) and then acking it. When the
 * copy cannot be published and the delivery's channel is still open, settles it with `fallback` instead
 * (a nack: RabbitMQ dead-letters or requeues it itself), so that it is never left unsettled. While the
 * copy is on its way the delivery counts as settled (a concurrent settle is a no-op).
 */
export const settleByCopy = (
  s: Settling,
  operation: string,
  publishCopy: Effect.Effect<void, BrokerUnavailable | PublishRejected>,
  fallback: { readonly requeue: boolean; readonly warning: string }
): Effect.Effect<void, BrokerUnavailable> =>
  Effect.suspend(() => {
    if (s.settled) return Effect.void
    if (s.state.closed) return Effect.fail(ended(s, operation))
    s.settled = true
    const unreserve = Effect.sync(() => {
      s.settled = false
    })
    const ack = Effect.try({
      try: () => settleNow(s, (channel, message) => channel.ack(message)),
      catch: (cause) => unavailable(operation, messageOf(cause), cause)
    })
    const fallBack = (error: BrokerUnavailable | PublishRejected): Effect.Effect<void, BrokerUnavailable> =>
      s.state.closed ? Effect.fail(ended(s, operation)) : Effect.andThen(
        Effect.logWarning(fallback.warning, { messageId: s.messageId, queue: s.queue, error: error.message }),
        Effect.try({
          try: () => settleNow(s, (channel, message) => channel.nack(message, false, fallback.requeue)),
          catch: (cause) => unavailable(operation, messageOf(cause), cause)
        })
      )
    return publishCopy.pipe(
      Effect.matchEffect({ onFailure: fallBack, onSuccess: () => ack }),
      Effect.tapError(() => unreserve),
      Effect.onInterrupt(() => unreserve)
    )
  })
