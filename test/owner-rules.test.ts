/**
 * R1 and R2 at run time, where the types cannot see: a repository for a contract whose owner is another
 * service at run time dies when it is made; a configured service name is checked against the declared one;
 * an `OutboxTransaction` used after its transaction ended (or copied from a live one) dies before anything
 * is written, so no owner row commits without its event — on the memory stores and on PostgreSQL.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Result } from "effect"
import { TestClock } from "effect/testing"
import { Broker } from "../src/Broker.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as MemorySourceRepository from "../src/memory/SourceRepository.ts"
import {
  ensureOutsideTransaction,
  insideTransaction,
  Outbox,
  OutboxTransaction,
  OutboxTransactionEnded,
  OutboxTransactionForged,
  PublishedInsideTransaction
} from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import { SourceRepository } from "../src/SourceRepository.ts"
import { Company } from "./fixtures.ts"
import * as TestPostgres from "./postgres.ts"

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const acme = { id: "c-1", name: "Acme" }

describe("R1 at run time", () => {
  it("a repository for a contract another service owns at run time dies when it is made, naming R1", () => {
    // the type says "accounts"; the value (a contract of another version, say) says "billing"
    const drifted = { ...Company }
    Reflect.set(drifted, "owner", "billing")
    let thrown: unknown
    try {
      accounts.repository(drifted)
    } catch (error) {
      thrown = error
    }
    assert.instanceOf(thrown, Producer.NotTheOwner)
    assert.deepStrictEqual({ ...thrown }, {
      _tag: "NotTheOwner",
      contract: "Company",
      owner: "billing",
      service: "accounts"
    })
    assert.strictEqual(
      thrown.message,
      `R1: service "accounts" cannot produce events of Company, which "billing" owns`
    )
  })

  it("a repository of an owned contract is made", () => {
    assert.isFunction(accounts.repository(Company).create)
  })

  it.effect("checkConfigured accepts the declared name and fails with ConfiguredServiceMismatch on another", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* Producer.checkConfigured(accounts, "accounts"), "accounts")
      const error = yield* Effect.flip(Producer.checkConfigured(accounts, "billing"))
      assert.deepStrictEqual(
        error,
        new Producer.ConfiguredServiceMismatch({ declared: "accounts", configured: "billing" })
      )
      assert.match(error.message, /configured service name "billing" is not "accounts"/)
    }))
})

/** The defect an exit died with, if it died. */
const defectOf = <A, E>(exit: Exit.Exit<A, E>): unknown => {
  if (Exit.isSuccess(exit)) return undefined
  const defect = Cause.findDefect(exit.cause)
  return Result.isSuccess(defect) ? defect.success : undefined
}

/** Message ids of the outbox rows and the stored Company, as the assertions compare them. */
const stored = Effect.gen(function*() {
  const rows = yield* Outbox.use((outbox) => outbox.rows())
  const company = yield* companies.get(acme.id)
  return {
    events: rows.map((row) => `${row.envelope.entityId}.${row.envelope.action}.v${row.envelope.version}`),
    version: company?.version ?? null
  }
})

/** An OutboxTransaction leaked out of its (committed) transaction. */
const leak = Outbox.use((outbox) => outbox.transaction(Effect.service(OutboxTransaction)))

