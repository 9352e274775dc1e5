/**
 * The hand-written baseline: the same durable steps as the library, written directly against
 * `@effect/sql-pg` and amqplib, the way a careful engineer would for this one entity.
 *
 * * owner: the items in a table with a column per field (the library's owner table, `items`); one
 *   transaction upserts the items from one JSON parameter — a new one at version 1, an existing one
 *   updated with its version bumped in SQL unless nothing changed — inserts their events into the outbox
 *   in one multi-row statement and `NOTIFY`s: three statements for creates and updates alike;
 * * relay: one transaction claims up to a batch with `FOR UPDATE SKIP LOCKED`, publishes it on a confirm
 *   channel (persistent messages), waits for every confirm, marks the rows published and commits; it waits
 *   on `LISTEN` (1 s poll as a fallback) when the outbox is empty;
 * * consumer: prefetch, batches of up to N deliveries collected for at most 5 ms, one transaction per
 *   batch — inbox insert of the message ids (`ON CONFLICT DO NOTHING RETURNING`), one version-guarded
 *   multi-row upsert of the fresh ones — then one cumulative ack. Bad JSON is rejected to the dead letter
 *   exchange.
 *
 * Same topology as the library: durable topic exchange, quorum queue with a delivery limit and a dead
 * letter exchange, persistent messages with confirms.
 */
import { PgClient } from "@effect/sql-pg"
import amqp from "amqplib"
import type { ConsumeMessage } from "amqplib"
import { Array as Arr, Context, Effect, Layer, Queue, Ref } from "effect"
import { SqlClient } from "effect/sql"
import { amqpUrl, type Item, itemOf, itemsTable, owner } from "./contract.ts"
import type { MakePipeline, PhaseEnv, Pipeline } from "./workloads.ts"

const channelName = "bench_outbox"

const ownerSchema = [
  itemsTable,
  `CREATE TABLE IF NOT EXISTS outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, message_id uuid NOT NULL UNIQUE, routing_key text NOT NULL,
    body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz)`,
  `CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL`
]

const consumerSchema = [
  `CREATE TABLE IF NOT EXISTS inbox (message_id uuid PRIMARY KEY, received_at timestamptz NOT NULL DEFAULT now())`,
  `CREATE TABLE IF NOT EXISTS copies (
    id text PRIMARY KEY, version bigint NOT NULL, payload jsonb NOT NULL, synced_at timestamptz NOT NULL,
    message_id uuid NOT NULL)`
]

const client = (url: PhaseEnv["ownerUrl"], applicationName: string) =>
  Layer.build(PgClient.layer({ url, applicationName, maxConnections: 10 })).pipe(
    Effect.map((context) => ({
      sql: Context.get(context, SqlClient.SqlClient),
      pg: Context.get(context, PgClient.PgClient)
    }))
  )

const connect = (env: PhaseEnv, role: string) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      amqp.connect(amqpUrl, { clientProperties: { connection_name: `${env.names.connectionPrefix}-${role}` } })
    ),
    (connection) => Effect.promise(() => connection.close().catch(() => undefined))
  )

/** An event on the wire: the library's envelope format. */
const body = (id: string, version: number, messageId: string, payload: unknown) =>
  JSON.stringify({
    specVersion: 1,
    messageId,
    entity: "Item",
    entityId: id,
    action: version === 1 ? "created" : "updated",
    version,
    occurredAt: new Date().toISOString(),
    producer: owner,
    forceSync: false,
    payload
  })

/** What the consumer reads of an event. */
interface Event {
  readonly messageId: string
  readonly entityId: string
  readonly version: number
  readonly payload: object
}

/** Parses and checks a message body; null when it is not a usable event. */
const parse = (content: Buffer): Event | null => {
  try {
    const json: unknown = JSON.parse(content.toString("utf8"))
    if (typeof json !== "object" || json === null) return null
    const messageId: unknown = Reflect.get(json, "messageId")
    const entityId: unknown = Reflect.get(json, "entityId")
    const version: unknown = Reflect.get(json, "version")
    const payload: unknown = Reflect.get(json, "payload")
    if (typeof messageId !== "string" || typeof entityId !== "string" || !Number.isInteger(version)) return null
    if (typeof payload !== "object" || payload === null) return null
    return { messageId, entityId, version: Number(version), payload }
  } catch {
    return null
  }
}

