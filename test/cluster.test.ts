/**
 * Failover on a three-node RabbitMQ cluster (`scripts/rabbitmq-cluster.sh`, started in `beforeAll`,
 * stopped in `afterAll`): a relay and a consumer, each connected with the three nodes' URLs, while a stream
 * of owner writes goes through the real stack (PostgreSQL outbox → cluster → quorum queue → inbox). Mid-run
 * the node leading the consumer's quorum queue is stopped, then started again.
 *
 * The check is Jepsen's "total queue": every event confirmed to the relay (its outbox row marked published)
 * is in the consumer's inbox, and applied once (duplicates deduped by the inbox); the copies equal the
 * owner's rows. The test prints the failover time: from the stop to the first publish confirmed and the first
 * delivery received after it (on another node, since the stopped one is down).
 *
 * It runs only where RabbitMQ is installed locally (the script's `RABBITMQ_BIN_DIR`, default
 * /usr/lib/rabbitmq/bin); where the cluster cannot start, the test fails saying so, with the script's output.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer, Logger, References, Schema, Stream } from "effect"
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import * as RabbitBroker from "../src/amqp/RabbitBroker.ts"
import { Broker } from "../src/Broker.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Relay from "../src/Relay.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { owner, subscriptions } from "./faults/contract.ts"
import { setup } from "./faults/fixture.ts"
import { type Names, pool, roles, tables } from "./faults/stack.ts"
import { awaitQuiescence, judge } from "./faults/verify.ts"
import { writeStream } from "./faults/writer.ts"
import { ownerSide } from "./harness.ts"

const execFileAsync = promisify(execFile)
const script = fileURLToPath(new URL("../scripts/rabbitmq-cluster.sh", import.meta.url))
const rabbitBin = process.env.RABBITMQ_BIN_DIR ?? "/usr/lib/rabbitmq/bin"
const installed = existsSync(`${rabbitBin}/rabbitmq-server`)

/** The cluster's nodes: number, AMQP URL (the script's default ports 5681–5683). */
const nodes = [1, 2, 3].map((n) => ({ n, url: `amqp://guest:guest@127.0.0.1:${5680 + n}` }))
const nodeUrl = (n: number) => nodes[n - 1]?.url ?? `amqp://guest:guest@127.0.0.1:${5680 + n}`

/**
 * The events written (`CLUSTER_EVENTS`, default 4 000) and their rate (`CLUSTER_RATE`, default 200/s); a quarter
 * as many again once the node is down.
 */
const stream = {
  events: Number(process.env.CLUSTER_EVENTS ?? 4_000),
  ratePerSecond: Number(process.env.CLUSTER_RATE ?? 200)
}

/** Runs the cluster script; its output (stdout and stderr) or the failure with it. */
const cluster = (...args: ReadonlyArray<string>) =>
  execFileAsync("bash", [script, ...args], { timeout: 240_000, maxBuffer: 16 * 1024 * 1024 }).then(
    (result) => `${result.stdout}${result.stderr}`
  )

const clusterEffect = (...args: ReadonlyArray<string>) => Effect.promise(() => cluster(...args))

const outputOf = (error: unknown): string => {
  const decoded = Schema.decodeUnknownOption(Schema.Struct({ stdout: Schema.String, stderr: Schema.String }))(error)
  const message = error instanceof Error ? error.message : String(error)
  return decoded._tag === "Some" ? `${message}\n${decoded.value.stdout}${decoded.value.stderr}` : message
}

const QueueRows = Schema.Array(Schema.Struct({ name: Schema.String, leader: Schema.String }))

/** The node number (1–3) leading `queue`, asked through node `via`. */
const leaderOf = (queue: string, via: number) =>
  Effect.gen(function*() {
    const output = yield* clusterEffect(
      "ctl",
      String(via),
      "-q",
      "list_queues",
      "name",
      "leader",
      "--formatter",
      "json"
    )
    const rows = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(QueueRows))(output.trim())
    const leader = rows.find((row) => row.name === queue)?.leader ?? ""
    const match = /^es-cluster-(\d)@/.exec(leader)
    if (match?.[1] === undefined) return yield* Effect.die(new Error(`no leader of ${queue} in ${output}`))
    return Number(match[1])
  })

/** How many of this test's connections node `n` holds. */
const connectionsOn = (names: Names, n: number) =>
  Effect.map(
    clusterEffect("ctl", String(n), "-q", "list_connections", "client_properties", "--no-table-headers"),
    (listing) => listing.split("\n").filter((line) => line.includes(`"${names.connectionPrefix}-`)).length
  )

/** When publishes were confirmed and deliveries received, as seen by the relay's and the consumer's brokers. */
interface Timeline {
  readonly confirms: Array<number>
  readonly deliveries: Array<number>
  /** When a publish failed (the relay's broker saw the connection go). */
  readonly publishFailures: Array<number>
  /** When a subscription failed (the consumer's broker saw the connection go). */
  readonly subscriptionFailures: Array<number>
}

