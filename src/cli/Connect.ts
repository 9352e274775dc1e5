/**
 * How the admin CLI reaches a service's stores and broker: from the same environment as the services
 * (`DATABASE_URL`, `SYNC_TABLE_PREFIX`; `AMQP_URL`, `SYNC_EXCHANGE`… — see `PostgresSync.config` and
 * `RabbitConfig`), without running migrations: it checks that the tables are there instead. Every failure
 * to connect is an `OperationFailed` naming the server and what to check.
 *
 * @since 0.2.0
 */
import { PgClient } from "@effect/sql-pg"
import { Config, Context, Duration, Effect, Layer, Redacted, Schema } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import * as RabbitConfig from "../amqp/RabbitConfig.ts"
import { Broker } from "../Broker.ts"
import type { BrokerUnavailable, PublishRejected } from "../Errors.ts"
import { Inbox } from "../Inbox.ts"
import { Outbox } from "../Outbox.ts"
import { decodeRows } from "../postgres/Columns.ts"
import * as PgInbox from "../postgres/Inbox.ts"
import * as PgOutbox from "../postgres/Outbox.ts"
import * as PostgresSync from "../postgres/PostgresSync.ts"
import * as Tables from "../postgres/Tables.ts"
import * as PgTransactor from "../postgres/Transactor.ts"
import { Transactor } from "../Transactor.ts"
import { OperationFailed } from "./Errors.ts"
import { shown } from "./Output.ts"

/** The database the CLI works on: where it is (for messages), its table names and a client on it. */
export class Database extends Context.Service<Database, {
  /** `host:port/database`, without credentials. */
  readonly where: string
  readonly tables: Tables.Tables
  /** A client without name transforms. */
  readonly sql: SqlClient.SqlClient
}>()("entity-sync/cli/Database") {}

/** The broker the CLI works on: where it is (for messages) and its settings. */
export class BrokerTarget extends Context.Service<BrokerTarget, {
  /** `host:port/vhost`, without credentials. */
  readonly where: string
}>()("entity-sync/cli/BrokerTarget") {}

const NameRow = Schema.Struct({ name: Schema.String })

/** How long one broker operation may take before the CLI gives up on it. */
export const brokerTimeout = Duration.seconds(30)

/** `host:port/path` of a URL, never its credentials; `(unparsable URL)` when it is not one. */
export const whereOf = (url: string, defaultPort: number): string => {
  try {
    const parsed = new URL(url)
    const path = decodeURIComponent(parsed.pathname.replace(/^\//, ""))
    return shown(`${parsed.hostname}:${parsed.port === "" ? defaultPort : parsed.port}/${path}`, 300)
  } catch {
    return "(unparsable URL)"
  }
}

/** The innermost code and message of an error chain (`ECONNREFUSED`, a PostgreSQL SQLSTATE…). */
const rootCause = (error: unknown): { readonly code: string | undefined; readonly message: string | undefined } => {
  let current: unknown = error
  let code: string | undefined
  let message: string | undefined
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const c: unknown = Reflect.get(current, "code")
    const m: unknown = Reflect.get(current, "message")
    if (typeof c === "string") code = c
    if (typeof m === "string" && m !== "") message = m
    const next: unknown = Reflect.get(current, "reason") ?? Reflect.get(current, "cause")
    if (next === current) break
    current = next
  }
  return { code, message }
}

const reasons: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host not found (DNS lookup failed)",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ECONNRESET: "connection reset",
  "28P01": "password authentication failed",
  "28000": "authentication rejected",
  "3D000": "the database does not exist"
}

/** Why a connection failed, in a few words. */
export const describeFailure = (error: unknown): string => {
  const { code, message } = rootCause(error)
  const known = code === undefined ? undefined : reasons[code]
  return shown(known ?? message ?? "unknown error", 300)
}

const postgresFailure = (where: string) => (error: unknown) =>
  new OperationFailed({
    message: `cannot connect to PostgreSQL at ${where}: ${describeFailure(error)} (check DATABASE_URL)`
  })

const configFailure = (variable: string, example: string) => (_: Config.ConfigError) =>
  new OperationFailed({
    message: `${variable} (or a setting read with it) is not set or not valid: set it as for the service, ` +
      `e.g. ${variable}=${example}`
  })

/**
 * The PostgreSQL stores of the service the environment names (`DATABASE_URL`, `SYNC_TABLE_PREFIX`): its
 * `Outbox` and `Inbox` and the `Database` itself. Runs no migrations: fails when the tables are missing.
 */
