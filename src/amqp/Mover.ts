/**
 * How the adapter moves messages (internal: not exported by the package): a confirmed copy published to
 * a queue's dead queue through the dead-letter exchange, or back into the queue through the replay
 * exchange, always under the queue's name and with the adapter's login as `user-id` (R11).
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { type BrokerUnavailable, PublishRejected } from "../Errors.ts"
import type { Outgoing, PublishInOrder } from "./Publisher.ts"
import type * as RabbitConfig from "./RabbitConfig.ts"
import { deadQueueOf } from "./Topology.ts"

/** A copy of a message the adapter moves: its exchange, routing key and `user-id` are the adapter's choice. */
export type Moved = Omit<Outgoing, "exchange" | "routingKey" | "userId">

/** How the adapter moves messages between a queue and its dead queue, confirmed. */
export interface Mover {
  readonly login: string
  readonly maxDeadLetterBodyBytes: number
  /** Publishes a copy to `<queue>.dead`, through the dead-letter exchange under the queue's name. */
  readonly toDeadQueue: (queue: string, message: Moved) => Effect.Effect<void, BrokerUnavailable | PublishRejected>
  /** Publishes a copy back into `queue`, through the replay exchange under the queue's name. */
  readonly toQueue: (queue: string, message: Moved) => Effect.Effect<void, BrokerUnavailable | PublishRejected>
}

/**
 * The mover of an adapter, publishing in its send order. A copy no queue takes fails with
 * `PublishRejected` saying that the queue's topology is missing.
 */
export const makeMover = (settings: RabbitConfig.ResolvedRabbitOptions, publishInOrder: PublishInOrder): Mover => {
  /** Publishes a moved copy to `exchange` under the queue's name; unroutable means the topology is missing. */
  const publishMoved = (exchange: string, target: string, queue: string, message: Moved) =>
    publishInOrder([{ ...message, exchange, routingKey: queue, userId: settings.login }]).pipe(
      Effect.catchTag("PublishRejected", (rejected) =>
        Effect.fail(
          new PublishRejected({
            messageIds: rejected.messageIds,
            detail: `${exchange} routes nothing to ${target} under "${queue}"; declare the queue ${queue} first`
          })
        ))
    )
  return {
    login: settings.login,
    maxDeadLetterBodyBytes: settings.maxDeadLetterBodyBytes,
    toDeadQueue: (queue, message) => publishMoved(settings.deadLetterExchange, deadQueueOf(queue), queue, message),
    toQueue: (queue, message) => publishMoved(settings.replayExchange, queue, queue, message)
  }
}
