/**
 * Ledger-only subscriptions (`keepPayload: false`), focused: the copies keep entity, id, version, state,
 * times and the ids their dependency fields hold, never a payload, and every version rule holds as with
 * payloads. One suite, run on the memory stores and on PostgreSQL.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import { Broker } from "../src/Broker.ts"
import { CopyRepository, type CopyRow } from "../src/CopyRepository.ts"
import type { Envelope } from "../src/Envelope.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import * as Subscription from "../src/Subscription.ts"
import type { ChecklistStores } from "./checklist.ts"
import { Company, User } from "./fixtures.ts"
import { consumerName, copyOf, eventually, Pump, settle, sync, systemLayer, tick } from "./harness.ts"

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const users = accounts.repository(User)
const acme = { id: "c-1", name: "Acme" }
const ann = { id: "u-1", companyId: "c-1", email: "ann@acme.test", name: "Ann", active: true }

const outcome = (entity: string, name: Metrics.Outcome) => Metrics.outcomeCount(consumerName, entity, name)

/** What a handler was given: the event's action and payload, and the previous copy. */
interface Seen {
  readonly action: Envelope["action"]
  readonly version: number
  readonly payload: unknown
  readonly previous: CopyRow | null
}

/** Ledger-only subscriptions to Company and User whose handlers record what they are given. */
const ledgerSubscriptions = (seen: Array<Seen>) => {
  const record = ({ envelope, payload, previous }: Subscription.LedgerEvent<unknown>) =>
    Effect.sync(() => void seen.push({ action: envelope.action, version: envelope.version, payload, previous }))
  return [
    Subscription.subscribe(Company, { keepPayload: false, handler: record }),
    Subscription.subscribe(User, { keepPayload: false, handler: record })
  ]
}

/** Claims every due outbox row and publishes the rows at the given indexes, in that order. */
const publishRows = (indexes: (n: number) => ReadonlyArray<number>) =>
  Effect.gen(function*() {
    const rows = yield* (yield* Outbox.Outbox).claim(1000)
    yield* (yield* Outbox.Outbox).markPublished(rows.map((r) => r.seq))
    yield* (yield* Broker).publish(indexes(rows.length).map((i) => Relay.toMessage(rows[i]!)))
    return rows
  })

/** The version, state, payload and references of a copy. */
const ledgerOf = (copy: CopyRow | null) => copy && [copy.version, copy.state, copy.payload, copy.references]

