/**
 * Contract versions (in memory, virtual time): a chain 1 → 2 → 3 upcasts every earlier payload to the
 * current type, on its own and through a consumer; an owner upgraded over rows it wrote at an earlier
 * version reads them reshaped; an event newer than the consumer knows is dead-lettered as
 * `UnsupportedContractVersion` without blocking anything, and applied once the consumer is upgraded and
 * replays it; what the compiler cannot see in a chain is refused when the consumer's layer is built.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer, Metric, Schema } from "effect"
import * as Contract from "../src/Contract.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import * as DeadLetters from "../src/DeadLetters.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company } from "./fixtures.ts"
import { consumerName, memoryStores, relay, settle } from "./harness.ts"

// Version 1: one name. Version 2: the name split. Version 3: tags added, and the company it belongs to.
const V1 = Schema.Struct({ id: Schema.String, name: Schema.String })
const V2 = Schema.Struct({ id: Schema.String, first: Schema.String, last: Schema.String })
const V3 = Schema.Struct({
  id: Schema.String,
  first: Schema.String,
  last: Schema.String,
  tags: Schema.Array(Schema.String),
  companyId: Schema.NullOr(Schema.String)
})

const splitName = (v1: typeof V1.Type) => {
  const [first = "", ...rest] = v1.name.split(" ")
  return { id: v1.id, first, last: rest.join(" ") }
}
const chain1 = Contract.versions(V1)
const chain2 = chain1.next(2, V2, splitName)
const chain3 = chain2.next(3, V3, (v2) => ({ ...v2, tags: [], companyId: null }))

const PersonV1 = Contract.make({ name: "Person", owner: "accounts", id: "id", payload: chain1 })
const PersonV2 = Contract.make({ name: "Person", owner: "accounts", id: "id", payload: chain2 })
const PersonV3 = Contract.make({
  name: "Person",
  owner: "accounts",
  id: "id",
  payload: chain3,
  dependencies: { companyId: Company }
})

describe("Contract versions", () => {
  it.effect("a chain 1 → 2 → 3 decodes a payload of every version to the current type", () =>
    Effect.gen(function*() {
      assert.strictEqual(PersonV3.version, 3)
      assert.deepStrictEqual(PersonV3.earlier.map((e) => e.version), [1, 2])
      const expected = { id: "p-1", first: "Ada", last: "King Lovelace", tags: [], companyId: null }
      const decode = (version: number, payload: unknown) =>
        Schema.decodeUnknownEffect(Contract.decoderOf(PersonV3, version)!)(payload)
      assert.deepStrictEqual(yield* decode(1, { id: "p-1", name: "Ada King Lovelace" }), expected)
      assert.deepStrictEqual(yield* decode(2, { id: "p-1", first: "Ada", last: "King Lovelace" }), expected)
      assert.deepStrictEqual(yield* decode(3, expected), expected)
      assert.isUndefined(Contract.decoderOf(PersonV3, 4))
      assert.isUndefined(Contract.decoderOf(PersonV1, 2))
      // a payload that does not fit its own version is refused there, before any migration
      const error = yield* Effect.flip(decode(1, { id: "p-1", name: 7 }))
      assert.match(error.message, /Expected string/)
    }))

  it.effect("a migration that throws is a decoding failure naming its version, not a defect", () =>
    Effect.gen(function*() {
      const fragile = Contract.versions(V1).next(2, V2, (v1) => {
        if (v1.name === "") throw new Error("a name is needed")
        return splitName(v1)
      })
      const contract = Contract.make({ name: "Fragile", owner: "accounts", id: "id", payload: fragile })
      const error = yield* Effect.flip(
        Schema.decodeUnknownEffect(Contract.decoderOf(contract, 1)!)({ id: "f", name: "" })
      )
      assert.match(error.message, /the migration from version 1 failed: a name is needed/)
    }))

  it.effect("check refuses a chain with a gap and a migration whose output does not fit, naming the version", () =>
    Effect.gen(function*() {
      // a version typed as a plain number gets past the compiler
      const loose: Contract.Versions<typeof V1.Type, typeof V1.Encoded, number> = Contract.versions(V1)
      const gap = Contract.make({ name: "Gap", owner: "accounts", id: "id", payload: loose.next(3, V2, splitName) })
      const gapError = yield* Effect.flip(Contract.check(gap))
      assert.strictEqual(gapError._tag, "InvalidContract")
      assert.match(gapError.message, /contract Gap: version 3 needs the earlier versions 1, 2 in order; it has 1/)
      // an untyped migration (as from JavaScript) whose output misses a field of version 2, caught on the
      // examples version 1 declares
      const untyped = (v1: typeof V1.Type): typeof V2.Encoded =>
        JSON.parse(JSON.stringify({ id: v1.id, first: v1.name }))
      const withExamples = Contract.versions(V1.annotate({ examples: [{ id: "e", name: "Ex Ample" }] }))
      const misfit = Contract.make({
        name: "Misfit",
        owner: "accounts",
        id: "id",
        payload: withExamples.next(2, V2, untyped)
      })
      const misfitError = yield* Effect.flip(Contract.check(misfit))
      assert.match(misfitError.message, /contract Misfit: an example of version 1 does not upcast to version 2: .*last/)
      yield* Contract.check(PersonV3)
      yield* Contract.check(Company)
    }))

  it.effect("a consumer refuses to start with a contract whose chain has a gap", () =>
    Effect.gen(function*() {
      const loose: Contract.Versions<typeof V1.Type, typeof V1.Encoded, number> = Contract.versions(V1)
      const gap = Contract.make({ name: "Gap", owner: "accounts", id: "id", payload: loose.next(3, V2, splitName) })
      const exit = yield* Effect.exit(Layer.build(
        SyncConsumer.layer({ service: consumerName, subscriptions: [Subscription.subscribe(gap)] }).pipe(
          Layer.provide(memoryStores.consumer),
          Layer.provide(MemoryBroker.layer())
        )
      ))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        assert.match(Cause.pretty(exit.cause), /InvalidContract.*version 3 needs the earlier versions 1, 2/)
      }
    }).pipe(Effect.scoped))
})

/** The owner's stores and the broker, shared by the consumer's deployments (each one a scope of its own). */
const shared = Layer.mergeAll(memoryStores.owner, memoryStores.consumer, MemoryBroker.layer())

