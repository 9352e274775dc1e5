/** Ledger-only subscriptions (`keepPayload: false`), focused, on the memory stores. */
import { Effect } from "effect"
import { memoryStores } from "./harness.ts"
import { ledgerCopies } from "./ledger-copies.ts"

ledgerCopies("ledger-only copies (memory stores)", { stores: () => memoryStores, pump: Effect.void })
