/**
 * A demo service's own database and the library's PostgreSQL stores in it: the PostgreSQL server at
 * `DATABASE_URL` when one is configured, otherwise an embedded PGlite database in this process (DESIGN
 * §6: the embedded default — same SQL, same wire protocol, no server to install). Either way the service
 * gets `Outbox | Inbox | CopyRepository | SourceRepository | Transactor` plus `PgClient`/`SqlClient` for its
 * own queries, and `ServiceDatabase` tells where the data is. A service with tables of its own passes its
 * `ServiceSchema`: its migrations run after the library's, then its owner tables are checked, so the service
 * comes up from an empty database.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Config, Context, Effect, Layer, Option, type Redacted, Schema } from "effect"
import { type Migrator, SqlClient, type SqlError } from "effect/sql"
import type { OwnerTable } from "entity-sync"
import { Embedded } from "entity-sync/embedded"
import { PostgresSync, Tables } from "entity-sync/postgres"

/** Where a service keeps its data. */
export interface DatabaseOptions {
  /** A PostgreSQL URL; absent: an embedded PGlite database in this process. */
  readonly url?: Redacted.Redacted
  /** The most connections the pool opens (default 10, at least 2). */
  readonly poolSize?: number
  /** The prefix of the library's tables (default `sync_`). */
  readonly prefix?: string
  /** Embedded only: keep the database in this directory (default: in memory, gone at exit). */
  readonly dataDir?: string
}

/** A service's own tables: the migrations that create them, and those that hold its contracts' entities. */
export interface ServiceSchema {
  /** The service's migrations (e.g. an effect/sql `Migrator` with its own table), run after the library's. */
  readonly migrations: Effect.Effect<unknown, Migrator.MigrationError | SqlError.SqlError, SqlClient.SqlClient>
  /** The owner tables of the contracts the service owns (the others stay in the library's document table). */
  readonly ownerTables: ReadonlyArray<OwnerTable.OwnerTable>
}

/** The database a service runs on. */
export class ServiceDatabase extends Context.Service<ServiceDatabase, {
  readonly kind: "embedded" | "postgres"
  /** Its connection URL (for the embedded one: valid while the service runs, on 127.0.0.1). */
  readonly url: Redacted.Redacted
  /** The names of the library's tables. */
  readonly tables: Tables.Tables
}>()("services/ServiceDatabase") {}

/** What the layer provides. */
export type Provided = PostgresSync.Stores | PgClient.PgClient | SqlClient.SqlClient | ServiceDatabase

/** What building the layer can fail with. */
export type LayerError = PostgresSync.LayerError | Embedded.EmbeddedPostgresError

/**
 * The stores on the configured database (the library's migrations applied, then the service's own, from
 * `schema`), its client, and `ServiceDatabase`.
 */
export const layer = (options: DatabaseOptions, schema?: ServiceSchema): Layer.Layer<Provided, LayerError> => {
  const prefix = options.prefix ?? Tables.defaultPrefix
  const poolSize = Math.max(2, options.poolSize ?? 10)
  const own = schema === undefined ? {} : { migrations: schema.migrations, ownerTables: schema.ownerTables }
  const describe = <R>(kind: "embedded" | "postgres", url: Effect.Effect<Redacted.Redacted, never, R>) =>
    Layer.effect(
      ServiceDatabase,
      Effect.gen(function*() {
        return ServiceDatabase.of({ kind, url: yield* url, tables: yield* Tables.make(prefix) })
      })
    )
  if (options.url === undefined) {
    return describe("embedded", Embedded.EmbeddedPostgres.use((db) => Effect.succeed(db.url))).pipe(
      Layer.provideMerge(
        Embedded.layerSync({
          prefix,
          ...own,
          maxConnections: poolSize,
          ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {})
        })
      )
    )
  }
  return describe("postgres", Effect.succeed(options.url)).pipe(
    Layer.provideMerge(PostgresSync.layer({ prefix, ...own })),
    Layer.provideMerge(PgClient.layer({ url: options.url, maxConnections: poolSize }))
  )
}

/**
 * The settings from the environment: `DATABASE_URL` (absent: embedded), `DATABASE_POOL_SIZE` (10),
 * `SYNC_TABLE_PREFIX` (`sync_`), `EMBEDDED_DATA_DIR` (absent: in memory).
 */
export const config: Config.Config<DatabaseOptions> = Config.all({
  url: Config.option(Config.Redacted("DATABASE_URL")),
  poolSize: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)), "DATABASE_POOL_SIZE").pipe(
    Config.withDefault(10)
  ),
  prefix: Config.String("SYNC_TABLE_PREFIX").pipe(Config.withDefault(Tables.defaultPrefix)),
  dataDir: Config.option(Config.String("EMBEDDED_DATA_DIR"))
}).pipe(
  Config.map(({ dataDir, poolSize, prefix, url }) => ({
    poolSize,
    prefix,
    ...(Option.isSome(url) ? { url: url.value } : {}),
    ...(Option.isSome(dataDir) ? { dataDir: dataDir.value } : {})
  }))
)

/** What an operator is told about a database that does not answer (never its own error text). */
export const describeFailure = (error: SqlError.SqlError): string => {
  switch (error.reason._tag) {
    case "AuthenticationError":
      return "the database refused the login (check the user and password in DATABASE_URL)"
    case "AuthorizationError":
      return "the database refused access (check the user's privileges and the database name in DATABASE_URL)"
    case "ConnectionError":
      return "the database cannot be reached (check the host and port in DATABASE_URL, and that it runs)"
    default:
      return "the database answered with an error (see the log)"
  }
}

/**
 * Connects to the PostgreSQL server at `url` and runs `SELECT 1` (one connection, closed after; at most
 * 5 seconds to connect): whether the service could start on it now.
 */
export const probe = (url: Redacted.Redacted): Effect.Effect<void, SqlError.SqlError> =>
  SqlClient.SqlClient.use((sql) => sql`SELECT 1`).pipe(
    Effect.provide(PgClient.layer({ url, maxConnections: 1, connectTimeout: "5 seconds" })),
    Effect.asVoid
  )
