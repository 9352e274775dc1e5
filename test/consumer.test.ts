/**
 * The consumer at rest: once the work is done it waits (for a commit, a due parked event or its poll
 * interval) instead of looping; and the wake-ups of parked events: after the commit, raced by another
 * instance, or failing.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Deferred, Effect, Layer, Metric } from "effect"
import { SqlError } from "effect/sql"
import { CopyRepository } from "../src/CopyRepository.ts"
import { Inbox } from "../src/Inbox.ts"
import * as MemoryCopyRepository from "../src/memory/CopyRepository.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Subscription from "../src/Subscription.ts"
import { Transactor } from "../src/Transactor.ts"
import { Company, User } from "./fixtures.ts"
import { consumerName, copyOf, eventually, memoryStores, relay, sync, systemLayer, tick } from "./harness.ts"

const companies = Producer.make("accounts").repository(Company)
const users = Producer.make("accounts").repository(User)
const outcome = (entity: string, name: Metrics.Outcome) => Metrics.outcomeCount(consumerName, entity, name)
const freshMetrics = Effect.provideServiceEffect(Metric.MetricRegistry, Effect.sync(() => new Map()))

/** The system on memory stores, the consumer's inbox, copies and transactions wrapped by the test. */
const systemWith = (
  inbox: (inbox: Inbox["Service"]) => Inbox["Service"],
  copies: (copies: CopyRepository["Service"]) => CopyRepository["Service"] = (copies) => copies,
  transactor: (transactor: Transactor["Service"]) => Transactor["Service"] = (transactor) => transactor
) =>
  systemLayer({
    stores: {
      owner: memoryStores.owner,
      consumer: Layer.mergeAll(
        Layer.effect(Inbox, Effect.map(MemoryInbox.make, inbox)),
        Layer.effect(CopyRepository, Effect.map(MemoryCopyRepository.make, copies)),
        Layer.effect(Transactor, Effect.map(Effect.service(Transactor), transactor))
      ).pipe(Layer.provideMerge(Layer.fresh(MemoryDatabase.layer)))
    }
  })

