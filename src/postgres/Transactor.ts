/**
 * The PostgreSQL `Transactor`: `SqlClient.withTransaction`. Nested calls become savepoints of the outer
 * transaction, and every store of the service runs its statements on the transaction's connection.
 * A `ROLLBACK` or `COMMIT` that fails because the connection is gone (a terminated backend, a restarted
 * server) is an `SqlError` failure like any other, not a defect: the transaction did not commit, the pool
 * drops the connection, and the caller's retry decides what happens next.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { SqlClient, SqlError } from "effect/sql"
import { Transactor } from "../Transactor.ts"

/** Makes the `Transactor` of the current `SqlClient`. */
export const make: Effect.Effect<Transactor["Service"], never, SqlClient.SqlClient> = Effect.map(
  SqlClient.SqlClient,
  (sql) =>
    Transactor.of({
      withTransaction: (effect) =>
        sql.withTransaction(effect).pipe(
          Effect.catchDefect((defect) => SqlError.isSqlError(defect) ? Effect.fail(defect) : Effect.die(defect))
        ),
      probe: sql`SELECT 1`.pipe(Effect.asVoid)
    })
)

/** The `Transactor` of the current `SqlClient`. */
export const layer: Layer.Layer<Transactor, never, SqlClient.SqlClient> = Layer.effect(Transactor, make)
