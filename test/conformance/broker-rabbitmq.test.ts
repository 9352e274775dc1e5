/**
 * Runs the broker conformance suite on RabbitMQ (amqp://guest:guest@127.0.0.1:5672, live clock), plus
 * RabbitMQ-only tests: the declared topology, RabbitMQ's own delivery limit, `layerConfig`, fast failure
 * while the broker is unreachable, and bad input dead-lettered by a running `SyncConsumer`.
 *
 * The file uses its own exchanges and connection name (random per run) and unique queue names per test;
 * they are deleted after the file. A forced disconnect closes this file's connections with `rabbitmqctl
 * close_connection`, as a server-side failure would.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import {
  ConfigProvider,
  Context,
  Deferred,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  Schedule,
  Schema,
  Scope,
  Stream
} from "effect"
import { execFile } from "node:child_process"
import { connect, createServer, Socket } from "node:net"
import { promisify } from "node:util"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import type { RabbitOptions } from "../../src/amqp/RabbitConfig.ts"
import {
  Broker,
  type Delivery,
  deliveryLimitReason,
  entityKeyHeader,
  laneQueues,
  type OutgoingMessage,
  type QueueSpec,
  reasonHeader,
  rejectedReason
} from "../../src/Broker.ts"
import { CopyRepository } from "../../src/CopyRepository.ts"
import * as Envelope from "../../src/Envelope.ts"
import type { BrokerUnavailable } from "../../src/Errors.ts"
import * as MemorySync from "../../src/memory/MemorySync.ts"
import * as Subscription from "../../src/Subscription.ts"
import * as SyncConsumer from "../../src/SyncConsumer.ts"
import { Company, User } from "../fixtures.ts"
import { brokerConformance } from "./broker.ts"

const url = "amqp://guest:guest@127.0.0.1:5672"
const run = Math.random().toString(36).slice(2, 8)
const exchange = `test.sync.events.${run}`
const deadLetterExchange = `test.sync.dead.${run}`
const replayExchange = `test.sync.replay.${run}`
const connectionName = `entity-sync-test-${run}`
const settings: RabbitOptions = { url, exchange, deadLetterExchange, replayExchange, connectionName }
const liveTimeout = 60_000

const created = new Set<string>()
let counter = 0
const queueName = (base: string) => {
  const name = `test.${run}.${base}.${counter++}`
  created.add(name)
  return name
}

const execFileAsync = promisify(execFile)
const rabbitmqctl = (...args: ReadonlyArray<string>) =>
  Effect.map(Effect.promise(() => execFileAsync("rabbitmqctl", ["-q", ...args])), (result) => result.stdout)

/** Closes this file's connections on the server side (waiting up to 2 s for one to exist). */
const forceDisconnect = Effect.gen(function*() {
  for (let tries = 0; tries < 20; tries++) {
    const listing = yield* rabbitmqctl("list_connections", "pid", "client_properties", "--no-table-headers")
    const pids = listing.split("\n")
      .filter((line) => line.includes(`{"connection_name","${connectionName}"}`))
      .flatMap((line) => line.split("\t").slice(0, 1))
    if (pids.length > 0) {
      yield* Effect.forEach(pids, (pid) => rabbitmqctl("close_connection", pid, "forced by the conformance suite"), {
        discard: true
      })
      return
    }
    yield* Effect.sleep("100 millis")
  }
  return yield* Effect.die(new Error(`no connection named ${connectionName} to close`))
})

/** A raw amqplib confirm channel for the duration of `f` (on its own connection). */
const withRawChannel = <A>(f: (channel: amqp.ConfirmChannel) => Promise<A>): Promise<A> =>
  amqp.connect(url).then((connection) => connection.createConfirmChannel().then(f).finally(() => connection.close()))

beforeAll(() => withRawChannel((channel) => channel.checkExchange("amq.topic")), 10_000)

afterAll(async () => {
  for (const queue of created) {
    // a lanes test's `queue` is a service: its lane queues and their exchange go too
    const lanes = Array.from({ length: 4 }, (_, i) => `${queue}.sync.lane-${i}`)
    for (const name of [queue, ...lanes].flatMap((name) => [name, RabbitBroker.deadQueueOf(name)])) {
      await withRawChannel((channel) => channel.deleteQueue(name)).catch(() => undefined)
    }
    if (queue.includes(".lanes.")) {
      await withRawChannel((channel) => channel.deleteExchange(`${queue}.lanes`)).catch(() => undefined)
    }
  }
  for (const name of [exchange, deadLetterExchange, replayExchange]) {
    await withRawChannel((channel) => channel.deleteExchange(name)).catch(() => undefined)
  }
}, 30_000)

brokerConformance("RabbitMQ broker", () => RabbitBroker.layer(settings), {
  forceDisconnect,
  newClient: RabbitBroker.layer(settings),
  pause: Effect.sleep("50 millis"),
  queueName,
  liveTimeout,
  deliveryLimit: 20,
  elapse: Effect.sleep("20 millis")
})

/**
 * A TCP proxy to the local RabbitMQ that can go silent: while silent it drops every byte both ways and
 * keeps the sockets open (a broker that stops answering without closing anything); `speak` ends the
 * silence and cuts the connections that lived through it. Closed with the scope.
 */
