/**
 * The outage scenario (R12, "an outage pauses, it never dead-letters"), on the real stack split over two
 * PostgreSQL servers: a steady write load goes through the relay, RabbitMQ and the consumer; the private
 * cluster of one side (the owner's or the consumer's database) is stopped for `OUTAGE_SECONDS` (default
 * 180) and started again while the load goes on; the load continues a while, then stops. Judged: no dead
 * letter (the broker's dead queue and the inbox's dead rows), nothing lost, nothing applied twice, copies
 * equal to the owner's rows, and the state the owner had when the database came back reproduced in the
 * copies within 30 s.
 */
import { assert } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer, Ref, Schema, type Scope } from "effect"
import type { SqlClient } from "effect/sql"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import { appliesTable } from "../faults/contract.ts"
import { queueState } from "../faults/rabbit.ts"
import { consumer, type Names, relay, tables } from "../faults/stack.ts"
import { awaitQuiescence, judge } from "../faults/verify.ts"
import { steadyLoad } from "./load.ts"
import { deadTable, setup, type Side } from "./split.ts"

/** The scenario's durations and load, from the environment where it may be shortened locally. */
export const settings = {
  /** How long the database stays down (`OUTAGE_SECONDS`, default 180). */
  outageSeconds: Number(process.env.OUTAGE_SECONDS ?? 180),
  /** Target events per second of the load (`OUTAGE_RATE`, default 30). */
  ratePerSecond: Number(process.env.OUTAGE_RATE ?? 30),
  /** Load before the outage. */
  beforeSeconds: 15,
  /** Load after the recovery. */
  afterSeconds: 20,
  /** The longest the copies may take to reach the owner's state as of the recovery. */
  convergeWithinSeconds: 30
}

/** The vitest timeout of an outage test: the scenario plus generous room for set-up, settling and clean-up. */
export const testTimeout = (settings.outageSeconds + settings.beforeSeconds + settings.afterSeconds + 360) * 1000

const Count = Schema.Array(Schema.Struct({ n: Schema.Int }))
const decodeCount = Schema.decodeUnknownEffect(Count)
const firstCount = (rows: typeof Count.Type) => rows[0]?.n ?? 0

const Behind = Schema.Array(Schema.Struct({ behind: Schema.Int, differing: Schema.Int }))
const decodeBehind = Schema.decodeUnknownEffect(Behind)

/**
 * How far the consumer is from the owner's state at `asOf` (ms): events committed by then that are not
 * published or not received, and entities last written by then whose copy differs.
 */
const behindAsOf = (sql: SqlClient.SqlClient, names: Names, asOf: number) => {
  const t = tables(names)
  return sql`SELECT
      (SELECT count(*) FROM ${sql(t.outbox)} o WHERE o.created_at <= ${asOf} AND (o.published_at IS NULL OR
        NOT EXISTS (SELECT 1 FROM ${
    sql(t.inbox)
  } i WHERE i.consumer = ${names.service} AND i.message_id = o.message_id)))::int
        AS behind,
      (SELECT count(*) FROM ${sql(t.source)} s LEFT JOIN ${sql(t.copies)} c ON c.entity = s.entity AND c.id = s.id
        WHERE s.updated_at <= ${asOf} AND (c.id IS NULL OR s.version <> c.version OR s.state <> c.state
          OR s.payload IS DISTINCT FROM c.payload))::int AS differing`.pipe(
    Effect.flatMap(decodeBehind),
    Effect.map((rows) => rows[0] ?? { behind: -1, differing: -1 })
  )
}

/**
 * Seconds from `asOf` until the copies reproduce the owner's state at `asOf` (polling every 250 ms; a
 * failing poll, e.g. right after the restart, counts as not yet), or `undefined` after `timeoutSeconds`.
 */
const awaitCaughtUp = (sql: SqlClient.SqlClient, names: Names, asOf: number, timeoutSeconds: number) =>
  Effect.gen(function*() {
    while (true) {
      const state = yield* behindAsOf(sql, names, asOf).pipe(Effect.option)
      const now = yield* Clock.currentTimeMillis
      if (state._tag === "Some" && state.value.behind === 0 && state.value.differing === 0) return (now - asOf) / 1000
      if (now - asOf > timeoutSeconds * 1000) return undefined
      yield* Effect.sleep("250 millis")
    }
  })

