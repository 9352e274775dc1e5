/**
 * The owner's writes under concurrency on PostgreSQL: writers of one entity are serialized, every
 * version is published once with its own content, of concurrent creates exactly one wins, and concurrent
 * saves of an entity that does not exist yet create it once and update it after.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Outbox from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import { Company } from "./fixtures.ts"
import * as TestPostgres from "./postgres.ts"

const database = TestPostgres.forFile({ maxConnections: 30 })
const stores = () => PostgresSync.layer({ prefix: database.prefix("owner") }).pipe(Layer.provide(database.layer))
const companies = Producer.make("accounts").repository(Company)

describe("Producer on PostgreSQL", () => {
  it.live("concurrent updates of one entity get distinct versions and events", () =>
    Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id: "c-1", name: "v" }))
      yield* Effect.forEach(
        Array.from({ length: 20 }, (_, i) => i),
        (i) => Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: `${c.name}.${i}` }))),
        { concurrency: "unbounded", discard: true }
      )
      const final = yield* companies.get("c-1")
      assert.strictEqual(final?.version, 21)
      const events = yield* Outbox.Outbox.use((outbox) => outbox.rows())
      assert.deepStrictEqual(
        events.map((e) => e.envelope.version).sort((a, b) => a - b),
        Array.from({ length: 21 }, (_, i) => i + 1)
      )
      // each update saw the one before it: the final name holds all 20 suffixes
      assert.strictEqual(String(Reflect.get(final?.payload ?? {}, "name")).split(".").length, 21)
    }).pipe(Effect.provide(stores())))

  it.live("concurrent saves of new and existing entities, in any order, get consecutive versions, the first a create", () =>
    Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id: "c-4", name: "start" }))
      const ids = ["c-3", "c-4", "c-5"]
      yield* Effect.forEach(
        Array.from({ length: 9 }, (_, i) => i),
        (i) => {
          const order = [...ids.slice(i % 3), ...ids.slice(0, i % 3)]
          return Outbox.transaction(companies.saveMany(order.map((id) => ({ id, name: `n${i}` }))))
        },
        { concurrency: "unbounded", discard: true }
      )
      const events = yield* Outbox.Outbox.use((outbox) => outbox.rows())
      const of = (id: string) =>
        events.filter((e) => e.envelope.entityId === id).map((e) => `${e.envelope.action}.v${e.envelope.version}`)
      const updates = (n: number) => Array.from({ length: n }, (_, i) => `updated.v${i + 2}`)
      assert.deepStrictEqual(of("c-3"), ["created.v1", ...updates(8)])
      assert.deepStrictEqual(of("c-4"), ["created.v1", ...updates(9)])
      assert.deepStrictEqual(of("c-5"), ["created.v1", ...updates(8)])
      const last = events.at(-1)?.envelope.payload
      assert.deepStrictEqual((yield* companies.get(events.at(-1)?.envelope.entityId ?? ""))?.payload, last)
    }).pipe(Effect.provide(stores())))

  it.live("of concurrent creates of one entity, exactly one wins", () =>
    Effect.gen(function*() {
      const results = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, i) => i),
        (i) => Effect.result(Outbox.transaction(companies.create({ id: "c-2", name: `n${i}` }))),
        { concurrency: "unbounded" }
      )
      const failures = results.flatMap((r) => r._tag === "Failure" ? [r.failure._tag] : [])
      assert.strictEqual(results.length - failures.length, 1)
      assert.deepStrictEqual([...new Set(failures)], ["EntityExists"])
    }).pipe(Effect.provide(stores())))
})
