/**
 * The transactional outbox (R2): entity events are appended in the same transaction as the entity write,
 * and the relay later claims, publishes and marks them. Appending is possible only inside
 * `Outbox.transaction`, and the broker is not reachable there — both are compile errors otherwise.
 *
 * @since 0.1.0
 */
import { Context, type Effect } from "effect"
import type { SqlError } from "effect/sql"
import type { Broker } from "./Broker.ts"
import type { Envelope } from "./Envelope.ts"
import type { OutboxTransaction } from "./internal/OutboxTransaction.ts"

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

export {
  /**
   * Dies with `PublishedInsideTransaction` inside an open outbox transaction: what a publish path calls to
   * refuse a `Broker` value captured before the transaction and used in it (R2), which the types cannot see.
   */
  ensureOutsideTransaction,
  /** Whether the current fiber runs inside an open outbox transaction. */
  insideTransaction,
  /**
   * The transaction-scoped capability to append events; only `Outbox.transaction` provides it (a value
   * made any other way does not compile). Used after its transaction ended it dies (R2) and writes nothing.
   */
  OutboxTransaction,
  /** A defect (R2): an `OutboxTransaction` used after its transaction ended; nothing was written. */
  OutboxTransactionEnded,
  /** A defect (R2): an `OutboxTransaction` that `Outbox.transaction` did not make; nothing was written. */
  OutboxTransactionForged,
  /** A defect (R2): a publish from inside an open outbox transaction (see `ensureOutsideTransaction`). */
  PublishedInsideTransaction
} from "./internal/OutboxTransaction.ts"

/**
 * Which published rows `Outbox.republish` makes due again: rows created at or after `from` and before `to`
 * (epoch milliseconds), optionally of one entity and one producer, after `afterSeq`, at most `limit`.
 */
export interface RepublishRange {
  /** Rows created at or after this time (epoch milliseconds). */
  readonly from: number
  /** Rows created before this time (epoch milliseconds). */
  readonly to: number
  /** Only events of this entity. */
  readonly entity?: string
  /** Only events of this producer (the envelope's `producer`). */
  readonly producer?: string
  /** Only rows after this sequence number: the `lastSeq` of the previous step. */
  readonly afterSeq?: number
  /** At most this many rows, the lowest sequence numbers first (default: every row in the range). */
  readonly limit?: number
}

/** What one `Outbox.republish` step did. */
export interface Republished {
  /** How many published rows became due again. */
  readonly count: number
  /** The highest sequence number among them (pass it as `afterSeq` to continue); null when none. */
  readonly lastSeq: number | null
}

/** How a claim picks rows. */
export type ClaimOptions =
  | {
    /**
     * Take an entity's rows only from its earliest unpublished one on (default false): whatever the number
     * of relays, the events of an entity are published in `seq` (hence version) order, at the cost of
     * serialized claims and of one claim per event for an entity whose earlier event is still in flight.
     */
    readonly orderedByEntity: true
  }
  | {
    readonly orderedByEntity?: false
    /**
     * Take only rows after this `seq`. A relay draining a backlog passes the last `seq` it claimed, so that
     * a claim starts where the previous one stopped instead of stepping over the rows published since (they
     * stay in the index of unpublished rows until vacuum: a claim behind 500 000 of them takes milliseconds
     * instead of a fraction of one). Due rows at or below it (committed late, rescheduled, republished, or
     * a dead claimer's) are left to a claim without it, which the relay makes at least once a second.
     */
    readonly afterSeq?: number
  }

/** How long a claim keeps rows from other claimers by default, in milliseconds: 30 seconds. */
export const defaultLeaseMillis = 30_000

/** Rows one retention statement deletes at most (`Outbox.pruneBatch`, `Inbox.pruneBatch`): 10 000. */
export const pruneBatchSize = 10_000

/** Fails to type-check when `R` needs the broker (R2: nothing is published from inside a transaction). */
export type NoBrokerInside<R> = [Extract<R, Broker>] extends [never] ? unknown
  : { readonly "R2: the broker is not reachable inside an outbox transaction": never }

