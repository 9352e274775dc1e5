/**
 * What a fault-injection test checks once the stream is written: waits until the system is quiet, then
 * compares the owner's rows with the consumer's copies (entity, id, version, state, payload), every outbox
 * event with the consumer's inbox, and counts the applies recorded by the handler per message id.
 */
import { assert } from "@effect/vitest"
import { Clock, Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql"
import * as Metrics from "../../src/Metrics.ts"
import { appliesTable, entities, Group, Item } from "./contract.ts"
import { queueState } from "./rabbit.ts"
import { consumerQueues, type Names, tables } from "./stack.ts"
import type { WriteStreamResult } from "./writer.ts"

/** The counts a test is judged on. */
export const Tally = Schema.Struct({
  /** Events committed by the owner (outbox rows). */
  events: Schema.Int,
  /** Outbox rows not marked published. */
  pending: Schema.Int,
  /** Outbox events the consumer never received (no inbox record). */
  unreceived: Schema.Int,
  /** Entities whose copy is missing or differs from the owner's row in version, state or payload. */
  differing: Schema.Int,
  owned: Schema.Int,
  copied: Schema.Int,
  /** Applies recorded by the consumer's handler (committed only). */
  applies: Schema.Int,
  /** Applies beyond the first of a message id. */
  duplicates: Schema.Int,
  /** Applies of message ids that are not in the outbox. */
  foreign: Schema.Int,
  /** Copies (not tombstones) that reference a dependency with no copy, or a tombstone (R5). */
  dangling: Schema.Int,
  /** Events given up on (dead rows of the consumer's inbox). */
  dead: Schema.Int,
  /** Events parked in the consumer's inbox, waiting for a dependency or their retry. */
  waiting: Schema.Int
})
export type Tally = typeof Tally.Type

const decodeTally = Schema.decodeUnknownEffect(Schema.Array(Tally))

/**
 * Counts the rows of `table` (copies, or the owner's rows) of items that are not tombstones and whose
 * `groupId` names a group with no row there, or a tombstone.
 */
const danglingQuery = (sql: SqlClient.SqlClient, table: string) =>
  sql`SELECT count(*) FROM ${sql(table)} i WHERE i.entity = ${Item.name} AND i.state <> 'deleted'
    AND i.payload ->> 'groupId' IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM ${sql(table)} g WHERE g.entity = ${Group.name} AND g.id = i.payload ->> 'groupId'
        AND g.state <> 'deleted')`

const decodeCount = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ n: Schema.Int })))
const count = (rows: Effect.Effect<ReadonlyArray<unknown>, unknown>) =>
  rows.pipe(Effect.flatMap(decodeCount), Effect.map((r) => r[0]?.n ?? 0))

/**
 * Copies of items that reference a missing group right now (one statement, so one snapshot): R5 says there
 * are none at any moment.
 */
export const danglingCopies = (sql: SqlClient.SqlClient, names: Names): Effect.Effect<number, unknown> =>
  count(sql`SELECT (${danglingQuery(sql, tables(names).copies)})::int AS n`)

/** The table where `recordParks` logs every event the consumer parks. */
const parksTable = "faults_parks"

/**
 * Logs every event the consumer parks in the inbox (a trigger on inserts into its waiting table), with the
 * backend of the connection that first parked it, so that a test can tell which process parked and which
 * applied each parked event (the applies table has the process id and the backend of each apply).
 */
export const recordParks = (sql: SqlClient.SqlClient, names: Names): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    const waiting = sql(tables(names).waiting)
    yield* sql`CREATE TABLE ${sql(parksTable)} (
      message_id text PRIMARY KEY, parks integer NOT NULL, backend integer NOT NULL
    )`
    yield* sql`CREATE FUNCTION faults_log_park() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO ${sql(parksTable)} (message_id, parks, backend) VALUES (NEW.message_id, 1, pg_backend_pid())
          ON CONFLICT (message_id) DO UPDATE SET parks = ${sql(parksTable)}.parks + 1;
        RETURN NEW;
      END $$`
    yield* sql`CREATE TRIGGER faults_log_park AFTER INSERT ON ${waiting} FOR EACH ROW EXECUTE FUNCTION faults_log_park()`
  })

