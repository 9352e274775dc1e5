/**
 * The adapter's publisher (internal: not exported by the package): one confirm channel per connection,
 * a window of publishes awaiting their confirm shared by all batches, and the order in which publish
 * calls send, kept over all connections of an adapter.
 *
 * @since 0.1.0
 */
import type { ConfirmChannel, Message, Options } from "amqplib"
import { Duration, Effect } from "effect"
import { type BrokerUnavailable, PublishRejected } from "../Errors.ts"
import { messageOf, unavailable } from "./AmqpCall.ts"
import { propertiesOf, type RawHeaders } from "./AmqpMessage.ts"
import { writeBatch } from "./WriteBatch.ts"
/** A message as the adapter publishes it, to one of its exchanges (never the default exchange). */
export interface Outgoing {
  readonly exchange: string
  readonly routingKey: string
  readonly messageId: string
  readonly type: string
  readonly contentType: string
  readonly body: Uint8Array
  /** Headers as amqplib encodes them (a moved dead letter keeps RabbitMQ's `x-death` table). */
  readonly headers: RawHeaders
  /** The adapter's login, which RabbitMQ checks (R11). */
  readonly userId: string
}

/** The confirm channel of a connection and its bookkeeping. */
export interface Publisher {
  readonly channel: ConfirmChannel
  readonly window: number
  /** Publishes awaiting their confirm, over all batches. */
  inFlight: number
  /** The channel's buffer is full: wait for `drain`. */
  blocked: boolean
  /** Why the channel closed; undefined while it is open. */
  closed: string | undefined
  /** Called (and forgotten) whenever a confirm arrives, the buffer drains or the channel closes. */
  readonly waiting: Set<() => void>
  /** Told the message id of every returned (unroutable) message. */
  readonly returned: Set<(messageId: string) => void>
}

const wake = (publisher: Publisher): void => {
  const waiting = Array.from(publisher.waiting)
  publisher.waiting.clear()
  waiting.forEach((f) => f())
}

/** Why a publisher whose publish RabbitMQ nacked counts as closed. */
const nackedReason = "RabbitMQ nacked a publish: the publishing channel is given up"

/**
 * The publisher of a confirm channel with at most `window` publishes awaiting their confirm; it notes
 * the channel's close (and why), a nack (which gives the channel up), its `drain` and its returned messages.
 */
export const makePublisher = (channel: ConfirmChannel, window: number): Publisher => {
  const publisher: Publisher = {
    channel,
    window,
    inFlight: 0,
    blocked: false,
    closed: undefined,
    waiting: new Set(),
    returned: new Set()
  }
  let lastError = "the publishing channel closed"
  channel.on("error", (error: Error) => {
    lastError = `the publishing channel closed: ${error.message}`
  })
  channel.on("close", () => {
    publisher.closed ??= lastError
    wake(publisher)
  })
  // RabbitMQ could not take a message (a queue's leader went away, a full queue that rejects publishes): the
  // channel's view of its queues may be stale, so it is given up and the next operation opens a new connection
  channel.on("nack", () => {
    publisher.closed ??= nackedReason
    wake(publisher)
  })
  channel.on("drain", () => {
    publisher.blocked = false
    wake(publisher)
  })
  channel.on("return", (message: Message) => {
    const messageId = propertiesOf(message).messageId
    if (messageId !== undefined) publisher.returned.forEach((f) => f(messageId))
  })
  return publisher
}

/**
 * The order in which publish calls send, over all connections of an adapter: calls take a turn when they
 * begin and send only while theirs is the oldest turn not yet ended. A turn ends when its call has sent all
 * of its messages, or failed, or was interrupted.
 */
interface SendOrder {
  readonly turns: Array<Turn>
}

/** One publish call's place in the `SendOrder`. */
interface Turn {
  /** Called (and forgotten) when the turn becomes the oldest. */
  onCurrent: (() => void) | undefined
}

const takeTurn = (order: SendOrder): Turn => {
  const turn: Turn = { onCurrent: undefined }
  order.turns.push(turn)
  return turn
}

const isCurrent = (order: SendOrder, turn: Turn): boolean => order.turns[0] === turn

/** Ends a turn (idempotent) and tells the next oldest one, if it is waiting, that it may send. */
const endTurn = (order: SendOrder, turn: Turn): void => {
  turn.onCurrent = undefined
  const index = order.turns.indexOf(turn)
  if (index < 0) return
  order.turns.splice(index, 1)
  const next = order.turns[0]
  if (index === 0 && next?.onCurrent !== undefined) {
    const resume = next.onCurrent
    next.onCurrent = undefined
    resume()
  }
}

/** A view of the body's bytes as a `Buffer`, without copying them. */
const bufferOf = (body: Uint8Array): Buffer => Buffer.from(body.buffer, body.byteOffset, body.byteLength)

const publishOptions = (message: Outgoing): Options.Publish => ({
  mandatory: true,
  persistent: true,
  messageId: message.messageId,
  type: message.type,
  contentType: message.contentType,
  userId: message.userId,
  headers: message.headers
})

/**
 * Publishes every message with a confirm callback (`mandatory`, persistent, `messageId`, `type`,
 * `contentType`, `userId`, headers) once `turn` is the current one in `order`, keeping at most `window`
 * in flight over all batches and waiting for the channel's `drain` when its buffer is full; ends the
 * turn when all are sent and succeeds when all are confirmed. Returned (unroutable) messages fail it with
 * `PublishRejected` naming exactly them (the others are confirmed); a nack or a closed channel fails it
 * with `BrokerUnavailable`.
 */
