/**
 * The PostgreSQL stores of one service in one Layer: `Outbox`, `Inbox`, `CopyRepository`,
 * `SourceRepository` and their `Transactor`, on `effect/sql` with `@effect/sql-pg`. Building the layer runs
 * the library's migrations (see `Migrations`), so a service only composes it:
 *
 * ```ts
 * const Stores = PostgresSync.layer({ prefix: "sync_" }).pipe(
 *   Layer.provideMerge(PgClient.layer({ url: Redacted.make("postgres://…"), maxConnections: 10 }))
 * )
 * // or, from the environment (DATABASE_URL, DATABASE_POOL_SIZE, SYNC_TABLE_PREFIX):
 * const Stores = PostgresSync.layerConfig()
 * ```
 *
 * The stores run their statements without the client's name transforms (`withoutTransforms()`), so a
 * `PgClient` configured with `transformQueryNames` / `transformResultNames` for the application's own
 * tables works unchanged. An application's own writes share the stores' transactions when they use the
 * same `SqlClient` inside `Outbox.transaction` or `Transactor.withTransaction`.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Config, Context, Effect, Layer, Schema } from "effect"
import type { Migrator, SqlClient, SqlError } from "effect/sql"
import { CopyRepository } from "../CopyRepository.ts"
import { Inbox } from "../Inbox.ts"
import { Outbox } from "../Outbox.ts"
import type { InvalidOwnerTable, OwnerTable } from "../OwnerTable.ts"
import { routed, SourceRepository } from "../SourceRepository.ts"
import { Transactor } from "../Transactor.ts"
import * as PgCopyRepository from "./CopyRepository.ts"
import * as PgInbox from "./Inbox.ts"
import * as Migrations from "./Migrations.ts"
import * as PgOutbox from "./Outbox.ts"
import * as OwnerTableStore from "./OwnerTableStore.ts"
import * as PgSourceRepository from "./SourceRepository.ts"
import * as Tables from "./Tables.ts"
import * as PgTransactor from "./Transactor.ts"

/** The services the layer provides: the stores of one service and their transaction boundary. */
export type Stores = Outbox | Inbox | CopyRepository | SourceRepository | Transactor

/** Options of the PostgreSQL stores. */
export interface Options {
  /**
   * The prefix of every table, index, function and notification channel of the library (default
   * `"sync_"`); it must match `/^[a-z_][a-z0-9_]*$/`. Services sharing a database need distinct prefixes.
   */
  readonly prefix?: string
  /** How long an outbox claim keeps rows from other relays, in milliseconds (default 30 000). */
  readonly leaseMillis?: number
  /**
   * The owner tables of the service (see `OwnerTable`): the entities of their contracts are read and
   * written in the service's own tables, which must exist when the layer is built (run the service's
   * migrations first). Other contracts keep their entities in the library's document table.
   */
  readonly ownerTables?: ReadonlyArray<OwnerTable>
  /**
   * The service's own migrations (e.g. `Migrator.make({})({ loader, table })` of `effect/sql`), run after
   * the library's and before the owner tables are checked, so one layer brings up a database from empty.
   */
  readonly migrations?: Effect.Effect<unknown, Migrator.MigrationError | SqlError.SqlError, SqlClient.SqlClient>
}

/**
 * What building the layer can fail with: a bad prefix, a failed migration, an owner table that does not
 * match its declaration, or the database.
 */
export type LayerError = Tables.InvalidTablePrefix | Migrator.MigrationError | InvalidOwnerTable | SqlError.SqlError

/**
 * The PostgreSQL stores on the current `PgClient`: validates the prefix (default `sync_`), applies the
 * pending migrations, then provides `Outbox | Inbox | CopyRepository | SourceRepository | Transactor`.
 * The outbox holds one pooled connection for `LISTEN` while the layer is alive, so the pool needs at least
 * two connections. Claims lease rows for `leaseMillis` (default 30 000 ms).
 */
export const layer = (
  options?: Options
): Layer.Layer<Stores, LayerError, SqlClient.SqlClient | PgClient.PgClient> =>
  Layer.effectContext(
    Effect.gen(function*() {
      const tables = yield* Tables.make(options?.prefix)
      yield* Migrations.run(tables)
      if (options?.migrations !== undefined) yield* options.migrations
      const transactor = yield* PgTransactor.make
      const outbox = yield* PgOutbox.make(
        tables,
        options?.leaseMillis === undefined ? {} : { leaseMillis: options.leaseMillis }
      ).pipe(Effect.provideService(Transactor, transactor))
      const inbox = yield* PgInbox.make(tables)
      const copies = yield* PgCopyRepository.make(tables)
      const documents = yield* PgSourceRepository.make(tables)
      const owned = yield* Effect.forEach(
        options?.ownerTables ?? [],
        (table) => Effect.map(OwnerTableStore.make(tables, table), (store) => [table.entity, store] as const)
      )
      const sources = routed(documents, new Map(owned))
      return Context.make(Transactor, transactor).pipe(
        Context.add(Outbox, outbox),
        Context.add(Inbox, inbox),
        Context.add(CopyRepository, copies),
        Context.add(SourceRepository, sources)
      )
    })
  )

/** The default size of the connection pool `layerConfig` builds: 10. */
export const defaultPoolSize = 10

/**
 * The configuration `layerConfig` reads:
 *
 * * `DATABASE_URL` (required, redacted): the PostgreSQL connection URL;
 * * `DATABASE_POOL_SIZE` (default 10, at least 2): the most connections the pool opens;
 * * `SYNC_TABLE_PREFIX` (default `sync_`): the table prefix, see `Options.prefix`.
 */
export const config = Config.all({
  url: Config.Redacted("DATABASE_URL"),
  poolSize: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)), "DATABASE_POOL_SIZE").pipe(
    Config.withDefault(defaultPoolSize)
  ),
  prefix: Config.String("SYNC_TABLE_PREFIX").pipe(Config.withDefault(Tables.defaultPrefix))
})

/**
 * The PostgreSQL stores and their `PgClient` (also provided, as `PgClient` and `SqlClient`, for the
 * application's own queries), configured from `config`: `DATABASE_URL`, `DATABASE_POOL_SIZE` (default 10)
 * and `SYNC_TABLE_PREFIX` (default `sync_`). `leaseMillis` and `ownerTables` are as in `layer`.
 */
export const layerConfig = (
  options?: Omit<Options, "prefix">
): Layer.Layer<Stores | PgClient.PgClient | SqlClient.SqlClient, LayerError | Config.ConfigError> =>
  Layer.unwrap(
    Effect.map(config, ({ poolSize, prefix, url }) =>
      layer({ ...options, prefix }).pipe(
        Layer.provideMerge(PgClient.layer({ url, maxConnections: poolSize }))
      ))
  )