const silentProxy = Effect.acquireRelease(
  Effect.callback<
    { readonly port: number; readonly silence: () => void; readonly speak: () => void; close: () => void }
  >(
    (resume) => {
      const sockets = new Set<Socket>()
      let silenced: ReadonlyArray<Socket> = []
      let silent = false
      const server = createServer((client) => {
        const upstream = connect(5672, "127.0.0.1")
        for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
          sockets.add(from)
          from.on("error", () => {})
          from.on("close", () => {
            sockets.delete(from)
            to.destroy()
          })
          from.on("data", (chunk) => {
            if (!silent) to.write(chunk)
          })
        }
      })
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        resume(Effect.succeed({
          port: typeof address === "object" && address !== null ? address.port : 0,
          silence: () => {
            silent = true
            silenced = Array.from(sockets)
          },
          speak: () => {
            silent = false
            silenced.forEach((socket) => socket.destroy())
          },
          close: () => {
            server.close()
            sockets.forEach((socket) => socket.destroy())
          }
        }))
      })
    }
  ),
  (proxy) => Effect.sync(proxy.close)
)

const QueueInfo = Schema.Struct({
  name: Schema.String,
  type: Schema.String,
  durable: Schema.Boolean,
  arguments: Schema.Array(Schema.Tuple([Schema.String, Schema.String, Schema.Unknown]))
})
const decodeQueues = Schema.decodeUnknownEffect(Schema.fromJsonString(Schema.Array(QueueInfo)))

const encoder = new TextEncoder()

/** A message to publish, `{}` unless a body is given. */
const outgoing = (messageId: string, routingKey: string, body: Uint8Array = encoder.encode("{}")): OutgoingMessage => ({
  messageId,
  routingKey,
  type: "User.created",
  body,
  headers: {}
})