const ParkRow = Schema.Struct({ pid: Schema.NullOr(Schema.Int), entity: Schema.NullOr(Schema.String), n: Schema.Int })
const decodeParkRows = Schema.decodeUnknownEffect(Schema.Array(ParkRow))

/** What became of the parked events (needs `recordParks`). */
export interface ParkFigures {
  /** Events parked at least once, and parks in all (an event parked again counts again). */
  readonly parkedEvents: number
  readonly parks: number
  /** Events still waiting in the inbox. */
  readonly waiting: number
  /** Applies of parked events, by the process that applied them. */
  readonly appliedBy: ReadonlyArray<{ readonly pid: number | null; readonly entity: string | null; readonly n: number }>
  /**
   * Parked events applied by another process than the one that first parked them (the parking process is
   * known by its backend, from the applies made on that connection), and those whose parking process is
   * unknown (its connection applied nothing).
   */
  readonly appliedElsewhere: number
  readonly parkerUnknown: number
}

/** Reads what became of the parked events. */
export const parkFigures = (sql: SqlClient.SqlClient, names: Names): Effect.Effect<ParkFigures, unknown> =>
  Effect.gen(function*() {
    const parkedEvents = yield* count(sql`SELECT count(*)::int AS n FROM ${sql(parksTable)}`)
    const parks = yield* count(sql`SELECT coalesce(sum(parks), 0)::int AS n FROM ${sql(parksTable)}`)
    const waiting = yield* count(sql`SELECT count(*)::int AS n FROM ${sql(tables(names).waiting)}`)
    const appliedBy = yield* sql`SELECT a.pid, a.entity, count(*)::int AS n FROM ${sql(appliesTable)} a
      JOIN ${sql(parksTable)} p ON p.message_id = a.message_id GROUP BY a.pid, a.entity ORDER BY a.pid, a.entity`
      .pipe(Effect.flatMap(decodeParkRows))
    const parker = sql`SELECT DISTINCT b.pid FROM ${sql(appliesTable)} b WHERE b.backend = p.backend`
    const appliedElsewhere = yield* count(sql`SELECT count(*)::int AS n FROM ${sql(parksTable)} p
      JOIN ${sql(appliesTable)} a ON a.message_id = p.message_id
      WHERE EXISTS (${parker}) AND a.pid NOT IN (${parker})`)
    const parkerUnknown = yield* count(sql`SELECT count(*)::int AS n FROM ${sql(parksTable)} p
      WHERE NOT EXISTS (${parker})`)
    return { parkedEvents, parks, waiting, appliedBy, appliedElsewhere, parkerUnknown }
  })

const decodeOrder = Schema.decodeUnknownEffect(
  Schema.Array(Schema.Struct({ backwards: Schema.Int, entities: Schema.Int, processes: Schema.Int }))
)
const decodeUnhandled = Schema.decodeUnknownEffect(
  Schema.Array(Schema.Struct({ unhandled: Schema.Int, superseded: Schema.Int }))
)

/** What the applies say about order (ordered lanes). */
export interface OrderFigures {
  /** Applies of an entity whose version is not above the one applied before it. */
  readonly backwards: number
  /** The most entities, and the most processes, with an apply in one 10 ms window. */
  readonly entitiesAtOnce: number
  readonly processesAtOnce: number
  /** Outbox events whose handler never ran, and those of them that are hard deletes of an entity applied later. */
  readonly unhandled: number
  readonly supersededDeletes: number
}

