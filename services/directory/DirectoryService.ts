/**
 * The directory service, assembled: its database (PostgreSQL or embedded) with the library's stores and
 * its `employees` table, the sync consumer of Company and User (a User's handler writes its Employee in
 * the apply transaction), its operations, the gauges of its backlog (`Gauges`: parked events, dead letters,
 * in-flight deliveries) and its HTTP app with the library's health checks (`Health`: database, broker,
 * consumer) at `GET /health`. Its metrics go to a registry of its own, which `GET /metrics` reports
 * (`PrometheusEndpoint`). It needs a `Broker`; it runs until its scope closes (HTTP first, then the
 * consumer — unsettled deliveries go back to the queue — then the database).
 *
 * @since 0.1.0
 */
import { Config, Context, Effect, Layer, Metric, type Scope } from "effect"
import type { Migrator, SqlClient } from "effect/sql"
import { type Broker, Gauges, Health, PrometheusEndpoint, Subscription, SyncConfig, SyncConsumer } from "entity-sync"
import { Company, User } from "../contracts/index.ts"
import * as HttpApp from "../http/HttpApp.ts"
import * as OperatorRoutes from "../http/OperatorRoutes.ts"
import type { RunningService } from "../runtime/RunningService.ts"
import * as ServiceDatabase from "../runtime/ServiceDatabase.ts"
import * as Directory from "./Directory.ts"
import * as DirectoryApi from "./DirectoryApi.ts"
import * as Employees from "./Employees.ts"

/** The service's name; its queue is `directory.sync`. */
export const name = "directory"

/** The port it listens on when `PORT` is not set. */
export const defaultPort = 3002

/** Settings of the directory service. */
export interface DirectoryOptions {
  readonly database: ServiceDatabase.DatabaseOptions
  /** Consumer settings (default: the library's). */
  readonly consumer?: Omit<SyncConsumer.ConsumerOptions<SqlClient.SqlClient>, "service" | "subscriptions">
  /** HTTP settings: the admin token (absent: admin routes disabled), the body limit. */
  readonly http?: HttpApp.HttpOptions
}

/** The subscriptions: Company copies, and User copies with their Employee rows. */
export const subscriptions = [
  Subscription.subscribe(Company),
  Subscription.subscribe(User, { handler: Employees.apply })
]

/** The options the service starts its consumer with: its settings, with its name and subscriptions. */
export const consumerOptions = (options: DirectoryOptions): SyncConsumer.ConsumerOptions<SqlClient.SqlClient> => ({
  ...options.consumer,
  service: name,
  subscriptions
})

/** What starting the service can fail with. */
export type StartError = ServiceDatabase.LayerError | Migrator.MigrationError

/** Starts the directory service in the current scope. */
export const make = (
  options: DirectoryOptions
): Effect.Effect<RunningService, StartError, Broker.Broker | Scope.Scope> => {
  const registry: Metric.MetricRegistry = new Map()
  return Effect.gen(function*() {
    const stores = yield* Layer.build(ServiceDatabase.layer(options.database))
    const database = Context.get(stores, ServiceDatabase.ServiceDatabase)
    yield* Employees.migrate.pipe(Effect.provideContext(stores))
    const consumer = yield* Layer.build(
      SyncConsumer.layer(consumerOptions(options))
    ).pipe(Effect.provideContext(stores))
    const directory = yield* Directory.make(name).pipe(Effect.provideContext(Context.merge(stores, consumer)))
    yield* Layer.build(Gauges.layer({ consumer: name })).pipe(Effect.provideContext(Context.merge(stores, consumer)))
    const checks = yield* Health.make().pipe(Effect.provideContext(Context.merge(stores, consumer)))
    const http = yield* HttpApp.make([
      ...DirectoryApi.routes(directory),
      ...OperatorRoutes.health(
        name,
        checks,
        Effect.map(directory.status, (status) => ({
          database: database.kind,
          consumer: { ...status.consumer },
          broker: { ...status.broker }
        }))
      ),
      PrometheusEndpoint.route({ registry })
    ], options.http)
    return { name, http, database }
  }).pipe(Effect.provideService(Metric.MetricRegistry, registry))
}

/**
 * The settings from the environment: the database (`DATABASE_URL`, …; see `ServiceDatabase.config`), HTTP
 * (`ADMIN_TOKEN`, `HTTP_MAX_BODY_BYTES`; see `HttpApp.config`) and the consumer (`SYNC_CONSUMER_*`,
 * `SYNC_PREFETCH`, `SYNC_DEPENDENCY_RETRY_*`, …; see `SyncConfig.consumerOptions`).
 */
export const config: Config.Config<DirectoryOptions> = Config.all({
  database: ServiceDatabase.config,
  consumer: SyncConfig.consumerOptions,
  http: HttpApp.config
})
