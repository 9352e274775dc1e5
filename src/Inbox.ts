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
  /** When the earliest waiting row is due, if any. */
  readonly nextDueAt: (consumer: string) => Effect.Effect<number | null, SqlError.SqlError>
  /** All waiting rows, earliest due first. */
  readonly waiting: (consumer: string) => Effect.Effect<ReadonlyArray<WaitingRow>, SqlError.SqlError>
  /** Removes a waiting row (applied or found stale). */
  readonly release: (consumer: string, messageId: string) => Effect.Effect<void, SqlError.SqlError>
  /** Moves an event to the dead rows (removing its waiting row, if any). */
  readonly deadLetter: (row: DeadRow) => Effect.Effect<void, SqlError.SqlError>
  /** Dead rows, oldest first. */
  readonly deadLetters: (consumer: string) => Effect.Effect<ReadonlyArray<DeadRow>, SqlError.SqlError>
  /** Moves a dead row back to waiting, due now with its attempts reset; false when there is none. */
  readonly replay: (consumer: string, messageId: string, now: number) => Effect.Effect<boolean, SqlError.SqlError>
  /** Deletes dedupe records received before the given time (retention); returns how many. */
  readonly prune: (receivedBefore: number) => Effect.Effect<number, SqlError.SqlError>
}>()("entity-sync/Inbox") {}