/** Reads the order of the applies (committed, in the order their transactions applied them). */
export const orderFigures = (sql: SqlClient.SqlClient, names: Names): Effect.Effect<OrderFigures, unknown> =>
  Effect.gen(function*() {
    const applies = sql(appliesTable)
    const rows = yield* sql`SELECT
        (SELECT count(*) FROM (
          SELECT version <= lag(version) OVER (PARTITION BY entity, entity_id ORDER BY applied_at, version) AS back
          FROM ${applies}) o WHERE back)::int AS backwards,
        coalesce(max(w.entities), 0)::int AS entities, coalesce(max(w.processes), 0)::int AS processes
      FROM (
        SELECT count(DISTINCT (entity, entity_id)) AS entities, count(DISTINCT pid) AS processes FROM ${applies}
        GROUP BY floor(extract(epoch FROM applied_at) * 100)
      ) w`.pipe(Effect.flatMap(decodeOrder))
    const row = rows[0]
    const unhandled = (yield* sql`SELECT count(*)::int AS unhandled,
        count(*) FILTER (WHERE o.envelope ->> 'action' = 'deleted' AND EXISTS (
          SELECT 1 FROM ${applies} a WHERE a.entity = o.envelope ->> 'entity'
            AND a.entity_id = o.envelope ->> 'entityId' AND a.version > (o.envelope ->> 'version')::bigint
        ))::int AS superseded
      FROM ${sql(tables(names).outbox)} o
      WHERE NOT EXISTS (SELECT 1 FROM ${applies} a WHERE a.message_id = o.message_id)`.pipe(
      Effect.flatMap(decodeUnhandled)
    ))[0]
    return {
      backwards: row?.backwards ?? 0,
      entitiesAtOnce: row?.entities ?? 0,
      processesAtOnce: row?.processes ?? 0,
      unhandled: unhandled?.unhandled ?? 0,
      supersededDeletes: unhandled?.superseded ?? 0
    }
  })

/** The owner's items that are not tombstones and reference a group that is not live or soft-deleted. */
export const danglingOwned = (sql: SqlClient.SqlClient, names: Names): Effect.Effect<number, unknown> =>
  count(sql`SELECT (${danglingQuery(sql, tables(names).source)})::int AS n`)

/** Reads the tally in one statement. */
export const tally = (sql: SqlClient.SqlClient, names: Names): Effect.Effect<Tally, unknown> => {
  const t = tables(names)
  const applies = sql(appliesTable)
  return sql`SELECT
      (SELECT count(*) FROM ${sql(t.outbox)})::int AS events,
      (SELECT count(*) FROM ${sql(t.outbox)} WHERE published_at IS NULL)::int AS pending,
      (SELECT count(*) FROM ${sql(t.outbox)} o WHERE NOT EXISTS (
        SELECT 1 FROM ${sql(t.inbox)} i WHERE i.consumer = ${names.service} AND i.message_id = o.message_id))::int
        AS unreceived,
      (SELECT count(*) FROM ${sql(t.source)} s FULL JOIN ${sql(t.copies)} c ON c.entity = s.entity AND c.id = s.id
        WHERE s.id IS NULL OR c.id IS NULL OR s.version <> c.version OR s.state <> c.state
          OR s.payload IS DISTINCT FROM c.payload)::int AS differing,
      (SELECT count(*) FROM ${sql(t.source)})::int AS owned,
      (SELECT count(*) FROM ${sql(t.copies)})::int AS copied,
      (SELECT count(*) FROM ${applies})::int AS applies,
      (SELECT coalesce(sum(n - 1), 0) FROM (
        SELECT count(*) AS n FROM ${applies} GROUP BY message_id HAVING count(*) > 1) d)::int AS duplicates,
      (SELECT count(*) FROM ${applies} a WHERE NOT EXISTS (
        SELECT 1 FROM ${sql(t.outbox)} o WHERE o.message_id = a.message_id))::int AS foreign,
      (${danglingQuery(sql, t.copies)})::int AS dangling,
      (SELECT count(*) FROM ${sql(t.dead)})::int AS dead,
      (SELECT count(*) FROM ${sql(t.waiting)})::int AS waiting`.pipe(
    Effect.flatMap(decodeTally),
    Effect.flatMap((rows) => rows[0] === undefined ? Effect.die(new Error("no tally row")) : Effect.succeed(rows[0]))
  )
}

const decodeHistory = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ line: Schema.String })))

/**
 * The story of the first few entities whose copy differs from the owner's row, and of the entities with a
 * parked event: each one's owner row and copy, then its events in outbox order (version, action, group,
 * whether it was published, received, applied and by which process, and what it waits for).
 */
