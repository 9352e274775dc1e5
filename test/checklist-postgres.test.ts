/**
 * The checklist on PostgreSQL: the owner and the consumer each on their own tables (own prefix) in a
 * database created for this file.
 */
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import { checklist } from "./checklist.ts"
import { consumerSide, ownerSide } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()
const databaseLayer = database.layer
const prefix = database.prefix

checklist("checklist (PostgreSQL stores)", {
  stores: () => ({
    owner: ownerSide(PostgresSync.layer({ prefix: prefix("owner") }).pipe(Layer.provide(databaseLayer))),
    consumer: consumerSide(PostgresSync.layer({ prefix: prefix("directory") }).pipe(Layer.provide(databaseLayer)))
  }),
  pump: TestClock.withLive(Effect.sleep("3 millis"))
})
