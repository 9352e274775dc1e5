/**
 * The owner-write conformance suite: how outbox appends are buffered per transaction (order, rollback,
 * nesting, reading one's own events) and how entities are created and saved without a read
 * (`SourceRepository.create` / `save`, `Producer` `create` / `createMany` / `saveMany`). Every
 * implementation of the owner's stores must pass it unchanged. Each test gets a fresh layer (an empty
 * database) and runs on the TestClock.
 *
 * @since 0.1.0
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, type Layer, type Scope } from "effect"
import { TestClock } from "effect/testing"
import type { Envelope } from "../../src/Envelope.ts"
import { EntityExists, EntityNotFound } from "../../src/Errors.ts"
import { Outbox, OutboxTransaction } from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import { type NewSourceRow, SourceRepository, type SourceRow } from "../../src/SourceRepository.ts"
import type { Transactor } from "../../src/Transactor.ts"
import { Company, createdEnvelope } from "../fixtures.ts"

/** The services the suite needs from an implementation. */
export type OwnerStores = Outbox | SourceRepository | Transactor

/** The failure the suite raises to roll a transaction back. */
class Boom extends Data.TaggedError("Boom")<{}> {}

/** The TestClock time every test starts at: 2026-01-01T00:00:00Z. */
const T0 = 1_767_225_600_000

const envelopes = (prefix: string, count: number) =>
  Array.from({ length: count }, (_, i) => createdEnvelope(`${prefix}-${String(i).padStart(5, "0")}`))

const append = (...appended: ReadonlyArray<Envelope>) => OutboxTransaction.use((tx) => tx.append(appended))

/** Message ids of the outbox rows, in seq order. */
const outboxIds = Effect.map(Outbox.use((outbox) => outbox.rows()), (rows) => rows.map((row) => row.envelope.messageId))

const newRow = (id: string, entity = "Company"): NewSourceRow => ({
  entity,
  id,
  payload: { id, name: id },
  updatedAt: T0
})

const sourceRow = (id: string, version: number, state: SourceRow["state"] = "live"): SourceRow => ({
  entity: "Company",
  id,
  version,
  state,
  payload: state === "deleted" ? null : { id, name: `${id} v${version}` },
  updatedAt: T0,
  deletedAt: state === "live" ? null : T0
})

const companies = Producer.make("accounts").repository(Company)
const company = (id: string) => ({ id, name: `name of ${id}` })

/** Entity ids and actions of the outbox rows, in seq order. */
const events = Effect.map(
  Outbox.use((outbox) => outbox.rows()),
  (rows) => rows.map((row) => `${row.envelope.entityId}.${row.envelope.action}.v${row.envelope.version}`)
)

/**
 * Registers the owner-write conformance tests under `name`. `makeLayer` is called once per test and must
 * give fresh, empty stores.
 */
