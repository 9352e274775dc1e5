/**
 * The resync responder in virtual time (TestClock, memory broker): requests of one requester about one
 * entity are merged and coalesced within the window and rate-limited beyond it, so a flood of requests
 * costs a bounded number of full syncs; a database outage gives the requests back without spending
 * delivery attempts and without dead letters, and the responder resumes when the probe answers (R12).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import { SqlError } from "effect/sql"
import { TestClock } from "effect/testing"
import { Broker } from "../../src/Broker.ts"
import * as MemoryBroker from "../../src/memory/MemoryBroker.ts"
import * as Resync from "../../src/Resync.ts"
import * as Signature from "../../src/Signature.ts"
import { Transactor } from "../../src/Transactor.ts"
import { Company } from "../fixtures.ts"

const directory = Signature.generateKeyPair("directory-1")
const search = Signature.generateKeyPair("search-1")

const lost = new SqlError.SqlError({
  reason: new SqlError.ConnectionError({ message: "connection refused", cause: undefined })
})

/** A responder whose full sync records what it was asked, and fails while the database is `down`. */
const responder = (database: { down: boolean; probes: number }, syncs: Array<ReadonlyArray<string> | "all">) => {
  const transactor = Layer.succeed(
    Transactor,
    Transactor.of({
      withTransaction: (effect) => effect,
      probe: Effect.suspend(() => {
        database.probes++
        return database.down ? Effect.fail(lost) : Effect.void
      })
    })
  )
  const fullSync = (options: { readonly ids?: ReadonlyArray<string> }) =>
    Effect.suspend(() => {
      if (database.down) return Effect.fail(lost)
      syncs.push(options.ids === undefined ? "all" : [...options.ids].sort())
      return Effect.succeed(options.ids?.length ?? 100)
    })
  return Resync.layer({
    owner: "accounts",
    targets: [{ contract: Company, fullSync }],
    verifyingKeys: { directory: [directory.verifying], search: [search.verifying] }
  }).pipe(
    Layer.provideMerge(Layer.mergeAll(MemoryBroker.layer(), transactor)),
    Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map()))
  )
}

/** Lets the responder and the broker run until they wait for the clock. */
const settle = Effect.forEach(Array.from({ length: 50 }), () => Effect.yieldNow, { discard: true })

const ask = (requester: "directory" | "search", ids?: ReadonlyArray<string>) =>
  Resync.request({
    contract: Company,
    requester,
    signing: requester === "directory" ? directory.signing : search.signing,
    ...(ids !== undefined ? { ids } : {})
  }).pipe(Effect.orDie)

const outcomeNames = ["served", "coalesced", "dropped", "forged", "rejected", "failed"] as const

/** How many requests the responder counted, by outcome. */
const outcomes = Effect.gen(function*() {
  const counted: Record<(typeof outcomeNames)[number], number> = {
    served: 0,
    coalesced: 0,
    dropped: 0,
    forged: 0,
    rejected: 0,
    failed: 0
  }
  for (const outcome of outcomeNames) {
    const counter = Metric.withAttributes(Resync.requests, { owner: "accounts", entity: "Company", outcome })
    counted[outcome] = (yield* Metric.value(counter)).count
  }
  return counted
})