/** Runs `effect` with a consumer deployed with `subscriptions`, then stops it. */
const deployed = <A, E, R>(
  subscriptions: ReadonlyArray<Subscription.Subscription<never>>,
  effect: Effect.Effect<A, E, R>
) =>
  Effect.scoped(Effect.gen(function*() {
    const base = yield* Effect.context<never>()
    const consumer = yield* Layer.build(SyncConsumer.layer({ service: consumerName, subscriptions }))
    return yield* Effect.provideContext(effect, Context.merge(base, consumer))
  }))

const copy = (id: string) => CopyRepository.use((copies) => copies.get("Person", id))
const freshMetrics = Effect.provideServiceEffect(Metric.MetricRegistry, Effect.sync(() => new Map()))
const accounts = Producer.make("accounts")
const acme = { id: "c-1", name: "Acme" }

describe("Contract versions between an owner and a consumer", () => {
  it.effect("a consumer at version 3 applies events of versions 1, 2 and 3 as version 3; the upgraded owner reads its old rows reshaped", () =>
    Effect.gen(function*() {
      yield* Outbox.transaction(accounts.repository(Company).create(acme))
      yield* Outbox.transaction(accounts.repository(PersonV1).create({ id: "p-1", name: "Ada Lovelace" }))
      yield* Outbox.transaction(accounts.repository(PersonV1).create({ id: "p-2", name: "Alan Turing" }))
      yield* Outbox.transaction(accounts.repository(PersonV2).create({ id: "p-3", first: "Grace", last: "Hopper" }))
      const v3 = accounts.repository(PersonV3)
      // rows written at versions 1 and 2 are read as version 3 by the upgraded owner
      assert.deepStrictEqual((yield* v3.get("p-1"))?.payload, {
        id: "p-1",
        first: "Ada",
        last: "Lovelace",
        tags: [],
        companyId: null
      })
      yield* Outbox.transaction(v3.update("p-2", (p) => ({ ...p, tags: ["enigma"], companyId: "c-1" })))
      yield* Outbox.transaction(v3.softDelete("p-3"))
      yield* deployed(
        [Subscription.subscribe(Company), Subscription.subscribe(PersonV3)],
        Effect.gen(function*() {
          yield* relay
          yield* settle()
          assert.deepStrictEqual((yield* copy("p-1"))?.payload, {
            id: "p-1",
            first: "Ada",
            last: "Lovelace",
            tags: [],
            companyId: null
          })
          assert.deepStrictEqual((yield* copy("p-2"))?.payload, {
            id: "p-2",
            first: "Alan",
            last: "Turing",
            tags: ["enigma"],
            companyId: "c-1"
          })
          const p3 = yield* copy("p-3")
          assert.strictEqual(p3?.state, "softDeleted")
          // the soft delete of a version-2 row is published at version 3, in the version-3 shape
          assert.deepStrictEqual(p3?.payload, { id: "p-3", first: "Grace", last: "Hopper", tags: [], companyId: null })
          assert.strictEqual(yield* Metrics.outcomeCount(consumerName, "Person", "applied"), 5)
          // a full sync of the upgraded owner republishes every row at version 3
          assert.strictEqual(yield* v3.fullSync(), 3)
          yield* relay
          yield* settle()
          assert.strictEqual(yield* Metrics.outcomeCount(consumerName, "Person", "applied"), 8)
        })
      )
    }).pipe(Effect.provide(shared), freshMetrics))

  it.effect("an event newer than the consumer knows is dead-lettered, blocks nothing, and is applied after the upgrade and a replay", () =>
    Effect.gen(function*() {
      const v1 = accounts.repository(PersonV1)
      const v2 = accounts.repository(PersonV2)
      yield* Outbox.transaction(v1.create({ id: "p-1", name: "Ada Lovelace" }))
      yield* Outbox.transaction(v1.create({ id: "p-2", name: "Alan Turing" }))
      const subscriptionsV1 = [Subscription.subscribe(Company), Subscription.subscribe(PersonV1)]
      yield* deployed(
        subscriptionsV1,
        Effect.gen(function*() {
          yield* relay
          yield* settle()
          // the owner is upgraded first (the wrong order): its version-2 events reach a consumer at version 1
          yield* Outbox.transaction(v2.update("p-1", (p) => ({ ...p, last: "King" })))
          yield* Outbox.transaction(v2.create({ id: "p-3", first: "Grace", last: "Hopper" }))
          yield* Outbox.transaction(accounts.repository(Company).create(acme))
          yield* relay
          yield* settle()
          const listing = yield* DeadLetters.list({ service: consumerName }, {
            filter: { reasons: ["UnsupportedContractVersion"] }
          })
          assert.deepStrictEqual(listing.items.map((d) => [d.entityId, d.version]), [["p-1", 2], ["p-3", 1]])
          assert.match(listing.items[0]!.reason, /Person version 2 is newer than this consumer knows \(version 1\)/)
          assert.strictEqual(yield* Metrics.outcomeCount(consumerName, "Person", "unsupportedVersion"), 2)
          // nothing else was blocked: the Company written after them is applied, p-1 keeps version 1
          assert.deepStrictEqual((yield* CopyRepository.use((c) => c.get("Company", "c-1")))?.payload, acme)
          assert.deepStrictEqual((yield* copy("p-1"))?.payload, { id: "p-1", name: "Ada Lovelace" })
        })
      )
      yield* deployed(
        [Subscription.subscribe(Company), Subscription.subscribe(PersonV2)],
        Effect.gen(function*() {
          const replayed = yield* DeadLetters.replay({ service: consumerName }, {
            reasons: ["UnsupportedContractVersion"]
          })
          assert.strictEqual(replayed.broker, 2)
          yield* settle()
          assert.deepStrictEqual((yield* copy("p-1"))?.payload, { id: "p-1", first: "Ada", last: "King" })
          assert.strictEqual((yield* copy("p-1"))?.version, 2)
          assert.deepStrictEqual((yield* copy("p-3"))?.payload, { id: "p-3", first: "Grace", last: "Hopper" })
          // p-2 is still held at version 1's shape until its next event or a full sync
          assert.deepStrictEqual((yield* copy("p-2"))?.payload, { id: "p-2", name: "Alan Turing" })
          const after = yield* DeadLetters.list({ service: consumerName }, {})
          assert.strictEqual(after.items.length, 0)
        })
      )
    }).pipe(Effect.provide(shared), freshMetrics))
})
