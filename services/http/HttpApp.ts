/**
 * A service's HTTP app — its routes behind the JSON error handling of `ApiError`, request bodies limited to
 * `maxBodyBytes` (`Decode.MaxBodyBytes`), and `/admin/*` behind `Authorization: Bearer <ADMIN_TOKEN>`
 * (compared in constant time; without a token configured the admin routes are disabled, 403) — and the two
 * ways to reach it: served on a TCP port by Node's HTTP server (graceful: on shutdown it stops accepting, lets
 * in-flight requests finish, then closes), or called in process through an `HttpClient` without any socket
 * (the demo does this when it does not `--serve`).
 *
 * @since 0.1.0
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Config, type Duration, Effect, Option, Redacted, Schema, type Scope } from "effect"
import {
  HttpClient,
  HttpClientError,
  HttpClientRequest,
  HttpClientResponse,
  HttpMiddleware,
  HttpRouter,
  HttpServerRequest,
  HttpServerResponse
} from "effect/http"
import type { ServeError } from "effect/http/HttpServerError"
import { createHash, timingSafeEqual } from "node:crypto"
import { createServer, type Server } from "node:http"
import * as ApiError from "./ApiError.ts"
import * as Decode from "./Decode.ts"

/** One HTTP app: answers any request, always with a response (errors are JSON). */
export interface HttpApp {
  readonly handle: Effect.Effect<
    HttpServerResponse.HttpServerResponse,
    never,
    HttpServerRequest.HttpServerRequest | Scope.Scope
  >
}

/** A route whose handler needs nothing but the request: services are captured when the routes are made. */
export type Route = HttpRouter.Route<never, never>

/** The HTTP settings of a service. */
export interface HttpOptions {
  /** The token `/admin/*` requests must send as `Authorization: Bearer <token>`; absent: admin routes disabled. */
  readonly adminToken?: Redacted.Redacted
  /** The largest request body accepted, in bytes (default `Decode.defaultMaxBodyBytes`, 64 KiB). */
  readonly maxBodyBytes?: number
}

/** The HTTP settings from the environment: `ADMIN_TOKEN` (absent: admin routes disabled), `HTTP_MAX_BODY_BYTES`. */
export const config: Config.Config<HttpOptions> = Config.all({
  adminToken: Config.option(Config.Redacted("ADMIN_TOKEN")),
  maxBodyBytes: Config.schema(
    Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 64 * 1024 * 1024 })),
    "HTTP_MAX_BODY_BYTES"
  )
    .pipe(Config.withDefault(Decode.defaultMaxBodyBytes))
}).pipe(
  Config.map(({ adminToken, maxBodyBytes }) => ({
    maxBodyBytes,
    ...(Option.isSome(adminToken) && Redacted.value(adminToken.value) !== "" ? { adminToken: adminToken.value } : {})
  }))
)

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest()

/** Whether `given` is the token, compared in constant time (of digests, so lengths do not show either). */
export const sameToken = (given: string, token: Redacted.Redacted): boolean =>
  timingSafeEqual(digest(given), digest(Redacted.value(token)))

/** Whether a request path is an admin route's. */
export const isAdminPath = (url: string): boolean => {
  const path = new URL(url, "http://service").pathname
  return path === "/admin" || path.startsWith("/admin/")
}

/** Answers an admin request that lacks the token: 403 when admin routes are disabled, 401 otherwise. */
const guardAdmin = (
  request: HttpServerRequest.HttpServerRequest,
  token: Redacted.Redacted | undefined
): ApiError.ApiError | undefined => {
  if (!isAdminPath(request.url)) return undefined
  if (token === undefined) {
    return ApiError.forbidden(
      "the admin routes are disabled: start the service with ADMIN_TOKEN set, and send it as " +
        "Authorization: Bearer <token>"
    )
  }
  const header = request.headers["authorization"] ?? ""
  const bearer = /^Bearer +(\S+) *$/i.exec(header)?.[1]
  if (bearer === undefined) return ApiError.unauthorized("this admin route needs Authorization: Bearer <ADMIN_TOKEN>")
  return sameToken(bearer, token) ? undefined : ApiError.unauthorized("the admin token is wrong")
}

