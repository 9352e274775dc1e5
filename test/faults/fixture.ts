/**
 * The set-up of one fault-injection test, in the test's scope: a fresh database (dropped afterwards), its
 * migrations and applies table, an admin pool for checks and faults, and the deletion of the test's
 * RabbitMQ queues and exchanges at the end.
 */
import { Context, Effect, Layer, type Redacted, type Scope } from "effect"
import { SqlClient } from "effect/sql"
import type { Outbox } from "../../src/Outbox.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import * as TestPostgres from "../postgres.ts"
import { createAppliesTable } from "./contract.ts"
import { deleteTopology } from "./rabbit.ts"
import { makeNames, migrate, type Names, pool, roles, writerStores } from "./stack.ts"

/** A test's database, names and admin client. */
export interface Fixture {
  readonly names: Names
  readonly databaseName: string
  readonly url: Redacted.Redacted
  /** The admin client (application_name `faults-admin`), never a target of faults. */
  readonly sql: SqlClient.SqlClient
  /** The owner's stores on the writer's pool, for `writeStream`. */
  readonly writer: Layer.Layer<Outbox | SourceRepository>
}

/** The events a test writes (`FAULTS_EVENTS`, default 3 000) and their rate (`FAULTS_RATE`, default 400/s). */
export const stream = {
  events: Number(process.env.FAULTS_EVENTS ?? 3_000),
  ratePerSecond: Number(process.env.FAULTS_RATE ?? 400)
}

export { quiet } from "./quiet.ts"

/** Sets a test up in the current scope (its consumers on `lanes` ordered lanes, if given). */
export const setup = (test: string, lanes?: number): Effect.Effect<Fixture, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const names = makeNames(test, lanes)
    yield* Effect.addFinalizer(() => deleteTopology(names))
    const database = Context.get(yield* Layer.build(TestPostgres.database), TestPostgres.TestDatabase)
    const sql = Context.get(yield* Layer.build(pool(database.url, roles.admin, 3)), SqlClient.SqlClient)
    yield* migrate(database.url, names)
    yield* createAppliesTable.pipe(Effect.provideService(SqlClient.SqlClient, sql))
    const writer = Layer.succeedContext(yield* Layer.build(writerStores(database.url, names)))
    return { names, databaseName: database.name, url: database.url, sql, writer }
  })