const history = (sql: SqlClient.SqlClient, names: Names): Effect.Effect<ReadonlyArray<string>, unknown> => {
  const t = tables(names)
  return sql`WITH differing AS (
      SELECT coalesce(s.entity, c.entity) AS entity, coalesce(s.id, c.id) AS id
      FROM ${sql(t.source)} s FULL JOIN ${sql(t.copies)} c ON c.entity = s.entity AND c.id = s.id
      WHERE s.id IS NULL OR c.id IS NULL OR s.version <> c.version OR s.state <> c.state
        OR s.payload IS DISTINCT FROM c.payload
      LIMIT 5
    ), parked AS (
      SELECT DISTINCT w.envelope ->> 'entity' AS entity, w.envelope ->> 'entityId' AS id FROM ${sql(t.waiting)} w
      LIMIT 5
    ), subjects AS (SELECT * FROM differing UNION SELECT * FROM parked)
    SELECT json_build_object(
      'entity', e.entity || ' ' || e.id,
      'owner', (SELECT s.version || ' ' || s.state FROM ${sql(t.source)} s WHERE s.entity = e.entity AND s.id = e.id),
      'copy', (SELECT c.version || ' ' || c.state FROM ${sql(t.copies)} c WHERE c.entity = e.entity AND c.id = e.id),
      'events', (SELECT json_agg(json_build_object(
          'v', o.envelope ->> 'version', 'action', o.envelope ->> 'action',
          'group', o.envelope -> 'payload' ->> 'groupId', 'published', o.published_at IS NOT NULL,
          'received', EXISTS (SELECT 1 FROM ${sql(t.inbox)} i WHERE i.message_id = o.message_id),
          'appliedBy', (SELECT string_agg(a.pid || '@' || to_char(a.applied_at, 'HH24:MI:SS.MS'), ',')
            FROM ${sql(appliesTable)} a WHERE a.message_id = o.message_id),
          'waiting', (SELECT w.waiting_for::text || ' attempts ' || w.attempts FROM ${sql(t.waiting)} w
            WHERE w.message_id = o.message_id)
        ) ORDER BY o.seq)
        FROM ${sql(t.outbox)} o WHERE o.envelope ->> 'entity' = e.entity AND o.envelope ->> 'entityId' = e.id)
    )::text AS line FROM subjects e`.pipe(
    Effect.flatMap(decodeHistory),
    Effect.map((rows) => rows.map((row) => row.line))
  )
}

// A parked event of an entity whose copy is already current still waits for its retry (it ends stale).
const isQuiet = (t: Tally) =>
  t.pending === 0 && t.unreceived === 0 && t.differing === 0 && t.dangling === 0 && t.waiting === 0

/** The tally once the system is quiet (or stuck), with how it got there. */
export interface Outcome extends Tally {
  /** Seconds from the end of the stream until the system was quiet (or given up on). */
  readonly settleSeconds: number
  /** Nothing moved for `stallSeconds` while the system was not quiet. */
  readonly stalled: boolean
  /** Messages ready in the consumer's queues (lanes included), and their consumers, when the waiting ended. */
  readonly ready: number
  readonly consumers: number
  /** When the system did not get quiet: the story of the entities that differ or wait (see `history`). */
  readonly history: ReadonlyArray<string>
  /** The most copies referencing a missing dependency seen in any poll (R5: always 0). */
  readonly danglingSeen: number
}

/** Messages ready and consumers, summed over the consumer's queues (its lanes, with lanes). */
const queuesState = (names: Names, amqpUrl: string | undefined) =>
  Effect.map(
    Effect.forEach(consumerQueues(names), (queue) => queueState(queue, amqpUrl)),
    (states) =>
      states.reduce((a, b) => ({ ready: a.ready + b.ready, consumers: a.consumers + b.consumers }), {
        ready: 0,
        consumers: 0
      })
  )

/**
 * Waits (polling every 200 ms) until every event is published and received, every copy equals its owner
 * row, no event is parked and the queue is empty; gives up after `timeoutSeconds` (default 90), or after `stallSeconds`
 * (default 20) without any progress. Then waits one more second and returns a fresh tally, so a late
 * duplicate apply would still be counted.
 */
