/**
 * The convergence property with contract versions mixed in flight, in memory: an owner instance at User's
 * version 2 writes beside one at version 1 (a rolling deployment), the consumer is at version 2 and upcasts
 * every version-1 event, through the same faults as `convergence-memory.test.ts`. 150 fixed seeds.
 */
import { Effect } from "effect"
import { convergence, leaseMillis } from "./convergence.ts"
import { memoryStoresWith } from "./harness.ts"

convergence(
  "convergence (memory stores, contract versions 1 and 2 in flight)",
  {
    stores: () => memoryStoresWith({ leaseMillis }),
    pump: Effect.void,
    deterministic: true,
    file: "test/convergence-versions-memory.test.ts",
    mixedVersions: true
  },
  150,
  0
)
