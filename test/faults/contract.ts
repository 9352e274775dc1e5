/**
 * The entity the fault-injection suite writes: an `Item` owned by "ledger", and the consumer's
 * subscription whose handler records every apply in a table of the consumer's database, inside the apply
 * transaction — so only committed applies are counted, even across killed processes.
 */
import { Effect, Schema } from "effect"
import { SqlClient } from "effect/sql"
import * as Contract from "../../src/Contract.ts"
import * as Subscription from "../../src/Subscription.ts"

/** The owning service of `Item`. */
export const owner = "ledger"

/** An item: a name, a counter bumped by every update, and a few tags. */
export const Item = Contract.make({
  name: "Item",
  owner,
  payload: Schema.Struct({
    id: Schema.String,
    name: Schema.String,
    n: Schema.Int,
    tags: Schema.Array(Schema.String)
  }),
  id: "id"
})
export type Item = Contract.Payload<typeof Item>

/** The table the consumer's handler appends one row to per applied event. */
export const appliesTable = "faults_applies"

/** Creates the applies table (idempotent). */
export const createAppliesTable = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) =>
    sql`CREATE TABLE IF NOT EXISTS ${sql(appliesTable)} (
    message_id text NOT NULL,
    entity_id text NOT NULL,
    version bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
  )`.pipe(Effect.asVoid)
)

/**
 * The consumer's subscriptions: `Item`, with a handler that inserts `(message_id, entity_id, version)`
 * into the applies table in the apply transaction.
 */
export const subscriptions = [
  Subscription.subscribe(Item, {
    handler: ({ envelope }) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`INSERT INTO ${sql(appliesTable)} (message_id, entity_id, version)
          VALUES (${envelope.messageId}, ${envelope.entityId}, ${envelope.version})`.pipe(Effect.asVoid))
  })
]
