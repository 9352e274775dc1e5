/**
 * A service's HTTP app — its routes behind the JSON error handling of `ApiError` — and the two ways to
 * reach it: served on a TCP port by Node's HTTP server (graceful: on shutdown it stops accepting, lets
 * in-flight requests finish, then closes), or called in process through an `HttpClient` without any socket
 * (the demo does this when it does not `--serve`).
 *
 * @since 0.1.0
 */
import { NodeHttpServer } from "@effect/platform-node"
import { type Duration, Effect, type Scope } from "effect"
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
import { createServer } from "node:http"
import * as ApiError from "./ApiError.ts"

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

/** Makes the app of `routes` in the current scope. */
export const make = (routes: ReadonlyArray<Route>): Effect.Effect<HttpApp, never, Scope.Scope> =>
  Effect.map(HttpRouter.toHttpEffect(HttpRouter.addAll(routes)), (app) => ({ handle: ApiError.catchAll(app) }))

/** Where a served app listens. */
export interface Listening {
  readonly host: string
  readonly port: number
  /** `http://<host>:<port>` */
  readonly url: string
}

/**
 * Serves `app` on `port` (0: any free port) until the scope closes. Closing the scope stops accepting
 * connections and waits up to `gracefulShutdown` (default 15 seconds) for in-flight requests.
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
    const host = options.host ?? "0.0.0.0"
    const server = yield* NodeHttpServer.make(() => createServer(), {
      port: options.port,
      host,
      gracefulShutdownTimeout: options.gracefulShutdown ?? "15 seconds"
    })
    if (options.logRequests === true) yield* server.serve(app.handle, HttpMiddleware.logger)
    else yield* server.serve(app.handle)
    const port = server.address._tag === "UnixPathAddress" ? options.port : server.address.port
    const shown = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host
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
