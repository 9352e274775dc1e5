/**
 * The `Broker` on RabbitMQ through amqplib (DESIGN §3). Settings and their defaults: `RabbitConfig`.
 *
 * Topology (`topology` describes it as plain JSON): a durable topic exchange (`sync.events`) for the
 * events, a durable direct exchange (`sync.dead`) for dead letters and a durable direct exchange
 * (`sync.replay`) for messages given back to their queue. `declare(queue)` asserts a durable quorum queue
 * with an explicit `x-delivery-limit` that dead-letters to `sync.dead` with its own name as routing key,
 * bound to `sync.events` by its patterns and to `sync.replay` under its own name; and a durable classic
 * queue `<queue>.dead` bound to `sync.dead` under the queue's name, so each queue's dead letters land in its
 * own dead queue. The dead queue is classic on purpose: browsing it requeues, which must not count
 * deliveries. With `topology: "passive"` the adapter declares nothing: it checks that the exchanges and
 * queues exist and fails with `BrokerUnavailable` naming what an administrator must declare
 * (`declareTopology` does it with an administrator's URL). The default exchange is never used, so a
 * service needs write permission on the three exchanges only.
 *
 * Publishers (R11): every message the adapter publishes — events, dead-letter copies, released copies,
 * replays — carries the `user-id` property set to the adapter's login, which RabbitMQ checks against the
 * connection. `Delivery.publisher` is a message's `user-id`; when the adapter moves a message it keeps the
 * original publisher in `x-sync-published-by`, which is believed only on a message whose `user-id` is the
 * adapter's own login (an empty value: nobody vouched for the original). RabbitMQ's own dead-lettering
 * keeps the `user-id` property, so its dead letters keep their publisher too.
 *
 * Publishing goes through one confirm channel per connection: every message of a batch is published with
 * a confirm callback (`mandatory`, persistent, `messageId`, `type`, `application/json`, `userId`,
 * headers), at most `publishWindow` awaiting their confirm at once over all batches, waiting for the
 * channel's `drain` when its buffer is full. Publish calls send in the order they began: a call sends its
 * messages once every earlier call has sent all of its own (or failed), then awaits its confirms while
 * later calls send, so a caller can keep several batches in flight without reordering them. A batch
 * succeeds when every message is confirmed; returned (unroutable) messages fail it with `PublishRejected`
 * naming exactly them; a nack or a lost channel fails it with `BrokerUnavailable`.
 *
 * Each subscription consumes on its own channel with manual acks. A delivery settles once (later settles
 * are no-ops); settling on a closed channel is `BrokerUnavailable` (the broker redelivers). Acks made in
 * the same turn of the event loop are sent together at its end, as one cumulative ack where they form a
 * run from the oldest unsettled delivery (see `Settlements`); nacks are sent at once.
 * `release` publishes a copy back into the queue through `sync.replay`, confirmed, then acks the original:
 * a quorum queue counts every return of a message (a nack, a closed channel) against its delivery limit,
 * a fresh copy starts from zero (R12). `deadLetter(reason)` publishes a bounded copy through `sync.dead` to
 * `<queue>.dead` — the reason cut to `maxReasonBytes`, the body to `maxDeadLetterBodyBytes` (its original
 * size in `x-sync-truncated-from`), at most 32 headers of at most 1 KiB each — confirmed, then acks the
 * original; a connection lost between the two leaves a second copy in the dead queue. When that copy
 * cannot be published while the delivery's channel is still open (no write access to `sync.dead`, a nack,
 * headers amqplib cannot encode), the delivery is rejected without requeue instead, to RabbitMQ's own
 * dead-lettering: it is never left unsettled. (That takes the same route, `sync.dead` under the queue's
 * name: a topology without that binding loses dead letters either way.) `nack({ requeue: false })` and the delivery limit use RabbitMQ's own dead-lettering;
 * its `x-death` reason is mapped to the memory broker's wording.
 *
 * `deadLetters` reads at most one page of the dead queue (`basic.get` without ack, then requeue, one
 * browse at a time per adapter) and its depth from `queue.declare` (passive). `replayDeadLetters` goes
 * through the dead queue once, one message at a time: a match is published back into its queue through
 * `sync.replay` (keeping its routing key in `x-sync-routing-key`), the others to the tail of the dead
 * queue; each is acked once its copy is confirmed.
 *
 * Size: RabbitMQ's own bound on a message is its `max_message_size` (`rabbitmq.conf`, e.g.
 * `max_message_size = 16777216` for 16 MiB); set it, since amqplib buffers a whole body before the consumer
 * sees it. A body larger than the consumer's `maxBytes` is dead-lettered as `TooLarge`, keeping a prefix.
 *
 * Connection loss fails the in-flight publishes and the running subscriptions with `BrokerUnavailable`.
 * The connection is reopened lazily by the next operation, no sooner than the reconnect `Schedule` allows
 * (exponential from 100 ms, capped at 5 s, forever); in between, operations fail fast with
 * `BrokerUnavailable` so their callers (the relay, the consumer) back off on their own schedules. Every
 * failed attempt is logged as a warning with the broker's reason (e.g. `ACCESS_REFUSED` for a wrong
 * password) and the time of the next one. A new connection declares (or checks) the exchanges and every
 * queue declared so far again.
 *
 * @since 0.1.0
 */
