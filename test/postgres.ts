/**
 * Test helper: a uniquely named PostgreSQL database on the local server, created when the layer is built
 * and dropped when it is released, with a `PgClient` connected to it.
 *
 * The server is `POSTGRES_ADMIN_URL` or `postgres://postgres@127.0.0.1:5432/postgres` (trust auth).
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, ManagedRuntime, Redacted } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { TestClock } from "effect/testing"
import { afterAll, beforeAll } from "vitest"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import { consumerSide, ownerSide, type Stores } from "./harness.ts"
import { migrations, ownerTables } from "./owner-tables.ts"

/**
 * The rows of `table` the current transaction has read so far, by any scan: a statement that probes its keys
 * reads a few, one that scans the table reads all of them.
 */
export const rowsRead = (table: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ readonly n: number }>`SELECT (pg_stat_get_xact_tuples_returned(${table}::regclass)
      + pg_stat_get_xact_tuples_fetched(${table}::regclass))::int AS n`
  ).pipe(Effect.map((rows) => rows[0]?.n ?? Infinity))

/** Lets real PostgreSQL I/O progress between steps of virtual time (the harness's `Pump` on PostgreSQL). */
export const pump: Effect.Effect<void> = TestClock.withLive(Effect.sleep("3 millis"))

/** The maintenance database the helper connects to for `CREATE DATABASE` / `DROP DATABASE`. */
export const adminUrl = process.env.POSTGRES_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

/** The database a test runs against. */
export class TestDatabase extends Context.Service<TestDatabase, {
  readonly name: string
  /** Its connection URL, e.g. for a second client. */
  readonly url: Redacted.Redacted
}>()("test/TestDatabase") {}

let counter = 0

/** A new database name, unique across concurrent test processes. */
const uniqueName = () =>
  `entity_sync_test_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}_${
    Math.floor(Math.random() * 1e9).toString(36)
  }`

const urlOf = (name: string) => {
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/** Runs one statement on the maintenance database. */
const admin = (statement: (sql: SqlClient.SqlClient) => Effect.Effect<unknown, SqlError.SqlError>) =>
  SqlClient.SqlClient.use(statement).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(adminUrl), maxConnections: 1 }))
  )

/** A fresh database, dropped (even with open connections) when the layer is released. */
export const database: Layer.Layer<TestDatabase, SqlError.SqlError> = Layer.effect(
  TestDatabase,
  Effect.acquireRelease(
    Effect.gen(function*() {
      const name = uniqueName()
      yield* admin((sql) => sql`CREATE DATABASE ${sql(name)}`)
      return TestDatabase.of({ name, url: Redacted.make(urlOf(name)) })
    }),
    ({ name }) => admin((sql) => sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`).pipe(Effect.orDie)
  )
)

/** A `PgClient` (and `SqlClient`) on the current `TestDatabase`. */
export const client = (
  options?: { readonly maxConnections?: number }
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError.SqlError, TestDatabase> =>
  Layer.unwrap(
    Effect.gen(function*() {
      const { url } = yield* TestDatabase
      return PgClient.layer({ url, maxConnections: options?.maxConnections ?? 10 })
    })
  )

/**
 * A fresh database and a `PgClient` on it (default pool: 10 connections); the client is closed and the
 * database dropped when the layer is released.
 */
export const layer = (
  options?: { readonly maxConnections?: number }
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | TestDatabase, SqlError.SqlError> =>
  client(options).pipe(Layer.provideMerge(database))

/**
 * A database for one test file: created before its tests, dropped after them. `layer` gives its
 * `PgClient`; `prefix(side)` a fresh table prefix, so every test gets its own tables.
 */
export const forFile = (options?: { readonly maxConnections?: number }) => {
  const runtime = ManagedRuntime.make(layer({ maxConnections: options?.maxConnections ?? 20 }))
  beforeAll(() => runtime.context().then(() => undefined), 30_000)
  afterAll(() => runtime.dispose(), 30_000)
  let prefixes = 0
  const databaseLayer = Layer.unwrap(Effect.map(runtime.contextEffect, Layer.succeedContext))
  const prefix = (side: string) => `${side}${prefixes++}_${Math.floor(Math.random() * 1e6).toString(36)}_`
  /**
   * The owner's ("accounts") and the consumer's ("directory") stores, each on fresh tables; with
   * `ownerTables`, the owner keeps Company and User in owner tables of its own (`owner-tables.ts`), created
   * by the service's migration when the layer is built.
   */
  const storesWith = (options: { readonly ownerTables?: boolean; readonly leaseMillis?: number } = {}): Stores => {
    const owner = prefix("owner")
    return {
      owner: ownerSide(
        PostgresSync.layer({
          prefix: owner,
          ...(options.leaseMillis === undefined ? {} : { leaseMillis: options.leaseMillis }),
          ...(options.ownerTables === true ? { ownerTables: ownerTables(owner), migrations: migrations(owner) } : {})
        }).pipe(Layer.provide(databaseLayer))
      ),
      consumer: consumerSide(PostgresSync.layer({ prefix: prefix("directory") }).pipe(Layer.provide(databaseLayer)))
    }
  }
  return {
    layer: databaseLayer,
    prefix,
    storesWith,
    /** The owner's ("accounts") and the consumer's ("directory") stores, each on fresh tables. */
    stores: (): Stores => storesWith(),
    /** As `stores`, with the owner's Company and User in owner tables. */
    ownerTableStores: (): Stores => storesWith({ ownerTables: true })
  }
}
