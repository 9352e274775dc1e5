/**
 * The `Broker` on RabbitMQ through amqplib (DESIGN §3). Settings and their defaults: `RabbitConfig`.
 *
 * Topology: a durable topic exchange (`sync.events`) for the events, a durable direct exchange
 * (`sync.dead`) for dead letters; `declare(queue)` asserts a durable quorum queue with an explicit
 * `x-delivery-limit` that dead-letters to `sync.dead` with its own name as routing key, and a durable
 * classic queue `<queue>.dead` bound to it under that name, so each queue's dead letters land in its own
 * dead queue. The dead queue is classic on purpose: browsing it requeues, which must not count deliveries.
 *
 * Publishing goes through one confirm channel per connection: every message of a batch is published with
 * a confirm callback (`mandatory`, persistent, `messageId`, `type`, `application/json`, headers), at most
 * `publishWindow` awaiting their confirm at once over all batches, waiting for the channel's `drain` when
 * its buffer is full. Publish calls send in the order they began: a call sends its messages once every
 * earlier call has sent all of its own (or failed), then awaits its confirms while later calls send, so a
 * caller can keep several batches in flight without reordering them. A batch succeeds when every message
 * is confirmed; returned (unroutable) messages fail it with `PublishRejected` naming exactly them; a nack
 * or a lost channel fails it with `BrokerUnavailable`.
 *
 * Each subscription consumes on its own channel with manual acks. A delivery settles once (later settles
 * are no-ops); settling on a closed channel is `BrokerUnavailable` (the broker redelivers). Acks made in
 * the same turn of the event loop are sent together at its end, as one cumulative ack where they form a
 * run from the oldest unsettled delivery (see `Settlements`); nacks are sent at once. `deadLetter`
 * publishes a copy with the reason (`reasonHeader`) to `<queue>.dead`, confirmed, then acks the original —
 * never lost; a connection lost between the two leaves a second copy in the dead queue.
 * `nack({ requeue: false })` and the delivery limit use RabbitMQ's own dead-lettering; its `x-death`
 * reason is mapped to the memory broker's wording. `deadLetters` browses the dead queue (`basic.get`
 * without ack, then requeue, one browse at a time per adapter); `replayDeadLetter` publishes the message
 * straight back into its queue through the default exchange (so only that queue gets it again, like the
 * memory broker), keeping its routing key in `x-sync-routing-key`, and then removes it from the dead queue.
 *
 * Connection loss fails the in-flight publishes and the running subscriptions with `BrokerUnavailable`.
 * The connection is reopened lazily by the next operation, no sooner than the reconnect `Schedule` allows
 * (exponential from 100 ms, capped at 5 s, forever); in between, operations fail fast with
 * `BrokerUnavailable` so their callers (the relay, the consumer) back off on their own schedules. A new
 * connection declares the exchanges and every queue declared so far again.
 *
 * @since 0.1.0
 */
import amqp from "amqplib"
import type { Channel, ChannelModel, ConfirmChannel, GetMessage, Message, Options } from "amqplib"
import {
  Cause,
  Clock,
  type Config,
  Duration,
  Effect,
  Layer,
  Option,
  Queue,
  Schedule,
  Schema,
  type Scope,
  Semaphore,
  Stream
} from "effect"
import {
  Broker,
  type DeadLetter,
  type DeadLetterFilter,
  deadLetterPageSize,
  type Delivery,
  matchesFilter,
  maxDeadLetterPage,
  replayLimit,
  deliveryLimitReason,
  type OutgoingMessage,
  type QueueSpec,
  reasonHeader,
  rejectedReason,
  type SubscribeOptions
} from "../Broker.ts"
import { BrokerUnavailable, PublishRejected } from "../Errors.ts"
import * as RetrySchedule from "../RetrySchedule.ts"
import * as RabbitConfig from "./RabbitConfig.ts"