/** Messages in the broker's dead queue of the test. */
const brokerDeadLetters = (names: Names) =>
  Effect.map(queueState(RabbitBroker.deadQueueOf(names.queue)), (state) => state.ready)

/** Dead letters of the test: messages in the broker's dead queue and dead rows in the consumer's inbox. */
const deadLetters = (sql: SqlClient.SqlClient, names: Names) =>
  Effect.gen(function*() {
    const broker = yield* brokerDeadLetters(names)
    const inbox = yield* sql`SELECT count(*)::int AS n FROM ${sql(deadTable(names))} WHERE consumer = ${names.service}`
      .pipe(
        Effect.flatMap(decodeCount),
        Effect.map(firstCount)
      )
    return { broker, inbox }
  })

/** Runs the scenario with `down`'s database on the private cluster, prints its figures and judges it. */
export const runOutage = (test: string, down: Side): Effect.Effect<void, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const fixture = yield* setup(test, down)
    const { names, sql, cluster } = fixture
    yield* Layer.build(consumer(fixture.consumerUrl, names))
    yield* Layer.build(relay(fixture.ownerUrl, names))
    const stopping = yield* Ref.make(false)
    const load = yield* steadyLoad(
      fixture.writer,
      { ratePerSecond: settings.ratePerSecond, chunkEvents: Math.max(20, settings.ratePerSecond * 5) },
      stopping
    ).pipe(Effect.forkChild)

    yield* Effect.sleep(`${settings.beforeSeconds} seconds`)
    const applies = sql`SELECT count(*)::int AS n FROM ${sql(appliesTable)}`.pipe(
      Effect.flatMap(decodeCount),
      Effect.map(firstCount)
    )
    const appliedBefore = yield* applies
    assert.isAbove(appliedBefore, 0, "nothing was applied before the outage: the stack does not work at all")

    yield* cluster.stop
    const stoppedAt = yield* Clock.currentTimeMillis
    yield* Effect.sleep(`${settings.outageSeconds} seconds`)
    const deadDuringOutage = yield* brokerDeadLetters(names)
    const backlog = (yield* queueState(names.queue)).ready
    yield* cluster.start
    const recoveredAt = yield* Clock.currentTimeMillis
    const outageSeconds = (recoveredAt - stoppedAt) / 1000

    const convergedSeconds = yield* awaitCaughtUp(sql, names, recoveredAt, 2 * settings.convergeWithinSeconds)
    const writingLeft = recoveredAt + settings.afterSeconds * 1000 - (yield* Clock.currentTimeMillis)
    if (writingLeft > 0) yield* Effect.sleep(writingLeft)
    yield* Ref.set(stopping, true)
    const written = yield* Fiber.join(load)
    const outcome = yield* awaitQuiescence(sql, names, { timeoutSeconds: 180, stallSeconds: 30 })
    const dead = yield* deadLetters(sql, names)

    console.log(
      `[outage] ${down}'s database down ${outageSeconds.toFixed(0)} s under ${settings.ratePerSecond} events/s: ` +
        `events committed ${outcome.events} (writer chunks ${written.chunks}, given up ${written.failedChunks}), ` +
        `applied ${outcome.applies}, duplicates applied ${outcome.duplicates}, ` +
        `unreceived ${outcome.unreceived}, differing entities ${outcome.differing}, ` +
        `dead letters ${dead.broker} in the broker's dead queue (${deadDuringOutage} at the end of the outage) ` +
        `and ${dead.inbox} in the inbox, ${backlog} messages queued at recovery, ` +
        (convergedSeconds === undefined
          ? `copies NOT equal to the owner's state at recovery after ${2 * settings.convergeWithinSeconds} s`
          : `copies equal to the owner's state at recovery ${convergedSeconds.toFixed(1)} s after it`)
    )
    assert.strictEqual(dead.broker, 0, `dead letters in ${RabbitBroker.deadQueueOf(names.queue)}`)
    assert.strictEqual(dead.inbox, 0, "dead rows in the consumer's inbox")
    assert.isDefined(convergedSeconds, "the copies never reached the owner's state at recovery")
    assert.isAtMost(
      convergedSeconds ?? Infinity,
      settings.convergeWithinSeconds,
      "seconds from recovery until the copies equal the owner's state at recovery"
    )
    yield* judge(
      `${down}'s database stopped`,
      outcome,
      { injected: 1, detail: `${outageSeconds.toFixed(0)} s outage` },
      written,
      names
    )
  })
