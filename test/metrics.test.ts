/**
 * The library's metrics by Prometheus conventions (R10). In memory (TestClock): after an owner and a
 * consumer did a bit of everything (applies, a parked event, an unroutable event, unreadable messages),
 * every documented series is served by `PrometheusEndpoint` with exactly its labels and type, and the
 * backlog gauges kept by `Gauges.layer` say what the stores hold; 10,000 distinct entity ids and a burst of
 * malformed messages leave the number of series unchanged (no label takes an id); a failing read of a store
 * is logged when it starts failing and when it answers again, and stops nothing. On PostgreSQL and
 * RabbitMQ: `promtool check metrics` is clean on the `/metrics` body of each demo service. `promtool` comes
 * with Debian's `prometheus` package (`.ci/run` installs it); without it that test fails, saying so.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Metric, References, Schedule } from "effect"
import { FetchHttpClient, HttpClient } from "effect/http"
import { SqlError } from "effect/sql"
import { TestClock } from "effect/testing"
import { spawnSync } from "node:child_process"
import * as AccountsService from "../services/accounts/AccountsService.ts"
import * as DirectoryService from "../services/directory/DirectoryService.ts"
import * as ApiClient from "../services/scenario/ApiClient.ts"
import { Broker, type OutgoingMessage } from "../src/Broker.ts"
import * as Gauges from "../src/Gauges.ts"
import { Inbox } from "../src/Inbox.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as PrometheusEndpoint from "../src/PrometheusEndpoint.ts"
import { Company, createdEnvelope, Invoice, User } from "./fixtures.ts"
import * as Harness from "./harness.ts"
import * as Stack from "./services/stack.ts"

/** Every series the library documents: its type and its labels (a histogram's `le` aside). */
const documented: Readonly<Record<string, { readonly type: string; readonly labels: ReadonlyArray<string> }>> = {
  entity_sync_consumer_messages_total: { type: "counter", labels: ["consumer", "entity", "outcome"] },
  entity_sync_relay_published_total: { type: "counter", labels: ["producer"] },
  entity_sync_relay_publish_failures_total: { type: "counter", labels: ["producer"] },
  entity_sync_relay_lag_seconds: { type: "gauge", labels: ["producer"] },
  entity_sync_apply_latency_seconds: { type: "histogram", labels: ["entity"] },
  entity_sync_outbox_unpublished_events: { type: "gauge", labels: ["producer"] },
  entity_sync_inbox_parked_events: { type: "gauge", labels: ["consumer"] },
  entity_sync_inbox_oldest_parked_age_seconds: { type: "gauge", labels: ["consumer"] },
  entity_sync_dead_letters: { type: "gauge", labels: ["consumer", "store"] },
  entity_sync_consumer_in_flight_deliveries: { type: "gauge", labels: ["consumer"] }
}

interface Sample {
  /** The metric family (a histogram's `_bucket`, `_sum` and `_count` belong to theirs). */
  readonly family: string
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

/** The samples of a Prometheus text body. */
const samplesOf = (text: string): ReadonlyArray<Sample> =>
  text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.isNotNull(match, `a sample line: ${line}`)
    const [, name = "", labelText = "", value = ""] = match!
    const labels = Object.fromEntries(
      [...labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map(([, key = "", v = ""]) => [key, v])
    )
    const family = name.replace(/_(bucket|sum|count)$/, "")
    return { family: family in documented ? family : name, name, labels, value: Number(value) }
  })

/** The `# TYPE` of each family of a body. */
const typesOf = (text: string): Readonly<Record<string, string>> =>
  Object.fromEntries(
    text.split("\n").flatMap((line) => {
      const match = /^# TYPE (\S+) (\S+)$/.exec(line)
      return match === null ? [] : [[match[1], match[2]]]
    })
  )

/** The value of the one sample of `name` with exactly these labels. */
const valueOf = (samples: ReadonlyArray<Sample>, name: string, labels: Readonly<Record<string, string>>) => {
  const found = samples.filter((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))
  assert.strictEqual(found.length, 1, `one sample ${name}${JSON.stringify(labels)}`)
  return found[0]!.value
}

const companies = Producer.make("accounts").repository(Company)
const users = Producer.make("accounts").repository(User)
const invoices = Producer.make("billing").repository(Invoice)

