/**
 * The demo services (accounts → directory) on real PostgreSQL and RabbitMQ, each test with its own
 * databases and RabbitMQ virtual host, driven through their HTTP APIs (faults are injected from outside,
 * through the databases and the broker):
 *
 * * the whole scenario of `npm run demo`, plus the HTTP contract's error answers;
 * * resync by request over the bus — including a request made while the owner is down — and bad requests
 *   dead-lettered with their reasons;
 * * SIGTERM of the directory (a child process) in the middle of a stream of writes, then a restart: it
 *   exits cleanly, and the copies converge with nothing lost.
 */
import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Fiber, Layer, Ref, References, Schedule, Schema, Scope } from "effect"
import { FetchHttpClient, HttpClient } from "effect/http"
import * as AccountsService from "../../services/accounts/AccountsService.ts"
import * as DirectoryService from "../../services/directory/DirectoryService.ts"
import * as ApiClient from "../../services/scenario/ApiClient.ts"
import { Faults, make as makeFaults } from "../../services/scenario/Faults.ts"
import * as Scenario from "../../services/scenario/Scenario.ts"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import { Broker } from "../../src/Broker.ts"
import * as Resync from "../../src/Resync.ts"
import * as Stack from "./stack.ts"

const quiet = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, References.MinimumLogLevel, "Error")

const http = (method: "GET" | "POST" | "PATCH" | "DELETE", url: string, json?: unknown) =>
  ApiClient.call(
    method,
    url,
    json === undefined ? undefined : { json },
    url.includes("/admin/") ? ApiClient.adminHeaders(Stack.adminToken) : undefined
  ).pipe(
    Effect.provide(FetchHttpClient.layer),
    Effect.orDie
  )

/** Polls `see` until it equals `expected` (JSON), for up to `within`; fails the test with what it saw. */
const eventually = <A>(what: string, expected: A, see: Effect.Effect<A>, within: Duration.Input = "20 seconds") =>
  Effect.gen(function*() {
    const same = (a: A) => JSON.stringify(a) === JSON.stringify(expected)
    const saw = yield* see.pipe(
      Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: same }),
      Effect.timeoutOption(within),
      Effect.andThen(see)
    )
    assert.deepStrictEqual(saw, expected, what)
  })

const Named = Schema.Struct({ id: Schema.String, name: Schema.String, version: Schema.Number })
const Rows = Schema.Array(Schema.Struct({
  id: Schema.String,
  version: Schema.Number,
  deletedAt: Schema.NullOr(Schema.String)
}))
const nameOf = (base: string, path: string) =>
  Effect.flatMap(http("GET", `${base}${path}`), (reply) =>
    reply.status === 200
      ? Effect.map(ApiClient.decodeBody(Named, path)(reply), (row): string | number => row.name)
      : Effect.succeed<string | number>(reply.status))
const rows = (url: string) =>
  Effect.flatMap(http("GET", url), ApiClient.decodeBody(Rows, url)).pipe(
    Effect.map((list) => list.map((r) => `${r.id}@${r.version}${r.deletedAt === null ? "" : "(soft-deleted)"}`))
  )

