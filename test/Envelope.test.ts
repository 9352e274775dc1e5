/**
 * The event and its wire format: kept rows read by hand as the schema reads them, CloudEvents decoded as the
 * schema decodes them and read back as written, the retired format refused; message ids (UUIDv7).
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

const stored: Envelope.Envelope = {
  messageId: "0190a000-0000-7000-8000-000000000001",
  entity: "User",
  entityId: "u-1",
  action: "updated",
  version: 3,
  contractVersion: 2,
  occurredAt: "2026-01-01T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload: { id: "u-1", tags: ["a"], nested: { n: 1 } }
}

/** Kept rows that are events, nearly events, or not events at all. */
const rows: ReadonlyArray<unknown> = [
  stored,
  { ...stored, extra: "dropped" },
  { ...stored, specVersion: 1 },
  (({ contractVersion: _, ...rest }) => rest)(stored),
  { ...stored, traceparent: "00-abc-def-01", tracestate: "a=b", context: { tenant: "t-1" } },
  { ...stored, action: "deleted", payload: null },
  { ...stored, action: "deleted" },
  { ...stored, payload: null },
  { ...stored, action: "renamed" },
  { ...stored, version: 0 },
  { ...stored, version: 1.5 },
  { ...stored, contractVersion: 0 },
  { ...stored, contractVersion: "2" },
  { ...stored, version: "3" },
  { ...stored, messageId: "" },
  { ...stored, entityId: 7 },
  { ...stored, occurredAt: "yesterday" },
  { ...stored, forceSync: "false" },
  { ...stored, forceSync: true, reset: true },
  { ...stored, reset: true },
  { ...stored, traceparent: 1 },
  { ...stored, tracestate: 1 },
  { ...stored, context: { tenant: 1 } },
  { ...stored, context: ["t"] },
  { ...stored, payload: undefined },
  (({ producer: _, ...rest }) => rest)(stored),
  [stored],
  "an envelope",
  null
]

describe("Envelope.fromStoredJson", () => {
  it.effect("gives what the Envelope schema gives, for kept rows and every kind of almost-row", () =>
    Effect.gen(function*() {
      for (const row of rows) {
        const bySchema = yield* Effect.result(Schema.decodeUnknownEffect(Envelope.Envelope)(row))
        const byHand = Envelope.fromStoredJson(row)
        const text = JSON.stringify(row)
        assert.strictEqual(byHand !== undefined, bySchema._tag === "Success", text)
        if (bySchema._tag === "Success") assert.deepStrictEqual(byHand, bySchema.success, text)
      }
    }))
})

const event = Envelope.toCloudEvent(stored)

/** Bodies that are events of the wire format, nearly, or not at all. */
const bodies: ReadonlyArray<unknown> = [
  event,
  { ...event, tenant: "t-1", correlationid: "c-9", count: 3 },
  { ...event, traceparent: "00-abc-def-01", tracestate: "a=b" },
  { ...event, type: "entitysync.User.deleted", data: null },
  { ...event, type: "entitysync.User.deleted" },
  { ...event, data: null },
  { ...event, type: "entitysync.User.renamed" },
  { ...event, type: "User.updated" },
  { ...event, type: "entitysync..updated" },
  { ...event, specversion: "0.3" },
  { ...event, entityversion: 0 },
  { ...event, entityversion: 1.5 },
  { ...event, contractversion: "2" },
  { ...event, id: "" },
  { ...event, subject: 7 },
  { ...event, subject: "" },
  { ...event, time: "yesterday" },
  { ...event, time: "2026-01-01 00:00:00" },
  { ...event, time: "2026-01-01T00:00:00+01:00" },
  { ...event, time: "2026-02-30T00:00:00Z" },
  { ...event, time: "2024-02-29T00:00:00Z" },
  { ...event, tenant: 1.5 },
  { ...event, schemaurl: "https://example.com/s" },
  { ...event, dataschema: "https://example.com/s" },
  { ...event, dataschema: "not a uri" },
  { ...event, source: "has space" },
  { ...event, source: "" },
  { ...event, datacontenttype: "text/plain" },
  { ...event, datacontenttype: "application/json; charset=utf-8" },
  { ...event, forcesync: "false" },
  { ...event, forcesync: true, reset: true },
  { ...event, reset: true },
  { ...event, traceparent: 1 },
  { ...event, entityVersion: 3 },
  { ...event, "x-tenant": "t" },
  { ...event, data: undefined },
  (({ source: _, ...rest }) => rest)(event),
  (({ datacontenttype: _, ...rest }) => rest)(event),
  { ...stored, specVersion: 1 },
  [event],
  "an event",
  null
]

describe("Envelope.decode", () => {
  it.effect("accepts exactly what the CloudEvent schema accepts, for events and every kind of almost-event", () =>
    Effect.gen(function*() {
      for (const body of bodies) {
        const text = JSON.stringify(body)
        const decoded = yield* Effect.result(Envelope.decode(text))
        const bySchema = yield* Effect.result(
          Schema.decodeUnknownEffect(Schema.fromJsonString(Envelope.CloudEvent))(text)
        )
        assert.strictEqual(decoded._tag, bySchema._tag, text)
        if (decoded._tag === "Failure") assert.strictEqual(decoded.failure.reason, "InvalidEnvelope", text)
      }
    }))

  it.effect("reads back what it encodes, the request context as extension attributes", () =>
    Effect.gen(function*() {
      const full: Envelope.Envelope = {
        ...stored,
        action: "snapshot",
        forceSync: true,
        reset: true,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "vendor=1",
        context: { correlationid: "c-1", tenant: "t-1" }
      }
      for (const e of [stored, full, { ...stored, action: "deleted" as const, payload: null }]) {
        assert.deepStrictEqual(yield* Envelope.decode(Envelope.encode(e)), e)
      }
      const wire = JSON.parse(new TextDecoder().decode(Envelope.encode(full)))
      assert.deepStrictEqual(Object.keys(wire), [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "data",
        "entityversion",
        "contractversion",
        "forcesync",
        "reset",
        "traceparent",
        "tracestate",
        "correlationid",
        "tenant"
      ])
      assert.strictEqual(wire.type, "entitysync.User.snapshot")
    }))

  it.effect("does not send request context keys that cannot be CloudEvents extension attributes", () =>
    Effect.gen(function*() {
      const e = { ...stored, context: { tenant: "t", "Tenant-Id": "x", data: "y", averyveryverylongname1: "z" } }
      assert.deepStrictEqual((yield* Envelope.decode(Envelope.encode(e))).context, { tenant: "t" })
    }))

  it.effect("refuses a body of the retired format 1 with a reason that says so", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Envelope.decode(JSON.stringify({ ...stored, specVersion: 1 })))
      assert.strictEqual(error.reason, "InvalidEnvelope")
      assert.strictEqual(error.messageId, stored.messageId)
      assert.match(error.detail, /wire format 1 .*retired.*CloudEvents 1\.0/)
    }))
})