const publishAll = (
  publisher: Publisher,
  messages: ReadonlyArray<Outgoing>,
  order: SendOrder,
  turn: Turn
): Effect.Effect<void, BrokerUnavailable | PublishRejected> =>
  messages.length === 0 ?
    Effect.sync(() => endTurn(order, turn)) :
    Effect.callback<void, BrokerUnavailable | PublishRejected>((resume) => {
      const ids = new Set(messages.map((m) => m.messageId))
      const returned = new Set<string>()
      let next = 0
      let outstanding = 0
      let failure: string | undefined
      let done = false
      const onReturn = (messageId: string) => {
        if (ids.has(messageId)) returned.add(messageId)
      }
      const stop = () => {
        done = true
        publisher.returned.delete(onReturn)
        publisher.waiting.delete(pump)
        endTurn(order, turn)
      }
      const finishIfComplete = () => {
        if (done || outstanding > 0 || (failure === undefined && next < messages.length)) return
        stop()
        if (failure !== undefined) return resume(Effect.fail(unavailable("publish", failure)))
        if (returned.size === 0) return resume(Effect.void)
        const rejected = messages.filter((m) => returned.has(m.messageId))
        resume(Effect.fail(
          new PublishRejected({
            messageIds: Array.from(new Set(rejected.map((m) => m.messageId))),
            detail: `no queue is bound to ${Array.from(new Set(rejected.map((m) => m.routingKey))).join(", ")}`
          })
        ))
      }
      function pump(): void {
        publisher.waiting.delete(pump)
        if (!done && !isCurrent(order, turn)) {
          turn.onCurrent = pump
          return
        }
        writeBatch(publisher.channel, send)
        if (failure !== undefined || next === messages.length) endTurn(order, turn)
        finishIfComplete()
      }
      // Sends what the window and the channel's buffer allow; `pump` runs again when they allow more.
      function send(): void {
        while (!done && failure === undefined && next < messages.length) {
          if (publisher.closed !== undefined) {
            failure = publisher.closed
            break
          }
          if (publisher.blocked || publisher.inFlight >= publisher.window) {
            publisher.waiting.add(pump)
            return
          }
          const message = messages[next]
          if (message === undefined) break
          next++
          try {
            const ok = publisher.channel.publish(
              message.exchange,
              message.routingKey,
              bufferOf(message.body),
              publishOptions(message),
              (error: unknown) => {
                publisher.inFlight--
                outstanding--
                if (error !== null && error !== undefined) failure ??= messageOf(error)
                wake(publisher)
                finishIfComplete()
              }
            )
            publisher.inFlight++
            outstanding++
            if (!ok) publisher.blocked = true
          } catch (cause) {
            // amqplib throws synchronously on a closed channel; no confirm callback was registered
            failure = messageOf(cause)
          }
        }
      }
      publisher.returned.add(onReturn)
      pump()
      return Effect.sync(stop)
    })

/** Waits until no publish awaits its confirm (or the channel closed). */
export const awaitIdle = (publisher: Publisher): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const check = () => {
      if (publisher.inFlight === 0 || publisher.closed !== undefined) resume(Effect.void)
      else publisher.waiting.add(check)
    }
    check()
    return Effect.sync(() => {
      publisher.waiting.delete(check)
    })
  })

/** Publishes a batch in the send order of an adapter (see `publishInOrder`). */
export type PublishInOrder = (
  messages: ReadonlyArray<Outgoing>
) => Effect.Effect<void, BrokerUnavailable | PublishRejected>

/**
 * Gives up a publisher whose broker stopped confirming: it counts as closed (with `reason`) from now on, so
 * the connection is replaced by the next operation, and every call waiting on it fails.
 */
const giveUp = (publisher: Publisher, reason: string): BrokerUnavailable => {
  publisher.closed ??= reason
  wake(publisher)
  return unavailable("publish", reason)
}

/**
 * An adapter's publishing in the order calls begin (one per adapter, over all its connections), on the
 * publisher of the connection `acquire` gives: a call sends its messages once every earlier call has sent
 * all of its own (or failed), then awaits its confirms while later calls send, so a caller can keep
 * several batches in flight without reordering them. The turn is taken when the effect begins, before
 * connecting; it ends when the call has sent everything, failed or was interrupted. A call that is not
 * confirmed within `responseTimeout` of getting its connection fails with `BrokerUnavailable` and gives
 * that connection's publisher up (see `giveUp`): a lost confirm never stalls the calls after it.
 */
export const publishInOrder = (
  acquire: Effect.Effect<{ readonly publisher: Publisher }, BrokerUnavailable>,
  responseTimeout: Duration.Duration
): PublishInOrder => {
  const order: SendOrder = { turns: [] }
  const reason = `no confirm within ${Duration.format(responseTimeout)}: the publishing channel is given up`
  return (messages) =>
    Effect.suspend(() => {
      const turn = takeTurn(order)
      return Effect.flatMap(acquire, ({ publisher }) =>
        publishAll(publisher, messages, order, turn).pipe(
          Effect.timeoutOrElse({
            duration: responseTimeout,
            orElse: () => Effect.fail(giveUp(publisher, reason))
          })
        )).pipe(Effect.onExit(() => Effect.sync(() => endTurn(order, turn))))
    })
}
