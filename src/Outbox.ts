/**
 * The transactional outbox (R2): entity events are appended in the same transaction as the entity write,
 * and the relay later claims, publishes and marks them. Appending is possible only inside
 * `Outbox.transaction`, and the broker is not reachable there — both are compile errors otherwise.
 *
 * @since 0.1.0
 */
import { Context, Effect, Option } from "effect"
import type { SqlError } from "effect/sql"
import type { Broker } from "./Broker.ts"
import type { Envelope } from "./Envelope.ts"
import type { Transactor } from "./Transactor.ts"

/** An outbox row. Times are epoch milliseconds. */
export interface OutboxRow {
  /** Commit-independent sequence number; never used as a "last seen" cursor. */
  readonly seq: number
  readonly envelope: Envelope
  readonly createdAt: number
  readonly attempts: number
  readonly nextAttemptAt: number
  readonly lastError: string | null
  readonly publishedAt: number | null
}

/**
 * The transaction-scoped capability to append events; only `Outbox.transaction` provides it. Appended
 * events are buffered and written in append order, in the transaction, when its body succeeds.
 */
export class OutboxTransaction extends Context.Service<OutboxTransaction, {
  readonly append: (envelopes: ReadonlyArray<Envelope>) => Effect.Effect<void, SqlError.SqlError>
}>()("entity-sync/OutboxTransaction") {}

/** Fails to type-check when `R` needs the broker (R2: nothing is published from inside a transaction). */
export type NoBrokerInside<R> = [Extract<R, Broker>] extends [never] ? unknown
  : { readonly "R2: the broker is not reachable inside an outbox transaction": never }

/** Runs an effect in one transaction in which events can be appended to the outbox. */
export type TransactionFn = <A, E, R>(
  effect: Effect.Effect<A, E, R> & NoBrokerInside<R>
) => Effect.Effect<A, E | SqlError.SqlError, Exclude<R, OutboxTransaction>>

/** The outbox of one owner service. */
export class Outbox extends Context.Service<Outbox, {
  /** R2: one transaction for entity writes and their events. */
  readonly transaction: TransactionFn
  /**
   * Claims up to `limit` unpublished rows that are due, oldest first, for the lease duration: concurrent
   * relays skip claimed rows; rows of a relay that died become claimable again when the lease ends.
   */
  readonly claim: (limit: number) => Effect.Effect<ReadonlyArray<OutboxRow>, SqlError.SqlError>
  /** Marks rows as published (confirmed by the broker). */
  readonly markPublished: (seqs: ReadonlyArray<number>) => Effect.Effect<void, SqlError.SqlError>
  /** Records a failed publish: attempts + 1, the error, and when to try again. */
  readonly markFailed: (
    seqs: ReadonlyArray<number>,
    failure: { readonly error: string; readonly nextAttemptAt: number }
  ) => Effect.Effect<void, SqlError.SqlError>
  /** Completes when events were committed after the call began (may also complete spuriously). */
  readonly awaitAppended: Effect.Effect<void, SqlError.SqlError>
  /** Unpublished rows: how many, and when the oldest was created (relay lag). */
  readonly pending: Effect.Effect<{ readonly count: number; readonly oldestCreatedAt: number | null }, SqlError.SqlError>
  /** Rows in sequence order, for operators and replays (R9). */
  readonly rows: (options?: { readonly afterSeq?: number; readonly limit?: number }) => Effect.Effect<
    ReadonlyArray<OutboxRow>,
    SqlError.SqlError
  >
  /** Deletes rows published before the given time (retention, R9); returns how many. */
  readonly prune: (publishedBefore: number) => Effect.Effect<number, SqlError.SqlError>
}>()("entity-sync/Outbox") {}

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
 * succeeds; so the events of the outermost transaction keep their append order.
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
      const tx = OutboxTransaction.of({
        append: (envelopes) =>
          Effect.suspend(() =>
            running.has(tx)
              ? Effect.sync(() => pushAll(open.buffer, envelopes))
              : Effect.die(new Error("entity-sync: OutboxTransaction.append called after its transaction ended"))
          )
      })
      const body = Effect.sync(() => running.set(tx, open)).pipe(
        Effect.andThen(Effect.provideService(effect, OutboxTransaction, tx)),
        Effect.tap(() =>
          Effect.suspend(() => {
            running.delete(tx)
            return parent === undefined ? write(open) : Effect.sync(() => pushAll(parent.buffer, open.buffer.splice(0)))
          })
        ),
        Effect.onExit(() => Effect.sync(() => running.delete(tx)))
      )
      const run = transactor.withTransaction(body)
      return parent === undefined
        ? Effect.tap(run, () => (open.root.wrote ? afterCommit : Effect.void))
        : Effect.andThen(write(parent), run)
    })

  return { transaction, flushPending: Effect.flatMap(current, (open) => (open === undefined ? Effect.void : write(open))) }
}

/** Runs `effect` in an outbox transaction of the current service (see `Outbox.transaction`). */
export const transaction = <A, E, R>(
  effect: Effect.Effect<A, E, R> & NoBrokerInside<R>
): Effect.Effect<A, E | SqlError.SqlError, Exclude<R, OutboxTransaction> | Outbox> =>
  Outbox.use((outbox) => outbox.transaction(effect))
