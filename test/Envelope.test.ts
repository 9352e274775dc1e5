/**
 * Message ids: UUIDv7, time-ordered on the Effect clock, unique.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import * as Envelope from "../src/Envelope.ts"

const uuidV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

describe("Envelope.makeMessageId", () => {
  it.effect("makes unique UUIDv7 ids that carry the clock's milliseconds and sort by time", () =>
    Effect.gen(function*() {
      const millis = 1_767_225_600_123
      yield* TestClock.setTime(millis)
      const ids = yield* Effect.forEach(Array.from({ length: 5_000 }), () => Envelope.makeMessageId)
      for (const id of ids) assert.match(id, uuidV7)
      assert.strictEqual(new Set(ids).size, ids.length)
      assert.strictEqual(parseInt(ids[0]!.replace("-", "").slice(0, 12), 16), millis)
      yield* TestClock.adjust("1 millis")
      const later = yield* Envelope.makeMessageId
      assert.isTrue(ids.every((id) => id < later))
    }))
})
