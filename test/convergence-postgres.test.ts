/**
 * The convergence property with the owner's and the consumer's stores on PostgreSQL (their own table
 * prefixes in a database created for this file).
 */
import { Effect, Layer, ManagedRuntime } from "effect"
import { TestClock } from "effect/testing"
import { afterAll, beforeAll } from "vitest"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import { convergence } from "./convergence.ts"
import { consumerSide, ownerSide } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const database = ManagedRuntime.make(TestPostgres.layer({ maxConnections: 20 }))
beforeAll(() => database.context().then(() => undefined), 30_000)
afterAll(() => database.dispose(), 30_000)
const databaseLayer = Layer.unwrap(Effect.map(database.contextEffect, Layer.succeedContext))

let prefixes = 0
const prefix = (side: string) => `${side}${prefixes++}_${Math.floor(Math.random() * 1e6).toString(36)}_`

convergence("convergence (PostgreSQL stores)", {
  stores: () => ({
    owner: ownerSide(PostgresSync.layer({ prefix: prefix("owner") }).pipe(Layer.provide(databaseLayer))),
    consumer: consumerSide(PostgresSync.layer({ prefix: prefix("directory") }).pipe(Layer.provide(databaseLayer)))
  }),
  pump: TestClock.withLive(Effect.sleep("1 millis"))
}, 30)