export const ownerWriteConformance = <E>(name: string, makeLayer: () => Layer.Layer<OwnerStores, E>): void => {
  const test = (title: string, body: () => Effect.Effect<void, unknown, OwnerStores | Scope.Scope>) =>
    it.effect(title, () => TestClock.setTime(T0).pipe(Effect.andThen(body), Effect.provide(makeLayer())))

  describe(name, () => {
    describe("buffered outbox appends", () => {
      test("the events of a transaction are written in append order, across appends and insert chunks", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const first = envelopes("a", 1_500)
          const second = envelopes("b", 700)
          yield* outbox.transaction(Effect.gen(function*() {
            yield* append(...first)
            yield* append(createdEnvelope("single"))
            yield* append(...second)
          }))
          assert.deepStrictEqual(
            yield* outboxIds,
            [...first, createdEnvelope("single"), ...second].map((e) => e.messageId)
          )
          assert.strictEqual((yield* outbox.pending).count, 2_201)
        }))

      test("a transaction whose body fails after several appends writes none of them", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(append(createdEnvelope("kept")))
          const error = yield* outbox.transaction(Effect.gen(function*() {
            yield* append(createdEnvelope("m-1"))
            yield* append(...envelopes("m", 3))
            return yield* new Boom()
          })).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual(yield* outboxIds, ["kept"])
          assert.deepStrictEqual(yield* outbox.pending, { count: 1, oldestCreatedAt: T0 })
        }))

      test("a transaction reads its own events (claim, rows, pending), and they keep their order", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(Effect.gen(function*() {
            yield* append(createdEnvelope("m-1"))
            assert.strictEqual((yield* outbox.pending).count, 1)
            yield* append(createdEnvelope("m-2"))
            assert.deepStrictEqual((yield* outbox.rows()).map((row) => row.envelope.messageId), ["m-1", "m-2"])
            yield* append(createdEnvelope("m-3"))
            assert.deepStrictEqual((yield* outbox.claim(10)).map((row) => row.envelope.messageId), [
              "m-1",
              "m-2",
              "m-3"
            ])
            yield* append(createdEnvelope("m-4"))
          }))
          assert.deepStrictEqual(yield* outboxIds, ["m-1", "m-2", "m-3", "m-4"])
        }))

      test("nested transactions keep the append order of the outermost one", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(Effect.gen(function*() {
            yield* append(createdEnvelope("m-1"))
            yield* outbox.transaction(Effect.gen(function*() {
              yield* append(createdEnvelope("m-2"))
              yield* outbox.transaction(append(createdEnvelope("m-3")))
              yield* append(createdEnvelope("m-4"))
            }))
            yield* append(createdEnvelope("m-5"))
          }))
          assert.deepStrictEqual(yield* outboxIds, ["m-1", "m-2", "m-3", "m-4", "m-5"])
        }))

      test("a nested transaction that reads the outbox sees the enclosing transaction's events first", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(Effect.gen(function*() {
            yield* append(createdEnvelope("m-1"))
            yield* outbox.transaction(Effect.gen(function*() {
              yield* append(createdEnvelope("m-2"))
              assert.deepStrictEqual(yield* outboxIds, ["m-1", "m-2"])
            }))
            yield* append(createdEnvelope("m-3"))
          }))
          assert.deepStrictEqual(yield* outboxIds, ["m-1", "m-2", "m-3"])
        }))

      test("a failed nested transaction drops its events; the enclosing one keeps its own", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(Effect.gen(function*() {
            yield* append(createdEnvelope("m-1"))
            const error = yield* outbox.transaction(Effect.andThen(append(createdEnvelope("dropped")), new Boom()))
              .pipe(
                Effect.flip
              )
            assert.instanceOf(error, Boom)
            yield* append(createdEnvelope("m-2"))
          }))
          assert.deepStrictEqual(yield* outboxIds, ["m-1", "m-2"])
        }))

      test("a failing outer transaction drops the events of its nested ones", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const error = yield* outbox.transaction(Effect.gen(function*() {
            yield* append(createdEnvelope("m-1"))
            yield* outbox.transaction(append(createdEnvelope("m-2")))
            return yield* new Boom()
          })).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual(yield* outboxIds, [])
        }))

      test("appending through a transaction that has ended is a defect", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const leaked = yield* outbox.transaction(Effect.service(OutboxTransaction))
          const exit = yield* Effect.exit(leaked.append([createdEnvelope("late")]))
          assert.isTrue(exit._tag === "Failure")
          assert.deepStrictEqual(yield* outboxIds, [])
        }))
    })

    describe("SourceRepository.create", () => {
      test("a new entity gets version 1; a tombstone is re-created with its version + 1", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          yield* outbox.transaction(sources.put(sourceRow("c-2", 4, "deleted"), null))
          const created = yield* outbox.transaction(sources.create([newRow("c-1"), newRow("c-2")]))
          const expected = (id: string, version: number): SourceRow => ({
            entity: "Company",
            id,
            version,
            state: "live",
            payload: { id, name: id },
            updatedAt: T0,
            deletedAt: null
          })
          assert.deepStrictEqual(created, [expected("c-1", 1), expected("c-2", 5)])
          assert.deepStrictEqual(yield* sources.get("Company", "c-1"), expected("c-1", 1))
          assert.deepStrictEqual(yield* sources.get("Company", "c-2"), expected("c-2", 5))
          assert.deepStrictEqual(yield* outbox.transaction(sources.create([])), [])
        }))

      test("a live or soft-deleted row fails the whole call with EntityExists and nothing is written", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          yield* outbox.transaction(sources.put(sourceRow("c-live", 2), null))
          yield* outbox.transaction(sources.put(sourceRow("c-soft", 3, "softDeleted"), null))
          yield* outbox.transaction(sources.put(sourceRow("c-gone", 4, "deleted"), null))
          for (const existing of ["c-live", "c-soft"]) {
            const error = yield* outbox.transaction(
              sources.create([newRow("c-new"), newRow(existing), newRow("c-gone")])
            ).pipe(Effect.flip)
            assert.deepStrictEqual(error, new EntityExists({ entity: "Company", entityId: existing }))
          }
          assert.isNull(yield* sources.get("Company", "c-new"))
          assert.deepStrictEqual(yield* sources.get("Company", "c-live"), sourceRow("c-live", 2))
          assert.deepStrictEqual(yield* sources.get("Company", "c-soft"), sourceRow("c-soft", 3, "softDeleted"))
          assert.deepStrictEqual(yield* sources.get("Company", "c-gone"), sourceRow("c-gone", 4, "deleted"))
          // the same id under another entity is another row
          assert.strictEqual((yield* outbox.transaction(sources.create([newRow("c-live", "User")])))[0]?.version, 1)
        }))

      test("an id given twice fails with EntityExists for its second occurrence and nothing is written", () =>
        Effect.gen(function*() {
          const sources = yield* SourceRepository
          const outbox = yield* Outbox
          const error = yield* outbox.transaction(sources.create([newRow("c-1"), newRow("c-2"), newRow("c-1")])).pipe(
            Effect.flip
          )
          assert.deepStrictEqual(error, new EntityExists({ entity: "Company", entityId: "c-1" }))
          assert.isNull(yield* sources.get("Company", "c-1"))
          assert.isNull(yield* sources.get("Company", "c-2"))
        }))
    })

    describe("Producer create and createMany", () => {
      test("create: EntityExists for a live or soft-deleted entity; a tombstone continues its version", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.create(company("c-1")))
          yield* outbox.transaction(companies.create(company("c-2")))
          yield* outbox.transaction(companies.softDelete("c-2"))
          for (const id of ["c-1", "c-2"]) {
            const error = yield* outbox.transaction(companies.create(company(id))).pipe(Effect.flip)
            assert.deepStrictEqual(error, new EntityExists({ entity: "Company", entityId: id }))
          }
          yield* outbox.transaction(companies.delete("c-1"))
          const again = yield* outbox.transaction(companies.create({ id: "c-1", name: "again" }))
          assert.deepStrictEqual(again, {
            id: "c-1",
            version: 3,
            state: "live",
            payload: { id: "c-1", name: "again" },
            updatedAt: T0,
            deletedAt: null
          })
          assert.deepStrictEqual(yield* events, [
            "c-1.created.v1",
            "c-2.created.v1",
            "c-2.softDeleted.v2",
            "c-1.deleted.v2",
            "c-1.created.v3"
          ])
        }))

      test("createMany writes every entity and appends their events in payload order", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.create(company("c-5")))
          yield* outbox.transaction(companies.delete("c-5"))
          const ids = ["c-9", "c-1", "c-5", "c-3"]
          const created = yield* outbox.transaction(companies.createMany(ids.map(company)))
          assert.deepStrictEqual(created.map((e) => [e.id, e.version, e.state, e.payload?.name]), [
            ["c-9", 1, "live", "name of c-9"],
            ["c-1", 1, "live", "name of c-1"],
            ["c-5", 3, "live", "name of c-5"],
            ["c-3", 1, "live", "name of c-3"]
          ])
          assert.deepStrictEqual((yield* events).slice(2), [
            "c-9.created.v1",
            "c-1.created.v1",
            "c-5.created.v3",
            "c-3.created.v1"
          ])
          assert.deepStrictEqual(yield* companies.get("c-5"), created[2] ?? null)
          assert.deepStrictEqual(yield* outbox.transaction(companies.createMany([])), [])
        }))

      test("createMany fails with EntityExists and writes nothing, even when the transaction commits anyway", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.create(company("c-2")))
          yield* outbox.transaction(companies.create(company("c-4")))
          yield* outbox.transaction(companies.softDelete("c-4"))
          const attempts = [["c-1", "c-2", "c-3"], ["c-1", "c-4"], ["c-1", "c-3", "c-1"]]
          const failures = yield* Effect.forEach(attempts, (ids) =>
            outbox.transaction(
              companies.createMany(ids.map(company)).pipe(
                Effect.flip,
                Effect.tap(() => append(createdEnvelope(`after-${ids.join("+")}`)))
              )
            ))
          assert.deepStrictEqual(failures, [
            new EntityExists({ entity: "Company", entityId: "c-2" }),
            new EntityExists({ entity: "Company", entityId: "c-4" }),
            new EntityExists({ entity: "Company", entityId: "c-1" })
          ])
          assert.isNull(yield* companies.get("c-1"))
          assert.isNull(yield* companies.get("c-3"))
          // the transactions committed their other events; createMany added none
          assert.deepStrictEqual((yield* events).slice(3), [
            "after-c-1+c-2+c-3.created.v1",
            "after-c-1+c-4.created.v1",
            "after-c-1+c-3+c-1.created.v1"
          ])
        }))

      test("createMany honours handleWhen and dismissSendEvent, and still bumps versions", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const visible = Producer.make("accounts").repository(Company, {
            handleWhen: (change) => change.after?.name !== "hidden"
          })
          yield* outbox.transaction(
            visible.createMany([company("c-1"), { id: "c-2", name: "hidden" }, company("c-3")])
          )
          yield* outbox.transaction(visible.createMany([company("c-4")], { dismissSendEvent: true }))
          assert.deepStrictEqual(yield* events, ["c-1.created.v1", "c-3.created.v1"])
          assert.strictEqual((yield* visible.get("c-2"))?.version, 1)
          assert.strictEqual((yield* visible.get("c-4"))?.version, 1)
        }))

      test("events carry the traceparent of the span they were written in, and the request context", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.create(company("c-1")))
          const span = yield* outbox.transaction(Effect.andThen(companies.create(company("c-2")), Effect.currentSpan))
            .pipe(
              Effect.withSpan("signup"),
              Effect.provideService(Producer.RequestContext, { tenant: "t-1" })
            )
          const [plain, traced] = yield* Effect.map(outbox.rows(), (rows) => rows.map((row) => row.envelope))
          assert.isUndefined(plain?.context)
          // the span of the write itself, or one inside it (a store's transaction span): the same trace
          assert.match(traced?.traceparent ?? "", new RegExp(`^00-${span.traceId}-[0-9a-f]{16}-01$`))
          assert.deepStrictEqual(traced?.context, { tenant: "t-1" })
        }))

      test("a failed transaction leaves neither the created entities nor their events", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const error = yield* outbox.transaction(Effect.gen(function*() {
            yield* companies.createMany([company("c-1"), company("c-2")])
            yield* companies.create(company("c-3"))
            return yield* new Boom()
          })).pipe(Effect.flip)
          assert.instanceOf(error, Boom)
          assert.deepStrictEqual(yield* events, [])
          assert.isNull(yield* companies.get("c-1"))
          assert.isNull(yield* companies.get("c-3"))
        }))
    })

    describe("Producer saveMany", () => {
      test("creates the absent and the deleted, updates the changed, leaves the equal, in payloads order", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.createMany(["c-1", "c-2", "c-3"].map(company)))
          yield* outbox.transaction(companies.delete("c-3"))
          const renamed = (id: string) => ({ id, name: `${id} renamed` })
          const saved = yield* outbox.transaction(
            companies.saveMany([company("c-4"), renamed("c-1"), company("c-2"), company("c-3")])
          )
          assert.deepStrictEqual(
            saved.map((entity) => [entity.id, entity.version, entity.state, entity.payload?.name]),
            [
              ["c-4", 1, "live", "name of c-4"],
              ["c-1", 2, "live", "c-1 renamed"],
              ["c-2", 1, "live", "name of c-2"],
              ["c-3", 3, "live", "name of c-3"]
            ]
          )
          assert.deepStrictEqual((yield* events).slice(4), ["c-4.created.v1", "c-1.updated.v2", "c-3.created.v3"])
          assert.deepStrictEqual(yield* companies.get("c-1"), saved[1] ?? null)
          assert.deepStrictEqual(yield* companies.get("c-3"), saved[3] ?? null)
          // all of them existing: saved again, two changed
          yield* TestClock.adjust("1 second")
          const again = yield* outbox.transaction(
            companies.saveMany([renamed("c-2"), renamed("c-1"), renamed("c-4")])
          )
          assert.deepStrictEqual(again.map((entity) => [entity.id, entity.version, entity.updatedAt - T0]), [
            ["c-2", 2, 1_000],
            ["c-1", 2, 0],
            ["c-4", 2, 1_000]
          ])
          assert.deepStrictEqual((yield* events).slice(7), ["c-2.updated.v2", "c-4.updated.v2"])
          assert.deepStrictEqual(yield* outbox.transaction(companies.saveMany([])), [])
        }))

      test("fails with EntityExists for a soft-deleted entity or an id given twice, and writes nothing", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.createMany(["c-1", "c-2"].map(company)))
          yield* outbox.transaction(companies.softDelete("c-2"))
          const changed = (id: string) => ({ id, name: "changed" })
          const attempts = [
            [changed("c-1"), changed("c-2")],
            [changed("c-9"), changed("c-2")],
            [changed("c-9"), changed("c-1"), company("c-9")]
          ]
          const failures = yield* Effect.forEach(attempts, (payloads) =>
            outbox.transaction(
              companies.saveMany(payloads).pipe(
                Effect.flip,
                Effect.tap(() => append(createdEnvelope(`after-${payloads.map((p) => p.id).join("+")}`)))
              )
            ))
          assert.deepStrictEqual(failures, [
            new EntityExists({ entity: "Company", entityId: "c-2" }),
            new EntityExists({ entity: "Company", entityId: "c-2" }),
            new EntityExists({ entity: "Company", entityId: "c-9" })
          ])
          assert.strictEqual((yield* companies.get("c-1"))?.version, 1)
          assert.strictEqual((yield* companies.get("c-2"))?.state, "softDeleted")
          assert.isNull(yield* companies.get("c-9"))
          assert.deepStrictEqual((yield* events).slice(3), [
            "after-c-1+c-2.created.v1",
            "after-c-9+c-2.created.v1",
            "after-c-9+c-1+c-9.created.v1"
          ])
        }))

      test("gives handleWhen each change with its before, honours dismissSendEvent, and still bumps versions", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          const changes: Array<string> = []
          const visible = Producer.make("accounts").repository(Company, {
            handleWhen: (change) => {
              changes.push(`${change.action}:${change.before?.name ?? "-"}>${change.after?.name ?? "-"}`)
              return change.before?.name !== "private"
            }
          })
          yield* outbox.transaction(visible.createMany([{ id: "c-1", name: "private" }, company("c-2")]))
          yield* outbox.transaction(
            visible.saveMany([{ id: "c-1", name: "p2" }, { id: "c-2", name: "public" }, company("c-3")])
          )
          yield* outbox.transaction(visible.saveMany([{ id: "c-2", name: "quiet" }], { dismissSendEvent: true }))
          assert.deepStrictEqual(changes, [
            "created:->private",
            "created:->name of c-2",
            "updated:private>p2",
            "updated:name of c-2>public",
            "created:->name of c-3"
          ])
          assert.deepStrictEqual(yield* events, [
            "c-1.created.v1",
            "c-2.created.v1",
            "c-2.updated.v2",
            "c-3.created.v1"
          ])
          assert.strictEqual((yield* visible.get("c-1"))?.version, 2)
          assert.strictEqual((yield* visible.get("c-2"))?.version, 3)
        }))
    })

    describe("Producer updateMany", () => {
      test("updates every entity in one write, skips no-ops, and appends their events in id order", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.createMany(["c-1", "c-2", "c-3"].map(company)))
          const updated = yield* outbox.transaction(
            companies.updateMany(
              ["c-3", "c-1", "c-2", "c-3"],
              (current) => current.id === "c-2" ? current : { ...current, name: `${current.id} renamed` }
            )
          )
          assert.deepStrictEqual(updated.map((entity) => [entity.id, entity.version, entity.payload?.name]), [
            ["c-3", 2, "c-3 renamed"],
            ["c-1", 2, "c-1 renamed"],
            ["c-2", 1, "name of c-2"]
          ])
          assert.deepStrictEqual(yield* events, [
            "c-1.created.v1",
            "c-2.created.v1",
            "c-3.created.v1",
            "c-3.updated.v2",
            "c-1.updated.v2"
          ])
          assert.deepStrictEqual((yield* companies.get("c-1"))?.payload, { id: "c-1", name: "c-1 renamed" })
          assert.deepStrictEqual(
            yield* outbox.transaction(companies.updateMany(["c-1"], (current) => ({ ...current, name: "again" }))),
            [yield* companies.get("c-1")].flatMap((entity) => (entity === null ? [] : [entity]))
          )
        }))

      test("fails with EntityNotFound for the first id that is not live and writes nothing", () =>
        Effect.gen(function*() {
          const outbox = yield* Outbox
          yield* outbox.transaction(companies.createMany(["c-1", "c-2", "c-3"].map(company)))
          yield* outbox.transaction(Effect.andThen(companies.softDelete("c-2"), companies.delete("c-3")))
          for (const missing of ["c-2", "c-3", "c-9"]) {
            const error = yield* outbox.transaction(
              companies.updateMany(["c-1", missing], (current) => ({ ...current, name: "x" }))
            ).pipe(Effect.flip)
            assert.deepStrictEqual(error, new EntityNotFound({ entity: "Company", entityId: missing }))
          }
          assert.strictEqual((yield* companies.get("c-1"))?.version, 1)
          assert.deepStrictEqual((yield* events).filter((event) => event.startsWith("c-1")), ["c-1.created.v1"])
        }))
    })
  })
}