/** The header that keeps a message's original routing key when the adapter moves it between queues. */
export const routingKeyHeader = "x-sync-routing-key"

/** The header with the epoch milliseconds at which the adapter dead-lettered a message. */
export const deadLetteredAtHeader = "x-sync-dead-lettered-at"

/** The dead-letter queue of a queue: `<queue>.dead`. */
export const deadQueueOf = (queue: string): string => `${queue}.dead`

/** The reconnect schedule: 100 ms doubling, at most 5 s apart, never giving up. */
export const reconnectSchedule: RetrySchedule.RetrySchedule = Schedule.min([
  Schedule.exponential("100 millis", 2),
  Schedule.spaced("5 seconds")
])

const connectTimeoutMillis = 10_000
const shutdownTimeout = Duration.seconds(10)

// ---------------------------------------------------------------------------------------------------
// Errors

const messageOf = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

const unavailable = (operation: string, detail: string, cause?: unknown): BrokerUnavailable =>
  new BrokerUnavailable({ operation, detail, cause })

/** A promise-returning amqplib call; a rejection (or a synchronous throw) is `BrokerUnavailable`. */
const attempt = <A>(operation: string, f: () => PromiseLike<A>): Effect.Effect<A, BrokerUnavailable> =>
  Effect.tryPromise({ try: f, catch: (cause) => unavailable(operation, messageOf(cause), cause) })

const NotFound = Schema.Struct({ code: Schema.Literal(404) })
const isNotFound = (cause: unknown): boolean => Option.isSome(Schema.decodeUnknownOption(NotFound)(cause))

// ---------------------------------------------------------------------------------------------------
// Message properties and headers (data from the broker: decoded, never trusted)

/** The properties of a message the adapter reads; one of an unexpected type is left out. */
interface Properties {
  readonly messageId: string | undefined
  readonly type: string | undefined
  readonly contentType: string | undefined
  readonly headers: RawHeaders
}
const stringOf = (value: unknown): string | undefined => typeof value === "string" ? value : undefined
const propertiesOf = (message: Message): Properties => {
  const { contentType, headers, messageId, type } = message.properties
  return {
    messageId: stringOf(messageId),
    type: stringOf(type),
    contentType: stringOf(contentType),
    headers: typeof headers === "object" && headers !== null ? headers : {}
  }
}

/** One entry of RabbitMQ's `x-death` header (the most recent death comes first). */
const Death = Schema.Struct({
  reason: Schema.String,
  "routing-keys": Schema.optional(Schema.Array(Schema.String)),
  time: Schema.optional(Schema.Union([Schema.Number, Schema.Struct({ value: Schema.Number })]))
})
const decodeDeaths = Schema.decodeUnknownOption(Schema.Array(Death))

type RawHeaders = Readonly<Record<string, unknown>>

const stringHeader = (headers: RawHeaders, name: string): string | undefined => {
  const value = headers[name]
  return typeof value === "string" ? value : undefined
}

const brokerHeaderPrefixes = ["x-first-death-", "x-last-death-"]
const brokerHeaders = new Set(["x-death", "x-delivery-count", routingKeyHeader, deadLetteredAtHeader, reasonHeader])

/**
 * The application's headers of a message: string (and stringified number / boolean) values, without the
 * bookkeeping headers of RabbitMQ and of this adapter.
 */
const applicationHeaders = (headers: RawHeaders): Record<string, string> => {
  const result: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (brokerHeaders.has(name) || brokerHeaderPrefixes.some((prefix) => name.startsWith(prefix))) continue
    if (typeof value === "string") result[name] = value
    else if (typeof value === "number" || typeof value === "boolean") result[name] = String(value)
  }
  return result
}

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

