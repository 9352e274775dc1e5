/**
 * The accounts service, assembled: its database (PostgreSQL or embedded) with the library's stores and its
 * own tables (`AccountsTables`: migrated when it starts, the owner tables of Company and User), the
 * `Accounts` domain, the relay publishing its outbox, the responder answering resync requests from the
 * bus with full syncs, the gauges of its outbox backlog (`Gauges`), and its HTTP app with the library's
 * health checks (`Health`: database, broker, relay) at `GET /health`. Its metrics go to a registry of its
 * own, which `GET /metrics` reports (`PrometheusEndpoint`). It needs a `Broker`; it runs until its scope closes (HTTP first, then the background work,
 * then the database).
 *
 * @since 0.1.0
 */
import { Config, Context, Effect, Layer, Metric, type Scope } from "effect"
import { type Broker, Gauges, Health, PrometheusEndpoint, Relay, Resync, SyncConfig } from "entity-sync"
import { Company, User } from "../contracts/index.ts"
import * as HttpApp from "../http/HttpApp.ts"
import * as OperatorRoutes from "../http/OperatorRoutes.ts"
import type { RunningService } from "../runtime/RunningService.ts"
import * as ServiceDatabase from "../runtime/ServiceDatabase.ts"
import * as Accounts from "./Accounts.ts"
import * as AccountsApi from "./AccountsApi.ts"
import * as AccountsTables from "./AccountsTables.ts"

/** The service's name: the owner of Company and User. */
export const name = "accounts"

/** The port it listens on when `PORT` is not set. */
export const defaultPort = 3001

/** Settings of the accounts service. */
export interface AccountsOptions {
  readonly database: ServiceDatabase.DatabaseOptions
  /** Relay settings (default: the library's). */
  readonly relay?: Omit<Relay.RelayOptions, "producer">
  /** HTTP settings: the admin token (absent: admin routes disabled), the body limit. */
  readonly http?: HttpApp.HttpOptions
  /**
   * How resync requests are authenticated and limited (R11): the broker logins allowed for each requester,
   * requesters' verifying keys, the coalescing window and the rate (see `Resync.responderConfig`).
   */
  readonly resync?: Partial<Resync.ResponderSettings>
}

/** The options the service starts its relay with: its settings, with the service as the producer. */
export const relayOptions = (options: AccountsOptions): Relay.RelayOptions => ({ ...options.relay, producer: name })

/** Starts the accounts service in the current scope. */
export const make = (
  options: AccountsOptions
): Effect.Effect<RunningService, ServiceDatabase.LayerError, Broker.Broker | Scope.Scope> => {
  const registry: Metric.MetricRegistry = new Map()
  return Effect.gen(function*() {
    const stores = yield* Layer.build(ServiceDatabase.layer(options.database, {
      migrations: AccountsTables.migrations,
      ownerTables: AccountsTables.ownerTables
    }))
    const database = Context.get(stores, ServiceDatabase.ServiceDatabase)
    const accounts = yield* Accounts.make.pipe(Effect.provideContext(stores))
    const background = Layer.mergeAll(
      Relay.layer(relayOptions(options)),
      Gauges.layer({ producer: name }),
      Resync.layer({
        owner: name,
        ...options.resync,
        targets: [
          { contract: Company, fullSync: Accounts.companies.fullSync },
          { contract: User, fullSync: Accounts.users.fullSync }
        ]
      })
    )
    const running = yield* Layer.build(background).pipe(Effect.provideContext(stores))
    const checks = yield* Health.make().pipe(Effect.provideContext(Context.merge(stores, running)))
    const http = yield* HttpApp.make([
      ...AccountsApi.routes(accounts),
      ...OperatorRoutes.health(
        name,
        checks,
        Effect.map(
          accounts.outbox.pipe(Effect.timeoutOption("3 seconds"), Effect.option),
          (outbox) => ({
            database: database.kind,
            ...(outbox._tag === "Some" && outbox.value._tag === "Some" ? { outbox: outbox.value.value } : {})
          })
        )
      ),
      PrometheusEndpoint.route({ registry })
    ], options.http)
    return { name, http, database }
  }).pipe(Effect.provideService(Metric.MetricRegistry, registry))
}

/**
 * The settings from the environment: the database (`DATABASE_URL`, …; see `ServiceDatabase.config`), HTTP
 * (`ADMIN_TOKEN`, `HTTP_MAX_BODY_BYTES`), the resync responder (`SYNC_RESYNC_*`, `SYNC_VERIFYING_KEYS`; see
 * `Resync.responderConfig`) and the relay (`SYNC_RELAY_*`, `SYNC_OUTBOX_RETENTION`, `SYNC_SIGNING_KEY*`; see
 * `SyncConfig.relayOptions`).
 */
export const config: Config.Config<AccountsOptions> = Config.all({
  database: ServiceDatabase.config,
  relay: SyncConfig.relayOptions,
  http: HttpApp.config,
  resync: Resync.responderConfig
})
