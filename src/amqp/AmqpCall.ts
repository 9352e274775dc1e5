/**
 * amqplib's calls as effects, for the modules of the RabbitMQ adapter (internal: not exported by the
 * package). A failed call is `BrokerUnavailable` naming the operation; channels are opened and closed
 * through them.
 *
 * @since 0.1.0
 */
import type { Channel, ChannelModel } from "amqplib"
import { Effect, Option, Schema } from "effect"
import { BrokerUnavailable } from "../Errors.ts"

/** How long opening a connection may take. */
export const connectTimeoutMillis = 10_000

/** The message of a thrown value. */
export const messageOf = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** `BrokerUnavailable` for `operation`, with what went wrong. */
export const unavailable = (operation: string, detail: string, cause?: unknown): BrokerUnavailable =>
  new BrokerUnavailable({ operation, detail, cause })

/** A promise-returning amqplib call; a rejection (or a synchronous throw) is `BrokerUnavailable`. */
export const attempt = <A>(operation: string, f: () => PromiseLike<A>): Effect.Effect<A, BrokerUnavailable> =>
  Effect.tryPromise({ try: f, catch: (cause) => unavailable(operation, messageOf(cause), cause) })

const NotFound = Schema.Struct({ code: Schema.Literal(404) })

/** Whether amqplib failed with AMQP's `NOT_FOUND` (404): the exchange or queue does not exist. */
export const isNotFound = (cause: unknown): boolean => Option.isSome(Schema.decodeUnknownOption(NotFound)(cause))

/** Opens a channel on `model`. */
export const openChannel = (model: ChannelModel): Effect.Effect<Channel, BrokerUnavailable> =>
  Effect.map(attempt("createChannel", () => model.createChannel()), (channel) => {
    channel.on("error", () => {}) // 'close' follows; unhandled 'error' events would crash the process
    return channel
  })

/** Closes a channel, giving up after 5 s; a failure is ignored (the channel is gone either way). */
export const closeChannel = (channel: Channel): Effect.Effect<void> =>
  attempt("closeChannel", () => channel.close()).pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)

/** Runs `f` on a fresh channel of `model`, closed afterwards. */
export const withChannel = <A, E>(
  model: ChannelModel,
  f: (channel: Channel) => Effect.Effect<A, E>
): Effect.Effect<A, E | BrokerUnavailable> => Effect.acquireUseRelease(openChannel(model), f, closeChannel)

/** Closes a connection, giving up after 5 s; a failure is ignored (the connection is gone either way). */
export const closeConnection = (model: ChannelModel): Effect.Effect<void> =>
  attempt("close", () => model.close()).pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)
