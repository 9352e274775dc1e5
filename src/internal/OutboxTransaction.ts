/**
 * The machinery behind R2 that the package does not export: the `OutboxTransaction` service, whose values
 * only `Outbox.transaction` makes (its shape carries a brand keyed by a symbol of this module), which
 * of them are open, the guard the owner's row writes go through, and the buffered appends the outbox
 * implementations build their `transaction` with. `Outbox` re-exports the service and its defects.
 *
 * @since 0.1.0
 */
import { Context, Effect, Option, Schema } from "effect"
import type { SqlError } from "effect/sql"
import type { Envelope } from "../Envelope.ts"
import type { TransactionFn } from "../Outbox.ts"
import type { Transactor } from "../Transactor.ts"

/** The key of the brand of `OutboxTransaction` values; not reachable from outside the package. */
const TypeId: unique symbol = Symbol("entity-sync/OutboxTransaction")

/**
 * The transaction-scoped capability to append events; only `Outbox.transaction` provides it (its shape
 * carries a brand that no code outside the package can write, so a hand-made value does not compile).
 * Appended events are buffered and written in append order, in the transaction, when its body succeeds.
 * Used after its transaction ended (or if it was not made by `Outbox.transaction`), it dies with
 * `OutboxTransactionEnded` (`OutboxTransactionForged`) and writes nothing.
 */
export class OutboxTransaction extends Context.Service<OutboxTransaction, {
  readonly [TypeId]: typeof TypeId
  readonly append: (envelopes: ReadonlyArray<Envelope>) => Effect.Effect<void, SqlError.SqlError>
}>()("entity-sync/OutboxTransaction") {}

/**
 * A defect (R2): an `OutboxTransaction` was used after its transaction ended — it leaked out of
 * `Outbox.transaction` (returned, or captured by a fiber that outlived it). Nothing was written.
 */
export class OutboxTransactionEnded extends Schema.TaggedError<OutboxTransactionEnded>()("OutboxTransactionEnded", {
  /** What was attempted: `append`, or the owner row write (`put`, `create`). */
  operation: Schema.String
}) {
  override get message() {
    return `R2: ${this.operation} through an OutboxTransaction whose transaction has ended (it leaked out of ` +
      `Outbox.transaction); nothing was written — run the write inside Outbox.transaction`
  }
}

/**
 * A defect (R2): the `OutboxTransaction` in use was not made by `Outbox.transaction` (a copy of one, or a
 * value made with a cast or a mock). Nothing was written.
 */
export class OutboxTransactionForged extends Schema.TaggedError<OutboxTransactionForged>()("OutboxTransactionForged", {
  /** What was attempted: `append`, or the owner row write (`put`, `create`). */
  operation: Schema.String
}) {
  override get message() {
    return `R2: ${this.operation} through an OutboxTransaction that Outbox.transaction did not make; nothing ` +
      `was written — run the write inside Outbox.transaction`
  }
}

/** Whether each `OutboxTransaction` made here is still open (its transaction's body is running). */
const opened = new WeakMap<OutboxTransaction["Service"], { open: boolean }>()

/** Dies (R2) unless `tx` was made by `Outbox.transaction` and its transaction is still open. */
const ensureOpen = (tx: OutboxTransaction["Service"], operation: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    const state = opened.get(tx)
    if (state === undefined) return Effect.die(new OutboxTransactionForged({ operation }))
    return state.open ? Effect.void : Effect.die(new OutboxTransactionEnded({ operation }))
  })

/**
 * Runs an owner row write (`operation`) only inside an open `Outbox.transaction`: it needs the
 * `OutboxTransaction` and dies (R2) before writing when that one has ended or was not made by
 * `Outbox.transaction`, so a leaked or hand-made service cannot save an entity without its event.
 */