/** Messages nobody can read, of several kinds, on the consumer's routing keys, with distinct ids. */
const garbage = (from: number, n: number): ReadonlyArray<OutgoingMessage> =>
  Array.from({ length: n }, (_, k) => {
    const i = from + k
    const bodies = [
      "{not json",
      JSON.stringify({ specversion: "1.0", id: `x-${i}`, type: `Entity${i}.created`, source: "accounts" }),
      JSON.stringify({ entity: `Entity${i}`, entityId: `id-${i}`, version: i }),
      ""
    ]
    return {
      messageId: `garbage-${i}`,
      routingKey: i % 2 === 0 ? "accounts.User.created" : "accounts.Company.updated",
      type: `Entity${i}.created`,
      body: new TextEncoder().encode(bodies[i % bodies.length]),
      headers: { "x-trace": `t-${i}` }
    }
  })

const publishGarbage = (from: number, n: number) =>
  Broker.use((broker) => Effect.orDie(broker.publish(garbage(from, n))))

/** Owner and consumer in memory, with the gauges of both refreshed every 5 seconds. */
const system = Gauges.layer({ producer: "accounts", consumer: Harness.consumerName, interval: "5 seconds" }).pipe(
  Layer.provideMerge(Harness.systemLayer())
)

/** A bit of everything: applies, a parked User, an unroutable Invoice, unreadable messages; then the gauges. */
const warmUp = Effect.gen(function*() {
  yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
  yield* Outbox.transaction(users.create({ id: "u-1", companyId: "c-1", email: "a@x.org", name: "A", active: true }))
  yield* Outbox.transaction(
    users.create({ id: "u-2", companyId: "c-404", email: "b@x.org", name: "B", active: true })
  )
  yield* Outbox.transaction(invoices.create({ id: "i-1", amount: 1 })) // no queue takes billing's events
  yield* Harness.relay
  yield* publishGarbage(0, 8)
  yield* Harness.settle({ step: "100 millis", rounds: 3_000 }) // u-2 is held in process, then parked
  yield* TestClock.adjust("5 seconds")
})

const withRegistry = (registry: Metric.MetricRegistry) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.provideService(Metric.MetricRegistry, registry),
    Effect.provideService(References.MinimumLogLevel, "None")
  )