/** The focused suite of ledger-only copies, on the given stores. */
export const ledgerCopies = (name: string, kit: ChecklistStores) => {
  const inSystem = <A, E, R>(effect: Effect.Effect<A, E, R>, seen: Array<Seen>) =>
    effect.pipe(
      Effect.provide(systemLayer({ stores: kit.stores(), subscriptions: ledgerSubscriptions(seen) })),
      Effect.provideService(Metric.MetricRegistry, new Map()),
      Effect.provideService(Pump, kit.pump)
    )

  describe(name, () => {
    it.effect("copies keep version, state, times and references, no payload; the handler gets the data", () => {
      const seen: Array<Seen> = []
      return inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          yield* Outbox.transaction(users.create(ann))
          yield* sync
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
          yield* tick("1 minute")
          const softDeleted = yield* Outbox.transaction(users.softDelete("u-1"))
          yield* sync
          const company = yield* copyOf("Company", "c-1")
          const user = yield* copyOf("User", "u-1")
          assert.deepStrictEqual(ledgerOf(company), [2, "live", null, undefined])
          assert.deepStrictEqual(ledgerOf(user), [2, "softDeleted", null, { companyId: "c-1" }])
          assert.deepStrictEqual([company?.deletedAt, user?.deletedAt], [null, softDeleted.deletedAt])
          // the handler gets the event's data; the previous copy is a ledger row
          const update = seen.find((s) => s.action === "updated")
          assert.deepStrictEqual(update?.payload, { id: "c-1", name: "Acme Corp" })
          assert.deepStrictEqual(ledgerOf(update?.previous ?? null), [1, "live", null, undefined])
          const soft = seen.find((s) => s.action === "softDeleted")
          assert.deepStrictEqual(soft?.payload, ann)
          assert.deepStrictEqual(ledgerOf(soft?.previous ?? null), [1, "live", null, { companyId: "c-1" }])
          assert.lengthOf(seen, 4)
        }),
        seen
      )
    })

    it.effect("an older event is stale and a redelivered one a duplicate: neither changes the ledger or reaches the handler", () => {
      const seen: Array<Seen> = []
      return inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v2" })))
          yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v3" })))
          const rows = yield* publishRows(() => [2])
          yield* settle()
          yield* (yield* Broker).publish([Relay.toMessage(rows[1]!), Relay.toMessage(rows[2]!)])
          yield* settle()
          yield* (yield* Broker).publish([Relay.toMessage(rows[0]!)])
          yield* settle()
          assert.deepStrictEqual(ledgerOf(yield* copyOf("Company", "c-1")), [3, "live", null, undefined])
          assert.deepStrictEqual(seen.map((s) => s.version), [3])
          assert.strictEqual(yield* outcome("Company", "applied"), 1)
          assert.strictEqual(yield* outcome("Company", "stale"), 2)
          assert.strictEqual(yield* outcome("Company", "duplicate"), 1)
        }),
        seen
      )
    })

    it.effect("a snapshot at the copy's version is applied (R8), a lower one is stale, a reset replaces a copy ahead", () => {
      const seen: Array<Seen> = []
      return inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          yield* sync
          assert.strictEqual(yield* companies.fullSync(), 1)
          yield* sync
          assert.deepStrictEqual(seen.map((s) => [s.action, s.version]), [["created", 1], ["snapshot", 1]])
          // the copy gets ahead of the owner: a snapshot does not regress it, a reset does
          const copies = yield* CopyRepository
          yield* copies.upsert({ ...(yield* copyOf("Company", "c-1"))!, version: 5 }, "any")
          assert.strictEqual(yield* companies.fullSync(), 1)
          yield* sync
          assert.deepStrictEqual(ledgerOf(yield* copyOf("Company", "c-1")), [5, "live", null, undefined])
          assert.strictEqual(yield* outcome("Company", "stale"), 1)
          assert.strictEqual(yield* companies.fullSync({ reset: true }), 1)
          yield* sync
          assert.deepStrictEqual(ledgerOf(yield* copyOf("Company", "c-1")), [1, "live", null, undefined])
          assert.deepStrictEqual(seen.map((s) => s.action), ["created", "snapshot", "snapshot"])
          assert.deepStrictEqual(seen[2]?.payload, acme)
        }),
        seen
      )
    })

    it.effect("dependencies: a User waits for its Company's ledger row; the Company's hard delete waits for the User's", () => {
      const seen: Array<Seen> = []
      return inSystem(
        Effect.gen(function*() {
          yield* Outbox.transaction(companies.create(acme))
          yield* Outbox.transaction(users.create(ann))
          const rows = yield* publishRows(() => [1])
          for (let i = 0; i < 5; i++) {
            yield* tick("100 millis")
            assert.isNull(yield* copyOf("User", "u-1"))
          }
          yield* (yield* Broker).publish([Relay.toMessage(rows[0]!)])
          yield* eventually(copyOf("User", "u-1"), (copy) => copy !== null)
          assert.deepStrictEqual(ledgerOf(yield* copyOf("User", "u-1")), [1, "live", null, { companyId: "c-1" }])
          // the Company's hard delete waits while the User's ledger row references it
          yield* Outbox.transaction(companies.delete("c-1"))
          yield* publishRows(() => [0])
          for (let i = 0; i < 10; i++) {
            yield* tick("100 millis")
            assert.strictEqual((yield* copyOf("Company", "c-1"))?.state, "live")
          }
          yield* Outbox.transaction(users.delete("u-1"))
          yield* sync
          const company = yield* eventually(copyOf("Company", "c-1"), (copy) => copy?.state === "deleted")
          assert.deepStrictEqual(ledgerOf(company), [2, "deleted", null, undefined])
          assert.deepStrictEqual(ledgerOf(yield* copyOf("User", "u-1")), [2, "deleted", null, undefined])
        }),
        seen
      )
    })

    it.effect("the store keeps ledger rows with their references and finds them by reference", () =>
      Effect.gen(function*() {
        const copies = yield* CopyRepository
        const row = (id: string, fields: Partial<CopyRow>): CopyRow => ({
          entity: "User",
          id,
          version: 1,
          state: "live",
          payload: null,
          deletedAt: null,
          syncedAt: 1_000,
          messageId: `m-${id}`,
          ...fields
        })
        const ledger = row("u-1", { references: { companyId: "c-1" } })
        const kept = row("u-2", { payload: { ...ann, id: "u-2" } })
        const softDeleted = row("u-3", { state: "softDeleted", deletedAt: 2_000, references: { companyId: "c-1" } })
        const tombstone = row("u-4", { state: "deleted", version: 3 })
        const elsewhere = row("u-5", { references: { companyId: "c-2" } })
        assert.isTrue(yield* copies.upsert(ledger, "newer"))
        assert.strictEqual(
          yield* copies.upsertMany([kept, softDeleted, tombstone, elsewhere].map((r) => ({ row: r, guard: "newer" }))),
          4
        )
        assert.deepStrictEqual(yield* copies.get("User", "u-1"), ledger)
        assert.deepStrictEqual(yield* copies.list("User"), [ledger, kept, softDeleted, tombstone, elsewhere])
        assert.deepStrictEqual(
          yield* copies.getMany([{ entity: "User", id: "u-3" }, { entity: "User", id: "u-1" }], "forShare"),
          [ledger, softDeleted]
        )
        assert.deepStrictEqual(yield* copies.referencing("User", "companyId", "c-1"), ["u-1", "u-2", "u-3"])
        // the version guard reads only versions: a lower ledger row is refused, a newer one drops references
        assert.isFalse(yield* copies.upsert({ ...ledger, version: 0, references: { companyId: "c-2" } }, "newer"))
        const moved = row("u-1", { version: 2, references: { companyId: "c-2" } })
        assert.isTrue(yield* copies.upsert(moved, "newer"))
        assert.deepStrictEqual(yield* copies.referencing("User", "companyId", "c-2"), ["u-1", "u-5"])
        const { references: _, ...withoutReferences } = moved
        assert.strictEqual(yield* copies.upsertMany([{ row: { ...withoutReferences, version: 3 }, guard: "newer" }]), 1)
        assert.deepStrictEqual(yield* copies.referencing("User", "companyId", "c-2"), ["u-5"])
      }).pipe(Effect.provide(kit.stores().consumer)))
  })
}
