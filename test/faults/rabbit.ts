/**
 * RabbitMQ helpers of the fault-injection suite: `rabbitmqctl` (to close this test's connections on the
 * server side, as a network or server failure would), raw amqplib channels for publishing poison messages,
 * reading queue depths and deleting the test's topology.
 */
import amqp from "amqplib"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import { lanesExchangeOf } from "../../src/Broker.ts"
import { amqpUrl, consumerQueues, type Names } from "./stack.ts"

const execFileAsync = promisify(execFile)

/** Runs `rabbitmqctl -q …` and gives its standard output. */
export const rabbitmqctl = (...args: ReadonlyArray<string>): Effect.Effect<string> =>
  Effect.map(Effect.promise(() => execFileAsync("rabbitmqctl", ["-q", ...args])), (result) => result.stdout)

/**
 * Closes, on the server side, every connection whose name starts with `<connectionPrefix>-`; gives how
 * many were closed.
 */
export const closeConnections = (names: Names): Effect.Effect<number> =>
  Effect.gen(function*() {
    const listing = yield* rabbitmqctl("list_connections", "pid", "client_properties", "--no-table-headers")
    const pids = listing.split("\n")
      .filter((line) => line.includes(`{"connection_name","${names.connectionPrefix}-`))
      .flatMap((line) => line.split("\t").slice(0, 1))
    yield* Effect.forEach(
      pids,
      (pid) => rabbitmqctl("close_connection", pid, "forced by the fault-injection suite").pipe(Effect.ignore),
      { concurrency: "unbounded", discard: true }
    )
    return pids.length
  })

const rows = (text: string) => text.split("\n").filter((line) => line.trim() !== "").map((line) => line.split("\t"))
const connectionName = (properties: string) => /\{"connection_name","([^"]*)"\}/.exec(properties)?.[1] ?? "?"

/**
 * The queues of `queues` whose active consumer (single active consumer) each connection holds, by the
 * connection's name without `<prefix>-`; from `rabbitmqctl`.
 */
export const activeConsumers = (
  queues: ReadonlyArray<string>,
  prefix: string
): Effect.Effect<ReadonlyMap<string, ReadonlyArray<string>>> =>
  Effect.gen(function*() {
    const consumers = rows(
      yield* rabbitmqctl("list_consumers", "queue_name", "channel_pid", "active", "--no-table-headers")
    )
    const channels = new Map(
      rows(yield* rabbitmqctl("list_channels", "pid", "connection", "--no-table-headers")).map((
        [pid, connection]
      ) => [pid ?? "", connection ?? ""])
    )
    const connections = new Map(
      rows(yield* rabbitmqctl("list_connections", "pid", "client_properties", "--no-table-headers")).map((
        [pid, properties]
      ) => [pid ?? "", connectionName(properties ?? "")])
    )
    const byConnection = new Map<string, Array<string>>()
    for (const [queue, channel, active] of consumers) {
      if (queue === undefined || !queues.includes(queue) || active !== "true") continue
      const name = (connections.get(channels.get(channel ?? "") ?? "") ?? "?").replace(`${prefix}-`, "")
      byConnection.set(name, [...(byConnection.get(name) ?? []), queue])
    }
    return byConnection
  })

/** Runs `f` on a raw amqplib confirm channel of a connection of its own (to `url`, default the guest login on `/`). */
export const withChannel = <A>(
  f: (channel: amqp.ConfirmChannel) => Promise<A>,
  url: string = amqpUrl
): Effect.Effect<A> =>
  Effect.promise(() =>
    amqp.connect(url).then((connection) =>
      connection.createConfirmChannel().then((channel) => {
        channel.on("error", () => {}) // a refused operation closes the channel; `f` sees the rejection
        return f(channel)
      }).finally(() => connection.close().catch(() => undefined))
    )
  )

/** Messages ready in a queue and its consumers (0 and 0 when it does not exist), over `url` (default `/`). */
export const queueState = (
  queue: string,
  url: string = amqpUrl
): Effect.Effect<{ readonly ready: number; readonly consumers: number }> =>
  withChannel((channel) =>
    channel.checkQueue(queue).then(
      (q) => ({ ready: q.messageCount, consumers: q.consumerCount }),
      () => ({ ready: 0, consumers: 0 })
    ), url)

/** Deletes the test's queues (lanes included) and exchanges (best effort). */
export const deleteTopology = (names: Names): Effect.Effect<void> =>
  Effect.promise(async () => {
    const connection = await amqp.connect(amqpUrl)
    try {
      const queues = [...new Set([names.queue, ...consumerQueues(names)])]
      for (const queue of queues.flatMap((queue) => [queue, RabbitBroker.deadQueueOf(queue)])) {
        const channel = await connection.createChannel()
        await channel.deleteQueue(queue).catch(() => undefined)
        await channel.close().catch(() => undefined)
      }
      const lanes = names.lanes === undefined ? [] : [lanesExchangeOf(names.service)]
      for (const exchange of [names.exchange, names.deadLetterExchange, names.replayExchange, ...lanes]) {
        const channel = await connection.createChannel()
        await channel.deleteExchange(exchange).catch(() => undefined)
        await channel.close().catch(() => undefined)
      }
    } finally {
      await connection.close()
    }
  }).pipe(Effect.timeoutOption("10 seconds"), Effect.asVoid)