describe("metrics", () => {
  it.effect("every documented series is served, with exactly its labels and its type", () => {
    const registry: Metric.MetricRegistry = new Map()
    return Effect.gen(function*() {
      yield* warmUp
      const text = yield* PrometheusEndpoint.format(registry)
      const samples = samplesOf(text)
      const types = typesOf(text)
      assert.deepStrictEqual(
        [...new Set(samples.map((s) => s.family))].sort(),
        Object.keys(documented).sort(),
        "the documented series, no other"
      )
      for (const sample of samples) {
        const expected = documented[sample.family]!
        const labels = Object.keys(sample.labels).filter((key) => !(sample.name.endsWith("_bucket") && key === "le"))
        assert.deepStrictEqual(labels.sort(), [...expected.labels].sort(), `the labels of ${sample.name}`)
        assert.strictEqual(types[sample.family], expected.type, `the type of ${sample.family}`)
      }
      // the gauges say what the stores hold
      const directory = { consumer: Harness.consumerName }
      assert.strictEqual(valueOf(samples, "entity_sync_outbox_unpublished_events", { producer: "accounts" }), 1)
      assert.isAtLeast(valueOf(samples, "entity_sync_relay_lag_seconds", { producer: "accounts" }), 5)
      assert.strictEqual(valueOf(samples, "entity_sync_inbox_parked_events", directory), 1)
      assert.isAtLeast(valueOf(samples, "entity_sync_inbox_oldest_parked_age_seconds", directory), 4)
      assert.strictEqual(valueOf(samples, "entity_sync_dead_letters", { ...directory, store: "broker" }), 8)
      assert.strictEqual(valueOf(samples, "entity_sync_dead_letters", { ...directory, store: "inbox" }), 0)
      assert.strictEqual(valueOf(samples, "entity_sync_consumer_in_flight_deliveries", directory), 0)
      assert.strictEqual(valueOf(samples, "entity_sync_relay_published_total", { producer: "accounts" }), 3)
      assert.isAtLeast(valueOf(samples, "entity_sync_relay_publish_failures_total", { producer: "accounts" }), 1)
      assert.strictEqual(
        valueOf(samples, "entity_sync_consumer_messages_total", { ...directory, entity: "User", outcome: "applied" }),
        1
      )
      const rejected = samples.filter((s) =>
        s.name === "entity_sync_consumer_messages_total" &&
        ["malformed", "unsupportedVersion", "forged"].includes(s.labels["outcome"] ?? "")
      )
      assert.strictEqual(
        rejected.reduce((sum, s) => sum + s.value, 0),
        8,
        "every unreadable message counted, under a subscribed entity or `unknown`"
      )
      // the entities are the subscribed contracts and `unknown`, never a name a message made up
      const entities = new Set(samples.flatMap((s) => (s.labels["entity"] === undefined ? [] : [s.labels["entity"]])))
      assert.includeMembers(["Company", "User", "unknown"], [...entities])
    }).pipe(Effect.provide(system), withRegistry(registry))
  })

  it.effect("10,000 distinct entity ids and a burst of malformed messages leave the number of series unchanged", () => {
    const registry: Metric.MetricRegistry = new Map()
    return Effect.gen(function*() {
      yield* warmUp
      const series = (text: string) => samplesOf(text).map((s) => `${s.name}${JSON.stringify(s.labels)}`)
      const before = series(yield* PrometheusEndpoint.format(registry))
      const ids = Array.from({ length: 10_000 }, (_, i) => `bulk-${i}`)
      for (let from = 0; from < ids.length; from += 1_000) {
        yield* Outbox.transaction(
          Effect.forEach(ids.slice(from, from + 1_000), (id) => companies.create({ id, name: id }), { discard: true })
        )
      }
      yield* Harness.relay
      yield* publishGarbage(1_000, 1_000)
      yield* Harness.settle({ rounds: 20_000 })
      yield* TestClock.adjust("5 seconds")
      const text = yield* PrometheusEndpoint.format(registry)
      const samples = samplesOf(text)
      assert.strictEqual(
        valueOf(samples, "entity_sync_consumer_messages_total", {
          consumer: Harness.consumerName,
          entity: "Company",
          outcome: "applied"
        }),
        10_001
      )
      assert.strictEqual(
        valueOf(samples, "entity_sync_dead_letters", { consumer: Harness.consumerName, store: "broker" }),
        1_008
      )
      assert.deepStrictEqual(series(text).sort(), before.sort(), "the same series, only their values changed")
    }).pipe(Effect.provide(system), withRegistry(registry))
  }, 120_000)

  it.effect("a failing read is logged when it starts failing and when it answers again; nothing else stops", () => {
    const registry: Metric.MetricRegistry = new Map()
    const logs: Array<string> = []
    const state = { down: false }
    const failingInbox = Layer.effect(
      Inbox,
      Effect.map(MemoryInbox.make, (memory) =>
        Inbox.of({
          ...memory,
          stats: (consumer) =>
            state.down
              ? Effect.fail(new SqlError.SqlError({ reason: new SqlError.ConnectionError({ cause: "refused" }) }))
              : memory.stats(consumer)
        }))
    )
    const stores = Layer.mergeAll(failingInbox, MemoryOutbox.layer()).pipe(Layer.provideMerge(MemoryDatabase.layer))
    const logger = Logger.layer([
      Logger.make((options) => {
        if (options.logLevel !== "Warn" && options.logLevel !== "Info") return
        const message = Array.isArray(options.message) ? options.message[0] : options.message
        logs.push(`${options.logLevel}: ${String(message)}`)
      })
    ])
    return Effect.gen(function*() {
      const sample = (name: string, labels: Readonly<Record<string, string>>) =>
        Effect.map(PrometheusEndpoint.format(registry), (text) => valueOf(samplesOf(text), name, labels))
      const directory = { consumer: "directory", store: "inbox" }
      yield* Outbox.transaction(Outbox.OutboxTransaction.use((tx) => tx.append([createdEnvelope("m-1")])))
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(yield* sample("entity_sync_dead_letters", directory), 0)
      state.down = true
      yield* TestClock.adjust("5 seconds")
      yield* Outbox.transaction(Outbox.OutboxTransaction.use((tx) => tx.append([createdEnvelope("m-2")])))
      yield* TestClock.adjust("5 seconds")
      assert.deepStrictEqual(logs, [
        "Warn: metrics: cannot read the inbox of directory; its gauges keep their last value"
      ])
      assert.strictEqual(yield* sample("entity_sync_dead_letters", directory), 0, "the last value")
      assert.strictEqual(
        yield* sample("entity_sync_outbox_unpublished_events", { producer: "accounts" }),
        2,
        "the other reads go on"
      )
      assert.strictEqual(yield* sample("entity_sync_relay_lag_seconds", { producer: "accounts" }), 15)
      state.down = false
      yield* TestClock.adjust("5 seconds")
      assert.deepStrictEqual(logs, [
        "Warn: metrics: cannot read the inbox of directory; its gauges keep their last value",
        "Info: metrics: the inbox of directory answers again; its gauges are fresh"
      ])
    }).pipe(
      Effect.provide(
        Gauges.layer({ producer: "accounts", consumer: "directory" }).pipe(
          Layer.provideMerge(Layer.mergeAll(stores, MemoryBroker.layer())),
          Layer.provideMerge(logger)
        )
      ),
      Effect.provideService(Metric.MetricRegistry, registry)
    )
  })

  it.live(
    "promtool check metrics is clean on the /metrics body of each demo service",
    () =>
      Effect.gen(function*() {
        const promtool = spawnSync("promtool", ["--version"], { encoding: "utf8" })
        assert.isUndefined(
          promtool.error,
          "promtool is not installed: install Debian's prometheus package (apt-get install -y prometheus; .ci/run does)"
        )
        const vhost = yield* Stack.virtualHost
        const accounts = yield* Stack.startInProcess(
          AccountsService,
          Stack.environment({ databaseUrl: yield* Stack.database, amqpUrl: vhost.url })
        )
        const directory = yield* Stack.startInProcess(
          DirectoryService,
          Stack.environment({ databaseUrl: yield* Stack.database, amqpUrl: vhost.url })
        )
        const call = (method: "GET" | "POST", url: string, json?: unknown) =>
          ApiClient.call(method, url, json === undefined ? undefined : { json }).pipe(
            Effect.provide(FetchHttpClient.layer),
            Effect.orDie
          )
        assert.strictEqual((yield* call("POST", `${accounts.url}/companies`, { id: "c-1", name: "Acme" })).status, 201)
        // applied at the directory, and its gauges read at least once
        yield* call("GET", `${directory.url}/companies/c-1`).pipe(
          Effect.repeat({ until: (reply) => reply.status === 200, schedule: Schedule.spaced("100 millis") }),
          Effect.timeout("20 seconds")
        )
        const scrape = (url: string) =>
          HttpClient.get(`${url}/metrics`).pipe(
            Effect.flatMap((response) => {
              assert.strictEqual(response.headers["content-type"], PrometheusEndpoint.contentType)
              return response.text
            }),
            Effect.provide(FetchHttpClient.layer),
            Effect.orDie
          )
        for (const [name, url] of [["accounts", accounts.url], ["directory", directory.url]] as const) {
          const body = yield* scrape(url)
          assert.include(body, "entity_sync_", `${name} reports the library's metrics`)
          const checked = spawnSync("promtool", ["check", "metrics"], { input: body, encoding: "utf8" })
          assert.strictEqual(
            checked.status,
            0,
            `promtool check metrics on ${name}'s /metrics:\n${checked.stdout}${checked.stderr}\n--- body ---\n${body}`
          )
          assert.strictEqual(`${checked.stdout}${checked.stderr}`.trim(), "", `${name}: no lint finding`)
        }
        const directoryBody = yield* scrape(directory.url)
        for (const family of ["entity_sync_dead_letters", "entity_sync_inbox_parked_events"]) {
          assert.include(directoryBody, `# TYPE ${family} gauge`)
        }
        assert.include(yield* scrape(accounts.url), "# TYPE entity_sync_outbox_unpublished_events gauge")
      }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")),
    120_000
  )
})
