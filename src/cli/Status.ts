/**
 * `entity-sync status`: per producer found in the outbox, its backlog (unpublished rows), lag (age of the
 * oldest), rows in flight (claimed by a relay now) and failing rows (publish attempts made); per consumer
 * found in the inbox, its parked events, the oldest parked, and its dead letters in the inbox and in the
 * broker's dead-letter queue of `<consumer>.sync` (when `AMQP_URL` is set). Everything is counted by the
 * database; no table is read whole.
 *
 * @since 0.2.0
 */
import { Clock, Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Broker } from "../Broker.ts"
import { Inbox } from "../Inbox.ts"
import { decodeRows, Int8, NullableInt8 } from "../postgres/Columns.ts"
import { broker, brokerConfigured, BrokerTarget, Database, database, onBroker } from "./Connect.ts"
import { OperationFailed } from "./Errors.ts"
import { age, json, line, shown, table } from "./Output.ts"

/** The most consumers or producers one status shows. */
export const maxListed = 200

/** One producer's outbox. Times are epoch milliseconds. */
export interface ProducerStatus {
  readonly producer: string
  readonly backlog: number
  readonly oldestUnpublishedAt: number | null
  readonly lagMillis: number | null
  readonly inFlight: number
  readonly failing: number
}

/** One consumer's inbox and dead letters. */
export interface ConsumerStatus {
  readonly consumer: string
  readonly parked: number
  readonly oldestParkedAt: number | null
  readonly deadInbox: number
  /** Null when the broker was not asked (no `AMQP_URL`). */
  readonly deadBroker: number | null
}

const ProducerRow = Schema.Struct({
  producer: Schema.String,
  backlog: Int8,
  oldest: NullableInt8,
  inFlight: Int8,
  failing: Int8
})

const ConsumerRow = Schema.Struct({ consumer: Schema.String })

/** The names of the producers and the counts of their unpublished rows. */
const producers = (now: number) =>
  Effect.gen(function*() {
    const { sql, tables, where } = yield* Database
    const outbox = sql(tables.outbox)
    const rows = yield* sql`
      WITH unpublished AS (
        SELECT envelope ->> 'producer' AS producer, count(*) AS backlog, min(created_at) AS oldest,
          count(*) FILTER (WHERE claimed_until > ${now}::bigint) AS "inFlight",
          count(*) FILTER (WHERE attempts > 0) AS failing
        FROM ${outbox} WHERE published_at IS NULL GROUP BY 1
      ), newest AS (
        SELECT envelope ->> 'producer' AS producer FROM ${outbox} ORDER BY seq DESC LIMIT 1
      )
      SELECT producer, backlog, oldest, "inFlight", failing FROM unpublished
      UNION ALL
      SELECT producer, 0, NULL, 0, 0 FROM newest WHERE producer NOT IN (SELECT producer FROM unpublished)
      ORDER BY producer LIMIT ${maxListed}`.pipe(
      Effect.flatMap(decodeRows(ProducerRow, "outbox")),
      Effect.mapError((error) => new OperationFailed({ message: `reading the outbox in ${where}: ${error.message}` }))
    )
    return rows.map((row): ProducerStatus => ({
      producer: shown(row.producer, 255),
      backlog: row.backlog,
      oldestUnpublishedAt: row.oldest,
      lagMillis: row.oldest === null ? null : Math.max(0, now - row.oldest),
      inFlight: row.inFlight,
      failing: row.failing
    }))
  })

/** The consumers with rows in the inbox, waiting or dead tables (a loose index scan of each). */
const consumerNames = Effect.gen(function*() {
  const { sql, tables, where } = yield* Database
  const distinct = (table: string) =>
    sql`WITH RECURSIVE c AS (
        (SELECT consumer FROM ${sql(table)} ORDER BY consumer LIMIT 1)
        UNION ALL
        SELECT (SELECT t.consumer FROM ${sql(table)} AS t WHERE t.consumer > c.consumer ORDER BY t.consumer LIMIT 1)
        FROM c WHERE c.consumer IS NOT NULL
      ) SELECT consumer FROM c WHERE consumer IS NOT NULL LIMIT ${maxListed}`
  const rows = yield* Effect.forEach(
    [tables.inbox, tables.waiting, tables.dead],
    (table) => distinct(table).pipe(Effect.flatMap(decodeRows(ConsumerRow, "inbox")))
  ).pipe(
    Effect.mapError((error) => new OperationFailed({ message: `reading the inbox in ${where}: ${error.message}` }))
  )
  return [...new Set(rows.flat().map((row) => row.consumer))].sort().slice(0, maxListed)
})

