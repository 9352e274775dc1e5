/**
 * The PostgreSQL `Transactor`: `SqlClient.withTransaction`. Nested calls become savepoints of the outer
 * transaction, and every store of the service runs its statements on the transaction's connection.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { Transactor } from "../Transactor.ts"

/** Makes the `Transactor` of the current `SqlClient`. */
export const make: Effect.Effect<Transactor["Service"], never, SqlClient.SqlClient> = Effect.map(
  SqlClient.SqlClient,
  (sql) => Transactor.of({ withTransaction: sql.withTransaction })
)

/** The `Transactor` of the current `SqlClient`. */
export const layer: Layer.Layer<Transactor, never, SqlClient.SqlClient> = Layer.effect(Transactor, make)
