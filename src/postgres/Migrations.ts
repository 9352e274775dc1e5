/**
 * The library's own migrations, run with `Migrator` from `effect/sql` against a migrations table of the
 * library (`<prefix>migrations`), so they never mix with the application's migrations. Upgrades add new
 * numbered migrations; a released migration is never edited.
 *
 * Times are stored as epoch milliseconds in `bigint` columns: they come from Effect's `Clock` (so tests on
 * the `TestClock` see their own time) and compare without conversions. Identifiers (entity names, ids,
 * message ids, consumers) use the `"C"` collation, so ordering and keyset pagination are by code point,
 * like the memory stores, and independent of the database's locale.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { Migrator, SqlClient, type SqlError } from "effect/sql"
import * as Tables from "./Tables.ts"

/** The states a row can be in; the same check for source rows and copies. */
const stateCheck = "state IN ('live', 'softDeleted', 'deleted')"

/**
 * Migration 1: every table of the library.
 *
 * * `outbox`: one row per appended event; `seq` orders rows (never used as a cursor); partial indexes on
 *   the unpublished rows, by `seq` and by `(next_attempt_at, seq)`, serve claims and relay lag.
 * * `source`: the owner's entity rows, by (entity, id).
 * * `inbox`: dedupe records by (consumer, message_id).
 * * `waiting`: parked events; `wake_keys` is generated from `waiting_for` by `<prefix>ref_keys` (one key
 *   `<length of entity>:<entity>:<id>` per ref, unambiguous whatever the names contain) and GIN-indexed, so
 *   waking the rows that wait for an entity is an index lookup.
 * * `dead`: dead-lettered events with their reason.
 * * `copies`: the consumer's copies, by (entity, id), tombstones included.
 */
const createSyncTables = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const state = sql.literal(stateCheck)

    yield* sql`CREATE FUNCTION ${sql(t.refKeys)}(refs jsonb) RETURNS text[]
      LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
      AS $$
        SELECT coalesce(array_agg(length(r ->> 'entity') || ':' || (r ->> 'entity') || ':' || (r ->> 'id')), '{}')
        FROM jsonb_array_elements(refs) AS r
      $$`

    yield* sql`CREATE TABLE ${sql(t.outbox)} (
      seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      message_id text COLLATE "C" NOT NULL,
      envelope jsonb NOT NULL,
      created_at bigint NOT NULL,
      attempts integer NOT NULL DEFAULT 0,
      next_attempt_at bigint NOT NULL,
      claimed_until bigint,
      last_error text,
      published_at bigint,
      CONSTRAINT ${sql(t.index("outbox_message_id_key"))} UNIQUE (message_id)
    )`
    // Claims read unpublished rows in seq order and stop after `limit`: this index keeps that O(limit) however
    // many published rows are retained (a claim on 1M rows, half published: 1.6 ms instead of 110 ms).
    yield* sql`CREATE INDEX ${sql(t.index("outbox_unpublished_idx"))} ON ${sql(t.outbox)} (seq)
      WHERE published_at IS NULL`
    // For when most unpublished rows are not due (retries backing off): finds the due ones by time.
    yield* sql`CREATE INDEX ${sql(t.index("outbox_due_idx"))} ON ${sql(t.outbox)} (next_attempt_at, seq)
      WHERE published_at IS NULL`

    yield* sql`CREATE TABLE ${sql(t.source)} (
      entity text COLLATE "C" NOT NULL,
      id text COLLATE "C" NOT NULL,
      version bigint NOT NULL,
      state text NOT NULL CHECK (${state}),
      payload jsonb,
      updated_at bigint NOT NULL,
      deleted_at bigint,
      PRIMARY KEY (entity, id)
    )`

    yield* sql`CREATE TABLE ${sql(t.inbox)} (
      consumer text COLLATE "C" NOT NULL,
      message_id text COLLATE "C" NOT NULL,
      received_at bigint NOT NULL,
      PRIMARY KEY (consumer, message_id)
    )`
    yield* sql`CREATE INDEX ${sql(t.index("inbox_received_at_idx"))} ON ${sql(t.inbox)} (received_at)`

    yield* sql`CREATE TABLE ${sql(t.waiting)} (
      consumer text COLLATE "C" NOT NULL,
      message_id text COLLATE "C" NOT NULL,
      envelope jsonb NOT NULL,
      waiting_for jsonb NOT NULL,
      wake_keys text[] GENERATED ALWAYS AS (${sql(t.refKeys)}(waiting_for)) STORED,
      attempts integer NOT NULL,
      next_attempt_at bigint NOT NULL,
      first_seen_at bigint NOT NULL,
      last_seen_at bigint NOT NULL,
      PRIMARY KEY (consumer, message_id)
    )`
    yield* sql`CREATE INDEX ${sql(t.index("waiting_due_idx"))} ON ${sql(t.waiting)}
      (consumer, next_attempt_at, first_seen_at, message_id)`
    yield* sql`CREATE INDEX ${sql(t.index("waiting_wake_keys_idx"))} ON ${sql(t.waiting)} USING gin (wake_keys)`

    yield* sql`CREATE TABLE ${sql(t.dead)} (
      consumer text COLLATE "C" NOT NULL,
      message_id text COLLATE "C" NOT NULL,
      envelope jsonb NOT NULL,
      error text NOT NULL,
      reason text NOT NULL,
      waiting_for jsonb NOT NULL,
      attempts integer NOT NULL,
      first_seen_at bigint NOT NULL,
      last_seen_at bigint NOT NULL,
      PRIMARY KEY (consumer, message_id)
    )`
    yield* sql`CREATE INDEX ${sql(t.index("dead_age_idx"))} ON ${sql(t.dead)} (consumer, first_seen_at, message_id)`

    yield* sql`CREATE TABLE ${sql(t.copies)} (
      entity text COLLATE "C" NOT NULL,
      id text COLLATE "C" NOT NULL,
      version bigint NOT NULL,
      state text NOT NULL CHECK (${state}),
      payload jsonb,
      deleted_at bigint,
      synced_at bigint NOT NULL,
      message_id text COLLATE "C" NOT NULL,
      PRIMARY KEY (entity, id)
    )`
  })