/** The status of every producer and consumer the database knows. */
export const gather = <R>(deadOnBroker: (consumer: string) => Effect.Effect<number | null, OperationFailed, R>) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const inbox = yield* Inbox
    const { where } = yield* Database
    const producerStatus = yield* producers(now)
    const names = yield* consumerNames
    const consumers = yield* Effect.forEach(names, (consumer) =>
      Effect.gen(function*() {
        const stats = yield* inbox.stats(consumer).pipe(
          Effect.mapError((error) =>
            new OperationFailed({ message: `reading the inbox in ${where}: ${error.message}` })
          )
        )
        return {
          consumer: shown(consumer, 255),
          parked: stats.waiting,
          oldestParkedAt: stats.oldestWaitingSince,
          deadInbox: stats.dead,
          deadBroker: yield* deadOnBroker(consumer)
        } satisfies ConsumerStatus
      }))
    return { at: now, producers: producerStatus, consumers }
  })

const print = (
  status: Effect.Success<ReturnType<typeof gather>>,
  where: string,
  brokerWhere: string | undefined
) =>
  Effect.gen(function*() {
    yield* line(
      `PostgreSQL ${where}${
        brokerWhere === undefined ? " (AMQP_URL not set: no broker dead letters)" : `, RabbitMQ ${brokerWhere}`
      }`
    )
    yield* line("")
    yield* line(
      status.producers.length === 0 ? "no producer in the outbox" : table(
        ["PRODUCER", "BACKLOG", "LAG", "IN FLIGHT", "FAILING"],
        status.producers.map((p) => [
          p.producer,
          String(p.backlog),
          p.lagMillis === null ? "-" : age(p.lagMillis),
          String(p.inFlight),
          String(p.failing)
        ])
      )
    )
    yield* line("")
    yield* line(
      status.consumers.length === 0 ? "no consumer in the inbox" : table(
        ["CONSUMER", "PARKED", "OLDEST PARKED", "DEAD (INBOX)", "DEAD (BROKER)"],
        status.consumers.map((c) => [
          c.consumer,
          String(c.parked),
          c.oldestParkedAt === null ? "-" : age(status.at - c.oldestParkedAt),
          String(c.deadInbox),
          c.deadBroker === null ? "-" : String(c.deadBroker)
        ])
      )
    )
  })

/** How many dead letters the broker holds for a consumer's queue `<consumer>.sync`. */
const brokerDead = (consumer: string) =>
  Effect.flatMap(Broker, (b) => onBroker("read the dead letters", b.deadLetters(`${consumer}.sync`, { limit: 0 })))
    .pipe(Effect.map((page): number | null => page.total))

/** `entity-sync status [--json]`. */
export const command = Command.make(
  "status",
  { json: Flag.Boolean("json").pipe(Flag.withDefault(false), Flag.withDescription("print JSON")) },
  (flags) =>
    Effect.gen(function*() {
      const report = <R>(deadOnBroker: (consumer: string) => Effect.Effect<number | null, OperationFailed, R>) =>
        Effect.gen(function*() {
          const status = yield* gather(deadOnBroker)
          const { where } = yield* Database
          const target = yield* Effect.serviceOption(BrokerTarget)
          if (flags.json) return yield* json(status)
          yield* print(status, where, Option.isSome(target) ? target.value.where : undefined)
        })
      yield* (yield* brokerConfigured)
        ? report(brokerDead).pipe(Effect.provide([database, broker]))
        : report(() => Effect.succeed(null)).pipe(Effect.provide(database))
    })
).pipe(Command.withDescription(
  "Backlog, lag and in-flight rows per producer; parked and dead letters per consumer"
))