/** A message of `<queue>.dead` as a `DeadLetter`: dead-lettered by this adapter or by RabbitMQ itself. */
const toDeadLetter = (queue: string, message: Message): DeadLetter => {
  const properties = propertiesOf(message)
  const headers = properties.headers
  const death = Option.getOrUndefined(decodeDeaths(headers["x-death"]))?.[0]
  const reason = stringHeader(headers, reasonHeader) ?? (death === undefined ? "unknown" : nativeReason(death.reason))
  const deathSeconds = death?.time === undefined ? undefined : typeof death.time === "number" ? death.time : death.time.value
  const stampedAt = Number(stringHeader(headers, deadLetteredAtHeader))
  return {
    queue,
    messageId: properties.messageId ?? "",
    routingKey: stringHeader(headers, routingKeyHeader) ?? death?.["routing-keys"]?.[0] ?? message.fields.routingKey,
    type: properties.type ?? "",
    body: new Uint8Array(message.content),
    headers: { ...applicationHeaders(headers), [reasonHeader]: reason },
    reason,
    deadLetteredAt: Number.isFinite(stampedAt) && stampedAt > 0 ? stampedAt : (deathSeconds ?? 0) * 1000,
    deliveryCount: 0,
    publisher: stringOf(message.properties.userId),
    truncatedFrom: undefined
  }
}

// ---------------------------------------------------------------------------------------------------
// Publishing with confirms

/** A message as the adapter publishes it: to an exchange (`""` is the default exchange, by queue name). */
interface Outgoing {
  readonly exchange: string
  readonly routingKey: string
  readonly messageId: string
  readonly type: string
  readonly contentType: string
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/** The confirm channel of a connection and its bookkeeping. */
interface Publisher {
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

const makePublisher = (channel: ConfirmChannel, window: number): Publisher => {
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
  headers: { ...message.headers }
})

/**
 * Publishes every message with a confirm callback once `turn` is the current one in `order`, keeping at
 * most `window` in flight and respecting `drain`; ends the turn when all are sent and succeeds when all
 * are confirmed. Returned messages fail it with `PublishRejected` (the others are confirmed); a nack or a
 * closed channel fails it with `BrokerUnavailable`.
 */
const publishAll = (
  publisher: Publisher,
  messages: ReadonlyArray<Outgoing>,
  order: SendOrder,
  turn: Turn
): Effect.Effect<void, BrokerUnavailable | PublishRejected> =>
  messages.length === 0 ? Effect.sync(() => endTurn(order, turn)) : Effect.callback<void, BrokerUnavailable | PublishRejected>((resume) => {
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
      if (failure !== undefined || next === messages.length) endTurn(order, turn)
      finishIfComplete()
    }
    publisher.returned.add(onReturn)
    pump()
    return Effect.sync(stop)
  })

/** Waits until no publish awaits its confirm (or the channel closed). */
const awaitIdle = (publisher: Publisher): Effect.Effect<void> =>
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

// ---------------------------------------------------------------------------------------------------
// Channels

const openChannel = (model: ChannelModel): Effect.Effect<Channel, BrokerUnavailable> =>
  Effect.map(attempt("createChannel", () => model.createChannel()), (channel) => {
    channel.on("error", () => {}) // 'close' follows; unhandled 'error' events would crash the process
    return channel
  })

const closeChannel = (channel: Channel): Effect.Effect<void> =>
  attempt("closeChannel", () => channel.close()).pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)

/** Runs `f` on a fresh channel of `model`, closed afterwards. */
const withChannel = <A, E>(
  model: ChannelModel,
  f: (channel: Channel) => Effect.Effect<A, E>
): Effect.Effect<A, E | BrokerUnavailable> => Effect.acquireUseRelease(openChannel(model), f, closeChannel)

// ---------------------------------------------------------------------------------------------------
// Topology

type Settings = RabbitConfig.ResolvedRabbitOptions