/**
 * Migration 2: `claim_due(now, lease_until, max_rows)`, the relay's claim as one statement (one round trip
 * instead of four). It leases up to `max_rows` due rows, oldest first, skipping rows other claimers hold,
 * and returns them. Two settings make it cheap:
 *
 * * `enable_sort = off` (for the function): due rows are read in `seq` order from the partial index of
 *   unpublished rows and the scan stops after `max_rows`. Without it, a backlog appended faster than
 *   autovacuum analyzes the table looks tiny to the planner, which then reads and sorts every due row on
 *   each claim (a claim on a fresh 30 000-row backlog: 35 ms instead of 2 ms; quadratic over a drain).
 * * `synchronous_commit = off` (for the claiming transaction): the lease needs no flush to disk. A lease
 *   lost in a server crash leaves its rows claimable again, exactly as when a lease ends: at worst they are
 *   published twice, and consumers drop the duplicate (R3).
 */
const createClaimFunction = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  claimFunction(t, false)

/**
 * `claim_due`, or with `afterSeq` its overload `claim_due(now_millis, lease_until, max_rows, after_seq)` that
 * takes only rows after `after_seq` (migration 8, `Outbox.ClaimOptions.afterSeq`).
 */
const claimFunction = (
  t: Tables.Tables,
  afterSeq: boolean
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const parameter = sql.literal(afterSeq ? ", after_seq bigint" : "")
    const condition = sql.literal(afterSeq ? "AND seq > after_seq" : "")
    yield* sql`CREATE FUNCTION ${sql(t.claimDue)}(now_millis bigint, lease_until bigint, max_rows integer${parameter})
      RETURNS SETOF ${sql(t.outbox)}
      LANGUAGE plpgsql
      SET enable_sort = off
      AS $$
      BEGIN
        PERFORM set_config('synchronous_commit', 'off', true);
        RETURN QUERY
          WITH due AS (
            SELECT seq AS due_seq FROM ${sql(t.outbox)}
            WHERE published_at IS NULL AND next_attempt_at <= now_millis
              AND (claimed_until IS NULL OR claimed_until <= now_millis)
              ${condition}
            ORDER BY seq
            LIMIT max_rows
            FOR UPDATE SKIP LOCKED
          )
          UPDATE ${sql(t.outbox)} AS o SET claimed_until = lease_until
          FROM due WHERE o.seq = due.due_seq
          RETURNING o.*;
      END
      $$`
  })

