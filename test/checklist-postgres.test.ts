/**
 * The checklist on PostgreSQL: the owner and the consumer each on their own tables (own prefix) in a
 * database created for this file.
 */
import { checklist } from "./checklist.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()

checklist("checklist (PostgreSQL stores)", { stores: database.stores, pump: TestPostgres.pump })
