import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { DependencyMissing } from "../src/Errors.ts"
import { convergence } from "./convergence.ts"
import { memoryStores } from "./harness.ts"

convergence("convergence (memory stores)", { stores: () => memoryStores, pump: Effect.void }, 300)

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
