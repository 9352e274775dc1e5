/** The checklist on the memory stores with ledger-only subscriptions (`keepPayload: false`). */
import { Effect } from "effect"
import { checklist } from "./checklist.ts"
import { memoryStores } from "./harness.ts"

checklist("checklist (memory stores, ledger-only copies)", { stores: () => memoryStores, pump: Effect.void }, {
  keepPayload: false
})
