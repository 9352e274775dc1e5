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
import { type DeadRow, Inbox, type WaitingRow } from "../Inbox.ts"
import { decodeCount, decodeRows, Int8, NullableInt8 } from "./Columns.ts"
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

const NextDue = Schema.Struct({ nextDueAt: NullableInt8 })

const Recorded = Schema.Struct({ messageId: Schema.String })

/** Only the fields of the refs, in a fixed shape, for the jsonb `waiting_for` column. */
const refsJson = (refs: ReadonlyArray<EntityRef>) => refs.map(({ entity, id }) => ({ entity, id }))

/** Makes the inbox on `tables`. */
export const make = (tables: Tables): Effect.Effect<Inbox["Service"], never, PgClient.PgClient> =>
  Effect.gen(function* () {
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
        `last_seen_at = EXCLUDED.last_seen_at`
    )
    const dueOrder = sql.literal("ORDER BY next_attempt_at, first_seen_at, message_id")
    const decodeWaiting = decodeRows(Waiting, "waiting")
    const decodeDead = decodeRows(Dead, "dead")
    const decodeNextDue = decodeRows(NextDue, "waiting")
    const decodeWoken = decodeCount("waiting")
    const decodePruned = decodeCount("inbox")
    const decodeRecorded = decodeRows(Recorded, "inbox")

    const record = (consumer: string, messageId: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        sql`INSERT INTO ${inbox} (consumer, message_id, received_at) VALUES (${consumer}, ${messageId}, ${now})
          ON CONFLICT DO NOTHING RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0)))

    // Inserted in message id order, so two transactions recording overlapping sets cannot deadlock.
    const recordMany = (consumer: string, messageIds: ReadonlyArray<string>) =>
      messageIds.length === 0 ? Effect.succeed(new Set<string>()) : Effect.flatMap(Clock.currentTimeMillis, (now) =>
        sql`INSERT INTO ${inbox} (consumer, message_id, received_at)
          SELECT ${consumer}, m.id, ${now} FROM unnest(${[...new Set(messageIds)].sort()}::text[]) AS m(id)
          ORDER BY m.id
          ON CONFLICT DO NOTHING RETURNING message_id AS "messageId"`.pipe(
          Effect.flatMap(decodeRecorded),
          Effect.map((rows) => new Set(rows.map((row) => row.messageId)))
        ))

    const forget = (consumer: string, messageIds: ReadonlyArray<string>) =>
      messageIds.length === 0 ? Effect.void :
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

    const nextDueAt = (consumer: string) =>
      sql`SELECT min(next_attempt_at) AS "nextDueAt" FROM ${waitingTable} WHERE consumer = ${consumer}`.pipe(
        Effect.flatMap(decodeNextDue),
        Effect.map((rows) => rows[0]?.nextDueAt ?? null)
      )

    const waiting = (consumer: string) =>
      sql`SELECT ${waitingColumns} FROM ${waitingTable} WHERE consumer = ${consumer} ${dueOrder}`.pipe(
        Effect.flatMap(decodeWaiting)
      )

    const release = (consumer: string, messageId: string) =>
      sql`DELETE FROM ${waitingTable} WHERE consumer = ${consumer} AND message_id = ${messageId}`.pipe(
        Effect.asVoid
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

    const prune = (receivedBefore: number) =>
      sql`WITH pruned AS (DELETE FROM ${inbox} WHERE received_at < ${receivedBefore} RETURNING 1)
        SELECT count(*) AS count FROM pruned`.pipe(Effect.flatMap(decodePruned))

    return Inbox.of({ record, recordMany, forget, park, wake, due, nextDueAt, waiting, release, deadLetter, deadLetters, replay, prune })
  })
