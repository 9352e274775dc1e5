/**
 * The pattern's checklist as a scenario played against the two demo services over HTTP: create, update,
 * soft and hard delete, a deactivated user and an inactive one kept private, an out-of-order pair and a
 * duplicate, a User whose Company arrives later, a dependency that never arrives (dead-lettered, then
 * replayed once its Company was full-synced), poison on the bus (the retired wire format, a contract version
 * the consumer does not know, a payload that does not fit) dead-lettered beside a good event, and a drifted
 * copy repaired by full sync. The faults come
 * from `Faults`; everything else goes through the services' HTTP APIs. Each step reports what it expected
 * and what it saw; `npm run demo` and the services' tests play it.
 *
 * @since 0.1.0
 */
import { Console, Duration, Effect, Schedule, Schema } from "effect"
import { HttpClient } from "effect/http"
import { Envelope } from "entity-sync"
import { companies, users } from "../accounts/Accounts.ts"
import * as ApiClient from "./ApiClient.ts"
import { Faults } from "./Faults.ts"

/** Where the services are, and how the scenario reports. */
export interface ScenarioOptions {
  /** The accounts service's base URL, e.g. `http://127.0.0.1:3001` (or `http://accounts` in process). */
  readonly accounts: string
  /** The directory service's base URL. */
  readonly directory: string
  /** The services' admin token, sent with every `/admin/*` request. */
  readonly adminToken?: string
  /** How long a step waits for what it expects (default 20 seconds). */
  readonly patience?: Duration.Input
  /** Where the report goes, line by line (default: the console). */
  readonly print?: (line: string) => Effect.Effect<void>
}

/** The outcome: how many steps ran, and the names of those that did not hold. */
export interface ScenarioResult {
  readonly steps: number
  readonly failed: ReadonlyArray<string>
}

const CompanyView = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  version: Schema.Number,
  deletedAt: Schema.NullOr(Schema.String)
})
const EmployeeView = Schema.Struct({
  id: Schema.String,
  companyId: Schema.String,
  name: Schema.String,
  active: Schema.Boolean,
  version: Schema.Number,
  deletedAt: Schema.NullOr(Schema.String)
})
const UserView = Schema.Struct({ id: Schema.String, active: Schema.Boolean, version: Schema.Number })
const DeadLetterView = Schema.Struct({
  messageId: Schema.String,
  store: Schema.String,
  error: Schema.String,
  entity: Schema.NullOr(Schema.String),
  id: Schema.NullOr(Schema.String)
})
const ErrorView = Schema.Struct({ error: Schema.String, details: Schema.optionalKey(Schema.Unknown) })
const IssuesView = Schema.Array(Schema.Struct({ path: Schema.String }))
const issuePaths = Schema.decodeUnknownOption(IssuesView)
const FullSyncView = Schema.Struct({ queued: Schema.Number })
const ReplayView = Schema.Struct({ store: Schema.String })

/** What the scenario expects of a company copy. */
const copied = (name: string, version: number) => ({ name, version, softDeleted: false })

/** What the scenario expects of an employee. */
const employed = (
  companyId: string,
  name: string,
  version: number,
  options?: { readonly active?: boolean; readonly softDeleted?: boolean }
) => ({ companyId, name, active: options?.active ?? true, version, softDeleted: options?.softDeleted ?? false })

const user = (id: string, companyId: string, name: string, active = true) => ({
  id,
  companyId,
  email: `${id}@example.test`,
  name,
  active
})