describe("RabbitMQ broker only", () => {
  it.live(
    "a batch of publishes leaves in a few socket writes, not one per message",
    () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const name = queueName("write-batch")
        yield* broker.declare({ name, bindings: ["batch.#"] })
        const body = new Uint8Array(1_000).fill(120)
        const messages = Array.from({ length: 300 }, (_, i) => ({
          messageId: `batch-${run}-${i}`,
          routingKey: "batch.Item.created",
          type: "Item.created",
          body,
          headers: {}
        }))
        // the socket's writes to the broker while the batch is published: `_writev` for several at once
        const writes = { single: 0, batched: 0, batchedChunks: 0 }
        const { _write, _writev } = Socket.prototype
        const toBroker = (socket: Socket) => socket.remotePort === 5672
        const restore = Effect.sync(() => Object.assign(Socket.prototype, { _write, _writev }))
        yield* Effect.acquireUseRelease(
          Effect.sync(() =>
            Object.assign(Socket.prototype, {
              _write(this: Socket, ...args: Parameters<typeof _write>) {
                if (toBroker(this)) writes.single++
                return _write.apply(this, args)
              },
              _writev(this: Socket, ...args: Parameters<NonNullable<typeof _writev>>) {
                if (toBroker(this)) {
                  writes.batched++
                  writes.batchedChunks += args[0].length
                }
                return _writev?.apply(this, args)
              }
            })
          ),
          () => broker.publish(messages),
          () => restore
        )
        assert.isAtLeast(writes.batchedChunks, messages.length)
        assert.isAtMost(writes.batched + writes.single, 10, JSON.stringify(writes))
        const depth = yield* Effect.promise(() => withRawChannel((channel) => channel.checkQueue(name)))
        assert.strictEqual(depth.messageCount, messages.length)
      }).pipe(Effect.provide(RabbitBroker.layer(settings))),
    liveTimeout
  )

  it.live(
    "declares a durable quorum queue with an explicit delivery limit and its own dead queue",
    () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const name = queueName("topology")
        yield* broker.declare({ name, bindings: ["topology.#"] })
        const queues = yield* Effect.flatMap(
          rabbitmqctl("list_queues", "name", "type", "durable", "arguments", "--formatter", "json"),
          decodeQueues
        )
        const queue = queues.find((q) => q.name === name)
        const dead = queues.find((q) => q.name === RabbitBroker.deadQueueOf(name))
        assert.strictEqual(queue?.type, "quorum")
        assert.isTrue(queue?.durable)
        const args = new Map(queue?.arguments.map(([key, , value]) => [key, value]))
        assert.strictEqual(args.get("x-delivery-limit"), 20)
        assert.strictEqual(args.get("x-dead-letter-exchange"), deadLetterExchange)
        assert.strictEqual(args.get("x-dead-letter-routing-key"), name)
        assert.strictEqual(dead?.type, "classic")
        assert.isTrue(dead?.durable)
        // the exchanges exist and the dead queue is there for a raw client too
        const check = yield* Effect.promise(() =>
          withRawChannel(async (channel) => {
            await channel.checkExchange(exchange)
            await channel.checkExchange(deadLetterExchange)
            return channel.checkQueue(RabbitBroker.deadQueueOf(name))
          })
        )
        assert.strictEqual(check.messageCount, 0)
      }).pipe(Effect.provide(RabbitBroker.layer(settings))),
    liveTimeout
  )

  it.live(
    "RabbitMQ dead-letters a message nacked with requeue more often than the delivery limit",
    () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const spec: QueueSpec = { name: queueName("delivery-limit"), bindings: ["limit.#"] }
        yield* broker.declare(spec)
        yield* broker.publish([outgoing("poison", "limit.User.created"), outgoing("fine", "limit.User.created")])
        let poisonDeliveries = 0
        const fiber = yield* broker.subscribe(spec).pipe(
          Stream.runForEach((d) => {
            if (d.messageId !== "poison") return d.ack
            poisonDeliveries++
            return d.nack({ requeue: true })
          }),
          Effect.forkChild
        )
        const dead = yield* Effect.gen(function*() {
          while (true) {
            const found = (yield* broker.deadLetters(spec.name)).items
            if (found.length > 0) return found
            yield* Effect.sleep("50 millis")
          }
        }).pipe(Effect.timeout("20 seconds"))
        assert.deepStrictEqual(dead.map((d) => [d.messageId, d.reason, d.routingKey]), [
          ["poison", deliveryLimitReason, "limit.User.created"]
        ])
        assert.strictEqual(poisonDeliveries, 3, "the first delivery and two redeliveries")
        assert.strictEqual(dead[0]?.headers[reasonHeader], deliveryLimitReason)
        assert.strictEqual(dead[0]?.deliveryCount, 3, "RabbitMQ's count of the deliveries")
        assert.strictEqual(dead[0]?.publisher, "guest")
        yield* Fiber.interrupt(fiber)
        assert.isTrue(yield* broker.replayDeadLetter(spec.name, "poison"))
        assert.deepStrictEqual(yield* broker.deadLetters(spec.name), { total: 0, items: [] })
      }).pipe(Effect.provide(RabbitBroker.layer({ ...settings, deliveryLimit: 2 }))),
    liveTimeout
  )

  // a small window makes publishes wait for confirms; a window larger than the batch fills the channel's
  // write buffer (publish returns false) and waits for 'drain'
  for (const publishWindow of [64, 100_000]) {
    it.live(
      `big concurrent batches are confirmed in full with a publish window of ${publishWindow}`,
      () =>
        Effect.gen(function*() {
          const broker = yield* Broker
          const spec: QueueSpec = { name: queueName("window"), bindings: ["window.#"] }
          yield* broker.declare(spec)
          const body = encoder.encode(JSON.stringify({ padding: "x".repeat(2_000) }))
          const batch = (prefix: string, n: number) =>
            Array.from({ length: n }, (_, i) => outgoing(`${prefix}-${i}`, "window.User.created", body))
          yield* Effect.all([broker.publish(batch("big", 4_000)), broker.publish(batch("other", 1_000))], {
            concurrency: "unbounded"
          })
          const received = new Set<string>()
          yield* broker.subscribe(spec, { prefetch: 500 }).pipe(
            Stream.mapEffect((d) => Effect.as(d.ack, d.messageId)),
            Stream.takeUntil((id) => {
              received.add(id)
              return received.size === 5_000
            }),
            Stream.runDrain,
            Effect.timeout("30 seconds")
          )
          assert.strictEqual(received.size, 5_000)
        }).pipe(Effect.provide(RabbitBroker.layer({ ...settings, publishWindow }))),
      liveTimeout
    )
  }

  it.live("the topology is declared again after the connection is replaced", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const spec: QueueSpec = { name: queueName("redeclare"), bindings: ["redeclare.#"] }
      const message = (messageId: string) => outgoing(messageId, "redeclare.User.created")
      yield* broker.declare(spec)
      yield* broker.publish([message("before")])
      // everything is deleted behind the adapter's back
      yield* Effect.promise(() =>
        withRawChannel(async (channel) => {
          await channel.deleteQueue(spec.name)
          await channel.deleteQueue(RabbitBroker.deadQueueOf(spec.name))
          await channel.deleteExchange(exchange)
        })
      )
      // publishing to the deleted exchange closes the confirm channel; the next attempt reconnects
      let failures = 0
      while (true) {
        const result = yield* Effect.result(broker.publish([message("after")]))
        if (result._tag === "Success") break
        assert.strictEqual(result.failure._tag, "BrokerUnavailable")
        failures++
        yield* Effect.sleep("50 millis")
      }
      assert.isAtLeast(failures, 1)
      const got = yield* broker.subscribe(spec).pipe(
        Stream.take(1),
        Stream.mapEffect((d) => Effect.as(d.ack, d.messageId)),
        Stream.runCollect,
        Effect.timeout("10 seconds")
      )
      assert.deepStrictEqual(got, ["after"])
      assert.deepStrictEqual(yield* broker.deadLetters(spec.name), { total: 0, items: [] })
    }).pipe(Effect.provide(RabbitBroker.layer(settings))), liveTimeout)

  it.live(
    "closing the layer ends the subscriptions, lets in-flight publishes be confirmed and closes the connection",
    () =>
      Effect.gen(function*() {
        const spec: QueueSpec = { name: queueName("shutdown"), bindings: ["shutdown.#"] }
        const scope = yield* Scope.make()
        const broker = Context.get(yield* Layer.buildWithScope(RabbitBroker.layer(settings), scope), Broker)
        yield* broker.declare(spec)
        const message = (messageId: string) => outgoing(messageId, "shutdown.User.created")
        const consuming = yield* Deferred.make<void>()
        const subscriber = yield* broker.subscribe(spec, { prefetch: 10 }).pipe(
          Stream.runForEach(() => Deferred.succeed(consuming, undefined)), // never settles
          Effect.forkDetach
        )
        yield* broker.publish([message("first")])
        yield* Deferred.await(consuming)
        const ids = Array.from({ length: 3_000 }, (_, i) => `shutdown-${i}`)
        const publisher = yield* broker.publish(ids.map(message)).pipe(Effect.forkDetach)
        yield* Effect.sleep("10 millis")
        yield* Scope.close(scope, Exit.void)
        assert.isTrue(Exit.isSuccess(yield* Fiber.await(publisher)), "the in-flight publish was confirmed")
        assert.isTrue(Exit.isSuccess(yield* Fiber.await(subscriber)), "the subscription ended without an error")
        const after = yield* Effect.flip(broker.publish([message("late")]))
        assert.match(after._tag === "BrokerUnavailable" ? after.detail : "", /shutting down/)
        const listing = yield* rabbitmqctl("list_connections", "client_properties", "--no-table-headers")
        assert.notInclude(listing, `{"connection_name","${connectionName}"}`)
        // nothing was lost: the subscriber settled nothing, so every message is back in the queue
        const left = yield* Effect.promise(() => withRawChannel((channel) => channel.checkQueue(spec.name)))
        assert.strictEqual(left.messageCount, ids.length + 1)
      }),
    liveTimeout
  )

  it.live(
    "a broker that goes silent: the publish fails within the response timeout and the next one goes through on a new connection",
    () =>
      Effect.gen(function*() {
        const proxy = yield* silentProxy
        const broker = Context.get(
          yield* Layer.build(RabbitBroker.layer({
            ...settings,
            url: `amqp://guest:guest@127.0.0.1:${proxy.port}`,
            responseTimeoutSeconds: 2
          })),
          Broker
        )
        const spec: QueueSpec = { name: queueName("silent"), bindings: ["silent.#"] }
        const message = (messageId: string) => outgoing(messageId, "silent.User.created")
        yield* broker.declare(spec)
        yield* broker.publish([message("before")])
        proxy.silence()
        // without the bound this waits for a confirm forever (until the heartbeat gives the connection up)
        const failed = yield* broker.publish([message("unanswered")]).pipe(
          Effect.timeout("15 seconds"),
          Effect.flip
        )
        assert.strictEqual(failed._tag, "BrokerUnavailable")
        assert.match(failed._tag === "BrokerUnavailable" ? failed.detail : "", /no confirm within 2s/)
        proxy.speak()
        yield* broker.publish([message("after")]).pipe(
          Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 100 })
        )
        const got = yield* broker.subscribe(spec).pipe(
          Stream.mapEffect((d) => Effect.as(d.ack, d.messageId)),
          Stream.takeUntil((id) => id === "after"),
          Stream.runCollect,
          Effect.timeout("10 seconds")
        )
        assert.includeMembers(Array.from(got), ["before", "after"])
      }),
    liveTimeout
  )

  it.live(
    "layerConfig reads AMQP_URL, SYNC_EXCHANGE and the other keys from the ConfigProvider",
    () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const spec: QueueSpec = { name: queueName("config"), bindings: ["config.#"] }
        yield* broker.declare(spec)
        yield* broker.publish([outgoing("cfg", "config.User.created")])
        const got = yield* broker.subscribe(spec).pipe(
          Stream.take(1),
          Stream.mapEffect((d) => Effect.as(d.ack, d.messageId)),
          Stream.runCollect
        )
        assert.deepStrictEqual(got, ["cfg"])
        const queues = yield* Effect.flatMap(
          rabbitmqctl("list_queues", "name", "type", "durable", "arguments", "--formatter", "json"),
          decodeQueues
        )
        const args = new Map(queues.find((q) => q.name === spec.name)?.arguments.map(([key, , value]) => [key, value]))
        assert.strictEqual(args.get("x-delivery-limit"), 7)
        // AMQP_MAX_DEAD_LETTER_BODY_BYTES: a dead letter keeps 100 bytes of a longer body
        yield* broker.publish([outgoing("long", "config.User.created", new Uint8Array(300).fill(0x20))])
        yield* broker.subscribe(spec).pipe(
          Stream.take(1),
          Stream.mapEffect((d) => d.deadLetter("too long")),
          Stream.runDrain
        )
        const dead = yield* Effect.gen(function*() {
          while (true) {
            const page = yield* broker.deadLetters(spec.name)
            if (page.total > 0) return page.items
            yield* Effect.sleep("50 millis")
          }
        }).pipe(Effect.timeout("10 seconds"))
        assert.deepStrictEqual(dead.map((d) => [d.messageId, d.body.byteLength, d.truncatedFrom]), [["long", 100, 300]])
      }).pipe(
        Effect.provide(RabbitBroker.layerConfig.pipe(
          Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({
            AMQP_URL: url,
            SYNC_EXCHANGE: exchange,
            SYNC_DEAD_EXCHANGE: deadLetterExchange,
            SYNC_REPLAY_EXCHANGE: replayExchange,
            AMQP_TOPOLOGY: "declare",
            AMQP_MAX_DEAD_LETTER_BODY_BYTES: "100",
            AMQP_DELIVERY_LIMIT: "7",
            AMQP_PREFETCH: "10",
            AMQP_PUBLISH_WINDOW: "50",
            AMQP_HEARTBEAT: "10",
            AMQP_CONNECTION_NAME: connectionName
          })))
        ))
      ),
    liveTimeout
  )

  it.live("a nacked publish gives up its connection: the next publish goes on a new one", () => {
    const name = `${connectionName}-nack`
    /** The process ids of the adapter's open connections. */
    const connections = Effect.map(
      rabbitmqctl("list_connections", "pid", "client_properties", "--no-table-headers"),
      (listing) =>
        listing.split("\n")
          .filter((line) => line.includes(`{"connection_name","${name}"}`))
          .flatMap((line) => line.split("\t").slice(0, 1))
    )
    return Effect.gen(function*() {
      const broker = yield* Broker
      const spec: QueueSpec = { name: queueName("nacked"), bindings: ["nacked.#"] }
      const full = queueName("nacked-full")
      yield* broker.declare(spec)
      yield* broker.publish([outgoing("first", "nacked.User.created")])
      const before = yield* connections
      assert.strictEqual(before.length, 1)
      // a queue that takes nothing and rejects publishes: RabbitMQ nacks every message routed to it
      yield* Effect.promise(() =>
        withRawChannel(async (channel) => {
          await channel.assertQueue(full, { arguments: { "x-max-length": 0, "x-overflow": "reject-publish" } })
          await channel.bindQueue(full, exchange, "nacked.#")
        })
      )
      const nacked = yield* Effect.flip(broker.publish([outgoing("nacked", "nacked.User.created")]))
      assert.strictEqual(nacked._tag, "BrokerUnavailable")
      yield* Effect.promise(() => withRawChannel((channel) => channel.deleteQueue(full)))
      yield* broker.publish([outgoing("after", "nacked.User.created")])
      // the old connection's close may take a moment to show in the listing
      let after = yield* connections
      for (let tries = 0; after.length !== 1 && tries < 20; tries++) {
        yield* Effect.sleep("100 millis")
        after = yield* connections
      }
      assert.strictEqual(after.length, 1, "the given-up connection was closed")
      assert.notStrictEqual(after[0], before[0], "the publish after the nack went on a new connection")
      // the nacked message may have reached the other queue it was routed to; "after" did
      const got = yield* broker.subscribe(spec).pipe(
        Stream.mapEffect((d) => Effect.as(d.ack, d.messageId)),
        Stream.takeUntil((id) => id === "after"),
        Stream.runCollect,
        Effect.timeout("10 seconds")
      )
      assert.deepStrictEqual(got.filter((id) => id !== "nacked"), ["first", "after"])
    }).pipe(Effect.provide(RabbitBroker.layer({ ...settings, connectionName: name })))
  }, liveTimeout)

  it.live(
    "an unreachable broker fails fast with BrokerUnavailable and is retried on the reconnect schedule",
    () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const attemptPublish = broker.publish([outgoing("x", "x.User.created")]).pipe(Effect.flip)
        const first = yield* attemptPublish
        assert.strictEqual(first._tag, "BrokerUnavailable")
        const second = yield* attemptPublish
        assert.strictEqual(second._tag, "BrokerUnavailable")
        if (second._tag === "BrokerUnavailable") {
          assert.match(second.detail, /reconnecting in \d+ ms after 1 failed attempt/)
        }
        yield* Effect.sleep("150 millis")
        const third = yield* attemptPublish
        if (third._tag === "BrokerUnavailable") assert.notMatch(third.detail, /reconnecting in/)
        const fourth = yield* attemptPublish
        if (fourth._tag === "BrokerUnavailable") assert.match(fourth.detail, /after 2 failed attempt/)
        const subscription = yield* broker.subscribe({ name: "never", bindings: [] }).pipe(Stream.runDrain, Effect.flip)
        assert.strictEqual(subscription._tag, "BrokerUnavailable")
      }).pipe(Effect.provide(RabbitBroker.layer({ ...settings, url: "amqp://guest:guest@127.0.0.1:1" }))),
    liveTimeout
  )

  it.live(
    "bad input at the broker edge is dead-lettered with its reason by a running SyncConsumer, which goes on",
    () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        const copies = yield* CopyRepository
        const service = `bad-input-${run}`
        const queue = `${service}.sync`
        created.add(queue)
        const company = (id: string, entity = "Company"): Envelope.Envelope => ({
          contractVersion: 1,
          messageId: `good-${id}`,
          entity,
          entityId: id,
          action: "created",
          version: 1,
          occurredAt: new Date().toISOString(),
          producer: "accounts",
          forceSync: false,
          payload: { id, name: `company ${id}` }
        })
        const key = "accounts.Company.created"
        const good = (id: string) => ({
          ...outgoing(`good-${id}`, key, Envelope.encode(company(id))),
          type: "entitysync.Company.created"
        })
        const raw: ReadonlyArray<{ readonly id: string; readonly body: string; readonly reason: string }> = [
          { id: "bad-not-json", body: "this is { not json", reason: "NotJson" },
          {
            id: "bad-envelope",
            body: JSON.stringify({ specversion: "1.0", id: "bad-envelope", type: "entitysync.Company.created" }),
            reason: "InvalidEnvelope"
          },
          {
            id: "bad-too-large",
            body: JSON.stringify({ ...Envelope.toCloudEvent(company("c-big")), padding: "x".repeat(8_000) }),
            reason: "TooLarge"
          },
          {
            id: "bad-unknown",
            body: JSON.stringify({ ...Envelope.toCloudEvent(company("i-1", "Invoice")), id: "bad-unknown" }),
            reason: "UnknownEntity"
          }
        ]
        yield* broker.publish([good("c-1")])
        yield* Effect.promise(() =>
          withRawChannel(async (channel) => {
            for (const bad of raw) {
              channel.publish(exchange, key, Buffer.from(bad.body), { messageId: bad.id, persistent: true })
            }
            channel.publish(exchange, key, Buffer.from("")) // no properties at all
            await channel.waitForConfirms()
          })
        )
        yield* broker.publish([good("c-2")])
        const applied = yield* Effect.gen(function*() {
          while (true) {
            const one = yield* copies.get("Company", "c-1")
            const two = yield* copies.get("Company", "c-2")
            if (one !== null && two !== null) return [one.id, two.id]
            yield* Effect.sleep("50 millis")
          }
        }).pipe(Effect.timeout("20 seconds"))
        assert.deepStrictEqual(applied, ["c-1", "c-2"])
        const dead = yield* Effect.gen(function*() {
          while (true) {
            const found = (yield* broker.deadLetters(queue)).items
            if (found.length >= raw.length + 1) return found
            yield* Effect.sleep("50 millis")
          }
        }).pipe(Effect.timeout("20 seconds"))
        const byId = new Map(dead.map((d) => [d.messageId, d]))
        for (const bad of raw) {
          const letter = byId.get(bad.id)
          assert.isDefined(letter, bad.id)
          assert.isTrue(letter?.reason.startsWith(bad.reason), `${bad.id}: ${letter?.reason}`)
          assert.strictEqual(letter?.routingKey, key)
          assert.strictEqual(new TextDecoder().decode(letter?.body), bad.body)
        }
        assert.match(byId.get("")?.reason ?? "", /^NotJson/)
        // the consumer is still consuming
        yield* broker.publish([good("c-3")])
        const third = yield* Effect.gen(function*() {
          while (true) {
            const copy = yield* copies.get("Company", "c-3")
            if (copy !== null) return copy.id
            yield* Effect.sleep("50 millis")
          }
        }).pipe(Effect.timeout("20 seconds"))
        assert.strictEqual(third, "c-3")
      }).pipe(
        Effect.provide(
          SyncConsumer.layer({
            service: `bad-input-${run}`,
            subscriptions: [Subscription.subscribe(Company), Subscription.subscribe(User)],
            maxBytes: 4_096,
            producers: { accounts: ["guest"] } // this file publishes the owner's events as guest
          }).pipe(
            Layer.provideMerge(MemorySync.layer()),
            Layer.provideMerge(RabbitBroker.layer(settings))
          )
        )
      ),
    liveTimeout
  )
})