describe("demo services on PostgreSQL and RabbitMQ", () => {
  it.live(
    "play the demo's whole scenario over HTTP; errors are JSON with the right status",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Stack.virtualHost
        const accountsDb = yield* Stack.database
        const directoryDb = yield* Stack.database
        const accounts = yield* Stack.startInProcess(
          AccountsService,
          Stack.environment({ databaseUrl: accountsDb, amqpUrl: vhost.url })
        )
        const directory = yield* Stack.startInProcess(
          DirectoryService,
          Stack.environment({ databaseUrl: directoryDb, amqpUrl: vhost.url })
        )
        const broker = yield* Layer.build(RabbitBroker.layer({ url: vhost.url }))
        const faults = yield* makeFaults({ ownerDatabase: accountsDb, consumerDatabase: directoryDb }).pipe(
          Effect.provideContext(broker)
        )
        const report: Array<string> = []
        const result = yield* Scenario.run({
          accounts: accounts.url,
          directory: directory.url,
          adminToken: Stack.adminToken,
          print: (line) => Effect.sync(() => void report.push(line))
        }).pipe(
          Effect.provideService(Faults, faults),
          Effect.provide(FetchHttpClient.layer)
        )
        assert.deepStrictEqual(result.failed, [], report.join("\n"))
        assert.isAtLeast(result.steps, 30)

        // the rest of the HTTP contract
        const errorOf = (reply: ApiClient.Reply) => ({ status: reply.status, body: reply.body })
        assert.deepStrictEqual(errorOf(yield* http("GET", `${accounts.url}/nope`)), {
          status: 404,
          body: { error: "NotFound", message: "no such route" }
        })
        assert.deepStrictEqual(errorOf(yield* http("PATCH", `${accounts.url}/users/u-404`, { name: "X" })), {
          status: 404,
          body: { error: "NotFound", message: "User:u-404 does not exist" }
        })
        const badQuery = yield* http("DELETE", `${accounts.url}/users/u-1?soft=maybe`)
        assert.strictEqual(badQuery.status, 422)
        const badEntity = yield* http("POST", `${directory.url}/admin/resync`, { entity: "Invoice" })
        assert.strictEqual(badEntity.status, 422)
        assert.deepStrictEqual(errorOf(yield* http("GET", `${directory.url}/employees/u-404`)).status, 404)
        assert.deepStrictEqual(
          errorOf(yield* http("POST", `${directory.url}/admin/dead-letters/nope/replay`)).body,
          { error: "NotFound", message: "no dead letter with message id nope" }
        )
        const health = yield* http("GET", `${directory.url}/health`)
        // the library's checks (`Health`), each ok since the start; then the directory's own details
        const { liveness, readiness, ...details } = { ...Object(health.body) }
        const passing = (checks: unknown) =>
          Object.entries(Object(checks)).flatMap(([name, check]) =>
            Reflect.get(Object(check), "ok") === true ? [name] : []
          )
        assert.deepStrictEqual(passing(readiness), ["database", "broker", "consumer"])
        assert.deepStrictEqual(passing(liveness), ["process", "consumer"])
        assert.deepStrictEqual([health.status, details], [200, {
          status: "ok",
          service: "directory",
          database: "postgres",
          consumer: {
            inFlight: 0,
            waiting: 0,
            deadLetters: 0,
            oldestUnsettledAt: null,
            oldestWaitingSince: null,
            oldestDeadAt: null
          },
          broker: { deadLetters: 3 } // the scenario's poison step: three messages nobody can read
        }])
        const metrics = yield* HttpClient.get(`${accounts.url}/metrics`).pipe(
          Effect.provide(FetchHttpClient.layer),
          Effect.orDie
        )
        assert.match(metrics.headers["content-type"] ?? "", /^text\/plain/)
        const text = yield* Effect.orDie(metrics.text)
        assert.isAbove(Scenario.sample(text, "entity_sync_relay_published_total", { producer: "accounts" }), 10)
        const byCompany = yield* rows(`${directory.url}/employees?companyId=c-1`)
        assert.deepStrictEqual(byCompany, ["u-1@1", "u-3@2"])
      }).pipe(quiet),
    120_000
  )

  it.live(
    "resync by request: asked on the bus, answered with a full sync — even when the owner was down",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Stack.virtualHost
        const accountsDb = yield* Stack.database
        const directoryDb = yield* Stack.database
        const accountsEnv = Stack.environment({ databaseUrl: accountsDb, amqpUrl: vhost.url })
        const testScope = yield* Effect.scope
        const startAccounts = Effect.gen(function*() {
          const scope = yield* Scope.fork(testScope)
          const listening = yield* Stack.startInProcess(AccountsService, accountsEnv).pipe(Scope.provide(scope))
          return { url: listening.url, stop: Scope.close(scope, Exit.void) }
        })
        let accounts = yield* startAccounts
        const directory = yield* Stack.startInProcess(
          DirectoryService,
          Stack.environment({ databaseUrl: directoryDb, amqpUrl: vhost.url })
        )
        const broker = yield* Layer.build(RabbitBroker.layer({ url: vhost.url }))
        const faults = yield* makeFaults({ ownerDatabase: accountsDb, consumerDatabase: directoryDb }).pipe(
          Effect.provideContext(broker)
        )

        for (const [id, name] of [["c-1", "Acme"], ["c-2", "Beta"]]) {
          assert.strictEqual((yield* http("POST", `${accounts.url}/companies`, { id, name })).status, 201)
        }
        for (
          const [id, companyId, active] of [["u-1", "c-1", true], ["u-2", "c-2", true], ["u-3", "c-2", false]] as const
        ) {
          const user = { id, companyId, email: `${id}@example.test`, name: id, active }
          assert.strictEqual((yield* http("POST", `${accounts.url}/users`, user)).status, 201)
        }
        yield* eventually("employees copied", ["u-1@1", "u-2@1"], rows(`${directory.url}/employees`))
        yield* faults.driftCopy("Company", "c-1", { id: "c-1", name: "drifted 1" })
        yield* faults.driftCopy("Company", "c-2", { id: "c-2", name: "drifted 2" })

        // a resync of some ids
        const asked = yield* http("POST", `${directory.url}/admin/resync`, { entity: "Company", ids: ["c-1"] })
        assert.strictEqual(asked.status, 202)
        assert.deepInclude(asked.body, { owner: "accounts", entity: "Company", ids: ["c-1"] })
        yield* eventually("c-1 repaired", "Acme", nameOf(directory.url, "/companies/c-1"))
        assert.strictEqual(yield* nameOf(directory.url, "/companies/c-2"), "drifted 2")

        // the owner is down: the request waits in its queue, and is answered when it is back
        yield* accounts.stop
        assert.strictEqual((yield* http("POST", `${directory.url}/admin/resync`, { entity: "Company" })).status, 202)
        yield* eventually(
          "the request waits in the owner's queue",
          1,
          Stack.readyMessages(vhost.name, "accounts.resync")
        )
        assert.strictEqual(yield* nameOf(directory.url, "/companies/c-2"), "drifted 2")
        accounts = yield* startAccounts
        yield* eventually("c-2 repaired after the owner came back", "Beta", nameOf(directory.url, "/companies/c-2"))

        // every User: inactive ones stay private
        assert.strictEqual((yield* http("POST", `${directory.url}/admin/resync`, { entity: "User" })).status, 202)
        const served = (entity: string) =>
          Effect.flatMap(http("GET", `${accounts.url}/metrics`), (reply) =>
            Effect.succeed(
              Scenario.sample(String(reply.body), "entity_sync_resync_requests_total", {
                owner: "accounts",
                entity,
                outcome: "served"
              })
            ))
        yield* eventually(
          "the owner served both requests since its restart",
          [1, 1],
          Effect.all([served("Company"), served("User")])
        )
        yield* eventually("employees unchanged", ["u-1@1", "u-2@1"], rows(`${directory.url}/employees`))

        // requests the owner cannot act on are dead-lettered with a reason
        const bus = Effect.provideContext(broker)
        const encoder = new TextEncoder()
        const raw = (messageId: string, entity: string, body: string) => ({
          messageId,
          routingKey: Resync.routingKey("accounts", entity),
          type: `resync.${entity}`,
          body: encoder.encode(body),
          headers: {}
        })
        const request = (fields: Record<string, unknown>) =>
          JSON.stringify({
            specVersion: 1,
            requestId: "r",
            owner: "accounts",
            entity: "Company",
            requester: "test",
            requestedAt: new Date().toISOString(),
            ...fields
          })
        yield* Broker.use((b) =>
          b.publish([
            raw("bad-json", "Company", "{not json"),
            raw("bad-entity", "Invoice", request({ requestId: "bad-entity", entity: "Invoice" })),
            raw("bad-owner", "Company", request({ requestId: "bad-owner", owner: "billing" })),
            raw("bad-ids", "Company", request({ requestId: "bad-ids", ids: "c-1" }))
          ])
        ).pipe(bus, Effect.orDie)
        const reasons = Broker.use((b) => b.deadLetters(Resync.queueOf("accounts").name)).pipe(
          bus,
          Effect.orDie,
          Effect.map((dead) => dead.items.map((d) => `${d.messageId} ${d.reason.split(":")[0]}`).sort())
        )
        yield* eventually(
          "bad requests dead-lettered with their reasons",
          ["bad-entity UnknownEntity", "bad-ids InvalidRequest", "bad-json NotJson", "bad-owner WrongOwner"],
          reasons
        )
      }).pipe(quiet),
    120_000
  )

  it.live(
    "SIGTERM of the directory under load: it stops cleanly, restarts, and the copies converge",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Stack.virtualHost
        const accountsDb = yield* Stack.database
        const directoryDb = yield* Stack.database
        const accounts = yield* Stack.startInProcess(
          AccountsService,
          Stack.environment({ databaseUrl: accountsDb, amqpUrl: vhost.url })
        )
        const port = yield* Stack.freePort
        const directoryUrl = `http://127.0.0.1:${port}`
        const directoryEnv = Stack.environment({ databaseUrl: directoryDb, amqpUrl: vhost.url, port })
        const startDirectory = Effect.gen(function*() {
          const child = yield* Stack.spawnService("services/directory/main.ts", directoryEnv)
          yield* eventually(
            "the directory is up",
            200,
            Effect.map(
              http("GET", `${directoryUrl}/health`).pipe(
                Effect.catchDefect(() => Effect.succeed({ status: 0, body: null }))
              ),
              (r) => r.status
            ),
            "60 seconds"
          )
          return child
        })
        const first = yield* startDirectory

        const companies = ["c-0", "c-1", "c-2", "c-3"]
        for (const id of companies) {
          assert.strictEqual((yield* http("POST", `${accounts.url}/companies`, { id, name: id })).status, 201)
        }
        // a stream of writes: creates, renames, moves, soft and hard deletes
        const total = 240
        const done = yield* Ref.make(0)
        const write = (i: number) =>
          Effect.gen(function*() {
            const statuses: Array<number> = []
            const id = `u-${i}`
            statuses.push(
              (yield* http("POST", `${accounts.url}/users`, {
                id,
                companyId: companies[i % companies.length],
                email: `${id}@example.test`,
                name: id
              })).status
            )
            if (i % 3 === 0) {
              statuses.push((yield* http("PATCH", `${accounts.url}/users/u-${i - 1}`, { name: `renamed ${i}` })).status)
            }
            if (i % 5 === 0) {
              statuses.push((yield* http("PATCH", `${accounts.url}/users/u-${i - 2}`, { companyId: "c-3" })).status)
            }
            if (i % 7 === 0) statuses.push((yield* http("DELETE", `${accounts.url}/users/u-${i - 3}?soft=true`)).status)
            if (i % 11 === 0) statuses.push((yield* http("DELETE", `${accounts.url}/users/u-${i - 4}`)).status)
            yield* Ref.update(done, (n) => n + 1)
            return statuses
          })
        const load = yield* Effect.forkChild(
          Effect.forEach(Array.from({ length: total }, (_, i) => i + 1), write, { concurrency: 2 })
        )
        const reached = (n: number) =>
          Ref.get(done).pipe(Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (d) => d >= n }))

        yield* reached(total / 4)
        first.process.kill("SIGTERM")
        const code = yield* Effect.promise(() => first.exited)
        assert.strictEqual(code, 0, first.output())
        assert.match(first.output(), /directory: shutting down[\s\S]*directory: stopped/)
        const stoppedAt = yield* Ref.get(done)
        assert.isBelow(stoppedAt, total, "the writes went on while the directory was down")

        yield* reached(total / 2)
        const second = yield* startDirectory
        const statuses = (yield* Fiber.join(load)).flat()
        // every create is a 201; a change of a user deleted before (or not created yet) is a 404
        assert.strictEqual(statuses.filter((s) => s === 201).length, total)
        assert.deepStrictEqual(statuses.filter((s) => s !== 200 && s !== 201 && s !== 404), [])

        const owner = yield* rows(`${accounts.url}/users`)
        assert.isAbove(owner.length, total / 2)
        yield* eventually("every user's copy, at its version", owner, rows(`${directoryUrl}/employees`), "60 seconds")
        yield* eventually(
          "every company's copy",
          yield* rows(`${accounts.url}/companies`),
          rows(`${directoryUrl}/companies`)
        )
        const dead = yield* http("GET", `${directoryUrl}/admin/dead-letters`)
        assert.deepStrictEqual(dead.body, [], second.output())
      }).pipe(quiet),
    120_000
  )
})