/** Reads one sample of a Prometheus text exposition: the counter `name` with these labels (0 if absent). */
export const sample = (text: string, name: string, labels: Readonly<Record<string, string>>): number => {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`)
  const line = text.split("\n").find((l) =>
    l.startsWith(`${name}{`) && wanted.every((pair) => l.slice(name.length, l.lastIndexOf("}") + 1).includes(pair))
  )
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}

/** Plays the scenario. Never fails: a step that does not hold is reported and counted. */
export const run = (
  options: ScenarioOptions
): Effect.Effect<ScenarioResult, never, HttpClient.HttpClient | Faults> =>
  Effect.gen(function*() {
    const faults = yield* Faults
    const print = options.print ?? ((line: string) => Console.log(line))
    const patience = Duration.fromInputUnsafe(options.patience ?? "20 seconds")
    const failed: Array<string> = []
    let steps = 0
    const accounts = (path: string) => `${options.accounts}${path}`
    const directory = (path: string) => `${options.directory}${path}`
    const client = yield* HttpClient.HttpClient
    const admin = ApiClient.adminHeaders(options.adminToken)
    const call = (method: "GET" | "POST" | "PATCH" | "DELETE", url: string, body?: ApiClient.Body) =>
      ApiClient.call(method, url, body, url.includes("/admin/") ? admin : undefined).pipe(
        Effect.provideService(HttpClient.HttpClient, client),
        Effect.orDie
      )
    /** A request whose answer is decoded with `schema`, with its status. */
    const fetch = <A>(schema: Schema.Decoder<A>, method: "GET" | "POST", url: string, body?: ApiClient.Body) =>
      Effect.flatMap(call(method, url, body), (reply) =>
        Effect.map(ApiClient.decodeBody(schema, `${method} ${url}`)(reply), (decoded) => ({
          status: reply.status,
          body: decoded
        })))
    const list = <A>(schema: Schema.Decoder<A>, url: string) =>
      Effect.map(fetch(Schema.Array(schema), "GET", url), (reply) =>
        reply.body)

    const report = (name: string, expected: unknown, saw: unknown) =>
      Effect.gen(function*() {
        steps++
        const held = JSON.stringify(saw) === JSON.stringify(expected)
        if (!held) {
          failed.push(name)
        }
        yield* print(`${held ? "ok  " : "FAIL"} ${name}`)
        yield* print(`       expected ${JSON.stringify(expected)}`)
        yield* print(`       saw      ${JSON.stringify(saw)}`)
      })
    /** A step that looks once (its `see` may change things: a write, a request that must be refused). */
    const check = <A>(name: string, expected: A, see: Effect.Effect<A>) =>
      Effect.flatMap(see, (saw) =>
        report(name, expected, saw))
    /** A step that looks until it sees what it expects, or its patience runs out. */
    const eventually = <A>(name: string, expected: A, see: Effect.Effect<A>) =>
      Effect.gen(function*() {
        const same = (a: A) => JSON.stringify(a) === JSON.stringify(expected)
        const saw = yield* see.pipe(
          Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: same }),
          Effect.timeoutOption(patience),
          Effect.andThen(see)
        )
        yield* report(name, expected, saw)
      })
    const section = (title: string) => print(`\n— ${title}`)
    /** A write that must answer `status`; a different answer is a failed step. */
    const write = (
      what: string,
      status: number,
      method: "POST" | "PATCH" | "DELETE",
      url: string,
      body?: ApiClient.Body
    ) =>
      Effect.flatMap(call(method, url, body), (reply) =>
        reply.status === status
          ? Effect.succeed(reply)
          : Effect.as(report(`${what} answers ${status}`, status, { status: reply.status, body: reply.body }), reply))

    const companyCopy = (id: string) =>
      Effect.flatMap(call("GET", directory(`/companies/${id}`)), (reply) =>
        reply.status !== 200 ? Effect.succeed<unknown>(reply.status) : Effect.map(
          ApiClient.decodeBody(CompanyView, "GET /companies/:id")(reply),
          (c): unknown => ({ name: c.name, version: c.version, softDeleted: c.deletedAt !== null })
        ))
    const employee = (id: string) =>
      Effect.flatMap(call("GET", directory(`/employees/${id}`)), (reply) =>
        reply.status !== 200 ? Effect.succeed<unknown>(reply.status) : Effect.map(
          ApiClient.decodeBody(EmployeeView, "GET /employees/:id")(reply),
          (e): unknown => ({
            companyId: e.companyId,
            name: e.name,
            active: e.active,
            version: e.version,
            softDeleted: e.deletedAt !== null
          })
        ))
    const consumerCount = (entity: string, outcome: string) =>
      Effect.map(call("GET", directory("/metrics")), (reply) =>
        sample(String(reply.body), "entity_sync_consumer_messages_total", { consumer: "directory", entity, outcome }))
    const deadLetters = list(DeadLetterView, directory("/admin/dead-letters"))

    yield* print("entity-sync demo — accounts (owner) → bus → directory (consumer)")

    yield* section("create and update")
    yield* write("POST /companies", 201, "POST", accounts("/companies"), { json: { id: "c-1", name: "Acme" } })
    yield* eventually("create: Company c-1 is copied", copied("Acme", 1), companyCopy("c-1"))
    yield* write("PATCH /companies/c-1", 200, "PATCH", accounts("/companies/c-1"), { json: { name: "Acme Corp" } })
    yield* eventually("update: the copy follows the owner's version", copied("Acme Corp", 2), companyCopy("c-1"))
    yield* write("POST /users", 201, "POST", accounts("/users"), { json: user("u-1", "c-1", "Ann") })
    yield* eventually(
      "a User is copied as an Employee",
      employed("c-1", "Ann", 1),
      employee("u-1")
    )

    yield* section("the owner's HTTP contract")
    const errorOf = (reply: ApiClient.Reply) =>
      Effect.map(ApiClient.decodeBody(ErrorView, "an error response")(reply), (e) => {
        const issues = issuePaths(e.details)
        return {
          status: reply.status,
          error: e.error,
          ...(issues._tag === "Some"
            ? {
              paths: issues.value.map((d) =>
                d.path
              ).sort()
            }
            : {})
        }
      })
    yield* check(
      "a User of an unknown Company is refused",
      { status: 404, error: "NotFound" },
      Effect.flatMap(call("POST", accounts("/users"), { json: user("u-x", "c-404", "Nobody") }), errorOf)
    )
    yield* check(
      "an invalid body is refused with its issues",
      { status: 422, error: "UnprocessableEntity", paths: ["email", "nickname"] },
      Effect.flatMap(
        call("POST", accounts("/users"), {
          json: { ...user("u-x", "c-1", "X"), email: "not-an-email", nickname: "x" }
        }),
        errorOf
      )
    )
    yield* check(
      "malformed JSON is refused",
      { status: 400, error: "BadRequest" },
      Effect.flatMap(call("POST", accounts("/companies"), { text: "{\"name\": " }), errorOf)
    )
    yield* check(
      "a Company with users cannot be deleted",
      { status: 409, error: "Conflict" },
      Effect.flatMap(call("DELETE", accounts("/companies/c-1")), errorOf)
    )

    yield* section("soft and hard delete")
    yield* write("POST /users", 201, "POST", accounts("/users"), { json: user("u-2", "c-1", "Bob") })
    yield* eventually("Bob is copied", employed("c-1", "Bob", 1), employee("u-2"))
    yield* write("DELETE /users/u-2?soft=true", 200, "DELETE", accounts("/users/u-2?soft=true"))
    yield* eventually(
      "soft delete: the copy keeps its row, with deletedAt",
      employed("c-1", "Bob", 2, { softDeleted: true }),
      employee("u-2")
    )
    yield* write("DELETE /users/u-2", 200, "DELETE", accounts("/users/u-2"))
    yield* eventually("hard delete: the Employee is gone (the copy keeps a tombstone)", 404, employee("u-2"))
    yield* write("POST /companies", 201, "POST", accounts("/companies"), { json: { id: "c-9", name: "Shortlived" } })
    yield* eventually("Company c-9 is copied", copied("Shortlived", 1), companyCopy("c-9"))
    yield* write("DELETE /companies/c-9", 200, "DELETE", accounts("/companies/c-9"))
    yield* eventually("hard delete: the Company copy is gone", 404, companyCopy("c-9"))

    yield* section("deactivated and inactive users (handleWhen)")
    yield* write("POST /users", 201, "POST", accounts("/users"), { json: user("u-3", "c-1", "Carl") })
    yield* eventually("Carl is copied", employed("c-1", "Carl", 1), employee("u-3"))
    yield* write("PATCH /users/u-3", 200, "PATCH", accounts("/users/u-3"), { json: { active: false } })
    yield* eventually(
      "a deactivation is published: the Employee becomes inactive",
      employed("c-1", "Carl", 2, { active: false }),
      employee("u-3")
    )
    yield* write("POST /users (inactive)", 201, "POST", accounts("/users"), { json: user("u-4", "c-1", "Dana", false) })
    yield* write("PATCH /users/u-3", 200, "PATCH", accounts("/users/u-3"), { json: { name: "Carl (private)" } })
    yield* write("PATCH /companies/c-1", 200, "PATCH", accounts("/companies/c-1"), { json: { name: "Acme Inc" } })
    yield* eventually("a later change is copied", copied("Acme Inc", 3), companyCopy("c-1"))
    yield* check("…but an inactive user is never published", 404, employee("u-4"))
    yield* check(
      "…and changes of an inactive user stay private",
      employed("c-1", "Carl", 2, { active: false }),
      employee("u-3")
    )

    yield* section("out of order, and a duplicate")
    const stale = yield* consumerCount("Company", "stale")
    const duplicate = yield* consumerCount("Company", "duplicate")
    const [v4, v5] = yield* faults.withhold(
      [{ entity: "Company", id: "c-1" }],
      Effect.andThen(
        companies.update("c-1", (c) => ({ ...c, name: "Acme v4" })),
        companies.update("c-1", (c) => ({ ...c, name: "Acme v5" }))
      )
    ).pipe(Effect.orDie)
    if (v4 === undefined || v5 === undefined) {
      return yield* Effect.die(new Error("the owner raised no events for c-1"))
    }
    yield* print("       (the bus delivers v5, then v4, then v5 again)")
    yield* faults.deliver([v5]).pipe(Effect.orDie)
    yield* eventually("v5 arrives first and is applied", copied("Acme v5", 5), companyCopy("c-1"))
    yield* faults.deliver([v4, v5]).pipe(Effect.orDie)
    yield* eventually(
      "the older v4 is stale and the second v5 a duplicate: neither is applied",
      { stale: stale + 1, duplicate: duplicate + 1 },
      Effect.all({ stale: consumerCount("Company", "stale"), duplicate: consumerCount("Company", "duplicate") })
    )
    yield* check("the copy still holds v5", copied("Acme v5", 5), companyCopy("c-1"))

    yield* section("a User whose Company arrives later")
    const waiting = yield* consumerCount("User", "waiting")
    const later = yield* faults.withhold(
      [{ entity: "Company", id: "c-2" }, { entity: "User", id: "u-5" }],
      Effect.andThen(companies.create({ id: "c-2", name: "Beta" }), users.create(user("u-5", "c-2", "Eve")))
    ).pipe(Effect.orDie)
    yield* faults.deliver(later.filter((e) =>
      e.entity === "User"
    )).pipe(Effect.orDie)
    yield* eventually(
      "the User waits for its Company: no Employee points to a missing Company",
      { waiting: waiting + 1, employee: 404 },
      Effect.all({ waiting: consumerCount("User", "waiting"), employee: employee("u-5") })
    )
    yield* faults.deliver(later.filter((e) =>
      e.entity === "Company"
    )).pipe(Effect.orDie)
    yield* eventually(
      "…and is applied as soon as the Company arrives",
      employed("c-2", "Eve", 1),
      employee("u-5")
    )

    yield* section("a dependency that never arrives")
    const lost = yield* faults.withhold(
      [{ entity: "Company", id: "c-3" }, { entity: "User", id: "u-6" }],
      Effect.andThen(companies.create({ id: "c-3", name: "Gamma" }), users.create(user("u-6", "c-3", "Finn")))
    ).pipe(Effect.orDie)
    yield* print("       (the bus loses Company c-3's event)")
    yield* faults.deliver(lost.filter((e) =>
      e.entity === "User"
    )).pipe(Effect.orDie)
    const inboxDead = Effect.map(deadLetters, (rows) =>
      rows.filter((d) =>
        d.store === "inbox"
      ).map((d) => ({ error: d.error, entity: d.entity, id: d.id })))
    yield* eventually(
      "the User is dead-lettered as DependencyMissing when its retry budget is spent",
      [{ error: "DependencyMissing", entity: "User", id: "u-6" }],
      inboxDead
    )
    yield* check(
      "the operator full-syncs Company c-3 on the owner",
      { status: 202, queued: 1 },
      Effect.map(
        fetch(FullSyncView, "POST", accounts("/admin/full-sync"), { json: { entity: "Company", ids: ["c-3"] } }),
        (reply) => ({ status: reply.status, queued: reply.body.queued })
      )
    )
    yield* eventually("Company c-3 is copied", copied("Gamma", 1), companyCopy("c-3"))
    const dead = (yield* deadLetters).find((d) =>
      d.id === "u-6"
    )
    yield* check(
      "…and replays the dead letter",
      { status: 202, store: "inbox" },
      dead === undefined
        ? Effect.succeed<unknown>("no dead letter for u-6")
        : Effect.map(
          fetch(ReplayView, "POST", directory(`/admin/dead-letters/${dead.messageId}/replay`)),
          (reply): unknown => ({ status: reply.status, store: reply.body.store })
        )
    )
    yield* eventually(
      "the replayed User is applied",
      employed("c-3", "Finn", 1),
      employee("u-6")
    )
    yield* eventually("no dead letter is left", [], inboxDead)

    yield* section("poison on the bus")
    const [good] = yield* faults.withhold(
      [{ entity: "Company", id: "c-4" }],
      companies.create({ id: "c-4", name: "Delta" })
    ).pipe(Effect.orDie)
    if (good !== undefined) {
      const event = Envelope.toCloudEvent(good)
      const poisons = [
        // the retired wire format 1, from a producer that was not upgraded
        ["p-format-1", JSON.stringify({ specVersion: 1, messageId: "p-format-1", entity: "Company", entityId: "c-4" })],
        // a contract version the directory does not know yet
        ["p-version-9", JSON.stringify({ ...event, id: "p-version-9", contractversion: 9 })],
        // a payload that does not fit the contract
        ["p-payload", JSON.stringify({ ...event, id: "p-payload", data: { id: "c-4", name: 7 } })]
      ] as const
      for (const [id, body] of poisons) yield* faults.poison(good, id, body).pipe(Effect.orDie)
      yield* faults.deliver([good]).pipe(Effect.orDie)
      yield* eventually(
        "each is dead-lettered with its reason; the good event beside them is applied",
        {
          dead: [["p-format-1", "InvalidEnvelope"], ["p-payload", "InvalidPayload"], [
            "p-version-9",
            "UnsupportedContractVersion"
          ]],
          copy: copied("Delta", 1)
        },
        Effect.all({
          dead: Effect.map(deadLetters, (rows) =>
            rows.filter((d) => d.messageId.startsWith("p-")).map((d) => [d.messageId, d.error]).sort()),
          copy: companyCopy("c-4")
        })
      )
    }

    yield* section("a drifted copy")
    yield* faults.driftCopy("Company", "c-1", { id: "c-1", name: "drifted" }).pipe(Effect.orDie)
    yield* check(
      "the directory's copy of c-1 drifted (same version)",
      copied("drifted", 5),
      companyCopy("c-1")
    )
    yield* write("POST /admin/full-sync", 202, "POST", accounts("/admin/full-sync"), { json: { entity: "Company" } })
    yield* eventually("a full sync repairs it", copied("Acme v5", 5), companyCopy("c-1"))

    yield* section("owner rows and copies, side by side")
    const ownerCompanies = yield* list(CompanyView, accounts("/companies"))
    const ownerUsers = yield* list(UserView, accounts("/users"))
    const copies = yield* list(CompanyView, directory("/companies"))
    const employees = yield* list(EmployeeView, directory("/employees"))
    const row = (what: string, owner: string, copy: string) =>
      print(`       ${what.padEnd(9)}${owner.padEnd(34)}${copy}`)
    yield* row("", "owner (accounts)", "copies (directory)")
    yield* row("Company", `${ownerCompanies.length} companies`, `${copies.length} companies`)
    yield* row(
      "User",
      `${ownerUsers.length} users (${ownerUsers.filter((u) => !u.active).length} inactive)`,
      `${employees.length} employees (${employees.filter((e) => !e.active).length} inactive)`
    )
    yield* check(
      "every owner Company has an identical copy",
      ownerCompanies.map((c) => ({ id: c.id, name: c.name, version: c.version })),
      Effect.succeed(copies.map((c) => ({ id: c.id, name: c.name, version: c.version })))
    )
    yield* check(
      "every User ever published has its Employee; the never-active one has none",
      ownerUsers.map((u) => u.id).filter((id) => id !== "u-4"),
      Effect.succeed(employees.map((e) => e.id))
    )

    yield* print(
      failed.length === 0 ? `\nevery step held (${steps} steps)` : `\n${failed.length} of ${steps} steps did not hold`
    )
    return { steps, failed }
  })