/** The baseline pipeline of a phase. */
export const make: MakePipeline = (env) =>
  Effect.gen(function*() {
    const ownerDb = yield* client(env.ownerUrl, "bench-baseline-owner")
    const consumerDb = yield* client(env.consumerUrl, "bench-baseline-consumer")
    for (const statement of ownerSchema) yield* ownerDb.sql.unsafe(statement)
    for (const statement of consumerSchema) yield* consumerDb.sql.unsafe(statement)
    const applied = yield* Ref.make(0)
    const { names, settings } = env
    const { pg, sql } = ownerDb

    // Creates and updates alike: one upsert of every item from one JSON parameter; an item whose columns
    // would not change is left alone and raises no event.
    const upsert = (rows: ReadonlyArray<Item>) =>
      sql.withTransaction(Effect.gen(function*() {
        if (!Arr.isReadonlyArrayNonEmpty(rows)) return
        const payloads = new Map(rows.map((row) => [row.id, row]))
        const versions = yield* sql<{ readonly id: string; readonly version: bigint | number | string }>`
          INSERT INTO items AS t (id, name, n, tags, note, version, updated_at)
          SELECT r.id, r.name, r.n, r.tags, r.note, 1, now()
          FROM jsonb_to_recordset(${
          JSON.stringify(rows)
        }::jsonb) AS r(id text, name text, n integer, tags text[], note text)
          ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, n = EXCLUDED.n, tags = EXCLUDED.tags,
            note = EXCLUDED.note, version = t.version + 1, updated_at = now()
          WHERE (t.name, t.n, t.tags, t.note) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.n, EXCLUDED.tags, EXCLUDED.note)
          RETURNING id, version`
        if (!Arr.isReadonlyArrayNonEmpty(versions)) return
        const events = Arr.map(versions, ({ id, version }) => {
          const messageId = crypto.randomUUID()
          return {
            message_id: messageId,
            routing_key: `${owner}.Item.${Number(version) === 1 ? "created" : "updated"}`,
            body: body(id, Number(version), messageId, payloads.get(id))
          }
        })
        yield* sql`INSERT INTO outbox ${sql.insert(events)}`
        yield* sql`SELECT pg_notify(${channelName}, '')`
      }))

    const write = (prefix: string, ids: ReadonlyArray<number>) => upsert(ids.map((i) => itemOf(prefix, i)))
    const update = (prefix: string, ids: ReadonlyArray<number>, revision: number) =>
      upsert(ids.map((i) => itemOf(prefix, i, revision)))

    const fillOutbox = (prefix: string, count: number) =>
      Effect.forEach(
        Array.from({ length: Math.ceil(count / 1_000) }, (_, c) => c),
        (c) => {
          const events = Arr.makeBy(Math.max(1, Math.min(1_000, count - c * 1_000)), (k) => {
            const item = itemOf(prefix, c * 1_000 + k)
            const messageId = crypto.randomUUID()
            return {
              message_id: messageId,
              routing_key: `${owner}.Item.created`,
              body: body(item.id, 1, messageId, item)
            }
          })
          return sql`INSERT INTO outbox ${sql.insert(events)}`
        },
        { concurrency: 2, discard: true }
      )

    const declare = (channel: amqp.Channel) =>
      Effect.promise(async () => {
        await channel.assertExchange(names.exchange, "topic", { durable: true })
        await channel.assertExchange(names.deadLetterExchange, "direct", { durable: true })
        await channel.assertQueue(names.queue, {
          durable: true,
          arguments: {
            "x-queue-type": "quorum",
            "x-delivery-limit": 20,
            "x-dead-letter-exchange": names.deadLetterExchange,
            "x-dead-letter-routing-key": names.queue
          }
        })
        await channel.assertQueue(`${names.queue}.dead`, { durable: true })
        await channel.bindQueue(`${names.queue}.dead`, names.deadLetterExchange, names.queue)
        await channel.bindQueue(names.queue, names.exchange, `${owner}.Item.*`)
      })

    const startConsumer: Pipeline["startConsumer"] = (listener) =>
      Effect.gen(function*() {
        const { pg: cpg, sql: csql } = consumerDb
        const connection = yield* connect(env, "consumer")
        const channel = yield* Effect.promise(() => connection.createChannel())
        yield* declare(channel)
        yield* Effect.promise(() => channel.prefetch(settings.prefetch))
        const deliveries = yield* Queue.unbounded<ConsumeMessage>()
        yield* Effect.promise(() =>
          channel.consume(names.queue, (message) => {
            if (message !== null) Queue.offerUnsafe(deliveries, message)
          }, { noAck: false })
        )

        const apply = (messages: ReadonlyArray<ConsumeMessage>) =>
          Effect.gen(function*() {
            const events: Array<{ readonly message: ConsumeMessage; readonly event: Event }> = []
            let rejected = false
            for (const message of messages) {
              const event = parse(message.content)
              if (event === null) {
                channel.nack(message, false, false)
                rejected = true
              } else events.push({ message, event })
            }
            const ids = [...new Set(events.map((e) => e.event.messageId))]
            const written = ids.length === 0 ? [] : yield* csql.withTransaction(Effect.gen(function*() {
              const fresh = new Set(
                (yield* csql<{ readonly message_id: string }>`INSERT INTO inbox (message_id)
                    SELECT unnest(${ids}::uuid[]) ON CONFLICT DO NOTHING RETURNING message_id`).map((r) => r.message_id)
              )
              const latest = new Map<string, Event>()
              for (const { event } of events) {
                if (!fresh.has(event.messageId)) continue
                const seen = latest.get(event.entityId)
                if (seen === undefined || seen.version < event.version) latest.set(event.entityId, event)
              }
              const now = new Date()
              const newest = [...latest.values()]
              if (!Arr.isReadonlyArrayNonEmpty(newest)) return []
              const copies = Arr.map(newest, (e) => ({
                id: e.entityId,
                version: e.version,
                payload: cpg.json(e.payload),
                synced_at: now,
                message_id: e.messageId
              }))
              return yield* csql<{ readonly id: string }>`INSERT INTO copies ${csql.insert(copies)}
                  ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, payload = EXCLUDED.payload,
                    synced_at = EXCLUDED.synced_at, message_id = EXCLUDED.message_id
                  WHERE copies.version < EXCLUDED.version
                  RETURNING id`
            }))
            const last = events.at(-1)
            if (last !== undefined) {
              if (rejected) { for (const { message } of events) channel.ack(message) }
              else channel.ack(last.message, true)
            }
            yield* Ref.update(applied, (n) => n + written.length)
            if (listener !== null) { for (const { id } of written) listener.onApplied(id) }
          })

        const loop = Effect.gen(function*() {
          while (true) {
            const first = yield* Queue.takeBetween(deliveries, 1, settings.consumerBatch)
            const rest = first.length < settings.consumerBatch
              ? yield* Effect.andThen(
                Effect.sleep("5 millis"),
                Queue.takeBetween(deliveries, 0, settings.consumerBatch - first.length)
              )
              : []
            yield* apply([...first, ...rest])
          }
        })
        yield* Effect.forkScoped(loop)
      })

    const startRelay = Effect.gen(function*() {
      const connection = yield* connect(env, "relay")
      const channel = yield* Effect.promise(() => connection.createConfirmChannel())
      const notifications = yield* pg.listen(channelName)
      const batch = sql.withTransaction(Effect.gen(function*() {
        const rows = yield* sql<{
          readonly seq: bigint | number | string
          readonly message_id: string
          readonly routing_key: string
          readonly body: string
        }>`SELECT seq, message_id, routing_key, body FROM outbox WHERE published_at IS NULL
          ORDER BY seq LIMIT ${settings.relayBatch} FOR UPDATE SKIP LOCKED`
        if (rows.length === 0) return 0
        yield* Effect.promise(() => {
          for (const row of rows) {
            channel.publish(names.exchange, row.routing_key, Buffer.from(row.body), {
              persistent: true,
              messageId: row.message_id,
              type: "Item.created",
              contentType: "application/json"
            })
          }
          return channel.waitForConfirms()
        })
        yield* sql`UPDATE outbox SET published_at = now() WHERE seq = ANY(${rows.map((r) => String(r.seq))}::bigint[])`
        return rows.length
      }))
      const loop = Effect.gen(function*() {
        while (true) {
          const claimed = yield* batch
          if (claimed < settings.relayBatch) yield* Queue.takeAll(notifications).pipe(Effect.timeoutOption("1 second"))
        }
      })
      yield* Effect.forkScoped(loop)
    })

    return {
      name: "baseline",
      write,
      update,
      fillOutbox,
      startConsumer,
      startRelay,
      applied: Ref.get(applied)
    }
  })