/**
 * Migration 3: `tombstones`, the version and time of each hard-deleted entity of an owner table (see
 * `OwnerTable`): the owner's row is gone, the tombstone lets a re-create continue the version (R4) and a
 * full sync republish the deletion.
 */
const createTombstones = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* sql`CREATE TABLE ${sql(t.tombstones)} (
      entity text COLLATE "C" NOT NULL,
      id text COLLATE "C" NOT NULL,
      version bigint NOT NULL,
      deleted_at bigint NOT NULL,
      PRIMARY KEY (entity, id)
    )`
  })

/**
 * Migration 4: `copies.refs`, the dependency fields of a copy that keeps no payload (a ledger row of a
 * subscription with `keepPayload: false`), e.g. `{"companyId": "c-1"}`, so that a hard delete of an entity
 * it references still waits for it (R5). Null where the payload is kept (it holds them). The payload column
 * already takes null on any row.
 */
const addCopyReferences = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* sql`ALTER TABLE ${sql(t.copies)} ADD COLUMN refs jsonb`
  })

/** The table of the turns of periodic tasks shared by a service's instances (migration 5): `<prefix>turns`. */
export const turnsTable = (t: Tables.Tables): string => `${t.prefix}turns`

/**
 * Migration 5: what lets several instances of a part share one database.
 *
 * * `waiting.claimed_until`: until when an instance's claim (`Inbox.claimDue`) holds a parked event, so
 *   that one instance at a time retries it; null when no claim holds it.
 * * `turns`: one row per periodic task (the retention clean-ups) with the time until which the instance
 *   that last took its turn holds it, so that the task runs once per interval across instances.
 */
const scaleOut = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* sql`ALTER TABLE ${sql(t.waiting)} ADD COLUMN claimed_until bigint`
    yield* sql`CREATE TABLE ${sql(turnsTable(t))} (
      task text COLLATE "C" PRIMARY KEY,
      held_until bigint NOT NULL
    )`
  })

/** The function that claims due outbox rows in per-entity order (migration 6): `<prefix>claim_due_ordered`. */
export const claimDueOrderedFunction = (t: Tables.Tables): string => `${t.prefix}claim_due_ordered`

/**
 * Migration 6: what lets several relays publish the events of one entity in version order (ordered lanes).
 *
 * * `outbox_entity_unpublished_idx`: the unpublished rows by `(entity, entityId, seq)` of their envelope,
 *   so that "is there an earlier unpublished row of this entity" is one index probe.
 * * `claim_due_ordered(now, lease_until, max_rows)`: `claim_due` that takes a due row only when every
 *   earlier unpublished row of its entity is taken by the same claim: none is leased to another claimer
 *   or waiting for a retry. One relay publishes a claim in `seq` order, so an entity's events reach the
 *   broker in order whatever the number of relays. Ordered claims run one at a time
 *   (`pg_advisory_xact_lock`, keyed by the function's name): two concurrent claims would each see the
 *   other's rows as free. The lock is held for the claim's statement only, never while publishing.
 *   `OFFSET 0` keeps the check a probe of that index per candidate row: as an anti-join the planner reads
 *   every unpublished row on each claim (100 000 unpublished rows: 9 ms a claim instead of 0.7 ms).
 */
const orderedClaims = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const name = claimDueOrderedFunction(t)
    // the lock's key, a string literal in the body: the name is a validated prefix and fixed letters
    const lockKey = sql.literal(`'${name}'`)
    yield* sql`CREATE INDEX ${sql(t.index("outbox_entity_unpublished_idx"))} ON ${sql(t.outbox)}
      ((envelope ->> 'entity'), (envelope ->> 'entityId'), seq) WHERE published_at IS NULL`
    yield* sql`CREATE FUNCTION ${sql(name)}(now_millis bigint, lease_until bigint, max_rows integer)
      RETURNS SETOF ${sql(t.outbox)}
      LANGUAGE plpgsql
      SET enable_sort = off
      AS $$
      BEGIN
        PERFORM set_config('synchronous_commit', 'off', true);
        PERFORM pg_advisory_xact_lock(hashtextextended(${lockKey}, 0));
        RETURN QUERY
          WITH due AS (
            SELECT o.seq AS due_seq FROM ${sql(t.outbox)} AS o
            WHERE o.published_at IS NULL AND o.next_attempt_at <= now_millis
              AND (o.claimed_until IS NULL OR o.claimed_until <= now_millis)
              AND NOT EXISTS (
                SELECT 1 FROM ${sql(t.outbox)} AS p
                WHERE p.published_at IS NULL
                  AND (p.envelope ->> 'entity') = (o.envelope ->> 'entity')
                  AND (p.envelope ->> 'entityId') = (o.envelope ->> 'entityId')
                  AND p.seq < o.seq
                  AND (p.next_attempt_at > now_millis OR p.claimed_until > now_millis)
                OFFSET 0
              )
            ORDER BY o.seq
            LIMIT max_rows
            FOR UPDATE OF o SKIP LOCKED
          )
          UPDATE ${sql(t.outbox)} AS o SET claimed_until = lease_until
          FROM due WHERE o.seq = due.due_seq
          RETURNING o.*;
      END
      $$`
  })