/**
 * A virtual host of this file's own with the default exchange names, an administrator (guest) and one
 * user per role holding only the permissions the role needs: what a deployment with one RabbitMQ user per
 * service looks like.
 */
describe("RabbitMQ broker: publishers, least privilege and passive topology", () => {
  const vhost = `entity-sync-test-${run}`
  const password = `pw-${run}`
  const urlOf = (user: string, secret = password) =>
    `amqp://${encodeURIComponent(user)}:${encodeURIComponent(secret)}@127.0.0.1:5672/${encodeURIComponent(vhost)}`
  const adminUrl = `amqp://guest:guest@127.0.0.1:5672/${encodeURIComponent(vhost)}`
  /** Logins and their configure / write / read permissions (regexes); none may configure anything. */
  const users = {
    owner: { name: `accounts-${run}`, write: "^sync\\.events$", read: "^$" },
    consumer: { name: `directory-${run}`, write: "^sync\\.(events|dead|replay)$", read: "^directory\\..*$" },
    noDead: { name: `nodead-${run}`, write: "^sync\\.(events|replay)$", read: "^nodead\\..*$" }
  } as const
  const ctl = (...args: ReadonlyArray<string>) => execFileAsync("rabbitmqctl", ["-q", ...args])

  beforeAll(async () => {
    await ctl("add_vhost", vhost)
    await ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    for (const user of Object.values(users)) {
      await ctl("add_user", user.name, password)
      await ctl("set_permissions", "-p", vhost, user.name, "^$", user.write, user.read)
    }
  }, 60_000)

  afterAll(async () => {
    await ctl("delete_vhost", vhost).catch(() => undefined)
    for (const user of Object.values(users)) await ctl("delete_user", user.name).catch(() => undefined)
  }, 60_000)

  const passive = (user: string): RabbitOptions => ({ url: urlOf(user), topology: "passive", connectionName })

  /** Retries `effect` on `BrokerUnavailable` (the adapter waits out its reconnect schedule in between). */
  const retrying = <A, E extends { readonly _tag: string }>(effect: Effect.Effect<A, E>) =>
    effect.pipe(
      Effect.retry({ while: (e) => e._tag === "BrokerUnavailable", schedule: Schedule.spaced("100 millis"), times: 50 })
    )

  /** A raw confirm channel on `url` for the duration of `f`. */
  const rawOn = <A>(url: string, f: (channel: amqp.ConfirmChannel) => Promise<A>) =>
    Effect.promise(() => amqp.connect(url).then((c) => c.createConfirmChannel().then(f).finally(() => c.close())))

  /** Takes `n` deliveries of `spec` on `broker`, settling each with `settle`. */
  const takeOn = (
    broker: Broker["Service"],
    spec: QueueSpec,
    n: number,
    settle: (d: Delivery) => Effect.Effect<void, BrokerUnavailable>
  ) =>
    broker.subscribe(spec).pipe(
      Stream.take(n),
      Stream.mapEffect((d) => Effect.as(settle(d), d)),
      Stream.runCollect,
      Effect.timeout("20 seconds")
    )

  it.live(
    "passive mode fails naming what an administrator must declare, then works with write access to its three exchanges only",
    () =>
      Effect.gen(function*() {
        const spec: QueueSpec = { name: "directory.sync", bindings: ["accounts.User.*"] }
        const consumer = yield* RabbitBroker.make(passive(users.consumer.name))
        const missing = yield* Effect.flip(consumer.declare(spec))
        assert.strictEqual(missing._tag, "BrokerUnavailable")
        assert.match(missing.detail, /the exchange sync\.events does not exist; .*an administrator must declare it/)
        // the administrator declares what topology() describes
        const description = RabbitBroker.topology({ queues: [spec] })
        assert.deepStrictEqual(description.exchanges.map((e) => [e.name, e.type]), [
          ["sync.events", "topic"],
          ["sync.dead", "direct"],
          ["sync.replay", "direct"]
        ])
        assert.deepStrictEqual(description.queues.map((q) => q.name), ["directory.sync", "directory.sync.dead"])
        assert.deepStrictEqual(description.queues[0]?.arguments, {
          "x-queue-type": "quorum",
          "x-delivery-limit": 20,
          "x-dead-letter-exchange": "sync.dead",
          "x-dead-letter-routing-key": "directory.sync"
        })
        assert.deepStrictEqual(
          description.bindings.map((b) => `${b.exchange} ${b.routingKey} → ${b.queue}`),
          [
            "sync.dead directory.sync → directory.sync.dead",
            "sync.replay directory.sync → directory.sync",
            "sync.events accounts.User.* → directory.sync"
          ]
        )
        assert.deepStrictEqual(JSON.parse(JSON.stringify(description)), description, "plain JSON")
        yield* RabbitBroker.declareTopology(adminUrl, description)
        yield* retrying(consumer.declare(spec))
        // a queue nobody declared is named too
        const other = yield* Effect.flip(consumer.declare({ name: "directory.other", bindings: [] }))
        assert.match(other.detail, /the queue directory\.other does not exist; .*administrator/)

        const owner = yield* RabbitBroker.make(passive(users.owner.name))
        yield* retrying(owner.publish([outgoing("e1", "accounts.User.created")]))
        // released, dead-lettered and replayed by the consumer's login: the owner stays the publisher
        const [first] = yield* takeOn(consumer, spec, 1, (d) => d.release)
        assert.strictEqual(first?.publisher, users.owner.name)
        const [second] = yield* takeOn(consumer, spec, 1, (d) => d.deadLetter("InvalidPayload: try again"))
        assert.strictEqual(second?.messageId, "e1")
        assert.strictEqual(second?.publisher, users.owner.name, "a released copy keeps its publisher")
        const dead = yield* consumer.deadLetters(spec.name)
        assert.deepStrictEqual(dead.items.map((d) => [d.messageId, d.reason, d.publisher]), [
          ["e1", "InvalidPayload: try again", users.owner.name]
        ])
        // the released copy started from zero (it may have been returned once when the subscription ended)
        assert.include([1, 2], dead.items[0]?.deliveryCount)
        assert.strictEqual(yield* consumer.replayDeadLetters(spec.name, { reasons: ["InvalidPayload: try again"] }), 1)
        const [third] = yield* takeOn(consumer, spec, 1, (d) => d.nack({ requeue: false }))
        assert.strictEqual(third?.publisher, users.owner.name, "a replayed copy keeps its publisher")
        // RabbitMQ's own dead-lettering keeps it too, and so does a replay of that
        const native = yield* Effect.gen(function*() {
          while (true) {
            const page = yield* consumer.deadLetters(spec.name)
            if (page.total > 0) return page.items
            yield* Effect.sleep("50 millis")
          }
        }).pipe(Effect.timeout("10 seconds"))
        assert.deepStrictEqual(native.map((d) => [d.messageId, d.reason, d.publisher]), [[
          "e1",
          rejectedReason,
          users.owner.name
        ]])
        assert.isTrue(yield* consumer.replayDeadLetter(spec.name, "e1"))
        const [fourth] = yield* takeOn(consumer, spec, 1, (d) => d.ack)
        assert.strictEqual(fourth?.publisher, users.owner.name)
      }).pipe(Effect.scoped),
    liveTimeout
  )

  it.live(
    "publisher is the user-id RabbitMQ vouches for: a claimed user-id is refused, a missing one stays missing through moves",
    () =>
      Effect.gen(function*() {
        const spec: QueueSpec = { name: "directory.claims", bindings: ["claims.#"] }
        yield* RabbitBroker.declareTopology(adminUrl, RabbitBroker.topology({ queues: [spec] }))
        const consumer = yield* RabbitBroker.make(passive(users.consumer.name))
        assert.isTrue(consumer.vouchesForPublishers)
        // claiming to be the consumer's login (to pass for a message the consumer moved): refused by RabbitMQ
        const claimed = yield* rawOn(urlOf(users.owner.name), (channel) =>
          new Promise<string>((resolve) => {
            channel.on("error", (error: Error) => resolve(error.message))
            channel.publish("sync.events", "claims.User.created", Buffer.from("{}"), {
              messageId: "forged",
              userId: users.consumer.name,
              headers: { [RabbitBroker.publishedByHeader]: users.owner.name }
            }, (error: unknown) => {
              if (error === null || error === undefined) resolve("confirmed")
            })
          }))
        assert.match(
          claimed,
          /PRECONDITION_FAILED - user_id property set to 'directory-\w+' but authenticated user was 'accounts-/
        )
        // without a user-id nobody vouches, and the consumer's moves do not make its own login the publisher
        yield* rawOn(urlOf(users.owner.name), async (channel) => {
          channel.publish("sync.events", "claims.User.created", Buffer.from("{}"), { messageId: "anonymous" })
          channel.publish("sync.events", "claims.User.created", Buffer.from("{}"), {
            messageId: "vouched",
            userId: users.owner.name
          })
          await channel.waitForConfirms()
        })
        const got = yield* takeOn(consumer, spec, 2, (d) => d.deadLetter("ForgedProducer"))
        assert.deepStrictEqual(got.map((d) => [d.messageId, d.publisher]), [
          ["anonymous", undefined],
          ["vouched", users.owner.name]
        ])
        assert.strictEqual(yield* consumer.replayDeadLetters(spec.name, {}), 2)
        const again = yield* takeOn(consumer, spec, 2, (d) => d.release)
        assert.deepStrictEqual(again.map((d) => [d.messageId, d.publisher]), [
          ["anonymous", undefined],
          ["vouched", users.owner.name]
        ])
        const released = yield* takeOn(consumer, spec, 2, (d) => d.ack)
        assert.deepStrictEqual(released.map((d) => [d.messageId, d.publisher]), [
          ["anonymous", undefined],
          ["vouched", users.owner.name]
        ])
      }).pipe(Effect.scoped),
    liveTimeout
  )

  it.live(
    "when the dead-letter copy is refused (no write access to sync.dead), the delivery goes to RabbitMQ's own dead-lettering",
    () =>
      Effect.gen(function*() {
        const spec: QueueSpec = { name: "nodead.sync", bindings: ["nodead.#"] }
        yield* RabbitBroker.declareTopology(adminUrl, RabbitBroker.topology({ queues: [spec] }))
        const consumer = yield* RabbitBroker.make(passive(users.noDead.name))
        yield* retrying(consumer.declare(spec))
        yield* retrying(
          consumer.publish([outgoing("refused", "nodead.User.created"), outgoing("next", "nodead.User.created")])
        )
        yield* takeOn(consumer, spec, 1, (d) => d.deadLetter("InvalidPayload: not stored"))
        const dead = yield* Effect.gen(function*() {
          while (true) {
            const page = yield* Effect.result(consumer.deadLetters(spec.name))
            if (page._tag === "Success" && page.success.total > 0) return page.success.items
            yield* Effect.sleep("100 millis")
          }
        }).pipe(Effect.timeout("10 seconds"))
        assert.deepStrictEqual(dead.map((d) => [d.messageId, d.reason, d.routingKey, d.publisher]), [
          ["refused", rejectedReason, "nodead.User.created", users.noDead.name]
        ])
        // the consumer goes on with the next message once its connection is back
        const next = yield* retrying(takeOn(consumer, spec, 1, (d) => d.ack))
        assert.deepStrictEqual(next.map((d) => d.messageId), ["next"])
      }).pipe(Effect.scoped),
    liveTimeout
  )

  it.live(
    "a wrong password is logged at every attempt with the broker's reason and the next retry",
    () =>
      Effect.gen(function*() {
        const broker = yield* RabbitBroker.make({ url: urlOf(users.owner.name, "wrong"), connectionName })
        const first = yield* Effect.flip(broker.publish([outgoing("x", "x.User.created")]))
        assert.match(first.message, /ACCESS_REFUSED/)
        yield* Effect.sleep("400 millis")
        yield* Effect.flip(broker.publish([outgoing("x", "x.User.created")]))
      }).pipe(
        Effect.scoped,
        Effect.provide(Logger.layer([
          Logger.make((options) => {
            if (options.logLevel === "Warn") warnings.push(JSON.stringify(options.message))
          })
        ])),
        Effect.andThen(Effect.sync(() => {
          const refused = warnings.filter((w) =>
            w.includes("RabbitMQ connection failed") && w.includes("ACCESS_REFUSED")
          )
          assert.lengthOf(refused, 2, warnings.join("\n"))
          assert.match(refused[1] ?? "", /"failedAttempts":2/)
          assert.match(refused[1] ?? "", /"retryAt":"\d{4}-/)
          assert.notInclude(refused.join(""), "wrong", "the password is not logged")
        }))
      ),
    liveTimeout
  )
  const warnings: Array<string> = []
})

describe("RabbitMQ ordered lanes topology", () => {
  it("describes the lanes' consistent-hash exchange, its bindings and single-active-consumer lane queues", () => {
    const lanes = laneQueues("directory", { name: "directory.sync", bindings: ["accounts.User.*"] }, 2)
    const description = RabbitBroker.topology({ queues: lanes })
    assert.deepStrictEqual(description.exchanges.find((e) => e.name === "directory.lanes"), {
      name: "directory.lanes",
      type: "x-consistent-hash",
      durable: true,
      arguments: { "hash-header": entityKeyHeader }
    })
    assert.deepStrictEqual(description.exchangeBindings, [
      { source: "sync.events", destination: "directory.lanes", routingKey: "accounts.User.*" }
    ])
    const lane = description.queues.find((q) => q.name === "directory.sync.lane-1")
    assert.strictEqual(lane?.arguments["x-single-active-consumer"], true)
    assert.strictEqual(lane?.arguments["x-queue-type"], "quorum")
    assert.strictEqual(lane?.arguments["x-dead-letter-routing-key"], "directory.sync.lane-1")
    assert.deepStrictEqual(
      description.bindings.filter((b) => b.queue === "directory.sync.lane-1"),
      [
        { exchange: "sync.dead", queue: "directory.sync.lane-1.dead", routingKey: "directory.sync.lane-1" },
        { exchange: "sync.replay", queue: "directory.sync.lane-1", routingKey: "directory.sync.lane-1" },
        { exchange: "directory.lanes", queue: "directory.sync.lane-1", routingKey: "1" }
      ].filter((b) => b.queue === "directory.sync.lane-1")
    )
    // without lanes, the description has no exchange bindings
    assert.isUndefined(RabbitBroker.topology({ queues: [{ name: "d.sync", bindings: ["a.#"] }] }).exchangeBindings)
  })
})