describe("Resync responder", () => {
  it.effect("300 requests cost a bounded number of full syncs: coalesced in the window, dropped beyond the rate", () => {
    const syncs: Array<ReadonlyArray<string> | "all"> = []
    return Effect.gen(function*() {
      // a burst: one sync
      for (let i = 0; i < 100; i++) yield* ask("directory")
      yield* settle
      assert.deepStrictEqual(syncs, ["all"])
      // within the window: covered by it
      yield* TestClock.adjust("30 seconds")
      for (let i = 0; i < 100; i++) yield* ask("directory")
      yield* settle
      assert.deepStrictEqual(syncs, ["all"])
      // one request just after each window for 100 minutes: at most 10 syncs in any hour
      for (let i = 0; i < 100; i++) {
        yield* TestClock.adjust("61 seconds")
        yield* ask("directory")
        yield* settle
      }
      assert.isAtMost(syncs.length, 20)
      assert.isAtLeast(syncs.length, 11)
      const counted = yield* outcomes
      assert.strictEqual(counted["served"], syncs.length)
      assert.strictEqual(counted["served"] + counted["coalesced"] + counted["dropped"], 300)
      assert.isAbove(counted["dropped"], 50)
      const broker = yield* MemoryBroker.MemoryBroker
      const depth = yield* broker.queueDepth(Resync.queueOf("accounts").name)
      assert.deepInclude(depth, { ready: 0, unsettled: 0 })
    }).pipe(Effect.provide(responder({ down: false, probes: 0 }, syncs)))
  })

  it.effect("requests taken together are merged per requester; a whole-entity sync covers later id requests", () => {
    const syncs: Array<ReadonlyArray<string> | "all"> = []
    return Effect.gen(function*() {
      const broker = yield* Broker
      yield* broker.declare(Resync.queueOf("accounts"))
      // published while the responder is busy elsewhere: taken in one batch
      yield* Effect.all([ask("directory", ["c-1"]), ask("directory", ["c-2", "c-1"]), ask("search", ["c-9"])])
      yield* settle
      assert.sameDeepMembers(syncs, [["c-1", "c-2"], ["c-9"]])
      // the same ids again within the window: covered; new ids: a sync of them
      yield* ask("directory", ["c-2"])
      yield* settle
      assert.lengthOf(syncs, 2)
      yield* ask("directory", ["c-3"])
      yield* settle
      assert.deepStrictEqual(syncs[2], ["c-3"])
      // a whole-entity request, then ids within its window: covered by it
      yield* ask("directory")
      yield* settle
      yield* ask("directory", ["c-4"])
      yield* settle
      assert.deepStrictEqual(syncs.slice(3), ["all"])
      // another requester is not covered by directory's sync
      yield* ask("search")
      yield* settle
      assert.deepStrictEqual(syncs.slice(3), ["all", "all"])
      const counted = yield* outcomes
      assert.deepInclude(counted, { served: 5, coalesced: 3, dropped: 0 })
    }).pipe(Effect.provide(responder({ down: false, probes: 0 }, syncs)))
  })

  it.effect("a database outage gives requests back without spending delivery attempts, then they are served", () => {
    const syncs: Array<ReadonlyArray<string> | "all"> = []
    const database = { down: true, probes: 0 }
    return Effect.gen(function*() {
      const broker = yield* MemoryBroker.MemoryBroker
      yield* ask("directory", ["c-1"])
      yield* ask("search")
      yield* settle
      // half an hour of outage, longer than the delivery limit would allow if each try were an attempt
      for (let i = 0; i < 180; i++) {
        yield* TestClock.adjust("10 seconds")
        yield* settle
      }
      assert.deepStrictEqual(syncs, [])
      const during = yield* broker.stats
      assert.strictEqual(during.deadLettered, 0)
      assert.strictEqual(during.requeued, 0)
      // no spinning: one probe per backoff step (at most 10 s); the requests held are given back once a minute
      assert.isAtLeast(during.released, 2 * 29)
      assert.isAtMost(during.released, 2 * 31)
      assert.isAtMost(during.delivered, during.released + 2)
      assert.isAtMost(database.probes, 200)

      database.down = false
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.sameDeepMembers(syncs, [["c-1"], "all"])
      const after = yield* broker.stats
      assert.strictEqual(after.deadLettered, 0)
      const depth = yield* broker.queueDepth(Resync.queueOf("accounts").name)
      assert.deepInclude(depth, { ready: 0, unsettled: 0 })
      const counted = yield* outcomes
      assert.deepInclude(counted, { served: 2, failed: 0 })
    }).pipe(Effect.provide(responder(database, syncs)))
  })
})
