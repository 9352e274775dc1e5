/**
 * The convergence property with the owner's Company and User in owner tables (`owner-tables.ts`), in
 * memory: 300 fixed seeds. The document store's run is `convergence-memory.test.ts`.
 */
import { Effect } from "effect"
import { convergence, leaseMillis } from "./convergence.ts"
import { memoryStoresWith } from "./harness.ts"

convergence(
  "convergence (memory stores, owner tables)",
  {
    stores: () => memoryStoresWith({ ownerTables: true, leaseMillis }),
    pump: Effect.void,
    deterministic: true,
    file: "test/convergence-owner-tables-memory.test.ts"
  },
  300,
  0
)