/**
 * Migration 7: `waiting_entity_idx`, the parked events by consumer and their own entity, so that "has this
 * entity an earlier parked event" (`Inbox.earliestWaiting`, ordered lanes) is one index probe.
 */
const orderedParking = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* sql`CREATE INDEX ${sql(t.index("waiting_entity_idx"))} ON ${sql(t.waiting)}
      (consumer, (envelope ->> 'entity'), (envelope ->> 'entityId'))`
  })

/**
 * Migration 8: `claim_due(now_millis, lease_until, max_rows, after_seq)`, the claim of rows after a `seq`
 * (`Outbox.ClaimOptions.afterSeq`). Published rows leave the partial index of unpublished rows only when
 * vacuum removes their entries; until then a claim from the start steps over every one of them (a claim
 * behind 500 000 rows published since the last vacuum: 7 ms, and 300 ms for the first claim that finds
 * them, against 0.5 ms). A relay draining a backlog claims after the last row it took. The three-argument
 * `claim_due` stays, for relays of earlier versions during a rolling upgrade.
 */
const claimAfter = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  claimFunction(t, true)

/**
 * Migration 9: outbox pages are filled to 45 % by inserts, so that the relay's claim, which sets only
 * `claimed_until` (in no index and no index predicate), finds room for each row's new version on the row's
 * own page: a HOT update, with no new entry in any of the outbox's five indexes (before: every claimed row
 * written again in all five, its envelope with it). The room left covers the claimed versions of every row
 * on a page, whatever their sizes. Pages written before the migration keep their rows as they are.
 */
const outboxFillFactor = (t: Tables.Tables): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* sql`ALTER TABLE ${sql(t.outbox)} SET (fillfactor = 45)`
  })

/**
 * The library's migrations for a set of table names, keyed `<id>_<name>` for `Migrator.fromRecord`.
 * Append new entries for schema changes; never edit or renumber released ones.
 */
export const migrations = (
  tables: Tables.Tables
): Record<string, Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient>> => ({
  "1_create_sync_tables": createSyncTables(tables),
  "2_create_claim_function": createClaimFunction(tables),
  "3_create_tombstones": createTombstones(tables),
  "4_add_copy_references": addCopyReferences(tables),
  "5_scale_out": scaleOut(tables),
  "6_ordered_claims": orderedClaims(tables),
  "7_ordered_parking": orderedParking(tables),
  "8_claim_after": claimAfter(tables),
  "9_outbox_fill_factor": outboxFillFactor(tables)
})

/**
 * Applies the pending migrations for `tables`, recording them in `<prefix>migrations`. Idempotent, and
 * safe to run from several processes at once (the migrator locks its table). Returns the applied
 * `[id, name]` pairs.
 */
export const run = (
  tables: Tables.Tables
): Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  Migrator.MigrationError | SqlError.SqlError,
  SqlClient.SqlClient
> => Migrator.make({})({ table: tables.migrations, loader: Migrator.fromRecord(migrations(tables)) })

/**
 * Validates `prefix` (default `sync_`, see `Tables.make`) and applies the pending migrations for it.
 */
export const migrate = (
  options?: { readonly prefix?: string }
): Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  Tables.InvalidTablePrefix | Migrator.MigrationError | SqlError.SqlError,
  SqlClient.SqlClient
> => Effect.flatMap(Tables.make(options?.prefix), run)
