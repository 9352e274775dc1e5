/**
 * The PostgreSQL outbox: appends are inserts in the caller's transaction with a `NOTIFY` delivered when it
 * commits; claims lease due rows with `FOR UPDATE SKIP LOCKED`, so concurrent relays never share a row.
 *
 * @since 0.1.0
 */
import { PgClient, type PgConnection } from "@effect/sql-pg"
import { Array as Arr, Clock, Context, Effect, Option, Queue, Schedule, Schema, type Scope } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { Envelope, fromStoredJson } from "../Envelope.ts"
import { makeBufferedAppends } from "../internal/OutboxTransaction.ts"
import * as Retention from "../internal/Retention.ts"
import * as Signal from "../internal/Signal.ts"
import {
  type ClaimOptions,
  defaultLeaseMillis,
  Outbox,
  type OutboxRow,
  pruneBatchSize,
  type RepublishRange
} from "../Outbox.ts"
import { Transactor } from "../Transactor.ts"
import { decodeCount, decodeRows, Int8, NullableInt8 } from "./Columns.ts"
import { claimDueOrderedFunction, turnsTable } from "./Migrations.ts"
import { compileOnce } from "./StatementTemplate.ts"
import type { Tables } from "./Tables.ts"

/** Options of the PostgreSQL outbox. */
export interface Options {
  /** How long a claim keeps rows from other claimers, in milliseconds (default 30 000). */
  readonly leaseMillis?: number
}

/** The default claim lease: 30 seconds. */
export { defaultLeaseMillis } from "../Outbox.ts"

/** Events per `INSERT` statement of an append. */
const eventsPerInsert = 1_000

const Row = Schema.Struct({
  seq: Int8,
  envelope: Envelope,
  createdAt: Int8,
  attempts: Schema.Int,
  nextAttemptAt: Int8,
  lastError: Schema.NullOr(Schema.String),
  publishedAt: NullableInt8
})

const Pending = Schema.Struct({ count: Int8, oldestCreatedAt: NullableInt8 })

const RepublishedRow = Schema.Struct({ count: Int8, lastSeq: NullableInt8 })

const bySeq = (a: OutboxRow, b: OutboxRow) => a.seq - b.seq

/** Seqs as int8 parameters (one array type whatever their size); non-integers cannot match a row. */
const int8Array = (seqs: ReadonlyArray<number>) => seqs.filter(Number.isSafeInteger).map((seq) => BigInt(seq))

/** Delays between attempts to listen again after the notification connection failed: 100 ms doubling, ≤ 5 s. */
const relistenSchedule = Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")])

/**
 * The turn of a periodic task in the `turns` table: one statement, true for the one caller whose insert
 * or update took the row; another caller's conflicting write waits for it and then finds it held.
 */
export const makeTakeTurn = (sql: SqlClient.SqlClient, table: string) => {
  const turns = sql(table)
  return (task: string, intervalMillis: number): Effect.Effect<boolean, SqlError.SqlError> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      sql`INSERT INTO ${turns} (task, held_until)
        VALUES (${task}, ${now + Math.max(0, Math.floor(intervalMillis))}::bigint)
        ON CONFLICT (task) DO UPDATE SET held_until = EXCLUDED.held_until
        WHERE ${turns}.held_until <= ${now}::bigint
        RETURNING 1`.pipe(Effect.map((rows) => rows.length > 0)))
}

/**
 * Makes the outbox on `tables`. It opens one dedicated connection (from the pool) that `LISTEN`s on
 * `<prefix>outbox` for as long as the scope is open, and listens again if that connection is lost; an
 * append's `NOTIFY <prefix>outbox` is delivered only when (and if) its transaction commits. Rows are
 * claimed by lease, never after a "last seen seq" cursor, so rows committed out of sequence order are
 * still claimed.
 *
 * Every time ("now", leases, retries) comes from Effect's `Clock` and is passed as a parameter, never from
 * the database's `now()`, so the `TestClock` drives the store in tests.
 */