import type { Channel, GetMessage, Message } from "amqplib"
import {
  type Config,
  Effect,
  Layer,
  Option,
  Schema,
  type Scope,
  Semaphore,
  Stream
} from "effect"
import {
  boundBody,
  boundHeaders,
  boundReason,
  Broker,
  type DeadLetter,
  type DeadLetterFilter,
  deadLetterPageSize,
  type Delivery,
  matchesFilter,
  replayLimit,
  truncatedFromHeader,
  deliveryLimitReason,
  type OutgoingMessage,
  type QueueSpec,
  reasonHeader,
  rejectedReason,
  type SubscribeOptions
} from "../Broker.ts"
import { BrokerUnavailable, PublishRejected } from "../Errors.ts"
import { ensureOutsideTransaction } from "../Outbox.ts"
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
import { makeConnection, type Session } from "./Connection.ts"
import { consume } from "./Consumer.ts"
import { makeMover } from "./Mover.ts"
import { publishInOrder as makePublishInOrder } from "./Publisher.ts"
import * as RabbitConfig from "./RabbitConfig.ts"
import { deadQueueOf, ensureQueue } from "./Topology.ts"

export { deadLetteredAtHeader, deliveryCountHeader, publishedByHeader, routingKeyHeader } from "./AmqpMessage.ts"
export { deadQueueOf, declareTopology, topology } from "./Topology.ts"
export type {
  BindingDescription,
  ExchangeDescription,
  QueueDescription,
  TopologyDescription,
  TopologyOptions
} from "./Topology.ts"



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
interface DeadLetterSettings {
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
  const deathSeconds = death?.time === undefined ? undefined : typeof death.time === "number" ? death.time : death.time.value
  const stampedAt = Number(stringHeader(headers, deadLetteredAtHeader))
  // a cut body is a copy of its prefix; a whole one is copied out of amqplib's buffer
  const bounded = boundBody(bytesOf(message.content), settings.maxDeadLetterBodyBytes)
  const truncatedFrom = bounded.truncatedFrom
  const body = truncatedFrom === undefined ? new Uint8Array(message.content) : bounded.body
  return {
    queue,
    messageId: properties.messageId ?? "",
    routingKey: originalRoutingKey(properties, settings.login, death?.["routing-keys"]?.[0] ?? message.fields.routingKey),
    type: properties.type ?? "",
    body,
    headers: { ...boundHeaders(applicationHeaders(headers)), [reasonHeader]: reason },
    reason,
    deadLetteredAt: Number.isFinite(stampedAt) && stampedAt > 0 ? stampedAt : (deathSeconds ?? 0) * 1000,
    deliveryCount: countHeader(headers, deliveryCountHeader) ?? nativeDeliveryCount(death?.reason, settings.deliveryLimit),
    publisher: publisherOf(properties, settings.login),
    truncatedFrom: countHeader(headers, truncatedFromHeader) ?? truncatedFrom
  }
}

