/**
 * The entity both pipelines of the benchmark carry: an `Item` owned by the service "bench", about 200
 * bytes of JSON per event, held at the owner in a table of its own (`items`, one typed column per field,
 * created by the same statement for both pipelines); and the names (RabbitMQ, consumer service) of one
 * benchmark phase.
 */
import { Schema } from "effect"
import { Contract, OwnerTable } from "entity-sync"

/** The owning service. */
export const owner = "bench"

/** The benchmark's entity. */
export const Item = Contract.make({
  name: "Item",
  owner,
  payload: Schema.Struct({
    id: Schema.String,
    name: Schema.String,
    n: Schema.Int,
    tags: Schema.Array(Schema.String),
    note: Schema.String
  }),
  id: "id"
})
export type Item = Contract.Payload<typeof Item>

/** The owner's table of items, the same for both pipelines: typed columns, a version, an update time. */
export const itemsTable = `CREATE TABLE IF NOT EXISTS items (
  id text PRIMARY KEY,
  name text NOT NULL,
  n integer NOT NULL,
  tags text[] NOT NULL,
  note text NOT NULL,
  version bigint NOT NULL,
  updated_at timestamptz NOT NULL
)`

/** The library's declaration of that table. */
export const ItemsTable = OwnerTable.make(Item, { tableName: "items", updatedAtColumn: "updated_at" })

/**
 * The payload of the `i`-th item of a workload (ids are unique per `prefix`); `revision` 0 is the item as
 * created, each later revision changes its name and number (an update).
 */
export const itemOf = (prefix: string, i: number, revision = 0): Item => ({
  id: `${prefix}-${i}`,
  name: revision === 0 ? `item ${i}` : `item ${i} (revision ${revision})`,
  n: i + revision,
  tags: ["bench", i % 2 === 0 ? "even" : "odd"],
  note: "the quick brown fox jumps over the lazy dog, twice: the quick brown fox jumps over the lazy dog"
})

/** The names of one phase's objects, shared by the orchestrator and the phase process. */
export const Names = Schema.Struct({
  /** The consuming service; its queue is `<service>.sync`. */
  service: Schema.String,
  queue: Schema.String,
  exchange: Schema.String,
  deadLetterExchange: Schema.String,
  /** RabbitMQ connections are named `<connectionPrefix>-<role>`. */
  connectionPrefix: Schema.String
})
export type Names = typeof Names.Type

/** Fresh names for a phase of a run. */
export const makeNames = (run: string, phase: string): Names => {
  const service = `bench-${run}-${phase}`
  return {
    service,
    queue: `${service}.sync`,
    exchange: `bench.${run}.${phase}.events`,
    deadLetterExchange: `bench.${run}.${phase}.dead`,
    connectionPrefix: `bench-${run}-${phase}`
  }
}

/** The local RabbitMQ. */
export const amqpUrl = "amqp://guest:guest@127.0.0.1:5672"