/** Runs an effect in one transaction in which events can be appended to the outbox. */
export type TransactionFn = <A, E, R>(
  effect: Effect.Effect<A, E, R> & NoBrokerInside<R>
) => Effect.Effect<A, E | SqlError.SqlError, Exclude<R, OutboxTransaction>>

/** The outbox of one owner service. */
export class Outbox extends Context.Service<Outbox, {
  /**
   * R2: one transaction for entity writes and their events.
   *
   * What holds R2 besides the types: the `OutboxTransaction` a transaction provides can be made by
   * `Outbox.transaction` alone (its shape carries a brand no code outside the package can write), and it
   * refuses use once its transaction ended — `append` and the owner's row writes die with
   * `OutboxTransactionEnded` before writing anything, so a service leaked out of the transaction cannot
   * save an entity without its event. What the types cannot see: a `Broker` service value taken before the
   * transaction (`const broker = yield* Broker`) and called inside it is a plain value, not a requirement,
   * so `NoBrokerInside` does not catch it — publish before or after `Outbox.transaction`, never from a
   * value captured into it; the relay is the only publisher of entity events. At run time the broker
   * adapters refuse it with `ensureOutsideTransaction` (the transaction's fibers carry its open
   * `OutboxTransaction`).
   */
  readonly transaction: TransactionFn
  /**
   * Claims up to `limit` unpublished rows that are due, oldest first, for the lease duration: concurrent
   * relays skip claimed rows; rows of a relay that died become claimable again when the lease ends.
   * With `orderedByEntity`, a row is taken only when every earlier unpublished row of its entity is taken
   * by the same claim (none is leased to another claimer or waiting for a retry), so that relays publish
   * each entity's events in order (see `ClaimOptions`).
   */
  readonly claim: (limit: number, options?: ClaimOptions) => Effect.Effect<ReadonlyArray<OutboxRow>, SqlError.SqlError>
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
  readonly pending: Effect.Effect<
    { readonly count: number; readonly oldestCreatedAt: number | null },
    SqlError.SqlError
  >
  /** Rows in sequence order, for operators and replays (R9). */
  readonly rows: (options?: { readonly afterSeq?: number; readonly limit?: number }) => Effect.Effect<
    ReadonlyArray<OutboxRow>,
    SqlError.SqlError
  >
  /**
   * Replays a range (R9): marks the published rows of `range` that retention kept as unpublished and due
   * now (attempts reset), in one statement, so the relay publishes them again with their message ids.
   * Safe by R3/R4: a consumer that still holds a message's dedupe record drops it, one whose copy is at
   * that version or newer skips it. Unpublished rows are left alone. Step through a large range with
   * `limit` and `afterSeq` (each step commits on its own).
   */
  readonly republish: (range: RepublishRange) => Effect.Effect<Republished, SqlError.SqlError>
  /**
   * Deletes rows published before the given time (retention, R9) in statements of at most
   * `pruneBatchSize` rows, each committing on its own, until none is left; returns how many.
   */
  readonly prune: (publishedBefore: number) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Deletes at most `limit` rows published before the given time, oldest first, in one statement; returns
   * how many (fewer than `limit`: none is left, or the rest are locked by another statement).
   */
  readonly pruneBatch: (publishedBefore: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Takes the turn of a periodic task the instances of the service share (e.g. `"outbox prune"`): true
   * for at most one caller per `intervalMillis` (from the `Clock`'s now), whatever the number of instances;
   * false while another call took it within the interval.
   */
  readonly takeTurn: (task: string, intervalMillis: number) => Effect.Effect<boolean, SqlError.SqlError>
}>()("entity-sync/Outbox") {}

/** Runs `effect` in an outbox transaction of the current service (see `Outbox.transaction`). */
export const transaction = <A, E, R>(
  effect: Effect.Effect<A, E, R> & NoBrokerInside<R>
): Effect.Effect<A, E | SqlError.SqlError, Exclude<R, OutboxTransaction> | Outbox> =>
  Outbox.use((outbox) => outbox.transaction(effect))
