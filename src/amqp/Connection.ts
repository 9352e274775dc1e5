/**
 * The adapter's connection to RabbitMQ (internal: not exported by the package): opened lazily by the
 * first operation, with its confirm channel; replaced after a loss (or a nacked publish, which gives the
 * confirm channel up) no sooner than the reconnect schedule allows, on the next node of the cluster when
 * several are configured; closed once, after the in-flight confirms, at shutdown.
 *
 * @since 0.1.0
 */
import amqp from "amqplib"
import type { ChannelModel, SocketOptions } from "amqplib"
import { Clock, Duration, Effect, Option, type Redacted, Schedule, Semaphore } from "effect"
import type { QueueSpec } from "../Broker.ts"
import type { BrokerUnavailable } from "../Errors.ts"
import * as RetrySchedule from "../RetrySchedule.ts"
import { attempt, closeChannel, closeConnection, connectTimeoutMillis, unavailable } from "./AmqpCall.ts"
import { awaitIdle, makePublisher, type Publisher } from "./Publisher.ts"
import * as RabbitConfig from "./RabbitConfig.ts"
import { ensureTopology } from "./Topology.ts"

/** The reconnect schedule: 100 ms doubling, at most 5 s apart, never giving up. */
export const reconnectSchedule: RetrySchedule.RetrySchedule = Schedule.min([
  Schedule.exponential("100 millis", 2),
  Schedule.spaced("5 seconds")
])

/** How long closing waits for the in-flight confirms. */
const shutdownTimeout = Duration.seconds(10)

type Settings = RabbitConfig.ResolvedRabbitOptions

/** An open connection with its confirm channel. */
export interface Session {
  readonly model: ChannelModel
  /** The node it is connected to, `host:port`. */
  readonly node: string
  /** The node's URL (as configured), for connections of their own to the same node. */
  readonly url: Redacted.Redacted<string>
  readonly publisher: Publisher
  /** Why the connection ended; undefined while it is open. */
  readonly status: { lost: string | undefined }
}

/** Neither the connection nor its confirm channel has closed. */
const isUsable = (session: Session): boolean =>
  session.status.lost === undefined && session.publisher.closed === undefined

/**
 * The session's socket: `writableHighWaterMark` (passed on to the socket by amqplib) leaves room for a
 * batch of publishes written at once (`writeBatch`), up to a thousand one-kilobyte events, before the
 * socket pushes back.
 */
const socketOptions = (settings: Settings): SocketOptions & { readonly writableHighWaterMark: number } => ({
  timeout: connectTimeoutMillis,
  writableHighWaterMark: 1 << 20,
  clientProperties: { connection_name: settings.connectionName }
})

/**
 * Connects, declares the topology and opens the confirm channel, the declarations bounded by the response
 * timeout (the connection is closed when they fail or time out). Uninterruptible, so no socket leaks.
 */
const openSession = (
  settings: Settings,
  queues: ReadonlyMap<string, QueueSpec>,
  nodeUrl: Redacted.Redacted<string>
) =>
  Effect.uninterruptible(Effect.gen(function*() {
    const model = yield* attempt("connect", () =>
      amqp.connect(RabbitConfig.connectUrl(settings, nodeUrl), socketOptions(settings)))
    const status: { lost: string | undefined } = { lost: undefined }
    let lastError = "the connection closed"
    model.on("error", (error: Error) => {
      lastError = `the connection closed: ${error.message}`
    })
    model.on("close", (error?: Error) => {
      status.lost ??= error === undefined ? lastError : `the connection closed: ${error.message}`
    })
    const publisher = yield* Effect.interruptible(Effect.gen(function*() {
      yield* ensureTopology(settings, model, queues, nodeUrl)
      const channel = yield* attempt("createConfirmChannel", () =>
        model.createConfirmChannel())
      return makePublisher(channel, settings.publishWindow)
    })).pipe(
      Effect.timeoutOrElse({
        duration: Duration.seconds(settings.responseTimeoutSeconds),
        orElse: () =>
          Effect.fail(unavailable(
            "declare",
            `${
              RabbitConfig.addressOf(nodeUrl)
            } did not answer the declarations within ${settings.responseTimeoutSeconds} s`
          ))
      }),
      Effect.onError(() => closeConnection(model))
    )
    return { model, node: RabbitConfig.addressOf(nodeUrl), url: nodeUrl, publisher, status } satisfies Session
  }))

