/**
 * Runs one demo service on its own, configured by the environment — what `npm run start:accounts` and
 * `npm run start:directory` (and the Docker images) do:
 *
 * * `PORT` (the service's default port; 0: any free port), `HOST` (`0.0.0.0`);
 * * `DATABASE_URL` … (`ServiceDatabase.config`; absent: an embedded database);
 * * `AMQP_URL` … (`ServiceBroker`; absent: an in-memory broker, useful only for trying one service alone);
 * * the library's settings (`SyncConfig`, `RabbitConfig`).
 *
 * On SIGTERM or SIGINT the service shuts down gracefully: it stops accepting HTTP connections and finishes
 * in-flight requests, stops its background work (unsettled deliveries go back to the broker's queue,
 * unpublished outbox rows stay in the outbox), closes the broker and the database, and exits with 0.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Config, Effect, Exit, Layer, Runtime, Schema, type Scope } from "effect"
import type { ServeError } from "effect/http/HttpServerError"
import type { Broker } from "../../src/Broker.ts"
import * as HttpApp from "../http/HttpApp.ts"
import type { RunningService } from "./RunningService.ts"
import * as ServiceBroker from "./ServiceBroker.ts"

/** A service as the runner needs it: its name, default port, settings and how to start it. */
export interface ServiceDefinition<Options, E> {
  readonly name: string
  readonly defaultPort: number
  readonly config: Config.Config<Options>
  readonly make: (options: Options) => Effect.Effect<RunningService, E, Broker | Scope.Scope>
}

/** Starts the service from the environment in the current scope and serves its HTTP app; returns where. */
export const start = <Options, E>(
  service: ServiceDefinition<Options, E>
): Effect.Effect<HttpApp.Listening, E | Config.ConfigError | ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const port = yield* Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), "PORT").pipe(
      Config.withDefault(service.defaultPort)
    )
    const host = yield* Config.String("HOST").pipe(Config.withDefault("0.0.0.0"))
    const options = yield* service.config
    yield* Effect.addFinalizer(() => Effect.logInfo(`${service.name}: stopped`))
    const broker = yield* Layer.build(ServiceBroker.layerConfig)
    const running = yield* service.make(options).pipe(Effect.provideContext(broker))
    const listening = yield* HttpApp.listen(running.http, { port, host, logRequests: true })
    yield* Effect.addFinalizer(() => Effect.logInfo(`${service.name}: shutting down`))
    yield* Effect.logInfo(`${service.name}: listening on ${listening.url} (database: ${running.database.kind})`)
    return listening
  })

/** Exit codes: a shutdown by signal (interruption only) is a clean exit, 0; otherwise the default. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

/** The process's main program: runs the service until SIGTERM / SIGINT. */
export const runMain = <Options, E>(service: ServiceDefinition<Options, E>): void =>
  NodeRuntime.runMain(Effect.scoped(Effect.andThen(start(service), Effect.never)), { teardown })