/** Declares a quorum queue, its classic dead queue (bound to the dead-letter exchange) and its bindings. */
const declareQueue = (settings: Settings, channel: Channel, name: string, bindings: Iterable<string>) =>
  Effect.gen(function*() {
    const dead = deadQueueOf(name)
    yield* attempt("assertQueue", () =>
      channel.assertQueue(name, {
        durable: true,
        arguments: {
          "x-queue-type": "quorum",
          "x-delivery-limit": settings.deliveryLimit,
          "x-dead-letter-exchange": settings.deadLetterExchange,
          "x-dead-letter-routing-key": name
        }
      }))
    yield* attempt("assertQueue", () =>
      channel.assertQueue(dead, { durable: true, arguments: { "x-queue-type": "classic" } }))
    yield* attempt("bindQueue", () => channel.bindQueue(dead, settings.deadLetterExchange, name))
    for (const binding of bindings) {
      yield* attempt("bindQueue", () => channel.bindQueue(name, settings.exchange, binding))
    }
  })

/** Declares both exchanges and every queue declared so far. */
const declareTopology = (settings: Settings, queues: ReadonlyMap<string, ReadonlySet<string>>) => (channel: Channel) =>
  Effect.gen(function*() {
    yield* attempt("assertExchange", () => channel.assertExchange(settings.exchange, "topic", { durable: true }))
    yield* attempt("assertExchange", () => channel.assertExchange(settings.deadLetterExchange, "direct", { durable: true }))
    for (const [name, bindings] of queues) yield* declareQueue(settings, channel, name, bindings)
  })

// ---------------------------------------------------------------------------------------------------
// The connection: opened lazily, replaced after a loss no sooner than the reconnect schedule allows

/** An open connection with its confirm channel. */
interface Session {
  readonly model: ChannelModel
  readonly publisher: Publisher
  /** Why the connection ended; undefined while it is open. */
  readonly status: { lost: string | undefined }
}

const isUsable = (session: Session): boolean => session.status.lost === undefined && session.publisher.closed === undefined

/** Connects, declares the topology and opens the confirm channel. Uninterruptible, so no socket leaks. */
const openSession = (settings: Settings, queues: ReadonlyMap<string, ReadonlySet<string>>) =>
  Effect.uninterruptible(Effect.gen(function*() {
    const model = yield* attempt("connect", () =>
      amqp.connect(RabbitConfig.connectUrl(settings), {
        timeout: connectTimeoutMillis,
        clientProperties: { connection_name: settings.connectionName }
      }))
    const status: { lost: string | undefined } = { lost: undefined }
    let lastError = "the connection closed"
    model.on("error", (error: Error) => {
      lastError = `the connection closed: ${error.message}`
    })
    model.on("close", (error?: Error) => {
      status.lost ??= error === undefined ? lastError : `the connection closed: ${error.message}`
    })
    const publisher = yield* Effect.gen(function*() {
      yield* withChannel(model, declareTopology(settings, queues))
      const channel = yield* attempt("createConfirmChannel", () => model.createConfirmChannel())
      return makePublisher(channel, settings.publishWindow)
    }).pipe(Effect.onError(() => attempt("close", () => model.close()).pipe(Effect.ignore)))
    return { model, publisher, status } satisfies Session
  }))

/** The adapter's connection: `acquire` gives the open one or reconnects; `close` shuts down for good. */
interface Connection {
  readonly acquire: Effect.Effect<Session, BrokerUnavailable>
  /** Refuses new work, runs `beforeClose`, waits (up to 10 s) for in-flight confirms and closes cleanly. */
  readonly close: (beforeClose: Effect.Effect<void>) => Effect.Effect<void>
}

