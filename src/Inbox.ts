/**
 * The consumer-side inbox: dedupe by (consumer, messageId) (R3), durable waiting rows for events whose
 * dependencies are missing (R5), and dead rows with their reason, listable and replayable.
 * Every write is meant to run in the same transaction as the apply it belongs to.
 *
 * @since 0.1.0
 */
import { Context, type Effect } from "effect"
import type { SqlError } from "effect/sql"
import type { Envelope } from "./Envelope.ts"
import type { EntityRef } from "./Errors.ts"

/** An event parked until what it waits for is applied. Times are epoch milliseconds. */
export interface WaitingRow {
  readonly consumer: string
  readonly messageId: string
  readonly envelope: Envelope
  readonly waitingFor: ReadonlyArray<EntityRef>
  /** Attempts made so far, in process and parked. */
  readonly attempts: number
  readonly nextAttemptAt: number
  readonly firstSeenAt: number
  readonly lastSeenAt: number
}

/** An event the consumer gave up on, with the reason. */
export interface DeadRow {
  readonly consumer: string
  readonly messageId: string
  readonly envelope: Envelope
  /** The error tag, e.g. `DependencyMissing`. */
  readonly error: string
  /** A readable reason. */
  readonly reason: string
  readonly waitingFor: ReadonlyArray<EntityRef>
  readonly attempts: number
  readonly firstSeenAt: number
  readonly lastSeenAt: number
}

/** The counts an operator's health check needs, from `count(*)` and `min(…)`, never from loading rows. */
export interface InboxStats {
  /** Events parked until their dependencies arrive. */
  readonly waiting: number
  /** Events given up on. */
  readonly dead: number
  /** When the longest-waiting parked event was first seen (epoch milliseconds), if any is parked. */
  readonly oldestWaitingSince: number | null
  /** When the oldest dead row was dead-lettered (its `lastSeenAt`, epoch milliseconds), if any. */
  readonly oldestDeadAt: number | null
}

/**
 * Which dead rows a page or a bulk replay takes; every given condition must hold (an empty list matches
 * nothing, an absent one everything).
 */
export interface DeadRowFilter {
  /** Only these error tags (exact match), e.g. `DependencyMissing`. */
  readonly errors?: ReadonlyArray<string>
  /** Only events of these entities (the envelope's `entity`). */
  readonly entities?: ReadonlyArray<string>
  /** Only rows dead-lettered (`lastSeenAt`) at or after this time, epoch milliseconds. */
  readonly from?: number
  /** Only rows dead-lettered (`lastSeenAt`) before this time, epoch milliseconds. */
  readonly to?: number
  /** Only these messages. */
  readonly messageIds?: ReadonlyArray<string>
}

/** Where a page of dead rows ends: the (`firstSeenAt`, `messageId`) of its last row. */
export interface DeadRowCursor {
  readonly firstSeenAt: number
  readonly messageId: string
}

/** Where a page of waiting rows ends: the (`nextAttemptAt`, `firstSeenAt`, `messageId`) of its last row. */
export interface WaitingRowCursor {
  readonly nextAttemptAt: number
  readonly firstSeenAt: number
  readonly messageId: string
}

/** One page of rows, and the cursor of the next page (null when this one is the last). */
export interface Page<A, Cursor> {
  readonly items: ReadonlyArray<A>
  readonly next: Cursor | null
}

/** The page size when none is given. */
export const defaultPageSize = 100

/** The largest page one call returns. */
export const maxPageSize = 1000

/** Records one retention statement deletes at most (`Inbox.pruneBatch`): 10 000. */
export { pruneBatchSize } from "./Outbox.ts"

/** How long a claim of parked events (`Inbox.claimDue`) keeps them from other instances by default: 30 s. */
export const defaultClaimLeaseMillis = 30_000

/** How many dead rows one statement of `replayMany` moves back. */
export const replayBatchSize = 500

/** A requested page size within 0…`maxPageSize` (`defaultPageSize` when absent or not a number). */
export const pageSize = (limit: number | undefined): number =>
  limit === undefined || !Number.isFinite(limit)
    ? defaultPageSize
    : Math.min(maxPageSize, Math.max(0, Math.floor(limit)))

/** Whether a dead row matches a filter (the memory inbox's predicate, and the meaning of each field). */
export const matchesDeadRow = (filter: DeadRowFilter | undefined) => (row: DeadRow): boolean =>
  filter === undefined ||
  ((filter.errors === undefined || filter.errors.includes(row.error)) &&
    (filter.entities === undefined || filter.entities.includes(row.envelope.entity)) &&
    (filter.from === undefined || row.lastSeenAt >= filter.from) &&
    (filter.to === undefined || row.lastSeenAt < filter.to) &&
    (filter.messageIds === undefined || filter.messageIds.includes(row.messageId)))

/** An entity and the lowest version among its parked events (`Inbox.earliestWaiting`). */
export interface WaitingVersion extends EntityRef {
  readonly version: number
}

