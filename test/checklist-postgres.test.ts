/**
 * The checklist on PostgreSQL: the owner and the consumer each on their own tables (own prefix) in a
 * database created for this file; the owner's entities in the document table, then in owner tables of
 * its own (created by the service's migration).
 */
import { checklist } from "./checklist.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()

checklist("checklist (PostgreSQL stores)", { stores: database.stores, pump: TestPostgres.pump })

checklist("checklist (PostgreSQL stores, owner tables)", {
  stores: database.ownerTableStores,
  pump: TestPostgres.pump
})