/** The adapter's connection: `acquire` gives the open one or reconnects; `close` shuts down for good. */
export interface Connection {
  readonly acquire: Effect.Effect<Session, BrokerUnavailable>
  /** Refuses new work, runs `beforeClose`, waits (up to 10 s) for in-flight confirms and closes cleanly. */
  readonly close: (beforeClose: Effect.Effect<void>) => Effect.Effect<void>
}

/**
 * The adapter's connection, not yet open. Connection loss fails the in-flight publishes and the running
 * subscriptions with `BrokerUnavailable`. The connection is reopened lazily by the next operation, no
 * sooner than `reconnectSchedule` allows; in between, operations fail fast with `BrokerUnavailable` so
 * their callers (the relay, the consumer) back off on their own schedules. Every failed attempt is logged
 * as a warning with the broker's reason (e.g. `ACCESS_REFUSED` for a wrong password) and the time of the
 * next one. A new connection declares (or checks) the exchanges and every queue in `queues` again.
 *
 * With several node URLs (`settings.urls`), a lost connection or a failed attempt moves the next attempt to
 * the next URL in turn (round robin): the first attempt after a node goes away goes at once to the next
 * node, and the schedule's delays apply only while attempts keep failing.
 */
export const makeConnection = (
  settings: Settings,
  queues: ReadonlyMap<string, QueueSpec>
): Effect.Effect<Connection> =>
  Effect.gen(function*() {
    const lock = yield* Semaphore.make(1)
    const state: {
      session: Session | undefined
      failures: number
      retryAt: number
      lastError: string
      closing: boolean
      /** The index in `settings.urls` of the node the next attempt goes to. */
      node: number
    } = { session: undefined, failures: 0, retryAt: 0, lastError: "", closing: false, node: 0 }
    const nodeCount = settings.urls.length
    const nodeUrl = () => settings.urls[state.node] ?? settings.url

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
        // the node went away: the next attempt goes to the next one (the same one when there is only one)
        if (current.status.lost !== undefined) state.node = RabbitConfig.nextUrlIndex(state.node, nodeCount)
        yield* Effect.logWarning("RabbitMQ connection lost; reconnecting", {
          reason: current.status.lost ?? current.publisher.closed,
          ...(nodeCount > 1 ? { node: current.node, nextNode: RabbitConfig.addressOf(nodeUrl()) } : {})
        })
        // only the confirm channel died (e.g. its exchange was deleted): replace the whole connection
        if (current.status.lost === undefined) {
          yield* closeConnection(current.model)
        }
      }
      const triedUrl = nodeUrl()
      const opened = yield* Effect.result(openSession(settings, queues, triedUrl))
      if (opened._tag === "Failure") {
        state.node = RabbitConfig.nextUrlIndex(state.node, nodeCount)
        state.failures++
        state.lastError = opened.failure.detail
        const delay = yield* RetrySchedule.delayAfter(reconnectSchedule, state.failures)
        const retryInMillis = Option.match(delay, { onNone: () => 5_000, onSome: Duration.toMillis })
        state.retryAt = now + retryInMillis
        yield* Effect.logWarning("RabbitMQ connection failed; retrying", {
          operation: opened.failure.operation,
          reason: opened.failure.detail,
          login: settings.login,
          ...(nodeCount > 1 ?
            { node: RabbitConfig.addressOf(triedUrl), nextNode: RabbitConfig.addressOf(nodeUrl()) } :
            {}),
          failedAttempts: state.failures,
          retryInMillis,
          retryAt: new Date(state.retryAt).toISOString()
        })
        return yield* opened.failure
      }
      if (state.failures > 0 || (nodeCount > 1 && current !== undefined)) {
        yield* Effect.logInfo("RabbitMQ connection restored", {
          failedAttempts: state.failures,
          ...(nodeCount > 1 ? { node: opened.success.node } : {})
        })
      }
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
        yield* closeConnection(session.model)
      }))

    return { acquire, close } satisfies Connection
  })