/** The inbox store shared by the consumers of one service. */
export class Inbox extends Context.Service<Inbox, {
  /** Records a message as received; false when it was recorded before (a duplicate). */
  readonly record: (consumer: string, messageId: string) => Effect.Effect<boolean, SqlError.SqlError>
  /** `record` for many messages in one statement; returns the ones not recorded before. */
  readonly recordMany: (consumer: string, messageIds: ReadonlyArray<string>) => Effect.Effect<
    ReadonlySet<string>,
    SqlError.SqlError
  >
  /** Deletes the dedupe records of messages, e.g. ones recorded earlier in a transaction but left unsettled. */
  readonly forget: (consumer: string, messageIds: ReadonlyArray<string>) => Effect.Effect<void, SqlError.SqlError>
  /** Parks an event (insert or replace by messageId). */
  readonly park: (row: WaitingRow) => Effect.Effect<void, SqlError.SqlError>
  /** Makes every waiting row that waits for one of `refs` due now; returns how many. */
  readonly wake: (consumer: string, refs: ReadonlyArray<EntityRef>) => Effect.Effect<number, SqlError.SqlError>
  /** Waiting rows due at `now`, earliest first. */
  readonly due: (consumer: string, now: number, limit: number) => Effect.Effect<
    ReadonlyArray<WaitingRow>,
    SqlError.SqlError
  >
  /**
   * Claims up to `limit` waiting rows due at `now` that no other claim holds, earliest first, until
   * `now + leaseMillis`: concurrent claimers (the instances of a consumer) never get the same row while its
   * lease lasts. Parking a row again, releasing it or dead-lettering it ends its claim; the rows of an
   * instance that died become claimable when their lease ends.
   */
  readonly claimDue: (consumer: string, now: number, limit: number, leaseMillis: number) => Effect.Effect<
    ReadonlyArray<WaitingRow>,
    SqlError.SqlError
  >
  /**
   * The lowest version among the parked events of each of `refs` (the event's own entity, not what it
   * waits for), hard deletes left out; entities without such events are left out. Ordered lanes park an
   * event behind an earlier parked event of its entity. A hard delete waits for the copies that reference
   * its entity, which a later event of the entity (its re-creation) may be what they reference: that event
   * is not held behind it and supersedes it.
   */
  readonly earliestWaiting: (consumer: string, refs: ReadonlyArray<EntityRef>) => Effect.Effect<
    ReadonlyArray<WaitingVersion>,
    SqlError.SqlError
  >
  /** When the earliest waiting row is due and not held by a claim, if any. */
  readonly nextDueAt: (consumer: string) => Effect.Effect<number | null, SqlError.SqlError>
  /** All waiting rows, earliest due first. Loads every row: operators use `waitingPage` and `stats`. */
  readonly waiting: (consumer: string) => Effect.Effect<ReadonlyArray<WaitingRow>, SqlError.SqlError>
  /**
   * At most `limit` waiting rows (default `defaultPageSize`, at most `maxPageSize`), earliest due first,
   * after the cursor of the previous page.
   */
  readonly waitingPage: (consumer: string, options?: {
    readonly limit?: number
    readonly after?: WaitingRowCursor
  }) => Effect.Effect<Page<WaitingRow, WaitingRowCursor>, SqlError.SqlError>
  /**
   * Removes a waiting row (applied or found stale); false when there was none. A retry of a parked event
   * claims it this way, so that two instances retrying it at once cannot both apply it (R3).
   */
  readonly release: (consumer: string, messageId: string) => Effect.Effect<boolean, SqlError.SqlError>
  /** Moves an event to the dead rows (removing its waiting row, if any). */
  readonly deadLetter: (row: DeadRow) => Effect.Effect<void, SqlError.SqlError>
  /** All dead rows, oldest first. Loads every row: operators use `deadLetterPage` and `stats`. */
  readonly deadLetters: (consumer: string) => Effect.Effect<ReadonlyArray<DeadRow>, SqlError.SqlError>
  /**
   * At most `limit` dead rows matching `filter` (default `defaultPageSize`, at most `maxPageSize`), oldest
   * first (by `firstSeenAt`, then `messageId`), after the cursor of the previous page. The cursor is
   * stable: rows dead-lettered or replayed meanwhile neither repeat nor shift the rows of later pages.
   */
  readonly deadLetterPage: (consumer: string, options?: {
    readonly limit?: number
    readonly after?: DeadRowCursor
    readonly filter?: DeadRowFilter
  }) => Effect.Effect<Page<DeadRow, DeadRowCursor>, SqlError.SqlError>
  /** How many rows wait and are dead, and the oldest of each, counted by the database. */
  readonly stats: (consumer: string) => Effect.Effect<InboxStats, SqlError.SqlError>
  /** Moves a dead row back to waiting, due now with its attempts reset; false when there is none. */
  readonly replay: (consumer: string, messageId: string, now: number) => Effect.Effect<boolean, SqlError.SqlError>
  /**
   * Moves every dead row matching `filter` back to waiting, due at `now` with its attempts reset, in
   * statements of at most `replayBatchSize` rows (each commits on its own unless the call runs in a
   * transaction); returns how many.
   */
  readonly replayMany: (
    consumer: string,
    filter: DeadRowFilter,
    now: number
  ) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Deletes dedupe records received before the given time (retention) in statements of at most
   * `pruneBatchSize` records, each committing on its own, until none is left; returns how many.
   */
  readonly prune: (receivedBefore: number) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Deletes at most `limit` dedupe records received before the given time, oldest first, in one statement;
   * returns how many.
   */
  readonly pruneBatch: (receivedBefore: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Takes the turn of a periodic task the instances of the service share (e.g. the retention clean-up of
   * a consumer): true for at most one caller per `intervalMillis` (from the `Clock`'s now), false while
   * another call took it within the interval.
   */
  readonly takeTurn: (task: string, intervalMillis: number) => Effect.Effect<boolean, SqlError.SqlError>
}>()("entity-sync/Inbox") {}
