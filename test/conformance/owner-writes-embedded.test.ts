/** Runs the owner-write conformance suite on the PostgreSQL implementations over embedded PGlite. */
import { afterAll, beforeAll } from "@effect/vitest"
import { Effect, Layer, ManagedRuntime } from "effect"
import * as Embedded from "../../src/embedded/Embedded.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import { migrations, ownerTables } from "../owner-tables.ts"
import { ownerWriteConformance } from "./owner-writes.ts"

const database = ManagedRuntime.make(Embedded.layer())
beforeAll(() => database.context().then(() => undefined), 60_000)
afterAll(() => database.dispose(), 60_000)

const databaseLayer = Layer.unwrap(Effect.map(database.contextEffect, Layer.succeedContext))

let prefixes = 0
const freshPrefix = () => `w${prefixes++}_${Math.floor(Math.random() * 1e6).toString(36)}_`

ownerWriteConformance(
  "embedded postgres owner writes",
  () => PostgresSync.layer({ prefix: freshPrefix() }).pipe(Layer.provideMerge(databaseLayer))
)

ownerWriteConformance("embedded postgres owner writes, on owner tables", () => {
  const prefix = freshPrefix()
  return PostgresSync.layer({ prefix, ownerTables: ownerTables(prefix), migrations: migrations(prefix) }).pipe(
    Layer.provideMerge(databaseLayer)
  )
})
