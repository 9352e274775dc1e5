/** The checklist on the memory stores: the owner's entities in the document store, then in owner tables. */
import { Effect } from "effect"
import { checklist } from "./checklist.ts"
import { memoryOwnerTableStores, memoryStores } from "./harness.ts"

checklist("checklist (memory stores)", { stores: () => memoryStores, pump: Effect.void })

checklist("checklist (memory stores, owner tables)", { stores: () => memoryOwnerTableStores, pump: Effect.void })
