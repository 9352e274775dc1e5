/**
 * Runs one demo service on its own, configured by the environment: what `npm run start:accounts` and
 * `npm run start:directory` (and the Docker images) do. It listens at once, starts the service with
 * backoff until it has started, and shuts down gracefully on SIGTERM or SIGINT.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import {
  Cause,
  Clock,
  Config,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Runtime,
  Schedule,
  Schema,
  Scope
} from "effect"
import { HttpServerRequest } from "effect/http"
import type { ServeError } from "effect/http/HttpServerError"
import type { SqlError } from "effect/sql"
import { type Broker, Tracing } from "entity-sync"
import * as ApiError from "../http/ApiError.ts"
import * as HttpApp from "../http/HttpApp.ts"
import type { RunningService } from "./RunningService.ts"
import * as ServiceBroker from "./ServiceBroker.ts"
import * as ServiceDatabase from "./ServiceDatabase.ts"

/** A service as the runner needs it: its name, default port, settings and how to start it. */
export interface ServiceDefinition<Options, E> {
  readonly name: string
  readonly defaultPort: number
  readonly config: Config.Config<Options>
  readonly make: (options: Options) => Effect.Effect<RunningService, E, Broker.Broker | Scope.Scope>
}

/** What a service waits for while it starts. */
export type Dependency = "database" | "broker" | "startup"

/** Why the service has not started yet. */
export interface Waiting {
  readonly dependency: Dependency
  /** Since when (epoch milliseconds) it has been waiting for this dependency. */
  readonly since: number
  /** What is wrong, for people (never a driver's own error text). */
  readonly problem: string
  readonly attempts: number
}

/** A served service, and an effect that completes once it has started (listening comes first). */
export interface Started extends HttpApp.Listening {
  readonly ready: Effect.Effect<void>
}

/** A start-up failure: which dependency, what to tell, and the detail for the log. */
class StartFailed extends Schema.TaggedError<StartFailed>()("StartFailed", {
  dependency: Schema.Literals(["database", "broker", "startup"]),
  problem: Schema.String,
  detail: Schema.Defect()
}) {}

const databaseFailed = (error: SqlError.SqlError) =>
  new StartFailed({ dependency: "database", problem: ServiceDatabase.describeFailure(error), detail: error })

/** The failure of building the service, by the dependency its cause names. */
const classify = (cause: Cause.Cause<unknown>): StartFailed => {
  const error = Cause.findErrorOption(cause)
  if (Option.isSome(error)) {
    const value = error.value
    if (value instanceof StartFailed) return value
    const tag = typeof value === "object" && value !== null ? Reflect.get(value, "_tag") : undefined
    if (tag === "SqlError" || tag === "MigrationError") {
      return new StartFailed({
        dependency: "database",
        problem: "the database failed while the service started (see the log)",
        detail: value
      })
    }
    if (tag === "BrokerUnavailable") {
      return new StartFailed({
        dependency: "broker",
        problem: "the broker failed while the service started (see the log)",
        detail: value
      })
    }
  }
  return new StartFailed({
    dependency: "startup",
    problem: "the service failed to start (see the log)",
    detail: Cause.pretty(cause)
  })
}

/** The longest one start-up attempt may take before it is abandoned and tried again. */
const attemptTimeout = Duration.seconds(60)

/**
 * Starts the service from the environment in the current scope and serves its HTTP app; returns where. The
 * environment:
 *
 * * `PORT` (the service's default port; 0: any free port), `HOST` (`127.0.0.1`: this machine only; set
 *   `0.0.0.0` to listen on every interface, as docker-compose does inside its containers);
 * * `ADMIN_TOKEN` (the bearer token of the `/admin/*` routes; absent: they are disabled),
 *   `HTTP_MAX_BODY_BYTES` (65536);
 * * `DATABASE_URL` … (`ServiceDatabase.config`; absent: an embedded database);
 * * `AMQP_URL` … (`ServiceBroker`; absent: an in-memory broker, useful only for trying one service alone);
 * * the library's settings (`SyncConfig`, `RabbitConfig`);
 * * `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME` (default: the service's name) … (`Tracing.otlpConfig`;
 *   absent: no tracing): spans are exported over OTLP/HTTP — each HTTP request's span (a child of the
 *   request's `traceparent` header), the owner's writes under it, the relay's publishes and the consumer's
 *   applies (R10).
 *
 * The service listens at once. Until it has started, `/health` answers 503 naming the dependency it waits
 * for and since when, and every other route 503. Starting probes the database and the broker, then builds
 * the service; a failure (a wrong password, a server that is down) is logged clearly on every attempt, and
 * the service tries again with backoff (0.5 s doubling, at most 10 s apart) until it succeeds.
 */
export const start = <Options, E>(
  service: ServiceDefinition<Options, E>
): Effect.Effect<Started, Config.ConfigError | ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    // built first, so it is closed last: the spans of the shutdown are exported too
    const tracing = yield* Layer.build(Tracing.layerOtlpFromEnv({ serviceName: service.name }))
    return yield* serve(service).pipe(Effect.provideContext(tracing))
  })

