/**
 * The consumer at rest: once the work is done it waits (for a commit, a due parked event or its poll
 * interval) instead of looping.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import { Inbox } from "../src/Inbox.ts"
import * as MemoryCopyRepository from "../src/memory/CopyRepository.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import { Company } from "./fixtures.ts"
import { copyOf, memoryStores, sync, systemLayer, tick } from "./harness.ts"

describe("SyncConsumer", () => {
  it.effect("idles between events: the parked-event worker looks at the inbox once per poll interval", () =>
    Effect.gen(function*() {
      let looks = 0
      const countingInbox = Layer.effect(
        Inbox,
        Effect.map(MemoryInbox.make, (inbox) =>
          Inbox.of({ ...inbox, nextDueAt: (consumer) => Effect.andThen(Effect.sync(() => looks++), inbox.nextDueAt(consumer)) }))
      )
      const consumer = Layer.mergeAll(countingInbox, MemoryCopyRepository.layer).pipe(
        Layer.provideMerge(Layer.fresh(MemoryDatabase.layer))
      )
      yield* Effect.gen(function*() {
        const companies = Producer.make("accounts").repository(Company)
        yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
        yield* Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
        yield* sync
        assert.strictEqual((yield* copyOf("Company", "c-1"))?.version, 2)
        const before = looks
        for (let i = 0; i < 60; i++) yield* tick("1 second") // a minute at rest; the poll interval is 5 s
        assert.isAtMost(looks - before, 13)
      }).pipe(Effect.provide(systemLayer({ stores: { owner: memoryStores.owner, consumer } })))
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map())))
})
