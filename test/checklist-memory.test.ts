import { Effect } from "effect"
import { checklist } from "./checklist.ts"
import { memoryStores } from "./harness.ts"

checklist("checklist (memory stores)", { stores: () => memoryStores, pump: Effect.void })