const makeConnection = (settings: Settings, queues: ReadonlyMap<string, ReadonlySet<string>>) =>
  Effect.gen(function*() {
    const lock = yield* Semaphore.make(1)
    const state: {
      session: Session | undefined
      failures: number
      retryAt: number
      lastError: string
      closing: boolean
    } = { session: undefined, failures: 0, retryAt: 0, lastError: "", closing: false }

    const reconnect = Effect.gen(function*() {
      const current = state.session
      if (current !== undefined && isUsable(current)) return current
      if (state.closing) return yield* unavailable("connect", "the broker adapter is shutting down")
      const now = yield* Clock.currentTimeMillis
      if (now < state.retryAt) {
        return yield* unavailable(
          "connect",
          `reconnecting in ${state.retryAt - now} ms after ${state.failures} failed attempt(s): ${state.lastError}`
        )
      }
      if (current !== undefined) {
        state.session = undefined
        yield* Effect.logWarning("RabbitMQ connection lost; reconnecting", {
          reason: current.status.lost ?? current.publisher.closed
        })
        // only the confirm channel died (e.g. its exchange was deleted): replace the whole connection
        if (current.status.lost === undefined) {
          yield* attempt("close", () => current.model.close()).pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)
        }
      }
      const opened = yield* Effect.result(openSession(settings, queues))
      if (opened._tag === "Failure") {
        state.failures++
        state.lastError = opened.failure.detail
        const delay = yield* RetrySchedule.delayAfter(reconnectSchedule, state.failures)
        state.retryAt = now + Option.match(delay, { onNone: () => 5_000, onSome: Duration.toMillis })
        return yield* opened.failure
      }
      if (state.failures > 0) yield* Effect.logInfo("RabbitMQ connection restored", { failedAttempts: state.failures })
      state.failures = 0
      state.retryAt = 0
      state.session = opened.success
      return opened.success
    })

    const acquire = Effect.suspend(() => {
      const current = state.session
      return current !== undefined && isUsable(current) ? Effect.succeed(current) : lock.withPermit(reconnect)
    })

    const close = (beforeClose: Effect.Effect<void>) =>
      lock.withPermit(Effect.gen(function*() {
        state.closing = true
        yield* beforeClose
        const session = state.session
        state.session = undefined
        if (session === undefined || session.status.lost !== undefined) return
        yield* awaitIdle(session.publisher).pipe(Effect.timeoutOption(shutdownTimeout))
        yield* closeChannel(session.publisher.channel)
        yield* attempt("close", () => session.model.close()).pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)
      }))

    return { acquire, close } satisfies Connection
  })

// ---------------------------------------------------------------------------------------------------
// Deliveries