export const make = (
  tables: Tables,
  options?: Options
): Effect.Effect<Outbox["Service"], SqlError.SqlError, PgClient.PgClient | Transactor | Scope.Scope> =>
  Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    const transactor = yield* Transactor
    const sql = pg.withoutTransforms()
    const leaseMillis = options?.leaseMillis ?? defaultLeaseMillis
    const outbox = sql(tables.outbox)
    const claimDue = sql(tables.claimDue)
    const claimDueOrdered = sql(claimDueOrderedFunction(tables))
    const columns = sql.literal(
      `seq, envelope, created_at AS "createdAt", attempts, next_attempt_at AS "nextAttemptAt", ` +
        `last_error AS "lastError", published_at AS "publishedAt"`
    )
    const decode = decodeRows(Row, "outbox")
    const decodePending = decodeRows(Pending, "outbox")
    const decodePruned = decodeCount("outbox")
    const decodeRepublished = decodeRows(RepublishedRow, "outbox")

    // Waiters of `awaitAppended` wait on a signal. Commits of this instance fire it after commit
    // (`afterCommit`); commits of other processes through NOTIFY. The notification payload names the
    // instance, so its own commits do not wake waiters twice. A lost LISTEN connection fails the waiters.
    const instance = crypto.randomUUID()
    const appended = yield* Signal.make<SqlError.SqlError>()
    const wake = appended.fire
    const failWaiters = (error: SqlError.SqlError) =>
      appended.fail(error).pipe(
        Effect.andThen(
          Effect.logWarning(`entity-sync: the outbox LISTEN connection failed (${error.message}); listening again`)
        )
      )

    // (It waits in `Queue.take`, so it needs no yield between notifications.)
    const listenLoop = (queue: Queue.Dequeue<PgConnection.Notification, SqlError.SqlError>) =>
      Effect.forever(
        Effect.flatMap(Queue.take(queue), (notification) => notification.payload === instance ? Effect.void : wake),
        { disableYield: true }
      )
    // After a reconnect, notifications may have been missed: wake the waiters once.
    const relisten = Effect.scoped(
      Effect.flatMap(pg.listen(tables.outboxChannel), (queue) => Effect.andThen(wake, listenLoop(queue)))
    )
    const first = yield* pg.listen(tables.outboxChannel)
    yield* listenLoop(first).pipe(
      Effect.tapError(failWaiters),
      Effect.catch(() => relisten.pipe(Effect.tapError(failWaiters), Effect.retry(relistenSchedule))),
      Effect.forkScoped
    )

    // The events of one transaction, written when its body has succeeded (see `makeBufferedAppends`): one
    // INSERT per chunk with the envelopes as one JSON array parameter, in append order (seq follows the
    // array's order); the last chunk carries the transaction's one NOTIFY in the same statement (a
    // data-modifying WITH always runs to completion).
    const insert = (now: string, envelopes: string) =>
      sql`INSERT INTO ${outbox} (message_id, envelope, created_at, next_attempt_at)
        SELECT e.envelope ->> 'messageId', e.envelope, ${now}, ${now}
        FROM jsonb_array_elements(${envelopes}::jsonb) WITH ORDINALITY AS e(envelope, n)
        ORDER BY e.n`
    const insertChunk = compileOnce<[now: number, envelopes: string], object>(sql, insert)
    const insertLastChunk = compileOnce<[now: number, envelopes: string], object>(
      sql,
      (now, envelopes) =>
        sql`WITH appended AS (${insert(now, envelopes)}) SELECT pg_notify(${tables.outboxChannel}, ${instance})`
    )
    // This process's relay is woken once the events are committed. An outbox transaction that is the
    // database transaction (depth 0) wakes it when it returns (`wakeWhenCommitted`); one inside a caller's
    // transaction or a savepoint, at the outermost commit (`sql.afterCommit`, which copies the fiber's
    // services, so it is used only there).
    const transactionDepth = (services: Context.Context<never>) =>
      Context.getOrUndefined(services, sql.transactionService)?.[1]
    const wakeAfterOuterCommit = Effect.withFiber((fiber) =>
      (transactionDepth(fiber.context) ?? 0) > 0 ? sql.afterCommit(wake) : Effect.void
    )
    const wakeWhenCommitted = Effect.withFiber((fiber) =>
      transactionDepth(fiber.context) === undefined ? wake : Effect.void
    )
    const append = (envelopes: ReadonlyArray<Envelope>) =>
      envelopes.length === 0 ? Effect.void : Clock.currentTimeMillis.pipe(
        Effect.flatMap((now) => {
          const chunks = Arr.chunksOf(envelopes, eventsPerInsert)
          return Effect.forEach(
            chunks,
            (chunk, index) => (index < chunks.length - 1 ? insertChunk : insertLastChunk)(now, JSON.stringify(chunk)),
            { discard: true }
          )
        }),
        Effect.andThen(wakeAfterOuterCommit)
      )

    // Claims are the relay's hot path: claimed rows are read by hand (the envelope with
    // `Envelope.fromStoredJson`). Anything unexpected falls back to the full `Row` decode, which reports it.
    const int8Of = (value: unknown): number | undefined => {
      const n = typeof value === "bigint" || typeof value === "number" || typeof value === "string"
        ? Number(value)
        : NaN
      return Number.isSafeInteger(n) ? n : undefined
    }
    const decodeClaimed = (rows: ReadonlyArray<Readonly<Record<string, unknown>>>) =>
      Effect.suspend((): Effect.Effect<ReadonlyArray<OutboxRow>, SqlError.SqlError> => {
        const claimed: Array<OutboxRow> = []
        for (const row of rows) {
          const envelope = fromStoredJson(row.envelope)
          const seq = int8Of(row.seq)
          const createdAt = int8Of(row.createdAt)
          const nextAttemptAt = int8Of(row.nextAttemptAt)
          const publishedAt = row.publishedAt === null ? null : int8Of(row.publishedAt)
          const { attempts, lastError } = row
          if (
            envelope === undefined || seq === undefined || createdAt === undefined || nextAttemptAt === undefined ||
            publishedAt === undefined || typeof attempts !== "number" || !Number.isSafeInteger(attempts) ||
            (lastError !== null && typeof lastError !== "string")
          ) return decode(rows)
          claimed.push({ seq, envelope, attempts, lastError, createdAt, nextAttemptAt, publishedAt })
        }
        return Effect.succeed(claimed)
      })

    const noClause = sql.literal("")
    const claim = (limit: number, options?: ClaimOptions) =>
      Effect.gen(function*() {
        const n = Math.floor(limit)
        if (!(n > 0)) return []
        const now = yield* Clock.currentTimeMillis
        // one statement, in a transaction of its own (see `claim_due` and `claim_due_ordered` in Migrations)
        const afterSeq = options?.orderedByEntity === true ? undefined : options?.afterSeq
        const rows = yield* sql`SELECT ${columns}
          FROM ${options?.orderedByEntity === true ? claimDueOrdered : claimDue}(
            ${now}::bigint, ${now + leaseMillis}::bigint, ${n}::integer
            ${afterSeq === undefined ? noClause : sql`, ${Math.floor(afterSeq)}::bigint`})`
        const claimed = yield* decodeClaimed(rows)
        return claimed.slice().sort(bySeq)
      })

    // On its own (not in a caller's transaction) a mark commits without waiting for the disk, like a claim:
    // a mark lost in a server crash leaves its rows leased until the lease ends, then they are published
    // again and consumers drop the duplicates (R3).
    const asyncCommit = sql.literal("FROM (SELECT set_config('synchronous_commit', 'off', true)) AS c")
    const markPublished = (seqs: ReadonlyArray<number>) =>
      Effect.gen(function*() {
        if (seqs.length === 0) return
        const now = yield* Clock.currentTimeMillis
        const inTransaction = Option.isSome(yield* Effect.serviceOption(sql.transactionService))
        yield* sql`UPDATE ${outbox} SET published_at = ${now}, claimed_until = NULL
          ${inTransaction ? noClause : asyncCommit}
          WHERE seq = ANY(${int8Array(seqs)}) AND published_at IS NULL`
      })

    const markFailed = (
      seqs: ReadonlyArray<number>,
      failure: { readonly error: string; readonly nextAttemptAt: number }
    ) =>
      seqs.length === 0 ? Effect.void : sql`UPDATE ${outbox}
          SET attempts = attempts + 1, last_error = ${failure.error},
            next_attempt_at = ${failure.nextAttemptAt}, claimed_until = NULL
          WHERE seq = ANY(${int8Array(seqs)}) AND published_at IS NULL`.pipe(Effect.asVoid)

    const pending = sql`SELECT count(*) AS count, min(created_at) AS "oldestCreatedAt"
      FROM ${outbox} WHERE published_at IS NULL`.pipe(
      Effect.flatMap(decodePending),
      Effect.map((rows) => rows[0] ?? { count: 0, oldestCreatedAt: null })
    )

    const rows = (options?: { readonly afterSeq?: number; readonly limit?: number }) => {
      const afterSeq = options?.afterSeq
      const limit = options?.limit
      return sql`SELECT ${columns} FROM ${outbox}
        ${afterSeq === undefined ? sql.literal("") : sql`WHERE seq > ${afterSeq}`}
        ORDER BY seq
        ${limit === undefined ? sql.literal("") : sql`LIMIT ${Math.max(0, Math.floor(limit))}`}`.pipe(
        Effect.flatMap(decode)
      )
    }

    // The rows are picked in seq order (the primary key) and locked, skipping rows a claim holds; a
    // republished row leaves the partial indexes' "published" side, so the relay's claims find it.
    const republish = (range: RepublishRange) =>
      Effect.gen(function*() {
        const limit = range.limit === undefined ? undefined : Math.max(0, Math.floor(range.limit))
        if (limit === 0) return { count: 0, lastSeq: null }
        const now = yield* Clock.currentTimeMillis
        const rows = yield* sql`WITH picked AS (
            SELECT seq FROM ${outbox}
            WHERE published_at IS NOT NULL
              AND created_at >= ${range.from}::bigint AND created_at < ${range.to}::bigint
              ${range.afterSeq === undefined ? noClause : sql`AND seq > ${range.afterSeq}::bigint`}
              ${range.entity === undefined ? noClause : sql`AND envelope ->> 'entity' = ${range.entity}`}
              ${range.producer === undefined ? noClause : sql`AND envelope ->> 'producer' = ${range.producer}`}
            ORDER BY seq
            ${limit === undefined ? noClause : sql`LIMIT ${limit}`}
            FOR UPDATE SKIP LOCKED
          ), republished AS (
            UPDATE ${outbox} AS o
            SET published_at = NULL, attempts = 0, last_error = NULL, next_attempt_at = ${now}, claimed_until = NULL
            FROM picked WHERE o.seq = picked.seq
            RETURNING o.seq
          )
          SELECT count(*) AS count, max(seq) AS "lastSeq" FROM republished`.pipe(Effect.flatMap(decodeRepublished))
        const row = rows[0]
        return { count: row?.count ?? 0, lastSeq: row === undefined || row.count === 0 ? null : row.lastSeq }
      })

    // Oldest first by seq (the primary key): the scan stops after `limit` old rows. Rows another statement
    // locks (a republish) are skipped, and left to the next clean-up.
    const pruneBatch = (publishedBefore: number, limit: number) =>
      sql`WITH picked AS (
          SELECT seq FROM ${outbox} WHERE published_at < ${publishedBefore}::bigint
          ORDER BY seq LIMIT ${Math.max(0, Math.floor(limit))}
          FOR UPDATE SKIP LOCKED
        ), pruned AS (DELETE FROM ${outbox} AS o USING picked WHERE o.seq = picked.seq RETURNING 1)
        SELECT count(*) AS count FROM pruned`.pipe(Effect.flatMap(decodePruned))

    const prune = (publishedBefore: number) =>
      Effect.map(
        Retention.inBatches((limit) => pruneBatch(publishedBefore, limit), pruneBatchSize),
        (round) => round.deleted
      )

    const takeTurn = makeTakeTurn(sql, turnsTable(tables))

    // A transaction's events are written when its body ends; its own reads write them first.
    const appends = makeBufferedAppends(transactor, append, wakeWhenCommitted)

    return Outbox.of({
      transaction: appends.transaction,
      claim: (limit, options) => Effect.andThen(appends.flushPending, claim(limit, options)),
      markPublished,
      markFailed,
      awaitAppended: appended.await,
      pending: Effect.andThen(appends.flushPending, pending),
      rows: (options) => Effect.andThen(appends.flushPending, rows(options)),
      republish: (range) => Effect.andThen(appends.flushPending, republish(range)),
      prune,
      pruneBatch,
      takeTurn
    })
  })