export const awaitQuiescence = (
  sql: SqlClient.SqlClient,
  names: Names,
  options: {
    readonly timeoutSeconds?: number
    readonly stallSeconds?: number
    /** The URL of the consumer's queue's virtual host (default the guest login on `/`). */
    readonly amqpUrl?: string
  } = {}
): Effect.Effect<Outcome, unknown> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    let lastProgress = start
    let last = ""
    let danglingSeen = 0
    while (true) {
      const t = yield* tally(sql, names)
      danglingSeen = Math.max(danglingSeen, t.dangling)
      const queue = yield* queuesState(names, options.amqpUrl)
      const now = yield* Clock.currentTimeMillis
      const state = [t.pending, t.unreceived, t.differing, t.applies, t.waiting, queue.ready].join()
      if (state !== last) lastProgress = now
      last = state
      const quiet = isQuiet(t) && queue.ready === 0
      const stalled = !quiet && now - lastProgress > (options.stallSeconds ?? 20) * 1000
      if (quiet || stalled || now - start > (options.timeoutSeconds ?? 90) * 1000) {
        yield* Effect.sleep("1 second")
        const final = yield* tally(sql, names)
        danglingSeen = Math.max(danglingSeen, final.dangling)
        const story = isQuiet(final) ? [] : yield* history(sql, names)
        return { ...final, settleSeconds: (now - start) / 1000, stalled, ...queue, danglingSeen, history: story }
      }
      yield* Effect.sleep("200 millis")
    }
  })

/**
 * Prints the test's one line — events, faults injected, events lost, duplicates applied — and asserts
 * that nothing was lost or applied twice and that the copies equal the owner's rows.
 */
export const judge = (
  name: string,
  t: Outcome,
  faults: { readonly injected: number; readonly detail?: string },
  writer: WriteStreamResult,
  names: Names,
  options: { readonly consumerInProcess?: boolean } = {}
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const lost = t.unreceived + t.differing
    const outcome = (kind: Metrics.Outcome) =>
      Effect.map(
        Effect.forEach(entities, (entity) => Metrics.outcomeCount(names.service, entity, kind)),
        (counts) => counts.reduce((a, b) => a + b, 0)
      )
    const redelivered = options.consumerInProcess === false
      ? ""
      : `, redeliveries deduped ${yield* outcome("duplicate")}, stale ${yield* outcome("stale")}`
    console.log(
      `[faults] ${name}: events ${t.events}, faults injected ${faults.injected}` +
        `${faults.detail === undefined ? "" : ` (${faults.detail})`}, events lost ${lost}` +
        ` (unreceived ${t.unreceived}, differing entities ${t.differing}), duplicates applied ${t.duplicates}` +
        ` | entities ${t.owned}/${t.copied}, applies ${t.applies}${redelivered}, written in ${
          writer.seconds.toFixed(1)
        } s` +
        ` (${writer.transactions} transactions, ${writer.retries} retried), ` +
        (t.stalled
          ? `STALLED ${t.settleSeconds.toFixed(1)} s after the stream: no progress, ${t.ready} messages ready, ` +
            `${t.consumers} consumers on the queue`
          : `quiet ${t.settleSeconds.toFixed(1)} s later`)
    )
    for (const line of t.history) console.log(`[faults] ${name}: not quiet: ${line}`)
    assert.isFalse(
      t.stalled,
      `the system stopped making progress: ${t.ready} messages ready and ${t.consumers} consumers on ${
        t.consumers === 0 ? "the queue (the consumer stopped consuming)" : "the queue"
      }`
    )
    assert.isAbove(t.events, 0)
    assert.isAbove(faults.injected, 0, "no fault was injected")
    assert.strictEqual(lost, 0, "events lost")
    assert.strictEqual(t.duplicates, 0, "duplicates applied")
    assert.strictEqual(t.pending, 0, "unpublished outbox rows")
    assert.strictEqual(t.foreign, 0, "applies of unknown message ids")
    assert.strictEqual(t.copied, t.owned, "copies vs owner rows")
    assert.strictEqual(t.danglingSeen, 0, "copies referencing a missing dependency")
  })