describe("SyncConsumer", () => {
  /**
   * Consumer stores whose inbox counts how often the parked-event worker looks for due events, and how
   * often applies wake parked events.
   */
  const countingStores = () => {
    const looks = { count: 0 }
    const wakes = { count: 0 }
    const layer = systemWith((inbox) =>
      Inbox.of({
        ...inbox,
        nextDueAt: (consumer) => Effect.andThen(Effect.sync(() => looks.count++), inbox.nextDueAt(consumer)),
        wake: (consumer, refs) => Effect.andThen(Effect.sync(() => wakes.count++), inbox.wake(consumer, refs))
      })
    )
    return { looks, wakes, layer }
  }

  it.effect("idles between events: the parked-event worker looks at the inbox once per poll interval", () =>
    Effect.gen(function*() {
      const { layer, looks } = countingStores()
      yield* Effect.gen(function*() {
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
        yield* sync
        assert.strictEqual((yield* copyOf("Company", "c-1"))?.version, 2)
        const before = looks.count
        for (let i = 0; i < 60; i++) yield* tick("1 second") // a minute at rest; the poll interval is 5 s
        assert.isAtMost(looks.count - before, 13)
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map())))

  it.effect("applies without looking for or waking parked events until one is parked", () =>
    Effect.gen(function*() {
      const { layer, looks, wakes } = countingStores()
      yield* Effect.gen(function*() {
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* sync
        const before = looks.count
        const wakesBefore = wakes.count
        for (let i = 0; i < 20; i++) {
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: `Acme ${i}` })))
          yield* sync
        }
        assert.strictEqual((yield* copyOf("Company", "c-1"))?.version, 21)
        assert.strictEqual(looks.count - before, 0, "no event was parked or woken: the worker kept waiting")
        assert.strictEqual(
          wakes.count - wakesBefore,
          0,
          "nothing is parked: the applies did not look for events to wake"
        )
        // a user whose company is missing waits in process, then parks; the company's arrival wakes it
        yield* Outbox.transaction(
          users.create({ id: "u-1", companyId: "c-2", email: "ada@example.com", name: "Ada", active: true })
        )
        yield* relay
        yield* eventually(outcome("User", "parked"), (n) => n === 1, { step: "100 millis", rounds: 100 })
        assert.isAbove(looks.count, before, "parking an event woke the worker")
        // parked for 1.6 s after three in-process attempts: only the wake-up can apply it within 100 ms
        const wakesBeforeCompany = wakes.count
        yield* Outbox.transaction(companies.create({ id: "c-2", name: "Globex" }))
        yield* relay
        yield* eventually(copyOf("User", "u-1"), (copy) => copy?.state === "live", { rounds: 100 })
        assert.isAbove(wakes.count, wakesBeforeCompany, "with an event parked, the company's apply woke it")
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map())))

  /**
   * Consumer stores whose reads, from `stale.reads` on until an event is parked, are those of a snapshot
   * taken before the last commit of another instance: the company copies are not there yet, and user u-1
   * still references company c-1.
   */
  const staleReadStores = () => {
    const stale = { reads: false }
    const layer = systemWith(
      (inbox) =>
        Inbox.of({
          ...inbox,
          park: (row) =>
            Effect.andThen(
              inbox.park(row),
              Effect.sync(() => {
                stale.reads = false
              })
            )
        }),
      (copies) =>
        CopyRepository.of({
          ...copies,
          get: (entity, id, lock) =>
            stale.reads && entity === "Company" ? Effect.succeed(null) : copies.get(entity, id, lock),
          getMany: (refs, lock) =>
            Effect.map(
              copies.getMany(refs, lock),
              (rows) => stale.reads ? rows.filter((row) => row.entity !== "Company") : rows
            ),
          referencing: (entity, field, id) =>
            stale.reads && entity === "User" && id === "c-1"
              ? Effect.succeed(["u-1"])
              : copies.referencing(entity, field, id)
        })
    )
    return { stale, layer }
  }

  // Another instance applies what an event waits for while the event's park is in its transaction: the
  // park read it as missing, and the other instance's wake ran before the park committed, finding nothing.
  describe("an event parked on reads taken before what it waits for was committed is woken once parked", () => {
    it.effect("a user whose company was created meanwhile", () =>
      Effect.gen(function*() {
        const { layer, stale } = staleReadStores()
        yield* Effect.gen(function*() {
          yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
          yield* sync
          stale.reads = true
          yield* Outbox.transaction(
            users.create({ id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true })
          )
          yield* relay
          yield* eventually(outcome("User", "parked"), (n) => n === 1, { step: "100 millis", rounds: 100 })
          // parked for 1.6 s after three in-process attempts: only reading again applies it sooner
          yield* eventually(copyOf("User", "u-1"), (copy) => copy?.state === "live", { step: "10 millis", rounds: 10 })
          assert.strictEqual(yield* outcome("User", "woken"), 1)
        }).pipe(Effect.provide(layer))
      }).pipe(freshMetrics))

    it.effect("a hard delete whose last referencing user moved meanwhile", () =>
      Effect.gen(function*() {
        const { layer, stale } = staleReadStores()
        yield* Effect.gen(function*() {
          yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
          yield* Outbox.transaction(companies.create({ id: "c-2", name: "Globex" }))
          yield* Outbox.transaction(
            users.create({ id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true })
          )
          yield* sync
          yield* Outbox.transaction(users.update("u-1", (u) => ({ ...u, companyId: "c-2" })))
          yield* sync
          stale.reads = true
          yield* Outbox.transaction(companies.delete("c-1"))
          yield* relay
          yield* eventually(outcome("Company", "parked"), (n) => n === 1, { step: "100 millis", rounds: 100 })
          yield* eventually(copyOf("Company", "c-1"), (copy) => copy?.state === "deleted", {
            step: "10 millis",
            rounds: 10
          })
          assert.strictEqual(yield* outcome("Company", "woken"), 1)
        }).pipe(Effect.provide(layer))
      }).pipe(freshMetrics))
  })

  // Inside its transaction, an apply's wake could look before a park on another instance commits, while that
  // park's second read was taken before the apply committed: neither would see the other.
  it.effect("an apply, in a batch or on its own, wakes parked events after its commit", () =>
    Effect.gen(function*() {
      const InTransaction = Context.Reference<boolean>("test/InTransaction", { defaultValue: () => false })
      const wakes: Array<{ readonly entities: string; readonly inTransaction: boolean }> = []
      const layer = systemWith(
        (inbox) =>
          Inbox.of({
            ...inbox,
            wake: (consumer, refs) =>
              Effect.flatMap(InTransaction, (inTransaction) => {
                wakes.push({ entities: refs.map((ref) => ref.entity).join(), inTransaction })
                return inbox.wake(consumer, refs)
              })
          }),
        undefined,
        (transactor) =>
          Transactor.of({
            ...transactor,
            withTransaction: (effect) => transactor.withTransaction(Effect.provideService(effect, InTransaction, true))
          })
      )
      yield* Effect.gen(function*() {
        yield* Outbox.transaction(
          users.create({ id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true })
        )
        yield* relay
        yield* eventually(outcome("User", "parked"), (n) => n === 1, { step: "100 millis", rounds: 100 })
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* relay
        yield* eventually(copyOf("User", "u-1"), (copy) => copy?.state === "live", { rounds: 100 })
        // the company in a batch of deliveries, the parked user retried on its own
        assert.deepStrictEqual(wakes.map((wake) => wake.entities).sort(), ["Company", "User"])
        assert.deepStrictEqual(wakes.filter((wake) => wake.inTransaction), [])
      }).pipe(Effect.provide(layer))
    }).pipe(freshMetrics))

  it.effect("a wake that fails after the commit keeps the apply; the parked event waits for its retry", () =>
    Effect.gen(function*() {
      const failing = { wakes: false, failed: 0 }
      const layer = systemWith((inbox) =>
        Inbox.of({
          ...inbox,
          wake: (consumer, refs) =>
            failing.wakes
              ? Effect.suspend(() => {
                failing.failed++
                return Effect.fail(
                  new SqlError.SqlError({
                    reason: new SqlError.ConnectionError({ message: "connection lost", cause: undefined })
                  })
                )
              })
              : inbox.wake(consumer, refs)
        })
      )
      yield* Effect.gen(function*() {
        yield* Outbox.transaction(
          users.create({ id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true })
        )
        yield* relay
        yield* eventually(outcome("User", "parked"), (n) => n === 1, { step: "100 millis", rounds: 100 })
        failing.wakes = true
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* relay
        yield* eventually(copyOf("Company", "c-1"), (copy) => copy?.state === "live", { rounds: 100 })
        assert.strictEqual(failing.failed, 1)
        assert.strictEqual(yield* outcome("Company", "applied"), 1)
        assert.strictEqual(yield* outcome("Company", "duplicate"), 0)
        assert.strictEqual((yield* copyOf("User", "u-1"))?.state, undefined, "not woken: it waits for its retry")
        // parked for 1.6 s after three in-process attempts
        yield* eventually(copyOf("User", "u-1"), (copy) => copy?.state === "live", { step: "100 millis", rounds: 20 })
        assert.strictEqual(yield* outcome("User", "applied"), 1)
        assert.strictEqual(yield* outcome("User", "woken"), 1)
      }).pipe(Effect.provide(layer))
    }).pipe(freshMetrics))

  describe("a batch of deliveries", () => {
    it.effect("applies an event whose dependency comes later in the same batch without waiting", () =>
      Effect.gen(function*() {
        yield* Outbox.transaction(Effect.gen(function*() {
          yield* users.create({ id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true })
          yield* companies.create({ id: "c-1", name: "Acme" })
        }))
        yield* sync
        assert.strictEqual((yield* copyOf("User", "u-1"))?.state, "live")
        assert.strictEqual((yield* copyOf("Company", "c-1"))?.state, "live")
        assert.strictEqual(yield* outcome("User", "applied"), 1)
        assert.strictEqual(yield* outcome("User", "waiting"), 0)
      }).pipe(Effect.provide(systemLayer()), freshMetrics))

    it.effect("runs handlers in version order, each with the copy its event replaced", () =>
      Effect.gen(function*() {
        const seen: Array<string> = []
        const subscriptions = [
          Subscription.subscribe(Company, {
            handler: ({ envelope, previous }) =>
              Effect.sync(() => seen.push(`${previous?.version ?? "none"}→${envelope.version}`))
          }),
          Subscription.subscribe(User)
        ]
        yield* Effect.gen(function*() {
          yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Inc" })))
          yield* sync
          assert.deepStrictEqual(seen, ["none→1", "1→2", "2→3"])
          const copy = yield* copyOf("Company", "c-1")
          assert.strictEqual(copy?.version, 3)
          assert.deepStrictEqual(copy?.payload, { id: "c-1", name: "Acme Inc" })
        }).pipe(Effect.provide(systemLayer({ subscriptions })))
      }).pipe(freshMetrics))

    it.effect("a hard delete waits for a copy that references it, even one applied earlier in the batch", () =>
      Effect.gen(function*() {
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* sync
        yield* Outbox.transaction(
          users.create({ id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true })
        )
        yield* Outbox.transaction(companies.delete("c-1"))
        yield* relay
        yield* eventually(outcome("Company", "waiting"), (n) => n === 1)
        yield* tick("10 millis")
        assert.strictEqual((yield* copyOf("User", "u-1"))?.state, "live")
        assert.strictEqual((yield* copyOf("Company", "c-1"))?.state, "live")
        assert.strictEqual(yield* outcome("User", "applied"), 1)
        assert.strictEqual(yield* outcome("Company", "applied"), 1)
      }).pipe(Effect.provide(systemLayer()), freshMetrics))

    it.effect("an idle consumer gathers a batch for the window; deliveries that arrived meanwhile go a window after it was taken", () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const applied: Array<string> = []
        const subscriptions = [
          Subscription.subscribe(Company, {
            handler: ({ envelope }) =>
              Effect.flatMap(Clock.currentTimeMillis, (at) => {
                applied.push(`${envelope.entityId}@${at}`)
                return envelope.entityId === "c-1" ? Deferred.await(gate) : Effect.void
              })
          }),
          Subscription.subscribe(User)
        ]
        const idleRounds = (n: number) =>
          Effect.forEach(Array.from({ length: n }), () => Effect.yieldNow, { discard: true })
        yield* Effect.gen(function*() {
          const start = yield* Clock.currentTimeMillis
          yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
          yield* relay
          yield* idleRounds(50)
          yield* tick("4 millis")
          assert.deepStrictEqual(applied, [], "the window (5 ms) is still open")
          yield* tick("1 millis")
          yield* idleRounds(50)
          assert.deepStrictEqual(applied, [`c-1@${start + 5}`])
          // c-1's batch is held by its handler; two more events arrive in the meantime
          yield* Outbox.transaction(companies.create({ id: "c-2", name: "Globex" }))
          yield* Outbox.transaction(companies.create({ id: "c-3", name: "Initech" }))
          yield* relay
          yield* idleRounds(50)
          yield* Deferred.succeed(gate, undefined)
          yield* idleRounds(50)
          assert.deepStrictEqual(applied, [`c-1@${start + 5}`], "a window has not passed since c-1's batch was taken")
          yield* tick("5 millis")
          yield* idleRounds(50)
          assert.deepStrictEqual(applied, [`c-1@${start + 5}`, `c-2@${start + 10}`, `c-3@${start + 10}`])
          assert.strictEqual((yield* copyOf("Company", "c-3"))?.state, "live")
        }).pipe(Effect.provide(systemLayer({ subscriptions })))
      }).pipe(freshMetrics))
  })
})