/** The cluster broker of one role (all three URLs), recording confirm and delivery times into `timeline`. */
const clusterBroker = (names: Names, role: string, timeline: Timeline): Layer.Layer<Broker> =>
  Layer.effect(
    Broker,
    Effect.map(Broker, (broker) =>
      Broker.of({
        ...broker,
        publish: (batch) =>
          broker.publish(batch).pipe(
            Effect.tap(() => Effect.sync(() => timeline.confirms.push(Date.now()))),
            Effect.tapError(() => Effect.sync(() => timeline.publishFailures.push(Date.now())))
          ),
        subscribe: (queue, options) =>
          broker.subscribe(queue, options).pipe(
            Stream.tap(() => Effect.sync(() => timeline.deliveries.push(Date.now()))),
            Stream.tapError(() => Effect.sync(() => timeline.subscriptionFailures.push(Date.now())))
          )
      }))
  ).pipe(Layer.provide(RabbitBroker.layer({
    url: nodeUrl(1),
    urls: [nodeUrl(2), nodeUrl(3)],
    exchange: names.exchange,
    deadLetterExchange: names.deadLetterExchange,
    replayExchange: names.replayExchange,
    connectionName: `${names.connectionPrefix}-${role}`
  })))

const relay = (fixture: { readonly url: Parameters<typeof pool>[0]; readonly names: Names }, timeline: Timeline) =>
  Relay.layer({ producer: owner, pollInterval: "500 millis" }).pipe(
    Layer.provide(
      ownerSide(PostgresSync.layer({ prefix: fixture.names.ownerPrefix, leaseMillis: 2_000 })).pipe(
        Layer.provide(pool(fixture.url, roles.relay, 4))
      )
    ),
    Layer.provide(clusterBroker(fixture.names, "relay", timeline))
  )

const consumer = (fixture: { readonly url: Parameters<typeof pool>[0]; readonly names: Names }, timeline: Timeline) =>
  SyncConsumer.layer({ service: fixture.names.service, subscriptions, producers: { [owner]: ["guest"] } }).pipe(
    Layer.provide(
      PostgresSync.layer({ prefix: fixture.names.consumerPrefix }).pipe(
        Layer.provideMerge(pool(fixture.url, roles.consumer, 6))
      )
    ),
    Layer.provide(clusterBroker(fixture.names, "consumer", timeline))
  )

/**
 * How long after the stop the test waits for the first confirm and the first delivery: a liveness bound, not
 * a timing target (the failover time is printed); generous, for a machine busy with other tests.
 */
const failoverBound = 150_000

/** Waits (polling every 50 ms) for the first time in `times` at or after `since`, up to `failoverBound` after it. */
const firstAfter = (times: ReadonlyArray<number>, since: number) =>
  Effect.gen(function*() {
    const deadline = since + failoverBound
    while (true) {
      const found = times.find((t) => t >= since)
      if (found !== undefined) return found
      if ((yield* Clock.currentTimeMillis) > deadline) return undefined
      yield* Effect.sleep("50 millis")
    }
  })

/** The longest interval between two consecutive times within [from, to], in ms. */
const longestGap = (times: ReadonlyArray<number>, from: number, to: number) => {
  const inside = times.filter((t) => t >= from && t <= to).sort((a, b) => a - b)
  let gap = 0
  for (let i = 1; i < inside.length; i++) gap = Math.max(gap, (inside[i] ?? 0) - (inside[i - 1] ?? 0))
  return gap
}

const Ids = Schema.Array(Schema.Struct({ message_id: Schema.String }))

/**
 * Runs `effect` with the relay's and the consumer's log lines (info and above: connection lost, failed,
 * restored) kept in `lines` (the last 300), each with its time, instead of printed: shown when a failover
 * check fails.
 */
const logged = <A, E, R>(lines: Array<{ at: number; text: string }>, effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.provide(Logger.layer([Logger.make((options) => {
      lines.push({ at: options.date.getTime(), text: `${options.logLevel} ${JSON.stringify(options.message)}` })
      if (lines.length > 300) lines.shift()
    })])),
    Effect.provideService(References.MinimumLogLevel, "Info")
  )

let startError: string | undefined