// ---------------------------------------------------------------------------------------------------
// Dead queues

/**
 * Runs `f` on a channel of its own with the number of messages in `<queue>.dead` (`whenAbsent` when there
 * is no such dead queue), then requeues whatever `f` took and did not ack (a classic queue puts them back
 * in place, in order) and closes the channel.
 */
const withDeadQueue = <A>(
  session: Session,
  queue: string,
  whenAbsent: A,
  f: (channel: Channel, messageCount: number) => Effect.Effect<A, BrokerUnavailable>
): Effect.Effect<A, BrokerUnavailable> =>
  Effect.acquireUseRelease(
    openChannel(session.model),
    (channel) =>
      Effect.gen(function*() {
        const checked = yield* Effect.tryPromise({ try: () => channel.checkQueue(deadQueueOf(queue)), catch: (cause) => cause })
          .pipe(
            Effect.map((ok) => ok.messageCount),
            Effect.catch((cause) =>
              isNotFound(cause) ? Effect.succeed(undefined) : Effect.fail(unavailable("checkQueue", messageOf(cause), cause))
            )
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
  Effect.map(attempt("get", () => channel.get(deadQueueOf(queue), { noAck: false })), (m) => m === false ? undefined : m)

const ackDead = (channel: Channel, message: Message, operation: string): Effect.Effect<void, BrokerUnavailable> =>
  Effect.try({ try: () => channel.ack(message), catch: (cause) => unavailable(operation, messageOf(cause), cause) })

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

    const publishInOrder = makePublishInOrder(acquire)

    const mover = makeMover(settings, publishInOrder)

    /** A move that must succeed: an unroutable copy is `BrokerUnavailable` (the topology is not there). */
    const mustMove = (effect: Effect.Effect<void, BrokerUnavailable | PublishRejected>) =>
      Effect.catchTag(effect, "PublishRejected", (rejected) => Effect.fail(unavailable("publish", rejected.detail)))

    // R2: a Broker captured before an outbox transaction and used inside it is refused
    const publish = (batch: ReadonlyArray<OutgoingMessage>) =>
      batch.length === 0 ? Effect.void : Effect.andThen(ensureOutsideTransaction("publish"), publishInOrder(
        batch.map((m) => ({
          exchange: settings.exchange,
          routingKey: m.routingKey,
          messageId: m.messageId,
          type: m.type,
          contentType: "application/json",
          body: m.body,
          headers: m.headers,
          userId: settings.login
        }))
      ))

    /** Declares the queue with every binding it was given so far; remembered for reconnects once declared. */
    const declare = (spec: QueueSpec) =>
      Effect.suspend(() => {
        const bindings = new Set([...(queues.get(spec.name) ?? []), ...spec.bindings])
        return Effect.flatMap(acquire, (session) =>
          ensureQueue(settings, session.model, spec.name, bindings)).pipe(
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
            const stop = yield* consume(session.model, spec, prefetch, queue, mover)
            running.add(stop)
            yield* Effect.addFinalizer(() => Effect.sync(() => running.delete(stop)))
          })
        )
      }))

    /** One browse or replay at a time per adapter: each holds messages of a dead queue while it runs. */
    const onDeadQueue = <A>(
      queue: string,
      whenAbsent: A,
      f: (channel: Channel, messageCount: number) => Effect.Effect<A, BrokerUnavailable>
    ) => browseLock.withPermit(Effect.flatMap(acquire, (session) => withDeadQueue(session, queue, whenAbsent, f)))

    const asDeadLetter = (queue: string, message: Message) => toDeadLetter(queue, message, settings)

    /** The oldest dead letters (taken without ack, then requeued in place) and the dead queue's depth. */
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
     * through the replay exchange, a non-match to the tail of the dead queue (its headers unchanged), each
     * confirmed before the dead copy is acked. Stops after the messages the dead queue held at the start,
     * or at the filter's limit.
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

    yield* Effect.addFinalizer(() =>
      connection.close(Effect.forEach(Array.from(running), (stop) => stop, { concurrency: "unbounded", discard: true }))
    )

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