export const database: Layer.Layer<Database | Outbox | Inbox, OperationFailed> = Layer.effectContext(
  Effect.gen(function*() {
    const settings = yield* PostgresSync.config.pipe(
      Effect.mapError(configFailure("DATABASE_URL", "postgres://user@127.0.0.1:5432/service"))
    )
    const tables = yield* Tables.make(settings.prefix).pipe(
      Effect.mapError((error) => new OperationFailed({ message: `SYNC_TABLE_PREFIX: ${error.message}` }))
    )
    const where = whereOf(Redacted.value(settings.url), 5432)
    const fail = postgresFailure(where)
    const client = yield* Layer.build(PgClient.layer({ url: settings.url, maxConnections: 4 })).pipe(
      Effect.mapError(fail),
      Effect.timeoutOrElse({
        duration: "15 seconds",
        orElse: () =>
          Effect.fail(new OperationFailed({ message: `cannot connect to PostgreSQL at ${where}: timed out` }))
      })
    )
    const pg = Context.get(client, PgClient.PgClient)
    const sql = pg.withoutTransforms()
    const missing = yield* sql`SELECT name FROM unnest(${[
      tables.outbox,
      tables.inbox
    ]}::text[]) AS name
      WHERE to_regclass(quote_ident(name)) IS NULL`.pipe(
      Effect.flatMap(decodeRows(NameRow, "tables")),
      Effect.mapError(fail)
    )
    if (missing.length > 0) {
      return yield* new OperationFailed({
        message: `no entity-sync tables with prefix "${tables.prefix}" in ${where} (missing: ${
          missing.map((row) => shown(row.name, 80)).join(", ")
        }): start the service once to create them, or set SYNC_TABLE_PREFIX to the service's prefix`
      })
    }
    const transactor = yield* PgTransactor.make.pipe(Effect.provideContext(client))
    const outbox = yield* PgOutbox.make(tables).pipe(
      Effect.provideService(Transactor, transactor),
      Effect.provideContext(client),
      Effect.mapError(fail)
    )
    const inbox = yield* PgInbox.make(tables).pipe(Effect.provideContext(client))
    return Context.make(Database, Database.of({ where, tables, sql })).pipe(
      Context.add(Outbox, outbox),
      Context.add(Inbox, inbox)
    )
  })
)

/**
 * The RabbitMQ broker the environment names (`AMQP_URL`, `SYNC_EXCHANGE`, `SYNC_DEAD_EXCHANGE`… as in
 * `RabbitConfig`), and where it is. It connects at its first operation (see `onBroker`).
 */
export const broker: Layer.Layer<Broker | BrokerTarget, OperationFailed> = Layer.effectContext(
  Effect.gen(function*() {
    const options = yield* RabbitConfig.config.pipe(
      Effect.mapError(configFailure("AMQP_URL", "amqp://user:password@127.0.0.1:5672/vhost"))
    )
    const url = typeof options.url === "string" ? options.url : Redacted.value(options.url)
    // loaded here, not at start: amqplib is an optional peer, and only the broker commands need it
    const RabbitBroker = yield* Effect.tryPromise({
      try: () => import("../amqp/RabbitBroker.ts"),
      catch: (error) =>
        new OperationFailed({
          message: `this command needs the broker, and amqplib cannot be loaded (${describeFailure(error)}): ` +
            "install it next to entity-sync (npm install amqplib)"
        })
    })
    const made = yield* RabbitBroker.make(options)
    return Context.make(Broker, made).pipe(Context.add(BrokerTarget, BrokerTarget.of({ where: whereOf(url, 5672) })))
  })
)

/**
 * A broker operation as the CLI runs it: at most `brokerTimeout`, its failures turned into an
 * `OperationFailed` that names the broker and what to check.
 */
export const onBroker = <A, R>(
  operation: string,
  effect: Effect.Effect<A, BrokerUnavailable | PublishRejected, R>
): Effect.Effect<A, OperationFailed, R | BrokerTarget> =>
  Effect.flatMap(BrokerTarget, ({ where }) =>
    effect.pipe(
      Effect.mapError((error) =>
        new OperationFailed({
          message: error._tag === "PublishRejected"
            ? `RabbitMQ at ${where} refused ${operation}: ${shown(error.message, 500)}`
            : `cannot ${operation} on RabbitMQ at ${where}: ${shown(error.detail, 300)} (check AMQP_URL)`
        })
      ),
      Effect.timeoutOrElse({
        duration: brokerTimeout,
        orElse: () =>
          Effect.fail(
            new OperationFailed({
              message: `RabbitMQ at ${where} did not answer within ${Duration.format(brokerTimeout)} (${operation})`
            })
          )
      })
    ))

/** Whether `AMQP_URL` is set, for commands that use the broker only when there is one. */
export const brokerConfigured: Effect.Effect<boolean> = Config.option(Config.String("AMQP_URL")).pipe(
  Effect.map((value) => value._tag === "Some" && value.value !== ""),
  Effect.orElseSucceed(() => false)
)

/** A database operation as the CLI runs it: a failure is an `OperationFailed` naming the database. */
export const onDatabase = <A, R>(
  operation: string,
  effect: Effect.Effect<A, SqlError.SqlError, R>
): Effect.Effect<A, OperationFailed, R | Database> =>
  Effect.flatMap(Database, ({ where }) =>
    effect.pipe(
      Effect.mapError((error) =>
        new OperationFailed({ message: `cannot ${operation} in PostgreSQL at ${where}: ${describeFailure(error)}` })
      )
    ))
