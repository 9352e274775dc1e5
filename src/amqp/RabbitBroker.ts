/**
 * The `Broker` on RabbitMQ through amqplib (DESIGN §3). Settings and their defaults: `RabbitConfig`.
 *
 * Topology (`topology` describes it as plain JSON): a durable topic exchange (`sync.events`) for the
 * events, a durable direct exchange (`sync.dead`) for dead letters and one (`sync.replay`) for messages
 * given back to their queue; per queue, a durable quorum queue with an explicit `x-delivery-limit` and its
 * classic dead queue `<queue>.dead`. With `topology: "passive"` the adapter declares nothing and only
 * checks that they exist (`declareTopology` declares them with an administrator's URL).
 *
 * Publishers (R11): every message the adapter publishes carries the `user-id` property set to its login,
 * which RabbitMQ checks against the connection; `Delivery.publisher` is that `user-id`, or for a message
 * the adapter moved, the original publisher it kept in `publishedByHeader` (believed only on a message
 * whose `user-id` is the adapter's own login).
 *
 * Set RabbitMQ's `max_message_size` (see `RabbitConfig`): amqplib buffers a whole body before the
 * consumer sees it.
 *
 * The parts, internal modules of this folder: the connection (`Connection`), the topology (`Topology`),
 * publishing with confirms in send order (`Publisher`), consuming and settling deliveries (`Consumer`,
 * `Settlements`, `Mover`), the dead queues (`DeadQueue`), AMQP messages and headers (`AmqpMessage`) and
 * amqplib's calls (`AmqpCall`).
 *
 * @since 0.1.0
 */
import { type Config, Duration, Effect, Layer, type Scope, Stream } from "effect"
import { Broker, type Delivery, type OutgoingMessage, type QueueSpec, type SubscribeOptions } from "../Broker.ts"
import type { BrokerUnavailable } from "../Errors.ts"
import { ensureOutsideTransaction } from "../Outbox.ts"
import { makeConnection } from "./Connection.ts"
import { consume } from "./Consumer.ts"
import { makeDeadQueues } from "./DeadQueue.ts"
import { makeMover } from "./Mover.ts"
import { publishInOrder as makePublishInOrder } from "./Publisher.ts"
import * as RabbitConfig from "./RabbitConfig.ts"
import { ensureQueue } from "./Topology.ts"

export { deadLetteredAtHeader, deliveryCountHeader, publishedByHeader, routingKeyHeader } from "./AmqpMessage.ts"
export { reconnectSchedule } from "./Connection.ts"
export { consistentHashHint, consistentHashPlugin, deadQueueOf, declareTopology, topology } from "./Topology.ts"
export type {
  BindingDescription,
  ExchangeBindingDescription,
  ExchangeDescription,
  QueueDescription,
  TopologyDescription,
  TopologyOptions
} from "./Topology.ts"

/**
 * Makes the broker in the current scope. Nothing connects until the first operation; closing the scope
 * ends the running subscriptions (their consumers are cancelled), waits up to 10 s for in-flight confirms
 * and closes the channels and the connection.
 */
export const make = (options: RabbitConfig.RabbitOptions): Effect.Effect<Broker["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const settings = RabbitConfig.resolve(options)
    /** Every queue declared so far, with its bindings: declared again on every new connection. */
    const queues = new Map<string, QueueSpec>()
    /** How to stop each running subscription at shutdown. */
    const running = new Set<Effect.Effect<void>>()
    const connection = yield* makeConnection(settings, queues)
    const { acquire } = connection

    const publishInOrder = makePublishInOrder(acquire, Duration.seconds(settings.responseTimeoutSeconds))
    const mover = makeMover(settings, publishInOrder)
    const deadQueues = yield* makeDeadQueues(settings, acquire, mover)

    // R2: a Broker captured before an outbox transaction and used inside it is refused
    const publish = (batch: ReadonlyArray<OutgoingMessage>) =>
      batch.length === 0 ? Effect.void : Effect.andThen(
        ensureOutsideTransaction("publish"),
        publishInOrder(
          batch.map((m) => ({
            exchange: settings.exchange,
            routingKey: m.routingKey,
            messageId: m.messageId,
            type: m.type,
            contentType: m.contentType ?? "application/json",
            body: m.body,
            headers: m.headers,
            userId: settings.login
          }))
        )
      )

    /** Declares the queue with every binding it was given so far; remembered for reconnects once declared. */
    const declare = (spec: QueueSpec) =>
      Effect.suspend(() => {
        const merged = (): QueueSpec => ({
          ...spec,
          bindings: [...new Set([...(queues.get(spec.name)?.bindings ?? []), ...spec.bindings])]
        })
        return Effect.flatMap(acquire, (session) => ensureQueue(settings, session.model, merged(), session.url)).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              queues.set(spec.name, merged())
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

    yield* Effect.addFinalizer(() =>
      connection.close(Effect.forEach(Array.from(running), (stop) => stop, { concurrency: "unbounded", discard: true }))
    )

    return Broker.of({
      publish,
      declare,
      subscribe,
      ...deadQueues,
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
