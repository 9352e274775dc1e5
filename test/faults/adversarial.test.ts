/**
 * The adversarial suite (R6) on the real stack (PostgreSQL + RabbitMQ, the consumer with its production
 * defaults: 256 KiB bodies, JSON depth 32): interleaved with a stream of good events, a payload thousands
 * of levels deep, 500 messages with 100–200 KB entity names, bodies of 5–20 MB, and entity names that would
 * become metric labels. Every good event applies once; every bad one is dead-lettered once with a reason
 * of at most 1 KiB (a huge body keeping only a prefix); the delivery loop never restarts; the metric
 * registry gains no series beyond the known outcomes; RSS stays bounded. Then a consumer whose dead-letter
 * copies RabbitMQ refuses (its login may not write to `sync.dead`): the delivery is rejected to RabbitMQ's
 * own dead-lettering, never left unacknowledged.
 *
 * RabbitMQ's `max_message_size` (128 MiB by default in 3.10) is left as it is: the bodies here are below
 * it. To see the broker refuse a body before any consumer buffers it, lower it at runtime —
 * `rabbitmqctl eval 'application:set_env(rabbit, max_message_size, 16777216).'` — no restart needed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Schedule } from "effect"
import * as Permissions from "../../src/amqp/Permissions.ts"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import { Broker, maxDeadLetterPage, maxReasonBytes, rejectedReason } from "../../src/Broker.ts"
import * as Metrics from "../../src/Metrics.ts"
import * as SyncConsumer from "../../src/SyncConsumer.ts"
import {
  deepBody,
  hugeBody,
  type Kind,
  labelBody,
  longNameBody,
  makeWatch,
  mib,
  publishBad,
  type Sent,
  series,
  watched
} from "./adversarial.ts"
import { owner } from "./contract.ts"
import { setup } from "./fixture.ts"
import { rabbitmqctl } from "./rabbit.ts"
import { brokerOf, consumerWith, relayWith, subscriptionsFailing } from "./service-users.ts"
import { broker, consumer, relay } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { makeVhost, publishRaw } from "./vhost.ts"
import { writeStream } from "./writer.ts"

const utf8 = new TextEncoder()
const defaultDeadLetterBody = 64 * 1024

describe("faults: adversarial messages", () => {
  it.live("contains deep, long-named, huge and label-bearing messages among good traffic", () => {
    const watch = makeWatch()
    return watched(
      watch,
      Effect.gen(function*() {
        const fixture = yield* setup("adversarial")
        const { names } = fixture
        yield* Layer.build(consumer(fixture.url, names))
        yield* Layer.build(relay(fixture.url, names))
        // warm up with good traffic, so that the known series exist before the registry is counted
        const warm = yield* writeStream({ events: 200, ratePerSecond: 400, idPrefix: "warm-" }).pipe(
          Effect.provide(fixture.writer)
        )
        yield* awaitQuiescence(fixture.sql, names)
        const seriesBefore = new Set(yield* series)
        const rssBefore = process.memoryUsage().rss
        watch.peakRss = rssBefore

        const writer = yield* writeStream({ events: 2_000, ratePerSecond: 300 }).pipe(
          Effect.provide(fixture.writer),
          Effect.forkChild
        )
        const sent: Array<Sent> = []
        let n = 0
        const batch = (kind: Kind, count: number, body: (messageId: string, i: number) => string) =>
          Array.from({ length: count }, (_, i) => {
            const messageId = `bad-${kind}-${n++}`
            return { messageId, kind, body: body(messageId, i) }
          })
        const plan: ReadonlyArray<() => ReadonlyArray<{ messageId: string; kind: Kind; body: string }>> = [
          () => batch("deep", 1, (id) => deepBody(id, 10_000)),
          ...Array.from({ length: 10 }, (_, tick) => () => [
            ...batch("longName", 50, (id, i) => longNameBody(id, 100_000 + ((tick * 50 + i) % 100) * 1_000)),
            ...batch(
              "label",
              20,
              (id) => labelBody(id, `Label${Math.random().toString(36).slice(2)}${"y".repeat(200)}`)
            ),
            ...(tick % 3 === 0
              ? batch("huge", 1, (id) => hugeBody(id, ([5, 10, 20, 8][tick / 3] ?? 5) * 1024 * 1024))
              : [])
          ]),
          () => batch("deep", 1, (id) => deepBody(id, 3_000))
        ]
        for (const step of plan) {
          yield* Effect.sleep("400 millis")
          sent.push(...(yield* publishBad(names, step())))
        }
        const written = yield* Fiber.join(writer)
        const t = yield* awaitQuiescence(fixture.sql, names)
        const rssAfter = process.memoryUsage().rss
        const seriesAfter = yield* series
        const newSeries = seriesAfter.filter((s) => !seriesBefore.has(s))

        const inspector = Context.get(yield* Layer.build(broker(names, "inspector")), Broker)
        const page = yield* inspector.deadLetters(names.queue, { limit: maxDeadLetterPage })
        const byId = new Map(sent.map((s) => [s.messageId, s]))
        const letters = page.items
        const counts = new Map<string, number>()
        for (const letter of letters) counts.set(letter.messageId, (counts.get(letter.messageId) ?? 0) + 1)
        const reasonBytes = letters.map((l) => utf8.encode(l.reason).byteLength)
        const byKind = (kind: Kind) => letters.filter((l) => byId.get(l.messageId)?.kind === kind)
        const sample = (kind: Kind) => byKind(kind)[0]?.reason.slice(0, 140) ?? "(none)"
        const huge = byKind("huge")
        const outcome = (entity: string, o: Metrics.Outcome) => Metrics.outcomeCount(names.service, entity, o)
        console.log(
          `[adversarial] sent ${sent.length} bad messages (${
            (["deep", "longName", "huge", "label"] as const).map((k) =>
              `${k} ${sent.filter((s) => s.kind === k).length}`
            ).join(", ")
          }; ${mib(sent.reduce((sum, s) => sum + s.bytes, 0))}); dead letters ${page.total}, ` +
            `listed ${letters.length}; longest reason ${Math.max(0, ...reasonBytes)} B; ` +
            `restarts ${watch.restarts.length}; warnings ${watch.warnings}, longest log line ${watch.longestLine} chars; ` +
            `RSS ${mib(rssBefore)} → peak ${mib(watch.peakRss)} → ${
              mib(rssAfter)
            }; metric series ${seriesBefore.size} → ` +
            `${seriesAfter.length} (new: ${newSeries.join(" ") || "none"}); outcomes unknown/malformed ` +
            `${yield* outcome("unknown", "malformed")}, Item/malformed ${yield* outcome("Item", "malformed")}, ` +
            `Item/defect ${yield* outcome("Item", "defect")}`
        )
        for (const kind of ["deep", "longName", "huge", "label"] as const) {
          console.log(`[adversarial] ${kind}: ${byKind(kind).length} dead-lettered, e.g. "${sample(kind)}"`)
        }
        for (const letter of huge) {
          console.log(
            `[adversarial] huge ${letter.messageId}: ${byId.get(letter.messageId)?.bytes} B sent, dead letter keeps ` +
              `${letter.body.byteLength} B (truncatedFrom ${letter.truncatedFrom})`
          )
        }
        yield* judge(
          "adversarial messages",
          t,
          {
            injected: sent.length,
            detail: `${sent.length} adversarial messages, ${page.total} dead letters`
          },
          { ...written, events: written.events + warm.events },
          names
        )
        assert.deepStrictEqual(watch.restarts, [], "a loop restarted")
        assert.deepStrictEqual(
          sent.filter((s) => counts.get(s.messageId) !== 1).map((s) => s.messageId),
          [],
          "bad messages not dead-lettered exactly once"
        )
        assert.strictEqual(page.total, sent.length, "dead letters besides the bad messages")
        assert.isAtMost(Math.max(0, ...reasonBytes), maxReasonBytes)
        for (const letter of huge) {
          assert.isAtMost(letter.body.byteLength, defaultDeadLetterBody)
          assert.strictEqual(letter.truncatedFrom, byId.get(letter.messageId)?.bytes)
        }
        assert.isTrue(byKind("huge").every((l) => l.reason.startsWith("TooLarge")), "huge bodies are TooLarge")
        // only the subscribed entity and `unknown` label the consumer's outcomes
        assert.deepStrictEqual(
          newSeries.filter((s) => !/"entity":"(Item|unknown)"/.test(s) && !s.includes(`"producer":"${owner}"`)),
          [],
          "metric series beyond the known outcomes"
        )
        assert.isFalse(seriesAfter.some((s) => s.includes("Label")), "an entity name became a metric label")
        assert.isBelow(watch.longestLine, 4_096, "a log line carries an untrusted string unbounded")
        assert.isBelow(watch.peakRss - rssBefore, 1024 * 1024 * 1024, "RSS grew by more than 1 GiB")
      }).pipe(Effect.scoped)
    )
  }, 180_000)

  it.live(
    "a dead-letter copy RabbitMQ refuses goes to RabbitMQ's own dead-lettering, never left unacknowledged",
    () => {
      const watch = makeWatch()
      return watched(
        watch,
        Effect.gen(function*() {
          const fixture = yield* setup("dlfail")
          const { names } = fixture
          const vhost = yield* makeVhost("dlfail")
          const run = names.service.slice(-6)
          const queue = SyncConsumer.queueOf(names.service, subscriptionsFailing(new Set()))
          const ownerLogin = `${owner}-${run}`
          // the consumer's passive matrix without write access to the dead-letter exchange
          const matrix = Permissions.matrix({ service: names.service, queues: [queue] }, { topology: "passive" })
          yield* vhost.addUser(names.service, {
            ...matrix,
            permissions: { ...matrix.permissions, write: `^${Permissions.escape("sync.replay")}$` }
          })
          yield* vhost.addUser(
            ownerLogin,
            Permissions.matrix({ service: owner, publishesEvents: true }, { topology: "passive" })
          )
          yield* RabbitBroker.declareTopology(vhost.adminUrl, RabbitBroker.topology({ queues: [queue] }))
          yield* Layer.build(consumerWith(fixture.url, names, {
            broker: brokerOf(vhost.urlOf(names.service), "passive", `${names.connectionPrefix}-consumer`),
            ownerLogins: [ownerLogin]
          }))
          yield* Layer.build(
            relayWith(
              fixture.url,
              names,
              brokerOf(vhost.urlOf(ownerLogin), "passive", `${names.connectionPrefix}-relay`)
            )
          )
          const writer = yield* writeStream({ events: 600, ratePerSecond: 300 }).pipe(
            Effect.provide(fixture.writer),
            Effect.forkChild
          )
          const bad: Array<string> = []
          for (let i = 0; i < 3; i++) {
            yield* Effect.sleep("500 millis")
            const messageId = `bad-refused-${i}`
            const outcomes = yield* publishRaw(vhost.urlOf(ownerLogin), [{
              exchange: "sync.events",
              routingKey: `${owner}.Item.created`,
              body: `{"specversion":"1.0","id":"${messageId}",`,
              options: { persistent: true, messageId, type: "entitysync.Item.created", userId: ownerLogin }
            }])
            assert.deepStrictEqual(outcomes, [{ _tag: "Confirmed" }])
            bad.push(messageId)
          }
          const written = yield* Fiber.join(writer)
          const t = yield* awaitQuiescence(fixture.sql, names, { amqpUrl: vhost.adminUrl })
          const admin = Context.get(
            yield* Layer.build(brokerOf(vhost.adminUrl, "passive", `${names.connectionPrefix}-admin`)),
            Broker
          )
          const dead = (yield* admin.deadLetters(queue.name)).items
          // Settlements of the last deliveries may still be on their way when the copies have converged:
          // the queue is read until nothing is unacknowledged, for at most 20 s.
          const listQueues = rabbitmqctl(
            "list_queues",
            "-p",
            vhost.name,
            "name",
            "messages_unacknowledged",
            "messages_ready"
          )
          const unacknowledgedOf = (listing: string) =>
            listing.trim().split("\n").map((line) => line.split("\t")).find(([name]) => name === queue.name)?.[1]
          const unacked = yield* listQueues.pipe(
            Effect.repeat({
              until: (listing) => unacknowledgedOf(listing) === "0",
              schedule: Schedule.spaced("250 millis"),
              times: 80
            })
          )
          console.log(
            `[adversarial] refused dead-letter copies: ${bad.length} bad messages → dead letters ` +
              `${dead.map((d) => `${d.messageId} (${d.reason}, publisher ${d.publisher})`).join(", ")}; ` +
              `loop restarts ${watch.restarts.length}${
                watch.restarts.length === 0 ? "" : ` (${watch.restarts[0]})`
              }; ` +
              `queues: ${unacked.trim().split("\n").join(" | ")}; warnings: ${[...watch.samples].join(" / ")}`
          )
          yield* judge("refused dead-letter copies", t, { injected: bad.length }, written, names)
          assert.deepStrictEqual(
            dead.map((d) => [d.messageId, d.reason]).sort(),
            bad.map((id) => [id, rejectedReason])
          )
          assert.strictEqual(unacknowledgedOf(unacked), "0", "deliveries left unacknowledged")
        }).pipe(Effect.scoped)
      )
    },
    150_000
  )
})
