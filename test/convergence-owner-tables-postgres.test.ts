/**
 * The convergence property on PostgreSQL with the owner's Company and User in owner tables of its own
 * (`owner-tables.ts`, created by the service's migration), the owner's and the consumer's stores on their
 * own table prefixes in a database created for this file: 30 fixed seeds. The document table's run is
 * `convergence-postgres.test.ts`; fresh seeds are opt-in here as there (`CONVERGENCE_FRESH=<n>`).
 */
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { convergence, leaseMillis } from "./convergence.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()

convergence(
  "convergence (PostgreSQL stores, owner tables)",
  {
    stores: () => database.storesWith({ ownerTables: true, leaseMillis }),
    pump: TestClock.withLive(Effect.sleep("1 millis")),
    deterministic: false,
    file: "test/convergence-owner-tables-postgres.test.ts"
  },
  30,
  0
)
