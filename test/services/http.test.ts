/**
 * The demo services' HTTP hardening, on an app called in process and on one served on a socket: request
 * bodies limited (413 naming the limit, from `Content-Length` or counted while streaming), 422 with a
 * bounded list of issues, `/admin/*` behind a bearer token (401; 403 when no token is configured),
 * failures answered with an error id and without the database's or the broker's own text, and the bound
 * address reported as the operating system gives it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, References, Schema } from "effect"
import { HttpClient, HttpRouter } from "effect/http"
import { SqlError } from "effect/sql"
import { request as httpRequest } from "node:http"
import * as ApiError from "../../services/http/ApiError.ts"
import * as Decode from "../../services/http/Decode.ts"
import * as HttpApp from "../../services/http/HttpApp.ts"
import * as ApiClient from "../../services/scenario/ApiClient.ts"
import { BrokerUnavailable } from "../../src/Errors.ts"

const Body = Schema.Struct({ name: Schema.String.check(Schema.isMaxLength(10)) })
const secret = "password authentication failed for user \"secret-user\""

const routes: ReadonlyArray<HttpApp.Route> = [
  HttpRouter.route(
    "POST",
    "/things",
    ApiError.respond(Effect.map(Decode.body(Body), (body) => ApiError.json(body, 201)))
  ),
  HttpRouter.route("GET", "/admin/things", ApiError.respond(Effect.succeed(ApiError.json({ admin: true })))),
  HttpRouter.route(
    "GET",
    "/sql",
    ApiError.respond(ApiError.fromSqlError(
      new SqlError.SqlError({ reason: new SqlError.AuthenticationError({ cause: new Error(secret), message: secret }) })
    ))
  ),
  HttpRouter.route(
    "GET",
    "/broker",
    ApiError.respond(
      ApiError.fromBrokerError(new BrokerUnavailable({ operation: "publish", detail: "ACCESS_REFUSED guest" }))
    )
  ),
  HttpRouter.route("GET", "/defect", Effect.die(new Error(secret)))
]

/** Calls the app in process; `headers` are sent as given. */
const callWith = (options?: HttpApp.HttpOptions) =>
  Effect.gen(function*() {
    const app = yield* HttpApp.make(routes, options)
    const client = HttpApp.inProcessClient({ svc: app })
    return (
      method: "GET" | "POST",
      path: string,
      body?: ApiClient.Body,
      headers?: Readonly<Record<string, string>>
    ) =>
      ApiClient.call(method, `http://svc${path}`, body, headers).pipe(
        Effect.provideService(HttpClient.HttpClient, client),
        Effect.orDie
      )
  })

const token = "s3cret-token"

