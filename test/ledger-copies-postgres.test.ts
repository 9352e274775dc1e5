/** Ledger-only subscriptions (`keepPayload: false`), focused, on PostgreSQL (a database created for this file). */
import { ledgerCopies } from "./ledger-copies.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile()

ledgerCopies("ledger-only copies (PostgreSQL stores)", { stores: database.stores, pump: TestPostgres.pump })
