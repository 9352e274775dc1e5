/**
 * The real stack of an outage test, split over two PostgreSQL servers: the side whose database goes down
 * (the owner's outbox and rows, or the consumer's inbox and copies) on a private cluster of the test's own,
 * the other side on the shared server in a fresh database. The fault suite's stack (`test/faults/stack.ts`)
 * runs on it unchanged, each role given the URL of its side.
 *
 * So that the fault suite's one-statement tally (`verify.ts`) still sees both sides, the private side's
 * tables are imported into the shared database as foreign tables (`postgres_fdw`); the admin client on the
 * shared database reads everything, and is never a target of the outage.
 */
import { Context, Effect, Layer, type Redacted, type Scope } from "effect"
import { SqlClient } from "effect/sql"
import type { Outbox } from "../../src/Outbox.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import { appliesTable, createAppliesTable } from "../faults/contract.ts"
import { deleteTopology } from "../faults/rabbit.ts"
import { makeNames, type Names, pool, roles, tables, writerStores } from "../faults/stack.ts"
import * as TestPostgres from "../postgres.ts"
import * as Cluster from "./cluster.ts"

/** The side whose database the test takes away. */
export type Side = "owner" | "consumer"

/** A split stack's databases, names and admin client. */
export interface SplitFixture {
  readonly names: Names
  /** The side on the private cluster. */
  readonly down: Side
  readonly cluster: Cluster.PrivateCluster
  /** The owner's database (outbox and source rows): the writer's and the relay's. */
  readonly ownerUrl: Redacted.Redacted
  /** The consumer's database (inbox, dead rows, copies, the applies table). */
  readonly consumerUrl: Redacted.Redacted
  /** The admin client on the shared database; sees the private side's tables as foreign tables. */
  readonly sql: SqlClient.SqlClient
  /** The owner's stores on the writer's pool. */
  readonly writer: Layer.Layer<Outbox | SourceRepository>
}

/** The inbox's dead rows of the test. */
export const deadTable = (names: Names): string => `${names.consumerPrefix}dead`

/** The tables of a side that the checks read. */
const tablesOf = (names: Names, side: Side): ReadonlyArray<string> => {
  const t = tables(names)
  return side === "owner" ? [t.outbox, t.source] : [t.inbox, t.copies, deadTable(names), t.waiting, appliesTable]
}

/** Runs one side's migrations on its database. */
const migrateSide = (url: Redacted.Redacted, prefix: string): Effect.Effect<void, PostgresSync.LayerError> =>
  Effect.scoped(
    Effect.asVoid(Layer.build(PostgresSync.layer({ prefix }).pipe(Layer.provide(pool(url, roles.admin, 2)))))
  )

/** Makes the private cluster's tables of `side` readable from the shared database (`postgres_fdw`). */
const importForeignTables = (
  sql: SqlClient.SqlClient,
  cluster: Cluster.PrivateCluster,
  names: Names,
  side: Side
): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    const server = "outage_private"
    yield* sql`CREATE EXTENSION IF NOT EXISTS postgres_fdw`
    // DDL options take literals only; the port is a number of ours
    yield* sql.unsafe(
      `CREATE SERVER ${server} FOREIGN DATA WRAPPER postgres_fdw ` +
        `OPTIONS (host '127.0.0.1', port '${Math.trunc(cluster.port)}', dbname 'postgres')`
    )
    yield* sql.unsafe(`CREATE USER MAPPING FOR CURRENT_USER SERVER ${server} OPTIONS (user 'postgres')`)
    const list = tablesOf(names, side).map((table) => `"${table.replaceAll("\"", "\"\"")}"`).join(", ")
    // (generated columns as plain ones: the waiting table's are computed by functions of the private side)
    yield* sql.unsafe(
      `IMPORT FOREIGN SCHEMA public LIMIT TO (${list}) FROM SERVER ${server} INTO public ` +
        `OPTIONS (import_generated 'false')`
    )
  })

/**
 * Sets a split stack up in the current scope: a fresh database on the shared server and a private cluster
 * (both removed afterwards), each side migrated on its own, the applies table with the consumer, the
 * foreign tables, and the deletion of the test's RabbitMQ queues and exchanges at the end.
 */
export const setup = (test: string, down: Side): Effect.Effect<SplitFixture, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const names = makeNames(test)
    yield* Effect.addFinalizer(() => deleteTopology(names))
    const shared = Context.get(yield* Layer.build(TestPostgres.database), TestPostgres.TestDatabase)
    const cluster = yield* Cluster.make
    const sql = Context.get(yield* Layer.build(pool(shared.url, roles.admin, 3)), SqlClient.SqlClient)
    const ownerUrl = down === "owner" ? cluster.url : shared.url
    const consumerUrl = down === "consumer" ? cluster.url : shared.url
    yield* migrateSide(ownerUrl, names.ownerPrefix)
    yield* migrateSide(consumerUrl, names.consumerPrefix)
    yield* createAppliesTable.pipe(Effect.provide(pool(consumerUrl, roles.admin, 1)))
    yield* importForeignTables(sql, cluster, names, down)
    const writer = Layer.succeedContext(yield* Layer.build(writerStores(ownerUrl, names)))
    return { names, down, cluster, ownerUrl, consumerUrl, sql, writer }
  })
