/**
 * The admin CLI `entity-sync`, run as a subprocess (from source, as the bin would run from `dist/`)
 * against real PostgreSQL and RabbitMQ: a fresh database and virtual host per test. Dead letters are
 * written through the library's `Inbox` and broker; the CLI lists, counts and replays them (by reason and
 * time, dry run, canary), republishes an outbox range to a consumer whose copies were wiped, and refuses
 * bad arguments and unreachable servers with a clear message and a non-zero exit.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Metric, Redacted, Schedule, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { join } from "node:path"
import * as RabbitBroker from "../src/amqp/RabbitBroker.ts"
import { Broker, type QueueSpec } from "../src/Broker.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import { type DeadRow, Inbox } from "../src/Inbox.ts"
import * as Outbox from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import * as Resync from "../src/Resync.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company, createdEnvelope } from "./fixtures.ts"
import { consumerSide, ownerSide } from "./harness.ts"
import * as Stack from "./services/stack.ts"

const root = new URL("..", import.meta.url).pathname
const consumer = "directory"
const queue: QueueSpec = { name: "directory.sync", bindings: ["accounts.#"] }
const encoder = new TextEncoder()

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI from source with `args` and the environment `env` (on top of PATH and HOME only). */
const cliWith = (entry: ReadonlyArray<string>) => (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.callback<Run>((resume) => {
    const child = execFile(
      process.execPath,
      [...entry, ...args],
      {
        cwd: root,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
        timeout: 120_000
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        resume(Effect.succeed({ code, stdout, stderr }))
      }
    )
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

const cli = cliWith(["--conditions=entity-sync-source", "--import", "tsx", "src/cli/main.ts"])

/** A fresh database and virtual host, and the environment the CLI reads for them. */
const infrastructure = Effect.gen(function*() {
  const databaseUrl = yield* Stack.database
  const vhost = yield* Stack.virtualHost
  const pg = PgClient.layer({ url: databaseUrl, maxConnections: 10 })
  return {
    pg,
    broker: RabbitBroker.layer({ url: vhost.url }),
    env: (prefix: string): Record<string, string> => ({
      DATABASE_URL: Redacted.value(databaseUrl),
      AMQP_URL: vhost.url,
      SYNC_TABLE_PREFIX: prefix
    })
  }
})

/** Polls (real time) until `check` satisfies `until`, at most 30 s. */
const waitFor = <A, E, R>(check: Effect.Effect<A, E, R>, until: (a: A) => boolean) =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("50 millis"), until }),
    Effect.timeoutOption("30 seconds"),
    Effect.flatMap((a) => a._tag === "Some" ? Effect.succeed(a.value) : Effect.die(new Error("timed out waiting")))
  )

const minute = 60_000
/** The boundary of `--until` in the dead-letter tests: an hour ago. */
const T = Date.now() - 60 * minute

const deadRow = (messageId: string, error: string, lastSeenAt: number): DeadRow => ({
  consumer,
  messageId,
  envelope: createdEnvelope(messageId),
  error,
  reason: `${error}: ${messageId} \u001b[31mwith a terminal escape`,
  waitingFor: [{ entity: "Company", id: "c-1" }],
  attempts: 5,
  firstSeenAt: lastSeenAt - minute,
  lastSeenAt
})

/**
 * 100 dead letters of three reasons: 50 `DependencyMissing` in the inbox (30 dead-lettered before `T`, 20
 * after), 30 `InvalidPayload` in the inbox (before `T`), 20 `NotJson` in the broker (now).
 */
const writeDeadLetters = Effect.gen(function*() {
  const inbox = yield* Inbox
  for (let i = 0; i < 30; i++) {
    yield* inbox.deadLetter(deadRow(`dm-before-${i}`, "DependencyMissing", T - 30 * minute + i))
  }
  for (let i = 0; i < 20; i++) {
    yield* inbox.deadLetter(deadRow(`dm-after-${i}`, "DependencyMissing", T + 10 * minute + i))
  }
  for (let i = 0; i < 30; i++) yield* inbox.deadLetter(deadRow(`ip-${i}`, "InvalidPayload", T - 20 * minute + i))
  const broker = yield* Broker
  yield* broker.declare(queue)
  yield* broker.publish(Array.from({ length: 20 }, (_, i) => ({
    messageId: `nj-${i}`,
    routingKey: "accounts.User.created",
    type: "User.created",
    body: encoder.encode(`not json ${i}`),
    headers: {}
  })))
  yield* broker.subscribe(queue, { prefetch: 50 }).pipe(
    Stream.take(20),
    Stream.runForEach((delivery) => delivery.deadLetter(`NotJson (message ${delivery.messageId}): not JSON`))
  )
  yield* waitFor(broker.deadLetters(queue.name, { limit: 0 }), (page) => page.total === 20)
})

