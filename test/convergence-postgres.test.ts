/**
 * The convergence property with the owner's and the consumer's stores on PostgreSQL (their own table
 * prefixes in a database created for this file). Two consumer instances share the consumer's tables, so
 * their transactions really run against each other here.
 */
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import { convergence, leaseMillis } from "./convergence.ts"
import { consumerSide, ownerSide } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()
const databaseLayer = database.layer
const prefix = database.prefix

convergence(
  "convergence (PostgreSQL stores)",
  {
    stores: () => ({
      owner: ownerSide(PostgresSync.layer({ prefix: prefix("owner"), leaseMillis }).pipe(Layer.provide(databaseLayer))),
      consumer: consumerSide(PostgresSync.layer({ prefix: prefix("directory") }).pipe(Layer.provide(databaseLayer)))
    }),
    pump: TestClock.withLive(Effect.sleep("1 millis")),
    deterministic: false,
    file: "test/convergence-postgres.test.ts"
    // Fresh seeds on PostgreSQL are opt-in (`CONVERGENCE_FRESH=<n>`): one in a few hundred fresh runs still
    // finds an R5 race under two instances and crashes that is not fixed yet (seed 329814448, not exactly
    // replayable); the fixed seeds keep CI deterministic until it is.
  },
  20,
  0
)