describe("demo services' HTTP", () => {
  it.effect("a body over the limit is a 413 naming the limit; one at the limit is read", () =>
    Effect.gen(function*() {
      const call = yield* callWith({ maxBodyBytes: 1_000 })
      const big = yield* call("POST", "/things", { text: JSON.stringify({ name: "x".repeat(2_000) }) })
      assert.strictEqual(big.status, 413)
      assert.deepStrictEqual(big.body, {
        limitBytes: 1_000,
        error: "PayloadTooLarge",
        message: "the request body is larger than the 1000 bytes this service accepts"
      })
      const fits = `{"name":"ok"}${" ".repeat(1_000 - 13)}`
      assert.strictEqual((yield* call("POST", "/things", { text: fits })).status, 201)
      // the default limit: 64 KiB
      const byDefault = yield* callWith()
      const over = yield* byDefault("POST", "/things", { text: " ".repeat(64 * 1024 + 1) })
      assert.deepInclude(over.body, { error: "PayloadTooLarge", limitBytes: 65_536 })
    }))

  it.effect("a 422 lists at most 20 issues and says how many more", () =>
    Effect.gen(function*() {
      const call = yield* callWith()
      const keys = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, i]))
      const reply = yield* call("POST", "/things", { json: { name: "far too long a name", ...keys } })
      assert.strictEqual(reply.status, 422)
      const body = yield* ApiClient.decodeBody(
        Schema.Struct({
          error: Schema.String,
          message: Schema.String,
          details: Schema.Array(Schema.Unknown),
          omittedIssues: Schema.Number
        }),
        "422"
      )(reply)
      assert.strictEqual(body.error, "UnprocessableEntity")
      assert.lengthOf(body.details, Decode.maxIssues)
      assert.strictEqual(body.omittedIssues, 501 - Decode.maxIssues)
      assert.match(body.message, /501 issues, the first 20 listed/)
      // a few issues: all listed, nothing omitted
      const few = yield* call("POST", "/things", { json: { name: 1 } })
      assert.deepInclude(few.body, { error: "UnprocessableEntity", message: "the request body is invalid" })
      assert.isFalse("omittedIssues" in Object(few.body))
      const paths = yield* ApiClient.decodeBody(
        Schema.Struct({ details: Schema.Array(Schema.Struct({ path: Schema.String })) }),
        "422"
      )(few)
      assert.deepStrictEqual(paths.details.map((issue) => issue.path), ["name"])
    }))

  it.effect("admin routes need the bearer token; without a configured token they are disabled", () =>
    Effect.gen(function*() {
      const call = yield* callWith({ adminToken: Redacted.make(token) })
      const missing = yield* call("GET", "/admin/things")
      assert.deepStrictEqual([missing.status, missing.body], [401, {
        error: "Unauthorized",
        message: "this admin route needs Authorization: Bearer <ADMIN_TOKEN>"
      }])
      const wrong = yield* call("GET", "/admin/things", undefined, { authorization: "Bearer s3cret-tokeN" })
      assert.deepStrictEqual([wrong.status, wrong.body], [401, {
        error: "Unauthorized",
        message: "the admin token is wrong"
      }])
      const basic = yield* call("GET", "/admin/things", undefined, { authorization: `Basic ${token}` })
      assert.strictEqual(basic.status, 401)
      const right = yield* call("GET", "/admin/things", undefined, ApiClient.adminHeaders(token))
      assert.deepStrictEqual([right.status, right.body], [200, { admin: true }])
      // a body to an admin route is not even read without the token
      assert.strictEqual((yield* call("POST", "/admin/things", { text: "x".repeat(100_000) })).status, 401)
      // other routes need no token
      assert.strictEqual((yield* call("POST", "/things", { json: { name: "a" } })).status, 201)

      const disabled = yield* callWith()
      const refused = yield* disabled("GET", "/admin/things", undefined, ApiClient.adminHeaders(token))
      assert.strictEqual(refused.status, 403)
      assert.deepInclude(refused.body, { error: "Forbidden" })
      assert.match(String(Reflect.get(Object(refused.body), "message")), /with ADMIN_TOKEN set/)
      assert.isTrue(HttpApp.sameToken(token, Redacted.make(token)))
      assert.isFalse(HttpApp.sameToken(`${token}x`, Redacted.make(token)))
    }))

  it.effect("failures carry an error id, never the database's or the broker's own text", () =>
    Effect.gen(function*() {
      const call = yield* callWith()
      for (
        const [path, status, message] of [
          ["/sql", 503, "the database is unavailable; try again later"],
          ["/broker", 503, "the message broker is unavailable; try again later"]
        ] as const
      ) {
        const reply = yield* call("GET", path)
        assert.strictEqual(reply.status, status)
        assert.deepInclude(reply.body, { error: "ServiceUnavailable", message })
        assert.match(String(Reflect.get(Object(reply.body), "errorId")), /^[0-9a-f-]{36}$/)
        assert.notInclude(JSON.stringify(reply.body), "secret-user")
        assert.notInclude(JSON.stringify(reply.body), "ACCESS_REFUSED")
      }
      const defect = yield* call("GET", "/defect")
      assert.strictEqual(defect.status, 500)
      const errorId = String(Reflect.get(Object(defect.body), "errorId"))
      assert.match(errorId, /^[0-9a-f-]{36}$/)
      assert.include(String(Reflect.get(Object(defect.body), "message")), errorId)
      assert.notInclude(JSON.stringify(defect.body), "secret-user")
    }).pipe(Effect.provideService(References.MinimumLogLevel, "None")))

  it.live("served on a socket: 127.0.0.1 by default, the bound address reported; a streamed body is cut at the limit", () =>
    Effect.gen(function*() {
      const app = yield* HttpApp.make(routes, { maxBodyBytes: 1_000 })
      const listening = yield* HttpApp.listen(app, { port: 0 })
      assert.strictEqual(listening.host, "127.0.0.1")
      assert.strictEqual(listening.url, `http://127.0.0.1:${listening.port}`)
      // declared too large: refused from Content-Length
      const declared = yield* postRaw(listening.port, [" ".repeat(2_000)], true)
      assert.strictEqual(declared.status, 413)
      // chunked, no Content-Length: counted while streaming
      const streamed = yield* postRaw(listening.port, Array.from({ length: 20 }, () => " ".repeat(200)), false)
      assert.strictEqual(streamed.status, 413)
      assert.deepInclude(JSON.parse(streamed.body), { error: "PayloadTooLarge", limitBytes: 1_000 })
    }).pipe(Effect.scoped))
})

/** POSTs `chunks` to `/things` on 127.0.0.1:`port`, with a `Content-Length` or chunked. */
const postRaw = (port: number, chunks: ReadonlyArray<string>, withLength: boolean) =>
  Effect.callback<{ readonly status: number; readonly body: string }>((resume) => {
    const total = chunks.reduce((n, chunk) => n + Buffer.byteLength(chunk), 0)
    const request = httpRequest({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/things",
      headers: { "content-type": "application/json", ...(withLength ? { "content-length": String(total) } : {}) }
    }, (response) => {
      let body = ""
      response.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")))
      response.on("end", () => resume(Effect.succeed({ status: response.statusCode ?? 0, body })))
    })
    request.on("error", () => undefined)
    for (const chunk of chunks) request.write(chunk)
    request.end()
  })