/** The consumer's stores on `prefix`, with the broker. */
const consumerStores = (infra: Effect.Success<typeof infrastructure>, prefix: string) =>
  Layer.mergeAll(PostgresSync.layer({ prefix }).pipe(Layer.provide(infra.pg)), infra.broker)

const deadIds = Effect.flatMap(Inbox, (inbox) => inbox.deadLetters(consumer)).pipe(
  Effect.map((rows) => rows.map((row) => row.messageId).sort())
)
const waitingIds = Effect.flatMap(Inbox, (inbox) => inbox.waiting(consumer)).pipe(
  Effect.map((rows) => rows.map((row) => row.messageId).sort())
)
const range = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`).sort()

describe("the admin CLI", () => {
  it.live(
    "lists the dead letters and replays exactly those of a reason and window, once; a dry run changes nothing",
    () =>
      Effect.gen(function*() {
        const infra = yield* infrastructure
        const env = infra.env("cli_")
        yield* Effect.gen(function*() {
          yield* writeDeadLetters
          const broker = yield* Broker
          const until = new Date(T).toISOString()

          const listed = yield* cli(["dead", "list", "--consumer", consumer, "--json", "--limit", "1000"], env)
          assert.strictEqual(listed.code, 0, listed.stderr)
          const listing = JSON.parse(listed.stdout)
          assert.deepStrictEqual(listing.totals, { inbox: 80, broker: 20 })
          assert.strictEqual(listing.items.length, 100)
          assert.isNull(listing.next)

          // a page of a table: bounded, escapes terminal control characters, and gives the next cursor
          const page = yield* cli([
            "dead",
            "list",
            "--consumer",
            consumer,
            "--reason",
            "DependencyMissing",
            "--limit",
            "10"
          ], env)
          assert.strictEqual(page.code, 0, page.stderr)
          assert.notInclude(page.stdout, "\u001b")
          assert.include(page.stdout, "\\u001b[31m")
          const cursor = /next page: --after (\S+)/.exec(page.stdout)?.[1]
          assert.isDefined(cursor)
          const next = yield* cli(
            [
              "dead",
              "list",
              "--consumer",
              consumer,
              "--reason",
              "DependencyMissing",
              "--json",
              "--after",
              cursor ?? ""
            ],
            env
          )
          assert.strictEqual(JSON.parse(next.stdout).items.length, 40)

          // a dry run prints what it would replay and changes nothing
          const dry = yield* cli(
            ["dead", "replay", "--consumer", consumer, "--reason", "DependencyMissing", "--until", until, "--dry-run"],
            env
          )
          assert.strictEqual(dry.code, 0, dry.stderr)
          assert.include(dry.stdout, "would replay 30 dead letters")
          assert.include(dry.stdout, "dm-before-0")
          assert.notInclude(dry.stdout, "dm-after-0")
          assert.strictEqual((yield* deadIds).length, 80)
          assert.deepStrictEqual(yield* waitingIds, [])

          // the replay touches exactly the 30 rows of that reason dead-lettered before T
          const replayed = yield* cli(
            ["dead", "replay", "--consumer", consumer, "--reason", "DependencyMissing", "--until", until],
            env
          )
          assert.strictEqual(replayed.code, 0, replayed.stderr)
          assert.include(replayed.stdout, "replayed 30 dead letters of directory (inbox 30, broker 0)")
          assert.deepStrictEqual(yield* waitingIds, range("dm-before-", 30))
          assert.deepStrictEqual(yield* deadIds, [...range("dm-after-", 20), ...range("ip-", 30)].sort())
          assert.strictEqual((yield* broker.deadLetters(queue.name, { limit: 0 })).total, 20)

          // a second run finds nothing left to replay
          const again = yield* cli(
            ["dead", "replay", "--consumer", consumer, "--reason", "DependencyMissing", "--until", until],
            env
          )
          assert.strictEqual(again.code, 0, again.stderr)
          assert.include(again.stdout, "replayed 0 dead letters")

          // status counts them per consumer
          const status = yield* cli(["status", "--json"], env)
          assert.strictEqual(status.code, 0, status.stderr)
          assert.deepStrictEqual(
            JSON.parse(status.stdout).consumers.map((c: Record<string, unknown>) => [
              c.consumer,
              c.parked,
              c.deadInbox,
              c.deadBroker
            ]),
            [[consumer, 30, 50, 20]]
          )
          const text = yield* cli(["status"], env)
          assert.match(text.stdout, /directory\s+30\s+\S+( \S+)?\s+50\s+20/)

          // a resync request reaches the owner's queue, with the ids asked for
          const resyncQueue = Resync.queueOf("accounts")
          yield* broker.declare(resyncQueue)
          const asked = yield* cli(
            ["resync", "--consumer", consumer, "--entity", "Company", "--ids", "c-1,c-2", "--owner", "accounts"],
            env
          )
          assert.strictEqual(asked.code, 0, asked.stderr)
          assert.include(asked.stdout, "asked accounts for a resync of Company (2 ids) for directory")
          const [request] = yield* broker.subscribe(resyncQueue).pipe(
            Stream.take(1),
            Stream.mapEffect((delivery) =>
              Effect.as(delivery.ack, JSON.parse(new TextDecoder().decode(delivery.body)))
            ),
            Stream.runCollect
          )
          assert.deepInclude(request, {
            owner: "accounts",
            entity: "Company",
            ids: ["c-1", "c-2"],
            requester: consumer
          })
        }).pipe(Effect.provide(consumerStores(infra, "cli_")))
      }),
    180_000
  )

  it.live(
    "a canary replay stops with a non-zero exit when its events are dead-lettered again",
    () =>
      Effect.gen(function*() {
        const infra = yield* infrastructure
        const env = infra.env("cli_")
        yield* Effect.gen(function*() {
          yield* writeDeadLetters
          const broker = yield* Broker
          // the consumer still cannot read these: it dead-letters every delivery again
          let delivered = 0
          const failing = yield* broker.subscribe(queue).pipe(
            Stream.runForEach((delivery) =>
              Effect.andThen(
                Effect.sync(() => delivered++),
                delivery.deadLetter(`NotJson (message ${delivery.messageId}): not JSON`)
              )
            ),
            Effect.forkChild
          )
          const run = yield* cli(
            [
              "dead",
              "replay",
              "--consumer",
              consumer,
              "--reason",
              "NotJson",
              "--canary",
              "2",
              "--canary-timeout",
              "20s"
            ],
            env
          )
          assert.strictEqual(run.code, 3, run.stdout + run.stderr)
          assert.include(run.stderr, "2 of 2 replayed dead letters were dead-lettered again")
          assert.include(run.stderr, "nothing else was replayed")
          yield* waitFor(broker.deadLetters(queue.name, { limit: 0 }), (p) => p.total === 20)
          assert.strictEqual(delivered, 2)
          yield* Fiber.interrupt(failing)
          assert.strictEqual((yield* deadIds).length, 80)
        }).pipe(Effect.provide(consumerStores(infra, "cli_")))
      }),
    180_000
  )

  it.live("outbox replay of a range converges a consumer whose copies were wiped", () =>
    Effect.gen(function*() {
      const infra = yield* infrastructure
      const companies = Producer.make("accounts").repository(Company)
      const system = Layer.mergeAll(
        ownerSide(PostgresSync.layer({ prefix: "owner_" }).pipe(Layer.provide(infra.pg))),
        consumerSide(PostgresSync.layer({ prefix: "directory_" }).pipe(Layer.provide(infra.pg))),
        infra.broker,
        infra.pg
      )
      yield* Effect.gen(function*() {
        yield* Layer.build(SyncConsumer.layer({
          service: consumer,
          subscriptions: [Subscription.subscribe(Company)],
          producers: { accounts: ["guest"] }
        }))
        yield* Layer.build(Relay.layer({ producer: "accounts", pollInterval: "200 millis" }))
        for (let i = 0; i < 20; i++) {
          yield* Outbox.transaction(companies.create({ id: `c-${i}`, name: `Company ${i}` }))
        }
        yield* Outbox.transaction(companies.update("c-3", (c) => ({ ...c, name: "Renamed" })))
        const copies = yield* CopyRepository
        const synced = (rows: ReadonlyArray<{ readonly version: number }>) =>
          rows.length === 20 && rows.reduce((sum, row) => sum + row.version, 0) === 21
        yield* waitFor(copies.list("Company"), synced)

        // the consumer loses its copies and its dedupe records (restored from an empty database)
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE directory_copies, directory_inbox`
        assert.deepStrictEqual(yield* copies.list("Company"), [])

        const run = yield* cli(["outbox", "replay", "--producer", "accounts", "--since", "1h"], infra.env("owner_"))
        assert.strictEqual(run.code, 0, run.stderr)
        assert.include(run.stdout, "marked 21 published outbox rows")
        const back = yield* waitFor(copies.list("Company"), synced)
        assert.deepStrictEqual(back.find((row) => row.id === "c-3")?.payload, { id: "c-3", name: "Renamed" })

        // one entity only, nothing outside the window
        const none = yield* cli(
          ["outbox", "replay", "--producer", "accounts", "--since", "2h", "--until", "1h"],
          infra.env("owner_")
        )
        assert.include(none.stdout, "marked 0 published outbox rows")
        const status = yield* cli(["status", "--json"], infra.env("owner_"))
        assert.strictEqual(status.code, 0, status.stderr)
        assert.deepStrictEqual(JSON.parse(status.stdout).producers.map((p: Record<string, unknown>) => p.producer), [
          "accounts"
        ])

        // retention applied now: the consumer's 21 dedupe records
        const pruned = yield* cli(["prune", "--outbox-retention", "0ms", "--inbox-retention", "0ms"], {
          ...infra.env("owner_"),
          SYNC_TABLE_PREFIX: "directory_"
        })
        assert.strictEqual(pruned.code, 0, pruned.stderr)
        assert.include(pruned.stdout, "inbox: deleted 21 dedupe records")
      }).pipe(Effect.provide(system), Effect.provideService(Metric.MetricRegistry, new Map()))
    }), 180_000)

  it.live("bad arguments and unreachable servers: a clear message and a non-zero exit", () =>
    Effect.gen(function*() {
      const unreachable = {
        DATABASE_URL: "postgres://postgres@127.0.0.1:1/nowhere",
        AMQP_URL: "amqp://guest:guest@127.0.0.1:1"
      }
      const badDate = yield* cli(["dead", "list", "--consumer", consumer, "--since", "yesterday"], unreachable)
      assert.strictEqual(badDate.code, 2)
      assert.include(badDate.stderr, "--since: expected an ISO-8601 time")
      const badCount = yield* cli(["dead", "replay", "--consumer", consumer, "--canary", "-1"], unreachable)
      assert.strictEqual(badCount.code, 2)
      assert.include(badCount.stderr, "--canary")
      const missing = yield* cli(["dead", "replay", "--reason", "NotJson"], unreachable)
      assert.strictEqual(missing.code, 2)
      assert.include(missing.stdout + missing.stderr, "--consumer")
      const unknown = yield* cli(["outbox", "rewind"], unreachable)
      assert.strictEqual(unknown.code, 2)
      const window = yield* cli(
        ["outbox", "replay", "--producer", "accounts", "--since", "1h", "--until", "2h"],
        unreachable
      )
      assert.strictEqual(window.code, 2)
      assert.include(window.stderr, "--since")

      const down = yield* cli(["status"], unreachable)
      assert.strictEqual(down.code, 1)
      assert.include(down.stderr, "cannot connect to PostgreSQL at 127.0.0.1:1/nowhere: connection refused")
      assert.notInclude(down.stderr, "    at ")
      const unset = yield* cli(["prune"], {})
      assert.strictEqual(unset.code, 1)
      assert.include(unset.stderr, "DATABASE_URL")

      const help = yield* cli(["--help"], {})
      assert.strictEqual(help.code, 0)
      for (const command of ["status", "dead", "outbox", "resync", "prune"]) assert.include(help.stdout, command)
    }), 120_000)

  it.live("the built package runs as the bin `entity-sync`", () =>
    Effect.gen(function*() {
      const out = mkdtempSync(join(root, "node_modules", ".cli-build-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(out, { recursive: true, force: true })))
      const build = yield* Effect.callback<number>((resume) => {
        execFile(
          process.execPath,
          [join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json", "--outDir", out],
          { cwd: root },
          (error) => resume(Effect.succeed(error === null ? 0 : 1))
        )
      })
      assert.strictEqual(build, 0)
      const pkg = yield* Effect.promise(() => import("../package.json", { with: { type: "json" } }))
      const bin = pkg.default.bin["entity-sync"]
      assert.strictEqual(bin, "dist/cli/main.js")
      const run = yield* cliWith([join(out, bin.replace(/^dist\//, ""))])(["--help"], {})
      assert.strictEqual(run.code, 0, run.stderr)
      assert.include(run.stdout, "outbox")
      const down = yield* cliWith([join(out, "cli/main.js")])(["status"], {
        DATABASE_URL: "postgres://postgres@127.0.0.1:1/nowhere"
      })
      assert.strictEqual(down.code, 1)
      assert.include(down.stderr, "connection refused")
    }), 180_000)
})
