/**
 * Scale-out at the store level, on PostgreSQL: two instances of one service, each with its own connection
 * pool on the same tables, claim parked events (`Inbox.claimDue`) and run the retention clean-ups (the
 * relay's `pruneTurn` and the consumer's) at the same time.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Effect, Layer, type Redacted } from "effect"
import type { EntityRef } from "../../src/Errors.ts"
import { Inbox, type WaitingRow } from "../../src/Inbox.ts"
import { Outbox, OutboxTransaction } from "../../src/Outbox.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import * as Relay from "../../src/Relay.ts"
import * as SyncConsumer from "../../src/SyncConsumer.ts"
import { createdEnvelope } from "../fixtures.ts"
import * as TestPostgres from "../postgres.ts"

const prefix = "scale_"

/** One instance's stores on its own pool of `url`. */
const instance = (url: Redacted.Redacted) =>
  Layer.build(
    PostgresSync.layer({ prefix }).pipe(Layer.provide(PgClient.layer({ url, maxConnections: 4 })))
  )

/** Two instances on a fresh database (migrated once, before both start). */
const twoInstances = Effect.gen(function*() {
  const database = Context.get(yield* Layer.build(TestPostgres.database), TestPostgres.TestDatabase)
  const first = yield* instance(database.url)
  const second = yield* instance(database.url)
  return [first, second] as const
})

const parkedRow = (messageId: string, now: number): WaitingRow => {
  const waitingFor: ReadonlyArray<EntityRef> = [{ entity: "Company", id: "c-1" }]
  return {
    consumer: "directory",
    messageId,
    envelope: createdEnvelope(messageId),
    waitingFor,
    attempts: 4,
    nextAttemptAt: now,
    firstSeenAt: now,
    lastSeenAt: now
  }
}

describe("scale-out: two instances on one PostgreSQL database", () => {
  it.live(
    "never both claim the same parked event; a claim of a dead instance ends with its lease",
    () =>
      Effect.gen(function*() {
        const [a, b] = yield* twoInstances
        const inboxA = Context.get(a, Inbox)
        const inboxB = Context.get(b, Inbox)
        const now = yield* Clock.currentTimeMillis
        const ids = Array.from({ length: 400 }, (_, i) => `m-${String(i).padStart(3, "0")}`)
        yield* Effect.forEach(ids, (id) => inboxA.park(parkedRow(id, now)), { concurrency: 4, discard: true })

        // both instances claim pages as fast as they can, with 4 claimers each, until nothing is left
        const lease = 60_000
        const claimer = (inbox: Inbox["Service"]) =>
          Effect.gen(function*() {
            const taken: Array<string> = []
            while (true) {
              const rows = yield* inbox.claimDue("directory", now, 7, lease)
              if (rows.length === 0) return taken
              taken.push(...rows.map((row) => row.messageId))
            }
          })
        const claims = yield* Effect.all(
          [inboxA, inboxB, inboxA, inboxB, inboxA, inboxB, inboxA, inboxB].map(claimer),
          { concurrency: "unbounded" }
        )
        const all = claims.flat()
        const byA = claims.filter((_, i) => i % 2 === 0).flat()
        const byB = claims.filter((_, i) => i % 2 === 1).flat()
        assert.strictEqual(all.length, ids.length, "each parked event claimed exactly once")
        assert.deepStrictEqual([...new Set(all)].sort(), ids)
        assert.isAbove(byA.length, 0)
        assert.isAbove(byB.length, 0)
        console.log(`parked claims: ${ids.length} events, ${byA.length} by A, ${byB.length} by B, 0 by both`)

        // A "dies" holding its claims: B gets them only once the lease has ended
        assert.deepStrictEqual(yield* inboxB.claimDue("directory", now + lease - 1, 1_000, lease), [])
        assert.strictEqual(yield* inboxB.nextDueAt("directory"), now + lease)
        const takenOver = yield* inboxB.claimDue("directory", now + lease, 1_000, lease)
        assert.strictEqual(takenOver.length, ids.length)
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "retention clean-ups run once per interval across instances, in bounded statements",
    () =>
      Effect.gen(function*() {
        const [a, b] = yield* twoInstances
        const outboxA = Context.get(a, Outbox)
        const ids = Array.from({ length: 2_500 }, (_, i) => `m-${i}`)
        yield* outboxA.transaction(OutboxTransaction.use((tx) => tx.append(ids.map(createdEnvelope))))
        const claimed = yield* outboxA.claim(ids.length)
        yield* outboxA.markPublished(claimed.map((row) => row.seq))
        const inboxA = Context.get(a, Inbox)
        yield* inboxA.recordMany("directory", ids)
        yield* Effect.sleep("5 millis")

        const relayOptions: Relay.RelayOptions = {
          producer: "accounts",
          retention: 0,
          pruneInterval: "1 hour",
          pruneBatchSize: 1_000
        }
        const relayTurn = (context: Context.Context<Outbox>) =>
          Relay.pruneTurn(relayOptions).pipe(Effect.provideContext(context))
        const consumerTurn = (inbox: Inbox["Service"]) =>
          SyncConsumer.pruneTurn(inbox, "directory", { retention: 0, pruneInterval: "1 hour", pruneBatchSize: 1_000 })

        const relayRounds = yield* Effect.all([relayTurn(a), relayTurn(b)], { concurrency: "unbounded" })
        const ran = relayRounds.filter((round) => round !== undefined)
        assert.strictEqual(ran.length, 1, "one relay took the interval's turn")
        assert.deepStrictEqual(ran[0], { deleted: 2_500, batches: 3 })
        assert.deepStrictEqual(yield* outboxA.rows(), [])

        const consumerRounds = yield* Effect.all(
          [consumerTurn(inboxA), consumerTurn(Context.get(b, Inbox))],
          { concurrency: "unbounded" }
        )
        const consumerRan = consumerRounds.filter((round) => round !== undefined)
        assert.strictEqual(consumerRan.length, 1, "one consumer instance took the interval's turn")
        assert.deepStrictEqual(consumerRan[0], { deleted: 2_500, batches: 3 })
        assert.strictEqual((yield* inboxA.recordMany("directory", ids)).size, ids.length)

        // within the interval, neither instance runs it again
        const again = yield* Effect.all([relayTurn(a), relayTurn(b), consumerTurn(inboxA)], {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(again, [undefined, undefined, undefined])
        console.log(
          `prune: 2 instances, outbox ${JSON.stringify(ran[0])}, inbox ${JSON.stringify(consumerRan[0])}, ` +
            `second attempts within the interval: 0 ran`
        )
      }).pipe(Effect.scoped),
    60_000
  )
})
