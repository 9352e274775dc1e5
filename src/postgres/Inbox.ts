/**
 * The PostgreSQL inbox: dedupe records, waiting rows and dead rows in the service's database, so each
 * write commits or rolls back with the apply it belongs to. Every operation is a single statement.
 *
 * A waiting row's `wake_keys` column is generated from what it waits for and GIN-indexed: `wake` finds
 * the rows waiting for an entity through the index instead of scanning the parked events.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Effect, Schema } from "effect"
import { Envelope } from "../Envelope.ts"
import { EntityRef } from "../Errors.ts"
import {
  type DeadRow,
  type DeadRowCursor,
  type DeadRowFilter,
  Inbox,
  type InboxStats,
  type Page,
  pageSize,
  pruneBatchSize,
  replayBatchSize,
  type WaitingRow,
  type WaitingRowCursor,
  type WaitingVersion
} from "../Inbox.ts"
import * as Retention from "../internal/Retention.ts"
import { decodeCount, decodeRows, Int8, NullableInt8 } from "./Columns.ts"
import { turnsTable } from "./Migrations.ts"
import { makeTakeTurn } from "./Outbox.ts"
import type { Tables } from "./Tables.ts"

const WaitingFor = Schema.Array(EntityRef)

const Waiting = Schema.Struct({
  consumer: Schema.String,
  messageId: Schema.String,
  envelope: Envelope,
  waitingFor: WaitingFor,
  attempts: Schema.Int,
  nextAttemptAt: Int8,
  firstSeenAt: Int8,
  lastSeenAt: Int8
})

const Dead = Schema.Struct({
  consumer: Schema.String,
  messageId: Schema.String,
  envelope: Envelope,
  error: Schema.String,
  reason: Schema.String,
  waitingFor: WaitingFor,
  attempts: Schema.Int,
  firstSeenAt: Int8,
  lastSeenAt: Int8
})

const EarliestWaiting = Schema.Struct({ entity: Schema.String, id: Schema.String, version: Int8 })

const NextDue = Schema.Struct({ nextDueAt: NullableInt8 })

const Stats = Schema.Struct({
  waiting: Int8,
  dead: Int8,
  oldestWaitingSince: NullableInt8,
  oldestDeadAt: NullableInt8
})

/** The first `limit` of `rows` (fetched with one more), with the cursor of the next page when more follow. */
const pageOf = <A, Cursor>(rows: ReadonlyArray<A>, limit: number, cursorOf: (row: A) => Cursor): Page<A, Cursor> => {
  const items = rows.slice(0, limit)
  const last = items[items.length - 1]
  return { items, next: rows.length > limit && last !== undefined ? cursorOf(last) : null }
}

const Recorded = Schema.Struct({ messageId: Schema.String })

/** Only the fields of the refs, in a fixed shape, for the jsonb `waiting_for` column. */
const refsJson = (refs: ReadonlyArray<EntityRef>) => refs.map(({ entity, id }) => ({ entity, id }))

