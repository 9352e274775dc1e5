/**
 * The entities the fault-injection suite writes: `Item`s owned by "ledger" and the `Group`s an item may
 * belong to (`Item.groupId`, a dependency: R5), and the consumer's subscriptions whose handler records
 * every apply in a table of the consumer's database, inside the apply transaction — so only committed
 * applies are counted, even across killed processes. Items without a group (every item of a stream
 * written without `groups`) depend on nothing.
 */
import { Effect, Schema } from "effect"
import { SqlClient } from "effect/sql"
import * as Contract from "../../src/Contract.ts"
import type * as Envelope from "../../src/Envelope.ts"
import * as Subscription from "../../src/Subscription.ts"

/** The owning service of `Item`. */
export const owner = "ledger"

/** A group of items: a name and a counter bumped by every update. */
export const Group = Contract.make({
  name: "Group",
  owner,
  payload: Schema.Struct({
    id: Schema.String,
    name: Schema.String,
    n: Schema.Int
  }),
  id: "id"
})
export type Group = Contract.Payload<typeof Group>

/** An item: a name, a counter bumped by every update, a few tags, and the group it belongs to, if any. */
export const Item = Contract.make({
  name: "Item",
  owner,
  payload: Schema.Struct({
    id: Schema.String,
    name: Schema.String,
    n: Schema.Int,
    tags: Schema.Array(Schema.String),
    groupId: Schema.optionalKey(Schema.String)
  }),
  id: "id",
  dependencies: { groupId: Group }
})
export type Item = Contract.Payload<typeof Item>

/**
 * The table the consumer's handler appends one row to per applied event: its message id, entity, id and
 * version, the id of the process that applied it and of its database connection's backend.
 */
export const appliesTable = "faults_applies"

/** Creates the applies table (idempotent). */
export const createAppliesTable = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) =>
    sql`CREATE TABLE IF NOT EXISTS ${sql(appliesTable)} (
    message_id text NOT NULL,
    entity_id text NOT NULL,
    version bigint NOT NULL,
    entity text,
    pid integer,
    backend integer DEFAULT pg_backend_pid(),
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
  )`.pipe(Effect.asVoid)
)

const recordApply = ({ envelope }: { readonly envelope: Envelope.Envelope }) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql`INSERT INTO ${sql(appliesTable)} (message_id, entity_id, version, entity, pid)
      VALUES (${envelope.messageId}, ${envelope.entityId}, ${envelope.version}, ${envelope.entity}, ${process.pid})`
        .pipe(Effect.asVoid)
  )

/**
 * The consumer's subscriptions: `Group` and `Item`, each with a handler that inserts `(message_id,
 * entity_id, version, entity, pid)` into the applies table in the apply transaction.
 */
export const subscriptions = [
  Subscription.subscribe(Group, { handler: recordApply }),
  Subscription.subscribe(Item, { handler: recordApply })
]

/** The entities of the contract, as the consumer's metrics name them. */
export const entities = [Group.name, Item.name] as const
