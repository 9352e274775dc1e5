/**
 * The README's usage example is examples/quickstart.ts, word for word, and it works.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { readFileSync } from "node:fs"
import { program } from "../examples/quickstart.ts"

describe("README", () => {
  it("shows examples/quickstart.ts as its usage example", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
    const example = readFileSync(new URL("../examples/quickstart.ts", import.meta.url), "utf8")
    const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1]
    assert.strictEqual(block, example)
    assert.isAtMost(example.trim().split("\n").length, 30)
  })

  it.effect("its example syncs a Company from the owner to the consumer", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.forkChild(program)
      for (let ms = 0; ms < 100; ms++) yield* TestClock.adjust("1 millis")
      const copy = yield* Fiber.join(fiber)
      assert.deepStrictEqual(copy && [copy.entity, copy.version, copy.payload], ["Company", 1, {
        id: "c-1",
        name: "Acme"
      }])
    }))
})
