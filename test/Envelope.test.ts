/**
 * Message ids: UUIDv7, time-ordered on the Effect clock, unique.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
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

const valid = {
  specVersion: 1,
  messageId: "0190a000-0000-7000-8000-000000000001",
  entity: "User",
  entityId: "u-1",
  action: "updated",
  version: 3,
  occurredAt: "2026-01-01T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload: { id: "u-1", tags: ["a"], nested: { n: 1 } }
}

/** Bodies that are envelopes, nearly envelopes, or not envelopes at all. */
const bodies: ReadonlyArray<unknown> = [
  valid,
  { ...valid, extra: "dropped" },
  { ...valid, traceparent: "00-abc-def-01", context: { tenant: "t-1" } },
  { ...valid, action: "deleted", payload: null },
  { ...valid, action: "deleted" },
  { ...valid, payload: null },
  { ...valid, action: "renamed" },
  { ...valid, version: 0 },
  { ...valid, version: 1.5 },
  { ...valid, version: "3" },
  { ...valid, messageId: "" },
  { ...valid, entityId: 7 },
  { ...valid, occurredAt: "yesterday" },
  { ...valid, forceSync: "false" },
  { ...valid, traceparent: 1 },
  { ...valid, context: { tenant: 1 } },
  { ...valid, context: ["t"] },
  { ...valid, payload: undefined },
  (({ producer: _, ...rest }) => rest)(valid),
  [valid],
  "an envelope",
  null
]

describe("Envelope.decode", () => {
  it.effect("gives what the Envelope schema gives, for envelopes and for every kind of almost-envelope", () =>
    Effect.gen(function*() {
      for (const body of bodies) {
        const text = JSON.stringify(body)
        const decoded = yield* Effect.result(Envelope.decode(text))
        const bySchema = yield* Effect.result(
          Schema.decodeUnknownEffect(Schema.fromJsonString(Envelope.Envelope))(text)
        )
        assert.strictEqual(decoded._tag, bySchema._tag, text)
        if (decoded._tag === "Success" && bySchema._tag === "Success") {
          assert.deepStrictEqual(decoded.success, bySchema.success, text)
        }
      }
    }))
})
