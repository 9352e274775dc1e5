/**
 * The checklist on PostgreSQL with ledger-only subscriptions (`keepPayload: false`): the owner and the
 * consumer each on their own tables (own prefix) in a database created for this file.
 */
import { checklist } from "./checklist.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()

checklist("checklist (PostgreSQL stores, ledger-only copies)", { stores: database.stores, pump: TestPostgres.pump }, {
  keepPayload: false
})