const r2Suite = (name: string, makeLayer: () => Layer.Layer<Outbox | SourceRepository, unknown>) =>
  describe(`R2 at run time: ${name}`, () => {
    const test = (title: string, body: () => Effect.Effect<void, unknown, Outbox | SourceRepository>) =>
      it.effect(title, () => TestClock.setTime(0).pipe(Effect.andThen(body), Effect.provide(makeLayer())))

    test("append after the transaction committed dies with OutboxTransactionEnded and writes nothing", () =>
      Effect.gen(function*() {
        const leaked = yield* leak
        const exit = yield* Effect.exit(leaked.append([]))
        const defect = defectOf(exit)
        assert.instanceOf(defect, OutboxTransactionEnded)
        assert.strictEqual(defect.operation, "append")
        assert.match(defect.message, /^R2: append through an OutboxTransaction whose transaction has ended/)
        assert.deepStrictEqual(yield* stored, { events: [], version: null })
      }))

    test("a create through a leaked OutboxTransaction dies before writing: no row, no event", () =>
      Effect.gen(function*() {
        const leaked = yield* leak
        const exit = yield* Effect.exit(Effect.provideService(companies.create(acme), OutboxTransaction, leaked))
        assert.instanceOf(defectOf(exit), OutboxTransactionEnded)
        assert.deepStrictEqual(yield* stored, { events: [], version: null })
      }))

    test("update, softDelete and delete through a leaked OutboxTransaction die before writing", () =>
      Effect.gen(function*() {
        yield* Outbox.use((outbox) => outbox.transaction(companies.create(acme)))
        const leaked = yield* leak
        for (
          const write of [
            companies.update(acme.id, (c) => ({ ...c, name: "Acme 2" })),
            companies.softDelete(acme.id),
            companies.delete(acme.id)
          ]
        ) {
          const exit = yield* Effect.exit(Effect.provideService(write, OutboxTransaction, leaked))
          assert.instanceOf(defectOf(exit), OutboxTransactionEnded)
        }
        assert.deepStrictEqual(yield* stored, { events: ["c-1.created.v1"], version: 1 })
      }))

    test("the service of a rolled-back transaction is refused too", () =>
      Effect.gen(function*() {
        const leaked = yield* Outbox.use((outbox) =>
          outbox.transaction(Effect.flatMap(Effect.service(OutboxTransaction), (tx) => Effect.fail(tx)))
        ).pipe(Effect.flip)
        const exit = yield* Effect.exit(Effect.provideService(companies.create(acme), OutboxTransaction, leaked))
        assert.instanceOf(defectOf(exit), OutboxTransactionEnded)
        assert.deepStrictEqual(yield* stored, { events: [], version: null })
      }))

    test("SourceRepository's writes through a leaked OutboxTransaction die before writing", () =>
      Effect.gen(function*() {
        const leaked = yield* leak
        const sources = yield* SourceRepository
        const row = { entity: "Company", id: acme.id, payload: acme, updatedAt: 0 }
        const create = yield* Effect.exit(Effect.provideService(sources.create([row]), OutboxTransaction, leaked))
        assert.deepStrictEqual(defectOf(create), new OutboxTransactionEnded({ operation: "create" }))
        const put = sources.put({ ...row, version: 1, state: "live", deletedAt: null }, null)
        const exit = yield* Effect.exit(Effect.provideService(put, OutboxTransaction, leaked))
        assert.deepStrictEqual(defectOf(exit), new OutboxTransactionEnded({ operation: "put" }))
        assert.deepStrictEqual(yield* stored, { events: [], version: null })
      }))

    test("a fiber forked in the transaction that outlives it cannot write", () =>
      Effect.gen(function*() {
        const committed = yield* Deferred.make<void>()
        const fiber = yield* Outbox.use((outbox) =>
          outbox.transaction(Effect.forkDetach(Effect.andThen(Deferred.await(committed), companies.create(acme))))
        )
        yield* Deferred.succeed(committed, undefined)
        const exit = yield* Fiber.await(fiber)
        assert.instanceOf(defectOf(exit), OutboxTransactionEnded)
        assert.deepStrictEqual(yield* stored, { events: [], version: null })
      }))

    test("a copy of the live OutboxTransaction with its own append is refused, and the transaction rolls back", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(Outbox.use((outbox) =>
          outbox.transaction(Effect.gen(function*() {
            const tx = yield* OutboxTransaction
            const silent = { ...tx, append: () => Effect.void }
            return yield* Effect.provideService(companies.create(acme), OutboxTransaction, silent)
          }))
        ))
        const defect = defectOf(exit)
        assert.instanceOf(defect, OutboxTransactionForged)
        assert.match(
          defect.message,
          /^R2: create Company through an OutboxTransaction that Outbox.transaction did not make/
        )
        assert.deepStrictEqual(yield* stored, { events: [], version: null })
      }))

    test("a publish path can tell it runs inside an open transaction (a Broker captured before it)", () =>
      Effect.gen(function*() {
        assert.isFalse(yield* insideTransaction)
        yield* ensureOutsideTransaction("publish")
        const inside = yield* Outbox.use((outbox) =>
          outbox.transaction(Effect.all([insideTransaction, Effect.exit(ensureOutsideTransaction("publish"))]))
        )
        assert.isTrue(inside[0])
        const defect = defectOf(inside[1])
        assert.instanceOf(defect, PublishedInsideTransaction)
        assert.strictEqual(defect.operation, "publish")
        assert.match(defect.message, /^R2: publish from inside an outbox transaction/)
        const leaked = yield* leak
        assert.isFalse(yield* Effect.provideService(insideTransaction, OutboxTransaction, leaked))
      }))

    test("a Broker captured before the transaction and used inside it dies; nothing is published or committed", () =>
      Effect.gen(function*() {
        const broker = yield* Broker
        yield* broker.declare({ name: "directory.sync", bindings: ["accounts.Company.*"] })
        const exit = yield* Effect.exit(Outbox.use((outbox) =>
          outbox.transaction(Effect.andThen(
            companies.create(acme),
            broker.publish([{
              messageId: "m-1",
              routingKey: "accounts.Company.created",
              type: "Company.created",
              body: new Uint8Array(),
              headers: {}
            }])
          ))
        ))
        assert.instanceOf(defectOf(exit), PublishedInsideTransaction)
        assert.deepStrictEqual(yield* stored, { events: [], version: null })
        const memory = yield* MemoryBroker.MemoryBroker
        assert.strictEqual((yield* memory.stats).published, 0)
      }).pipe(Effect.provide(MemoryBroker.layer())))

    test("inside its transaction the service writes the entity and its event", () =>
      Effect.gen(function*() {
        yield* Outbox.use((outbox) => outbox.transaction(companies.create(acme)))
        assert.deepStrictEqual(yield* stored, { events: ["c-1.created.v1"], version: 1 })
      }))
  })

r2Suite(
  "memory",
  () => Layer.mergeAll(MemoryOutbox.layer(), MemorySourceRepository.layer()).pipe(Layer.provide(MemoryDatabase.layer))
)

const database = TestPostgres.forFile({ maxConnections: 10 })
r2Suite(
  "PostgreSQL",
  () => PostgresSync.layer({ prefix: database.prefix("rules") }).pipe(Layer.provide(database.layer))
)
