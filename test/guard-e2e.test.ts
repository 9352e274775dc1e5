/**
 * The version guard of the copy stores, end to end (R4): the consumer decides from the copy it read that an
 * event is newer, but another instance of the service wrote a newer version after that read (an insert
 * commits after a `FOR UPDATE` read that found no row locks nothing). Only the store's guarded upsert keeps
 * the newer version then: the consumer's own stale check has nothing to see. Run on the memory stores and
 * on PostgreSQL.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Metric } from "effect"
import { Broker } from "../src/Broker.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import type { Inbox } from "../src/Inbox.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import type { Transactor } from "../src/Transactor.ts"
import { Company } from "./fixtures.ts"
import { consumerName, copyOf, memoryStores, Pump, settle, type Stores, sync, systemLayer } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

const companies = Producer.make("accounts").repository(Company)
const outcome = (name: Metrics.Outcome) => Metrics.outcomeCount(consumerName, "Company", name)

/**
 * The consumer's copies, except that its locked reads (`forUpdate`: the copy an event is applied to) do not
 * see the copies in `unseen`: what a read sees when another instance's write commits right after it.
 * Writes, unlocked reads and dependency reads (`forShare`) go to the store as they are.
 */
const readingBeforeAnotherInstance = <E, R>(
  consumer: Layer.Layer<Inbox | CopyRepository | Transactor, E, R>,
  unseen: ReadonlySet<string>
): Layer.Layer<Inbox | CopyRepository | Transactor, E, R> =>
  Layer.effectContext(Effect.map(Layer.build(consumer), (context) => {
    const copies = Context.get(context, CopyRepository)
    const seen = (ref: { readonly entity: string; readonly id: string }) => !unseen.has(`${ref.entity}:${ref.id}`)
    return Context.add(
      context,
      CopyRepository,
      CopyRepository.of({
        ...copies,
        get: (entity, id, lock) =>
          lock === "forUpdate" && !seen({ entity, id }) ? Effect.succeed(null) : copies.get(entity, id, lock),
        getMany: (refs, lock) =>
          lock === "forUpdate"
            ? Effect.map(copies.getMany(refs, lock), (rows) => rows.filter(seen))
            : copies.getMany(refs, lock)
      })
    )
  }))

const guardSuite = (name: string, stores: () => Stores, pump: Effect.Effect<void>) =>
  describe(name, () => {
    it.effect("an older update and an older one after a delete lose to the copies another instance wrote", () =>
      Effect.gen(function*() {
        const unseen = new Set<string>()
        const { consumer, owner } = stores()
        yield* Effect.gen(function*() {
          yield* Outbox.transaction(companies.create({ id: "c-1", name: "v1" }))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v2" })))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v3" })))
          yield* Outbox.transaction(companies.create({ id: "c-2", name: "v1" }))
          yield* Outbox.transaction(companies.update("c-2", (c) => ({ ...c, name: "v2" })))
          yield* Outbox.transaction(companies.delete("c-2"))
          const outbox = yield* Outbox.Outbox
          const broker = yield* Broker
          const rows = yield* outbox.claim(100)
          const [c1v1, c1v2, c1v3, c2v1, c2v2, c2v3] = rows.map((row) => Relay.toMessage(row))
          yield* broker.publish([c1v1!, c1v3!, c2v1!, c2v3!])
          yield* settle()
          assert.deepStrictEqual((yield* copyOf("Company", "c-1"))?.payload, { id: "c-1", name: "v3" })
          assert.strictEqual((yield* copyOf("Company", "c-2"))?.state, "deleted")
          // the consumer reads the copies as they were before the newer versions committed
          unseen.add("Company:c-1").add("Company:c-2")
          yield* broker.publish([c1v2!, c2v2!])
          yield* settle()
          const c1 = yield* copyOf("Company", "c-1")
          const c2 = yield* copyOf("Company", "c-2")
          assert.deepStrictEqual(c1 && [c1.version, c1.state, c1.payload], [3, "live", { id: "c-1", name: "v3" }])
          assert.deepStrictEqual(c2 && [c2.version, c2.state, c2.payload], [3, "deleted", null])
          assert.strictEqual(yield* outcome("applied"), 4)
          assert.strictEqual(yield* outcome("stale"), 2)
          // what the consumer reads is right again: the same guard is not in the way of newer events
          unseen.clear()
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v4" })))
          yield* sync
          assert.deepStrictEqual((yield* copyOf("Company", "c-1"))?.payload, { id: "c-1", name: "v4" })
        }).pipe(
          Effect.provide(systemLayer({ stores: { owner, consumer: readingBeforeAnotherInstance(consumer, unseen) } }))
        )
      }).pipe(
        Effect.provideService(Metric.MetricRegistry, new Map()),
        Effect.provideService(Pump, pump)
      ))

    it.effect("a force-sync snapshot older than the copy another instance wrote does not regress it (R8)", () =>
      Effect.gen(function*() {
        const unseen = new Set<string>()
        const { consumer, owner } = stores()
        yield* Effect.gen(function*() {
          yield* Outbox.transaction(companies.create({ id: "c-1", name: "v1" }))
          assert.strictEqual(yield* companies.fullSync({ batchSize: 10 }), 1)
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v2" })))
          const rows = yield* (yield* Outbox.Outbox).claim(100)
          const [created, snapshot, updated] = rows.map((row) => Relay.toMessage(row))
          assert.deepStrictEqual(rows.map((row) => [row.envelope.version, row.envelope.forceSync]), [
            [1, false],
            [1, true],
            [2, false]
          ])
          const broker = yield* Broker
          yield* broker.publish([created!, updated!])
          yield* settle()
          unseen.add("Company:c-1")
          yield* broker.publish([snapshot!])
          yield* settle()
          const copy = yield* copyOf("Company", "c-1")
          assert.deepStrictEqual(copy && [copy.version, copy.payload], [2, { id: "c-1", name: "v2" }])
          assert.strictEqual(yield* outcome("stale"), 1)
        }).pipe(
          Effect.provide(systemLayer({ stores: { owner, consumer: readingBeforeAnotherInstance(consumer, unseen) } }))
        )
      }).pipe(
        Effect.provideService(Metric.MetricRegistry, new Map()),
        Effect.provideService(Pump, pump)
      ))
  })

guardSuite("the stores' version guard, end to end (memory stores)", () => memoryStores, Effect.void)

const database = TestPostgres.forFile()

guardSuite("the stores' version guard, end to end (PostgreSQL stores)", database.stores, TestPostgres.pump)