export const whileOpen = <A, E, R>(
  operation: string,
  write: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R | OutboxTransaction> =>
  Effect.flatMap(Effect.service(OutboxTransaction), (tx) => Effect.andThen(ensureOpen(tx, operation), write))

/**
 * A defect (R2): something tried to publish to the broker from inside an open outbox transaction (e.g. a
 * `Broker` service value taken before the transaction and called in it, which the types cannot see).
 */
export class PublishedInsideTransaction extends Schema.TaggedError<PublishedInsideTransaction>()(
  "PublishedInsideTransaction",
  {
    /** What was attempted, e.g. `publish`. */
    operation: Schema.String
  }
) {
  override get message() {
    return `R2: ${this.operation} from inside an outbox transaction; nothing is published from inside a ` +
      `business transaction — publish after Outbox.transaction returns, or leave entity events to the relay`
  }
}

/** Whether the current fiber runs inside an open outbox transaction (its body, or a fiber it forked). */
export const insideTransaction: Effect.Effect<boolean> = Effect.map(
  Effect.serviceOption(OutboxTransaction),
  (tx) => Option.isSome(tx) && opened.get(tx.value)?.open === true
)

/**
 * Dies with `PublishedInsideTransaction` when the current fiber runs inside an open outbox transaction:
 * for publish paths (a broker adapter's `publish`) to refuse what the types cannot see (R2).
 */
export const ensureOutsideTransaction = (operation: string): Effect.Effect<void> =>
  Effect.flatMap(
    insideTransaction,
    (inside) => (inside ? Effect.die(new PublishedInsideTransaction({ operation })) : Effect.void)
  )

/**
 * Writes events appended in an outbox transaction, in append order, inside that transaction. Called when
 * the outermost transaction's body has succeeded (just before commit), and earlier only when the
 * transaction reads the outbox or starts a nested one.
 */
export type Flush = (envelopes: ReadonlyArray<Envelope>) => Effect.Effect<void, SqlError.SqlError>

/** `Outbox.transaction` of an implementation, and how its reads see the events appended before them. */
export interface BufferedAppends {
  readonly transaction: TransactionFn
  /**
   * Inside an outbox transaction, writes the events its body appended so far (outside one, does nothing).
   * The outbox runs it before its reads (`claim`, `rows`, `pending`), so a transaction reads its own events.
   */
  readonly flushPending: Effect.Effect<void, SqlError.SqlError>
}

interface Open {
  /** Events appended and not written yet, in append order. */
  readonly buffer: Array<Envelope>
  /** Whether events were written in the outermost transaction (so it wakes the relay after commit). */
  readonly root: { wrote: boolean }
}

/**
 * Builds `Outbox.transaction` for an implementation. Appends are buffered in memory, in order; when the
 * effect succeeds, the buffer is written with `flush` in the same `Transactor` transaction, just before it
 * commits, and `afterCommit` runs once the commit returned (e.g. to wake the relay) if events were written.
 * An effect that fails appends nothing. A nested transaction of the same outbox first writes what the
 * enclosing one buffered (outside its own savepoint), then hands its events to the enclosing one when it
 * succeeds; so the events of the outermost transaction keep their append order. The `OutboxTransaction`
 * a transaction provides is open while its body runs, and refuses every use after (R2).
 */
export const makeBufferedAppends = (
  transactor: Transactor["Service"],
  flush: Flush,
  afterCommit: Effect.Effect<void>
): BufferedAppends => {
  // The transactions of this outbox whose body is running, by the OutboxTransaction service they provide.
  const running = new WeakMap<OutboxTransaction["Service"], Open>()
  const pushAll = (buffer: Array<Envelope>, envelopes: ReadonlyArray<Envelope>) => {
    for (const envelope of envelopes) buffer.push(envelope)
  }
  const write = (open: Open) =>
    Effect.suspend(() => {
      if (open.buffer.length === 0) return Effect.void
      open.root.wrote = true
      return flush(open.buffer.splice(0))
    })
  const current = Effect.map(
    Effect.serviceOption(OutboxTransaction),
    (tx) => (Option.isSome(tx) ? running.get(tx.value) : undefined)
  )

  const transaction: TransactionFn = (effect) =>
    Effect.flatMap(current, (parent) => {
      const open: Open = { buffer: [], root: parent?.root ?? { wrote: false } }
      const state = { open: false }
      const tx = OutboxTransaction.of({
        [TypeId]: TypeId,
        append: (envelopes) =>
          Effect.andThen(ensureOpen(tx, "append"), Effect.sync(() => pushAll(open.buffer, envelopes)))
      })
      opened.set(tx, state)
      const end = Effect.sync(() => {
        state.open = false
        running.delete(tx)
      })
      const body = Effect.sync(() => {
        state.open = true
        running.set(tx, open)
      }).pipe(
        Effect.andThen(Effect.provideService(effect, OutboxTransaction, tx)),
        Effect.tap(() =>
          Effect.andThen(
            end,
            parent === undefined ? write(open) : Effect.sync(() => pushAll(parent.buffer, open.buffer.splice(0)))
          )
        ),
        Effect.onExit(() => end)
      )
      const run = transactor.withTransaction(body)
      return parent === undefined
        ? Effect.tap(run, () => (open.root.wrote ? afterCommit : Effect.void))
        : Effect.andThen(write(parent), run)
    })

  return {
    transaction,
    flushPending: Effect.flatMap(current, (open) => (open === undefined ? Effect.void : write(open)))
  }
}