/** What a delivery needs to know about its subscription's channel. */
interface ChannelState {
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
interface Settlements {
  /** Deliveries not settled towards the broker yet, by delivery tag (in delivery order). */
  readonly unsettled: Map<number, Message>
  /** Tags acked by the application and not sent yet. */
  readonly acked: Set<number>
  /** A flush is scheduled for the end of this turn. */
  scheduled: boolean
}

/** Sends the pending acks; a closed channel drops them (the broker redelivers those messages). */
const flushAcks = (settlements: Settlements, channel: Channel): void => {
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

/** Publishes a message straight into a queue (the dead queue, or the queue a dead letter is replayed to). */
type PublishToQueue = (
  queue: string,
  message: Omit<Outgoing, "exchange" | "routingKey">
) => Effect.Effect<void, BrokerUnavailable>

/** A delivery's settling: its subscription's channel and state, the message, and whether it is settled. */
interface Settling {
  readonly queue: string
  readonly channel: Channel
  readonly state: ChannelState
  readonly settlements: Settlements
  readonly message: Message
  readonly messageId: string
  settled: boolean
}

const ended = (s: Settling, operation: string) =>
  unavailable(operation, `the subscription to ${s.queue} has ended; message ${s.messageId} will be redelivered`)

/** Settles a delivery with `f`, once (later settles are no-ops); fails when its channel has closed. */
const settle = (s: Settling, operation: string, f: (s: Settling) => void): Effect.Effect<void, BrokerUnavailable> =>
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
const ackLater = (s: Settling): void => {
  const { settlements } = s
  settlements.acked.add(s.message.fields.deliveryTag)
  if (settlements.scheduled) return
  settlements.scheduled = true
  setImmediate(() => flushAcks(settlements, s.channel))
}

/** Acks or nacks towards the broker at once. */
const settleNow = (s: Settling, f: (channel: Channel, message: Message) => void): void => {
  f(s.channel, s.message)
  s.settlements.unsettled.delete(s.message.fields.deliveryTag)
}

/**
 * A message consumed from `queue` as a `Delivery`. Each delivery settles at most once (later settles are
 * no-ops); settling on a closed channel is `BrokerUnavailable` (the broker redelivers the message).
 * `deadLetter` publishes a copy with the reason to `<queue>.dead`, confirmed, and then acks the original.
 * (Built without a named closure per delivery: this runs for every message consumed.)
 */
const toDelivery = (
  queue: string,
  channel: Channel,
  state: ChannelState,
  settlements: Settlements,
  message: Message,
  publishToQueue: PublishToQueue
): Delivery => {
  settlements.unsettled.set(message.fields.deliveryTag, message)
  const properties = propertiesOf(message)
  const headers = properties.headers
  const messageId = properties.messageId ?? ""
  const routingKey = stringHeader(headers, routingKeyHeader) ?? message.fields.routingKey
  const type = properties.type ?? ""
  const body = new Uint8Array(message.content)
  const s: Settling = { queue, channel, state, settlements, message, messageId, settled: false }
  return {
    messageId,
    routingKey,
    type,
    body,
    headers: applicationHeaders(headers),
    redelivered: message.fields.redelivered,
    publisher: stringOf(message.properties.userId),
    ack: settle(s, "ack", ackLater),
    release: settle(s, "release", (s) => settleNow(s, (channel, message) => channel.nack(message, false, true))),
    nack(options) {
      return settle(s, "nack", (s) => settleNow(s, (channel, message) => channel.nack(message, false, options.requeue)))
    },
    deadLetter(reason) {
      return Effect.suspend(() => {
        if (s.settled) return Effect.void
        if (state.closed) return Effect.fail(ended(s, "deadLetter"))
        s.settled = true // reserved, so a concurrent settle is a no-op; released again on failure
        return Effect.flatMap(Clock.currentTimeMillis, (now) =>
          publishToQueue(deadQueueOf(queue), {
            messageId,
            type,
            contentType: properties.contentType ?? "application/json",
            body,
            headers: {
              ...applicationHeaders(headers),
              [reasonHeader]: reason,
              [routingKeyHeader]: routingKey,
              [deadLetteredAtHeader]: String(now)
            }
          })).pipe(
            Effect.andThen(Effect.try({
              try: () => settleNow(s, (channel, message) => channel.ack(message)),
              catch: (cause) => unavailable("deadLetter", messageOf(cause), cause)
            })),
            Effect.onError(() =>
              Effect.sync(() => {
                s.settled = false
              })
            )
          )
      })
    }
  }
}

/**
 * Consumes `spec` on a channel of its own into the stream's `queue` until the stream's scope closes
 * (cancel, then close: the unsettled deliveries go back to the queue). A closed channel or a consumer
 * cancelled by the broker fails the stream with `BrokerUnavailable`. Returns how to stop it at shutdown.
 */
const consume = (
  session: Session,
  spec: QueueSpec,
  prefetch: number,
  queue: Queue.Queue<Delivery, BrokerUnavailable | Cause.Done>,
  publishToQueue: PublishToQueue
) =>
  Effect.gen(function*() {
    const state: ChannelState = { closed: false, stopping: false }
    const settlements: Settlements = { unsettled: new Map(), acked: new Set(), scheduled: false }
    const fail = (detail: string) => {
      if (!state.stopping) Queue.failCauseUnsafe(queue, Cause.fail(unavailable("subscribe", detail)))
    }
    const channel = yield* Effect.acquireRelease(openChannel(session.model), closeChannel)
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
        Queue.offerUnsafe(queue, toDelivery(spec.name, channel, state, settlements, message, publishToQueue))
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

// ---------------------------------------------------------------------------------------------------
// Dead queues

/**
 * Takes every message of `<queue>.dead` without acking, on a channel of its own, runs `f` on them, then
 * requeues what `f` did not ack (a classic queue puts them back in place, in order). `whenAbsent` when
 * there is no such dead queue.
 */
const browseDeadQueue = <A>(
  session: Session,
  queue: string,
  whenAbsent: A,
  f: (channel: Channel, messages: ReadonlyArray<GetMessage>) => Effect.Effect<A, BrokerUnavailable>
): Effect.Effect<A, BrokerUnavailable> =>
  Effect.acquireUseRelease(
    openChannel(session.model),
    (channel) =>
      Effect.gen(function*() {
        const dead = deadQueueOf(queue)
        const exists = yield* Effect.tryPromise({ try: () => channel.checkQueue(dead), catch: (cause) => cause }).pipe(
          Effect.as(true),
          Effect.catch((cause) =>
            isNotFound(cause) ? Effect.succeed(false) : Effect.fail(unavailable("checkQueue", messageOf(cause), cause))
          )
        )
        if (!exists) return whenAbsent
        const messages: Array<GetMessage> = []
        while (true) {
          const message = yield* attempt("get", () => channel.get(dead, { noAck: false }))
          if (message === false) break
          messages.push(message)
        }
        return yield* f(channel, messages)
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

// ---------------------------------------------------------------------------------------------------
// The broker

/**
 * Makes the broker in the current scope. Nothing connects until the first operation; closing the scope
 * ends the running subscriptions (their consumers are cancelled), waits up to 10 s for in-flight confirms
 * and closes the channels and the connection.
 */
export const make = (options: RabbitConfig.RabbitOptions): Effect.Effect<Broker["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const settings = RabbitConfig.resolve(options)
    /** Every queue declared so far, with its bindings: declared again on every new connection. */
    const queues = new Map<string, ReadonlySet<string>>()
    /** How to stop each running subscription at shutdown. */
    const running = new Set<Effect.Effect<void>>()
    const browseLock = yield* Semaphore.make(1)
    const connection = yield* makeConnection(settings, queues)
    const { acquire } = connection

    const order: SendOrder = { turns: [] }

    /** Publishes in the send order: the turn is taken when the effect begins, before connecting. */
    const publishInOrder = (messages: ReadonlyArray<Outgoing>) =>
      Effect.suspend(() => {
        const turn = takeTurn(order)
        return Effect.flatMap(acquire, (session) => publishAll(session.publisher, messages, order, turn)).pipe(
          Effect.onExit(() => Effect.sync(() => endTurn(order, turn)))
        )
      })

    const publishToQueue: PublishToQueue = (queue, message) =>
      publishInOrder([{ ...message, exchange: "", routingKey: queue }]).pipe(
        Effect.catchTag("PublishRejected", () =>
          Effect.fail(unavailable("publish", `queue ${queue} does not exist; declare it first`)))
      )

    const publish = (batch: ReadonlyArray<OutgoingMessage>) =>
      batch.length === 0 ? Effect.void : publishInOrder(
        batch.map((m) => ({
          exchange: settings.exchange,
          routingKey: m.routingKey,
          messageId: m.messageId,
          type: m.type,
          contentType: "application/json",
          body: m.body,
          headers: m.headers
        }))
      )

    /** Declares the queue with every binding it was given so far; remembered for reconnects once declared. */
    const declare = (spec: QueueSpec) =>
      Effect.suspend(() => {
        const bindings = new Set([...(queues.get(spec.name) ?? []), ...spec.bindings])
        return Effect.flatMap(acquire, (session) =>
          withChannel(session.model, (channel) => declareQueue(settings, channel, spec.name, bindings))).pipe(
            Effect.tap(() =>
              Effect.sync(() => {
                queues.set(spec.name, new Set([...(queues.get(spec.name) ?? []), ...bindings]))
              })
            )
          )
      })

    const subscribe = (
      spec: QueueSpec,
      subscribeOptions?: SubscribeOptions
    ): Stream.Stream<Delivery, BrokerUnavailable> =>
      Stream.unwrap(Effect.gen(function*() {
        yield* declare(spec)
        const session = yield* acquire
        const prefetch = Math.max(1, subscribeOptions?.prefetch ?? settings.prefetch)
        return Stream.callback<Delivery, BrokerUnavailable>((queue) =>
          Effect.gen(function*() {
            const stop = yield* consume(session, spec, prefetch, queue, publishToQueue)
            running.add(stop)
            yield* Effect.addFinalizer(() => Effect.sync(() => running.delete(stop)))
          })
        )
      }))

    /** One browse at a time per adapter: a browse holds the dead queue's messages until it is done. */
    const browse = <A>(
      queue: string,
      whenAbsent: A,
      f: (channel: Channel, messages: ReadonlyArray<GetMessage>) => Effect.Effect<A, BrokerUnavailable>
    ) => browseLock.withPermit(Effect.flatMap(acquire, (session) => browseDeadQueue(session, queue, whenAbsent, f)))

    const deadLetters = (queue: string, page?: { readonly limit?: number }) =>
      browse(queue, { total: 0, items: [] }, (_, messages) =>
        Effect.succeed({
          total: messages.length,
          items: messages.slice(0, deadLetterPageSize(page)).map((m) => toDeadLetter(queue, m))
        }))

    /** Publishes the dead letter straight back into its queue (confirmed), then removes it from the dead queue. */
    const replayDeadLetter = (queue: string, messageId: string) =>
      browse(queue, false, (channel, messages) =>
        Effect.gen(function*() {
          const found = messages.find((m) => propertiesOf(m).messageId === messageId)
          if (found === undefined) return false
          const properties = propertiesOf(found)
          const dead = toDeadLetter(queue, found)
          yield* publishToQueue(queue, {
            messageId,
            type: dead.type,
            contentType: properties.contentType ?? "application/json",
            body: dead.body,
            headers: { ...applicationHeaders(properties.headers), [routingKeyHeader]: dead.routingKey }
          })
          yield* Effect.try({
            try: () => channel.ack(found),
            catch: (cause) => unavailable("replayDeadLetter", messageOf(cause), cause)
          })
          return true
        }))

    yield* Effect.addFinalizer(() =>
      connection.close(Effect.forEach(Array.from(running), (stop) => stop, { concurrency: "unbounded", discard: true }))
    )

    const replayDeadLetters = (queue: string, filter: DeadLetterFilter) =>
      Effect.gen(function*() {
        const page = yield* deadLetters(queue, { limit: maxDeadLetterPage })
        const limit = replayLimit(filter)
        let replayed = 0
        for (const dead of page.items) {
          if (replayed >= limit) break
          if (matchesFilter(filter, dead) && (yield* replayDeadLetter(queue, dead.messageId))) replayed++
        }
        return replayed
      })

    return Broker.of({
      publish,
      declare,
      subscribe,
      deadLetters,
      replayDeadLetter,
      replayDeadLetters,
      vouchesForPublishers: true
    })
  })

/** The RabbitMQ broker for the lifetime of the layer, with plain settings (see `RabbitConfig`). */
export const layer = (options: RabbitConfig.RabbitOptions): Layer.Layer<Broker> => Layer.effect(Broker, make(options))

/** The RabbitMQ broker with its settings read from `Config` (keys and defaults in `RabbitConfig`). */
export const layerConfig: Layer.Layer<Broker, Config.ConfigError> = Layer.effect(
  Broker,
  Effect.flatMap(RabbitConfig.config, make)
)
