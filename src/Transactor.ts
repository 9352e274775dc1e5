/**
 * The transaction boundary of a service's database: the stores of one service (outbox, source rows,
 * inbox, copies) share it so that an entity write and its event, or an apply and its inbox record,
 * commit together or not at all (R2, R3).
 *
 * @since 0.1.0
 */
import { Context, type Effect } from "effect"
import type { SqlError } from "effect/sql"

/** Runs effects in one database transaction; nested calls join the outer transaction. */
export class Transactor extends Context.Service<Transactor, {
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError.SqlError, R>
  /** Asks the database whether it answers (R12: an outage is told apart from a failing statement). */
  readonly probe: Effect.Effect<void, SqlError.SqlError>
}>()("entity-sync/Transactor") {}
