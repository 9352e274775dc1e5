import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { DependencyMissing } from "../src/Errors.ts"
import * as MemoryCopyRepository from "../src/memory/CopyRepository.ts"
import * as MemoryInbox from "../src/memory/Inbox.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as MemorySourceRepository from "../src/memory/SourceRepository.ts"
import { convergence, leaseMillis } from "./convergence.ts"

convergence(
  "convergence (memory stores)",
  {
    stores: () => ({
      owner: Layer.mergeAll(MemoryOutbox.layer({ leaseMillis }), MemorySourceRepository.layer()).pipe(
        Layer.provide(Layer.fresh(MemoryDatabase.layer))
      ),
      consumer: Layer.mergeAll(MemoryInbox.layer, MemoryCopyRepository.layer).pipe(
        Layer.provideMerge(Layer.fresh(MemoryDatabase.layer))
      )
    }),
    pump: Effect.void,
    deterministic: true,
    file: "test/convergence-memory.test.ts"
  },
  150,
  150
)

describe("DependencyMissing", () => {
  it("names what is missing, for an operator", () => {
    const error = new DependencyMissing({
      messageId: "m-1",
      entity: "User",
      entityId: "u-1",
      version: 2,
      missing: [{ entity: "Company", id: "c-1" }],
      attempts: 3
    })
    assert.strictEqual(error.message, "User:u-1 v2 (message m-1) waits for Company:c-1 after 3 attempt(s)")
  })
})