/** Makes the inbox on `tables`. */
export const make = (tables: Tables): Effect.Effect<Inbox["Service"], never, PgClient.PgClient> =>
  Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    const sql = pg.withoutTransforms()
    const inbox = sql(tables.inbox)
    const waitingTable = sql(tables.waiting)
    const deadTable = sql(tables.dead)
    const waitingColumns = sql.literal(
      `consumer, message_id AS "messageId", envelope, waiting_for AS "waitingFor", attempts, ` +
        `next_attempt_at AS "nextAttemptAt", first_seen_at AS "firstSeenAt", last_seen_at AS "lastSeenAt"`
    )
    const deadColumns = sql.literal(
      `consumer, message_id AS "messageId", envelope, error, reason, waiting_for AS "waitingFor", attempts, ` +
        `first_seen_at AS "firstSeenAt", last_seen_at AS "lastSeenAt"`
    )
    const replaceWaiting = sql.literal(
      `ON CONFLICT (consumer, message_id) DO UPDATE SET envelope = EXCLUDED.envelope, ` +
        `waiting_for = EXCLUDED.waiting_for, attempts = EXCLUDED.attempts, ` +
        `next_attempt_at = EXCLUDED.next_attempt_at, first_seen_at = EXCLUDED.first_seen_at, ` +
        `last_seen_at = EXCLUDED.last_seen_at, claimed_until = NULL`
    )
    const dueOrder = sql.literal("ORDER BY next_attempt_at, first_seen_at, message_id")
    const decodeWaiting = decodeRows(Waiting, "waiting")
    const decodeDead = decodeRows(Dead, "dead")
    const decodeNextDue = decodeRows(NextDue, "waiting")
    const decodeEarliest = decodeRows(EarliestWaiting, "waiting")
    const decodeStats = decodeRows(Stats, "inbox statistics")
    const decodeWoken = decodeCount("waiting")
    const decodePruned = decodeCount("inbox")
    const decodeRecorded = decodeRows(Recorded, "inbox")

    const record = (consumer: string, messageId: string) =>
      Effect.flatMap(
        Clock.currentTimeMillis,
        (now) =>
          sql`INSERT INTO ${inbox} (consumer, message_id, received_at) VALUES (${consumer}, ${messageId}, ${now})
          ON CONFLICT DO NOTHING RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0))
      )

    // Inserted in message id order, so two transactions recording overlapping sets cannot deadlock.
    const recordMany = (consumer: string, messageIds: ReadonlyArray<string>) =>
      messageIds.length === 0 ?
        Effect.succeed(new Set<string>()) :
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          sql`INSERT INTO ${inbox} (consumer, message_id, received_at)
          SELECT ${consumer}, m.id, ${now} FROM unnest(${[...new Set(messageIds)].sort()}::text[]) AS m(id)
          ORDER BY m.id
          ON CONFLICT DO NOTHING RETURNING message_id AS "messageId"`.pipe(
            Effect.flatMap(decodeRecorded),
            Effect.map((rows) => new Set(rows.map((row) => row.messageId)))
          ))

    const forget = (consumer: string, messageIds: ReadonlyArray<string>) =>
      messageIds.length === 0 ?
        Effect.void :
        sql`DELETE FROM ${inbox} WHERE consumer = ${consumer} AND message_id = ANY(${messageIds}::text[])`.pipe(
          Effect.asVoid
        )

    const park = (row: WaitingRow) =>
      sql`INSERT INTO ${waitingTable} ${
        sql.insert({
          consumer: row.consumer,
          message_id: row.messageId,
          envelope: pg.json(row.envelope),
          waiting_for: pg.json(refsJson(row.waitingFor)),
          attempts: row.attempts,
          next_attempt_at: row.nextAttemptAt,
          first_seen_at: row.firstSeenAt,
          last_seen_at: row.lastSeenAt
        })
      } ${replaceWaiting}`.pipe(Effect.asVoid)

    const wake = (consumer: string, refs: ReadonlyArray<EntityRef>) =>
      refs.length === 0 ? Effect.succeed(0) : Effect.flatMap(Clock.currentTimeMillis, (now) =>
        sql`WITH woken AS (
            UPDATE ${waitingTable} SET next_attempt_at = least(next_attempt_at, ${now})
            WHERE consumer = ${consumer} AND wake_keys && ${sql(tables.refKeys)}(${pg.json(refsJson(refs))})
            RETURNING 1
          )
          SELECT count(*) AS count FROM woken`.pipe(Effect.flatMap(decodeWoken)))

    const due = (consumer: string, now: number, limit: number) =>
      sql`SELECT ${waitingColumns} FROM ${waitingTable}
        WHERE consumer = ${consumer} AND next_attempt_at <= ${now}
        ${dueOrder} LIMIT ${Math.max(0, Math.floor(limit))}`.pipe(Effect.flatMap(decodeWaiting))

    // The rows are picked in due order and locked, skipping rows another claim or an apply holds; a claim
    // whose lease ended is taken over (its instance died or was too slow: `release` still lets only one
    // apply win).
    const claimDue = (consumer: string, now: number, limit: number, leaseMillis: number) =>
      sql`WITH picked AS (
          SELECT message_id FROM ${waitingTable}
          WHERE consumer = ${consumer} AND next_attempt_at <= ${now}::bigint
            AND (claimed_until IS NULL OR claimed_until <= ${now}::bigint)
          ${dueOrder} LIMIT ${Math.max(0, Math.floor(limit))}
          FOR UPDATE SKIP LOCKED
        ), claimed AS (
          UPDATE ${waitingTable} AS w SET claimed_until = ${now + Math.max(0, Math.floor(leaseMillis))}::bigint
          FROM picked WHERE w.consumer = ${consumer} AND w.message_id = picked.message_id
          RETURNING w.*
        )
        SELECT ${waitingColumns} FROM claimed ${dueOrder}`.pipe(Effect.flatMap(decodeWaiting))

    // One probe of the entity index (migration 7) per ref. The rows are locked FOR SHARE: a row another
    // transaction is retrying (deleting) is waited for and then skipped, and a retry that has not deleted its
    // row yet waits for this transaction, so a later event parked behind it is there when the retry wakes it.
    const earliestWaiting = (consumer: string, refs: ReadonlyArray<EntityRef>) =>
      refs.length === 0 ? Effect.succeed<ReadonlyArray<WaitingVersion>>([]) : sql`WITH found AS (
          SELECT r.entity, r.id, (w.envelope ->> 'version')::bigint AS version
          FROM unnest(${refs.map((r) => r.entity)}::text[], ${refs.map((r) => r.id)}::text[]) AS r(entity, id)
          JOIN ${waitingTable} AS w ON w.consumer = ${consumer}
            AND (w.envelope ->> 'entity') = r.entity AND (w.envelope ->> 'entityId') = r.id
            AND (w.envelope ->> 'action') <> 'deleted'
          FOR SHARE OF w
        )
        SELECT entity, id, min(version) AS version FROM found GROUP BY entity, id`.pipe(
        Effect.flatMap(decodeEarliest)
      )

    // A claimed row is due for the others when its lease ends.
    const nextDueAt = (consumer: string) =>
      sql`SELECT min(greatest(next_attempt_at, coalesce(claimed_until, next_attempt_at))) AS "nextDueAt"
        FROM ${waitingTable} WHERE consumer = ${consumer}`.pipe(
        Effect.flatMap(decodeNextDue),
        Effect.map((rows) => rows[0]?.nextDueAt ?? null)
      )

    const waiting = (consumer: string) =>
      sql`SELECT ${waitingColumns} FROM ${waitingTable} WHERE consumer = ${consumer} ${dueOrder}`.pipe(
        Effect.flatMap(decodeWaiting)
      )

    const waitingPage = (
      consumer: string,
      options?: { readonly limit?: number; readonly after?: WaitingRowCursor }
    ) => {
      const limit = pageSize(options?.limit)
      const after = options?.after
      const from = after === undefined
        ? sql.literal("")
        : sql`AND (next_attempt_at, first_seen_at, message_id) > (${after.nextAttemptAt}, ${after.firstSeenAt}, ${after.messageId})`
      return sql`SELECT ${waitingColumns} FROM ${waitingTable} WHERE consumer = ${consumer} ${from}
        ${dueOrder} LIMIT ${limit + 1}`.pipe(
        Effect.flatMap(decodeWaiting),
        Effect.map((rows) =>
          pageOf(rows, limit, (row): WaitingRowCursor => ({
            nextAttemptAt: row.nextAttemptAt,
            firstSeenAt: row.firstSeenAt,
            messageId: row.messageId
          }))
        )
      )
    }

    const release = (consumer: string, messageId: string) =>
      sql`DELETE FROM ${waitingTable} WHERE consumer = ${consumer} AND message_id = ${messageId} RETURNING 1`.pipe(
        Effect.map((rows) => rows.length > 0)
      )

    const deadLetter = (row: DeadRow) =>
      sql`WITH released AS (
          DELETE FROM ${waitingTable} WHERE consumer = ${row.consumer} AND message_id = ${row.messageId}
        )
        INSERT INTO ${deadTable} ${
        sql.insert({
          consumer: row.consumer,
          message_id: row.messageId,
          envelope: pg.json(row.envelope),
          error: row.error,
          reason: row.reason,
          waiting_for: pg.json(refsJson(row.waitingFor)),
          attempts: row.attempts,
          first_seen_at: row.firstSeenAt,
          last_seen_at: row.lastSeenAt
        })
      }
        ON CONFLICT (consumer, message_id) DO UPDATE SET envelope = EXCLUDED.envelope, error = EXCLUDED.error,
          reason = EXCLUDED.reason, waiting_for = EXCLUDED.waiting_for, attempts = EXCLUDED.attempts,
          first_seen_at = EXCLUDED.first_seen_at, last_seen_at = EXCLUDED.last_seen_at`.pipe(Effect.asVoid)

    const deadLetters = (consumer: string) =>
      sql`SELECT ${deadColumns} FROM ${deadTable} WHERE consumer = ${consumer}
        ORDER BY first_seen_at, message_id`.pipe(Effect.flatMap(decodeDead))

    /** The conditions of a filter, as one fragment (`1=1` without any). */
    const matching = (filter: DeadRowFilter | undefined) => {
      const clauses = []
      if (filter?.errors !== undefined) clauses.push(sql`error = ANY(${[...filter.errors]}::text[])`)
      if (filter?.entities !== undefined) clauses.push(sql`envelope->>'entity' = ANY(${[...filter.entities]}::text[])`)
      if (filter?.from !== undefined) clauses.push(sql`last_seen_at >= ${Math.floor(filter.from)}`)
      if (filter?.to !== undefined) clauses.push(sql`last_seen_at < ${Math.floor(filter.to)}`)
      if (filter?.messageIds !== undefined) clauses.push(sql`message_id = ANY(${[...filter.messageIds]}::text[])`)
      return sql.and(clauses)
    }

    const deadLetterPage = (consumer: string, options?: {
      readonly limit?: number
      readonly after?: DeadRowCursor
      readonly filter?: DeadRowFilter
    }) => {
      const limit = pageSize(options?.limit)
      const after = options?.after
      const from = after === undefined
        ? sql.literal("")
        : sql`AND (first_seen_at, message_id) > (${after.firstSeenAt}, ${after.messageId})`
      return sql`SELECT ${deadColumns} FROM ${deadTable}
        WHERE consumer = ${consumer} ${from} AND ${matching(options?.filter)}
        ORDER BY first_seen_at, message_id LIMIT ${limit + 1}`.pipe(
        Effect.flatMap(decodeDead),
        Effect.map((rows) =>
          pageOf(rows, limit, (row): DeadRowCursor => ({ firstSeenAt: row.firstSeenAt, messageId: row.messageId }))
        )
      )
    }

    const stats = (consumer: string) =>
      sql`SELECT w.count AS waiting, w.oldest AS "oldestWaitingSince", d.count AS dead, d.oldest AS "oldestDeadAt"
        FROM (SELECT count(*) AS count, min(first_seen_at) AS oldest FROM ${waitingTable} WHERE consumer = ${consumer}) w,
          (SELECT count(*) AS count, min(last_seen_at) AS oldest FROM ${deadTable} WHERE consumer = ${consumer}) d`
        .pipe(
          Effect.flatMap(decodeStats),
          Effect.map((rows): InboxStats =>
            rows[0] ?? { waiting: 0, dead: 0, oldestWaitingSince: null, oldestDeadAt: null }
          )
        )

    /** Moves at most `replayBatchSize` matching dead rows back to waiting; how many it moved. */
    const replayBatch = (consumer: string, filter: DeadRowFilter, now: number) =>
      sql`WITH picked AS (
          SELECT message_id FROM ${deadTable} WHERE consumer = ${consumer} AND ${matching(filter)}
          ORDER BY first_seen_at, message_id LIMIT ${replayBatchSize}
        ), revived AS (
          DELETE FROM ${deadTable} AS d USING picked
          WHERE d.consumer = ${consumer} AND d.message_id = picked.message_id
          RETURNING d.consumer, d.message_id, d.envelope, d.waiting_for, d.first_seen_at, d.last_seen_at
        )
        INSERT INTO ${waitingTable}
          (consumer, message_id, envelope, waiting_for, attempts, next_attempt_at, first_seen_at, last_seen_at)
        SELECT consumer, message_id, envelope, waiting_for, 0, ${now}, first_seen_at, last_seen_at FROM revived
        ${replaceWaiting}
        RETURNING 1`.pipe(Effect.map((rows) => rows.length))

    const replayMany = (consumer: string, filter: DeadRowFilter, now: number) =>
      Effect.gen(function*() {
        let total = 0
        while (true) {
          const moved = yield* replayBatch(consumer, filter, now)
          total += moved
          if (moved < replayBatchSize) return total
        }
      })

    const replay = (consumer: string, messageId: string, now: number) =>
      sql`WITH revived AS (
          DELETE FROM ${deadTable} WHERE consumer = ${consumer} AND message_id = ${messageId}
          RETURNING consumer, message_id, envelope, waiting_for, first_seen_at, last_seen_at
        )
        INSERT INTO ${waitingTable}
          (consumer, message_id, envelope, waiting_for, attempts, next_attempt_at, first_seen_at, last_seen_at)
        SELECT consumer, message_id, envelope, waiting_for, 0, ${now}, first_seen_at, last_seen_at FROM revived
        ${replaceWaiting}
        RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0))

    // Oldest first through the `received_at` index; records another statement locks are left for later.
    const pruneBatch = (receivedBefore: number, limit: number) =>
      sql`WITH picked AS (
          SELECT consumer, message_id FROM ${inbox} WHERE received_at < ${receivedBefore}::bigint
          ORDER BY received_at LIMIT ${Math.max(0, Math.floor(limit))}
          FOR UPDATE SKIP LOCKED
        ), pruned AS (
          DELETE FROM ${inbox} AS i USING picked
          WHERE i.consumer = picked.consumer AND i.message_id = picked.message_id
          RETURNING 1
        )
        SELECT count(*) AS count FROM pruned`.pipe(Effect.flatMap(decodePruned))

    const prune = (receivedBefore: number) =>
      Effect.map(
        Retention.inBatches((limit) => pruneBatch(receivedBefore, limit), pruneBatchSize),
        (round) => round.deleted
      )

    return Inbox.of({
      record,
      recordMany,
      forget,
      park,
      wake,
      due,
      claimDue,
      earliestWaiting,
      nextDueAt,
      waiting,
      waitingPage,
      release,
      deadLetter,
      deadLetters,
      deadLetterPage,
      stats,
      replay,
      replayMany,
      prune,
      pruneBatch,
      takeTurn: makeTakeTurn(sql, turnsTable(tables))
    })
  })