const serve = <Options, E>(
  service: ServiceDefinition<Options, E>
): Effect.Effect<Started, Config.ConfigError | ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const port = yield* Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), "PORT").pipe(
      Config.withDefault(service.defaultPort)
    )
    const host = yield* Config.String("HOST").pipe(Config.withDefault(HttpApp.defaultHost))
    const options = yield* service.config
    const database = yield* ServiceDatabase.config
    const amqpUrl = yield* Config.option(Config.Redacted("AMQP_URL"))
    const scope = yield* Effect.scope

    let running: RunningService | undefined
    let waiting: Waiting = {
      dependency: "startup",
      since: yield* Clock.currentTimeMillis,
      problem: "starting",
      attempts: 0
    }
    const app: HttpApp.HttpApp = {
      handle: Effect.suspend(() => {
        if (running !== undefined) return running.http.handle
        const state = waiting
        return Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
          new URL(request.url, "http://service").pathname === "/health"
            ? ApiError.json({
              status: "starting",
              service: service.name,
              dependency: state.dependency,
              since: new Date(state.since).toISOString(),
              problem: state.problem,
              attempts: state.attempts
            }, 503)
            : ApiError.toResponse(ApiError.withExtra(
              ApiError.unavailable(`the service is starting; it waits for: ${state.problem}`),
              { dependency: state.dependency }
            )))
      })
    }

    yield* Effect.addFinalizer(() =>
      Effect.logInfo(`${service.name}: stopped`)
    )
    const listening = yield* HttpApp.listen(app, { port, host, logRequests: true })
    yield* Effect.addFinalizer(() => Effect.logInfo(`${service.name}: shutting down`))
    yield* Effect.logInfo(
      `${service.name}: listening on ${listening.host}:${listening.port} (${listening.url}); starting`
    )

    const probes = Effect.gen(function*() {
      if (database.url !== undefined) {
        yield* ServiceDatabase.probe(database.url).pipe(Effect.mapError(databaseFailed))
      }
      if (Option.isSome(amqpUrl)) {
        yield* ServiceBroker.probe(amqpUrl.value).pipe(
          Effect.mapError((error) =>
            new StartFailed({ dependency: "broker", problem: error.summary, detail: error.detail })
          )
        )
      }
    })

    const attempt = Effect.gen(function*() {
      yield* probes
      const attemptScope = yield* Scope.fork(scope)
      const built = yield* Effect.gen(function*() {
        const broker = yield* Layer.build(ServiceBroker.layerConfig)
        return yield* service.make(options).pipe(Effect.provideContext(broker))
      }).pipe(
        Scope.provide(attemptScope),
        Effect.timeoutOrElse({
          duration: attemptTimeout,
          orElse: () =>
            Effect.fail(
              new StartFailed({
                dependency: "startup",
                problem: "starting took longer than 60 seconds",
                detail: "timeout"
              })
            )
        }),
        Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(attemptScope, exit) : Effect.void)
      )
      return built
    }).pipe(Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.fail(classify(cause))
    ))

    const ready = yield* Deferred.make<void>()
    const loop = Effect.gen(function*() {
      const schedule = Schedule.min([Schedule.exponential("500 millis", 2), Schedule.spaced("10 seconds")])
      const attempts = { count: 0 }
      const started = yield* attempt.pipe(
        Effect.tapError((failure) =>
          Effect.gen(function*() {
            attempts.count++
            const now = yield* Clock.currentTimeMillis
            waiting = {
              dependency: failure.dependency,
              since: waiting.dependency === failure.dependency && waiting.attempts > 0 ? waiting.since : now,
              problem: failure.problem,
              attempts: attempts.count
            }
            yield* Effect.logError(
              `${service.name}: cannot start (attempt ${attempts.count}): ${failure.problem}; trying again`,
              failure.detail
            ).pipe(Effect.annotateLogs({ dependency: failure.dependency }))
          })
        ),
        Effect.retry(schedule)
      )
      running = started
      yield* Effect.logInfo(`${service.name}: started (database: ${started.database.kind})`)
      yield* Deferred.succeed(ready, undefined)
    })
    yield* Effect.forkIn(loop, scope)
    return { ...listening, ready: Deferred.await(ready) }
  })

/** Exit codes: a shutdown by signal (interruption only) is a clean exit, 0; otherwise the default. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

/**
 * The process's main program: runs the service (see `start`) until SIGTERM or SIGINT, then shuts it down
 * gracefully: it stops accepting HTTP connections and finishes in-flight requests, stops its background
 * work (unsettled deliveries go back to the broker's queue, unpublished outbox rows stay in the outbox),
 * closes the broker and the database, and exits with 0.
 */
export const runMain = <Options, E>(service: ServiceDefinition<Options, E>): void =>
  NodeRuntime.runMain(Effect.scoped(Effect.andThen(start(service), Effect.never)), { teardown })