/** Makes the app of `routes` in the current scope, with the settings of `options`. */
export const make = (routes: ReadonlyArray<Route>, options?: HttpOptions): Effect.Effect<HttpApp, never, Scope.Scope> =>
  Effect.map(HttpRouter.toHttpEffect(HttpRouter.addAll(routes)), (app) => {
    const routed = ApiError.catchAll(app)
    const maxBodyBytes = options?.maxBodyBytes ?? Decode.defaultMaxBodyBytes
    return {
      handle: Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
        const refused = guardAdmin(request, options?.adminToken)
        return refused !== undefined
          ? Effect.succeed(ApiError.toResponse(refused))
          : Effect.provideService(routed, Decode.MaxBodyBytes, maxBodyBytes)
      })
    }
  })

/** Where a served app listens. */
export interface Listening {
  /** The address the socket is bound to, as the operating system reports it (e.g. `127.0.0.1`, `0.0.0.0`). */
  readonly host: string
  readonly port: number
  /** A URL to reach it from this machine: `http://<host>:<port>` (`127.0.0.1` for a wildcard address). */
  readonly url: string
}

/** The host services bind to when none is given: this machine only. */
export const defaultHost = "127.0.0.1"

/**
 * Serves `app` on `host` (default `127.0.0.1`) and `port` (0: any free port) until the scope closes.
 * Closing the scope stops accepting connections and waits up to `gracefulShutdown` (default 15 seconds)
 * for in-flight requests.
 */
export const listen = (
  app: HttpApp,
  options: {
    readonly port: number
    readonly host?: string
    readonly logRequests?: boolean
    readonly gracefulShutdown?: Duration.Input
  }
): Effect.Effect<Listening, ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const requested = options.host ?? defaultHost
    let node: Server | undefined
    const server = yield* NodeHttpServer.make(() => {
      node = createServer()
      return node
    }, {
      port: options.port,
      host: requested,
      gracefulShutdownTimeout: options.gracefulShutdown ?? "15 seconds"
    })
    if (options.logRequests === true) yield* server.serve(app.handle, HttpMiddleware.logger)
    else yield* server.serve(app.handle)
    const bound = node?.address()
    const host = typeof bound === "object" && bound !== null ? bound.address : requested
    const port = typeof bound === "object" && bound !== null ? bound.port : options.port
    const shown = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "[::1]" : host.includes(":") ? `[${host}]` : host
    return { host, port, url: `http://${shown}:${port}` }
  })

/**
 * An `HttpClient` that calls apps in this process: a request to `http://<name>/…` is answered by
 * `apps[name]`, with the same routing, decoding and JSON errors as over a socket.
 */
export const inProcessClient = (apps: Readonly<Record<string, HttpApp>>): HttpClient.HttpClient =>
  HttpClient.make((request, url) => {
    const app = apps[url.host]
    const transportError = (description: string, cause?: unknown) =>
      new HttpClientError.HttpClientError({
        reason: new HttpClientError.TransportError({ request, description, ...(cause !== undefined ? { cause } : {}) })
      })
    if (app === undefined) return Effect.fail(transportError(`no app named "${url.host}" in this process`))
    return Effect.gen(function*() {
      const webRequest = yield* HttpClientRequest.toWeb(request).pipe(
        Effect.mapError((cause) => transportError("invalid request", cause))
      )
      const response = yield* app.handle.pipe(
        Effect.provideService(HttpServerRequest.HttpServerRequest, HttpServerRequest.fromWeb(webRequest)),
        Effect.scoped
      )
      return HttpClientResponse.fromWeb(request, HttpServerResponse.toWeb(response))
    })
  })