describe.skipIf(!installed)("three-node RabbitMQ cluster: the leader of the queue stopped mid-run", () => {
  beforeAll(async () => {
    try {
      await cluster("start")
    } catch (error) {
      startError = outputOf(error)
      await cluster("stop").catch(() => undefined)
    }
  }, 300_000)

  afterAll(async () => {
    await cluster("stop")
  }, 120_000)

  it.live("every event confirmed to the relay is applied once; nothing is lost", () => {
    const lines: Array<{ at: number; text: string }> = []
    return logged(
      lines,
      Effect.gen(function*() {
        if (startError !== undefined) {
          return assert.fail(
            `the three-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh start) could not start on this machine:\n${startError}`
          )
        }
        const fixture = yield* setup("cluster")
        const timeline: Timeline = { confirms: [], deliveries: [], publishFailures: [], subscriptionFailures: [] }
        yield* Layer.build(consumer(fixture, timeline))
        yield* Layer.build(relay(fixture, timeline))
        const streamAt = Date.now()
        const writer = yield* writeStream(stream).pipe(Effect.provide(fixture.writer), Effect.forkChild)

        // let the stream flow, then stop the node leading the consumer's quorum queue
        yield* Effect.sleep("5 seconds")
        const leader = yield* leaderOf(fixture.names.queue, 1)
        const other = (leader % 3) + 1
        const connectionsOnLeader = yield* connectionsOn(fixture.names, leader)
        const stopAt = Date.now()
        yield* clusterEffect("stop-node", String(leader))
        const stoppedAt = Date.now()
        // on a busy machine the stream may have ended by now: a second one keeps events flowing through the failover
        const lateWriter = yield* writeStream({
          events: stream.events / 4,
          ratePerSecond: stream.ratePerSecond,
          idPrefix: "late-",
          seed: 7
        })
          .pipe(Effect.provide(fixture.writer), Effect.forkChild)
        const confirmAt = yield* firstAfter(timeline.confirms, stoppedAt)
        const deliveryAt = yield* firstAfter(timeline.deliveries, stoppedAt)
        const newLeader = yield* leaderOf(fixture.names.queue, other)
        const restartAt = Date.now()
        yield* clusterEffect("start-node", String(leader))
        const restartedAt = Date.now()

        const early = yield* Fiber.join(writer)
        const late = yield* Fiber.join(lateWriter)
        const written = {
          events: early.events + late.events,
          transactions: early.transactions + late.transactions,
          retries: early.retries + late.retries,
          seconds: Math.max(early.seconds, (stoppedAt - streamAt) / 1000 + late.seconds)
        }
        const t = yield* awaitQuiescence(fixture.sql, fixture.names, { amqpUrl: nodeUrl(other), timeoutSeconds: 120 })

        // Jepsen's total-queue check: confirmed ⊆ received (inbox), each applied at most once
        const names = tables(fixture.names)
        const sql = fixture.sql
        const confirmed = yield* sql`SELECT message_id FROM ${sql(names.outbox)} WHERE published_at IS NOT NULL`.pipe(
          Effect.flatMap(Schema.decodeUnknownEffect(Ids))
        )
        const received = yield* sql`SELECT message_id FROM ${
          sql(names.inbox)
        } WHERE consumer = ${fixture.names.service}`
          .pipe(Effect.flatMap(Schema.decodeUnknownEffect(Ids)))
        const receivedIds = new Set(received.map((row) => row.message_id))
        const missing = confirmed.filter((row) => !receivedIds.has(row.message_id))

        const afterStop = lines.filter((line) => line.at >= stopAt - 1_000)
        const log = () => afterStop.map((line) => `  +${line.at - stopAt} ms ${line.text}`).join("\n")
        const millis = (at: number | undefined) =>
          at === undefined ? `none within ${failoverBound / 1000} s` : `${at - stopAt} ms`
        // the clients' own view: from the first failure each saw after the stop to its first success after that
        const publishLoss = timeline.publishFailures.find((at) => at >= stopAt)
        const subscriptionLoss = timeline.subscriptionFailures.find((at) => at >= stopAt)
        const recovery = (loss: number | undefined, times: ReadonlyArray<number>) => {
          const back = loss === undefined ? undefined : times.find((at) => at >= loss)
          return loss === undefined ? "no failure seen" : back === undefined ? "never" : `${back - loss} ms`
        }
        console.log(
          `[cluster] stopped node ${leader} (leader of ${fixture.names.queue}, holding ${connectionsOnLeader} of the test's ` +
            `2 connections) at +0 ms, down at +${stoppedAt - stopAt} ms; new leader node ${newLeader}; ` +
            `first publish confirmed after the stop at ${millis(confirmAt)}, first delivery at ${
              millis(deliveryAt)
            }; ` +
            `from the relay's first failed publish to its next confirm ${recovery(publishLoss, timeline.confirms)}, ` +
            `from the consumer's failed subscription to its next delivery ${
              recovery(subscriptionLoss, timeline.deliveries)
            }; ` +
            `longest gap without a confirm ${longestGap(timeline.confirms, stopAt - 5_000, restartAt)} ms, ` +
            `without a delivery ${longestGap(timeline.deliveries, stopAt - 5_000, restartAt)} ms; ` +
            `node ${leader} back after ${restartedAt - restartAt} ms | confirmed ${confirmed.length}, ` +
            `received ${receivedIds.size}, confirmed but not received ${missing.length}, applies ${t.applies}, ` +
            `duplicates applied ${t.duplicates}; the adapters logged ${afterStop.length} lines from the stop on`
        )
        assert.isDefined(confirmAt, `no publish was confirmed after the node stopped; the adapters logged:\n${log()}`)
        assert.isDefined(deliveryAt, `no delivery was received after the node stopped; the adapters logged:\n${log()}`)
        assert.notStrictEqual(newLeader, leader)
        assert.isAbove(confirmed.length, 0)
        assert.deepStrictEqual(missing.slice(0, 5), [], "events confirmed to the relay but never received")
        yield* judge(
          "RabbitMQ cluster node leading the queue stopped",
          t,
          { injected: 1, detail: `node ${leader} stopped and started again` },
          written,
          fixture.names
        )
      })
    )
  }, 420_000)
})
