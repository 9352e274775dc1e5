/**
 * The directory as an operator meets it, on real PostgreSQL and RabbitMQ: it listens while a dependency
 * fails at start-up and `/health` names it (503, since when), logging every attempt; dead letters of both
 * stores paged over HTTP behind the admin token, and replayed in bulk by reason.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted, References, Schedule, Schema } from "effect"
import { FetchHttpClient } from "effect/http"
import * as DirectoryService from "../../services/directory/DirectoryService.ts"
import * as ApiClient from "../../services/scenario/ApiClient.ts"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import { Broker } from "../../src/Broker.ts"
import { Inbox } from "../../src/Inbox.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import { createdEnvelope } from "../fixtures.ts"
import * as Stack from "./stack.ts"

const quiet = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, References.MinimumLogLevel, "None")

const call = (method: "GET" | "POST", url: string, body?: ApiClient.Body, admin = true) =>
  ApiClient.call(method, url, body, admin ? ApiClient.adminHeaders(Stack.adminToken) : undefined).pipe(
    Effect.provide(FetchHttpClient.layer),
    Effect.orDie
  )

const Starting = Schema.Struct({
  status: Schema.Literal("starting"),
  service: Schema.String,
  dependency: Schema.String,
  since: Schema.String,
  problem: Schema.String,
  attempts: Schema.Number
})

const Rows = Schema.Array(Schema.Struct({ messageId: Schema.String, store: Schema.String, error: Schema.String }))

describe("directory operations on PostgreSQL and RabbitMQ", () => {
  it.live(
    "an unreachable database at start-up: it listens, /health names the database and since when",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Stack.virtualHost
        const env = Stack.environment({
          databaseUrl: Redacted.make("postgres://postgres@127.0.0.1:1/nowhere"),
          amqpUrl: vhost.url
        })
        const directory = yield* Stack.startInProcess(DirectoryService, env, { ready: false })
        const health = yield* call("GET", `${directory.url}/health`, undefined, false).pipe(
          Effect.repeat({
            schedule: Schedule.spaced("100 millis"),
            until: (reply) => Number(Reflect.get(Object(reply.body), "attempts")) >= 2
          }),
          Effect.timeout("20 seconds")
        )
        assert.strictEqual(health.status, 503)
        const body = yield* ApiClient.decodeBody(Starting, "/health")(health)
        assert.strictEqual(body.dependency, "database")
        assert.match(body.problem, /the database cannot be reached/)
        assert.isBelow(Date.now() - Date.parse(body.since), 20_000)
        const other = yield* call("GET", `${directory.url}/employees`, undefined, false)
        assert.strictEqual(other.status, 503)
        assert.deepInclude(other.body, { error: "ServiceUnavailable", dependency: "database" })
      }).pipe(quiet),
    60_000
  )

  it.live("a wrong broker password: every attempt is logged, /health names the broker", () =>
    Effect.gen(function*() {
      const vhost = yield* Stack.virtualHost
      const database = yield* Stack.database
      const port = yield* Stack.freePort
      const env = Stack.environment({
        databaseUrl: database,
        amqpUrl: vhost.url.replace("guest:guest@", "guest:wrong@"),
        port
      })
      const child = yield* Stack.spawnService("services/directory/main.ts", env)
      const health = yield* call("GET", `http://127.0.0.1:${port}/health`, undefined, false).pipe(
        Effect.catchDefect(() => Effect.succeed({ status: 0, body: null })),
        Effect.repeat({
          schedule: Schedule.spaced("200 millis"),
          until: (reply) => Number(Reflect.get(Object(reply.body), "attempts")) >= 2
        }),
        Effect.timeout("60 seconds")
      )
      const body = yield* ApiClient.decodeBody(Starting, "/health")(health)
      assert.deepInclude(body, { status: "starting", service: "directory", dependency: "broker" })
      assert.match(body.problem, /refused the login/)
      assert.match(child.output(), /listening on 127\.0\.0\.1:\d+/)
      assert.match(child.output(), /cannot start \(attempt 1\): the broker refused the login/)
      assert.match(child.output(), /cannot start \(attempt 2\)/)
      assert.notInclude(child.output(), "guest:wrong")
    }).pipe(quiet), 90_000)

  it.live(
    "dead letters of both stores paged behind the admin token, replayed in bulk by reason",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Stack.virtualHost
        const database = yield* Stack.database
        const directory = yield* Stack.startInProcess(
          DirectoryService,
          Stack.environment({ databaseUrl: database, amqpUrl: vhost.url })
        )
        // two inbox dead letters, written to the directory's own tables
        const stores = yield* Layer.build(
          PostgresSync.layer({}).pipe(Layer.provideMerge(PgClient.layer({ url: database, maxConnections: 2 })))
        )
        const inbox = Effect.provideContext(Inbox, stores)
        yield* Effect.forEach(["m-1", "m-2"], (messageId) =>
          Effect.flatMap(inbox, (store) =>
            store.deadLetter({
              consumer: "directory",
              messageId,
              envelope: createdEnvelope(messageId),
              error: "DependencyMissing",
              reason: `DependencyMissing: ${messageId} waits for Company:c-1`,
              waitingFor: [{ entity: "Company", id: "c-1" }],
              attempts: 9,
              firstSeenAt: 1_000,
              lastSeenAt: 2_000
            })))
        // three messages nobody can read, dead-lettered by the consumer
        const broker = yield* Layer.build(RabbitBroker.layer({ url: vhost.url }))
        yield* Effect.flatMap(Effect.provideContext(Broker, broker), (bus) =>
          bus.publish(["b-1", "b-2", "b-3"].map((messageId) => ({
            messageId,
            routingKey: "accounts.User.created",
            type: "User.created",
            body: new TextEncoder().encode("{not json"),
            headers: {}
          })))).pipe(Effect.orDie)
        const depth = (reply: ApiClient.Reply) =>
          Number(Reflect.get(Object(Reflect.get(Object(reply.body), "broker")), "deadLetters"))
        yield* call("GET", `${directory.url}/health`, undefined, false).pipe(
          Effect.repeat({
            schedule: Schedule.spaced("100 millis"),
            until: (reply) =>
              depth(reply) === 3
          }),
          Effect.timeout("20 seconds")
        )
        const health = yield* call("GET", `${directory.url}/health`, undefined, false)
        assert.deepInclude(Object(health.body), { status: "ok", broker: { deadLetters: 3 } })
        assert.strictEqual(Reflect.get(Object(Reflect.get(Object(health.body), "consumer")), "deadLetters"), 2)

        assert.strictEqual((yield* call("GET", `${directory.url}/admin/dead-letters`, undefined, false)).status, 401)
        // pages of two, following the cursor
        const seen: Array<string> = []
        let next: string | null = null
        let pages = 0
        do {
          const url: string = `${directory.url}/admin/dead-letters?limit=2${next !== null ? `&after=${next}` : ""}`
          const response: Response = yield* Effect.promise(() =>
            fetch(url, { headers: { authorization: `Bearer ${Stack.adminToken}` } })
          )
          assert.strictEqual(response.status, 200)
          assert.strictEqual(response.headers.get("x-total-inbox"), "2")
          assert.strictEqual(response.headers.get("x-total-broker"), "3")
          const rows = yield* Schema.decodeUnknownEffect(Rows)(
            yield* Effect.promise(() =>
              response.json()
            )
          )
          assert.isAtMost(rows.length, 2)
          seen.push(...rows.map((row) => `${row.store}:${row.messageId}:${row.error}`))
          next = response.headers.get("x-next-cursor")
          pages++
        } while (next !== null && pages < 10)
        assert.strictEqual(pages, 3)
        assert.deepStrictEqual(seen, [
          "inbox:m-1:DependencyMissing",
          "inbox:m-2:DependencyMissing",
          "broker:b-1:NotJson",
          "broker:b-2:NotJson",
          "broker:b-3:NotJson"
        ])
        const filtered = yield* call("GET", `${directory.url}/admin/dead-letters?reason=NotJson&entity=User`)
        assert.lengthOf(yield* ApiClient.decodeBody(Rows, "filtered")(filtered), 3)
        const badCursor = yield* call("GET", `${directory.url}/admin/dead-letters?after=bm90LWEtY3Vyc29y`)
        assert.strictEqual(badCursor.status, 422)

        // bulk replay: at least one condition; by reason, across both stores
        assert.strictEqual(
          (yield* call("POST", `${directory.url}/admin/dead-letters/replay`, { json: {} })).status,
          422
        )
        const tooBig = yield* call("POST", `${directory.url}/admin/dead-letters/replay`, { text: " ".repeat(70_000) })
        assert.strictEqual(tooBig.status, 413)
        const inboxReplay = yield* call("POST", `${directory.url}/admin/dead-letters/replay`, {
          json: { reasons: ["DependencyMissing"], to: "2030-01-01T00:00:00Z" }
        })
        assert.deepStrictEqual([inboxReplay.status, inboxReplay.body], [202, { inbox: 2, broker: 0, brokerUnread: 0 }])
        const brokerReplay = yield* call("POST", `${directory.url}/admin/dead-letters/replay`, {
          json: { reasons: ["NotJson"], entities: ["User"] }
        })
        assert.deepStrictEqual([brokerReplay.status, brokerReplay.body], [202, {
          inbox: 0,
          broker: 3,
          brokerUnread: 0
        }])
      }).pipe(quiet),
    90_000
  )
})
