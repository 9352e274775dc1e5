/**
 * Subscription.prepare: an event's payload decoded with its contract (synchronously when the schema
 * allows it, through Effect otherwise), its references, and every way it can be malformed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema, SchemaGetter } from "effect"
import * as Contract from "../src/Contract.ts"
import type { CopyRow } from "../src/CopyRepository.ts"
import type { Envelope } from "../src/Envelope.ts"
import * as Subscription from "../src/Subscription.ts"
import { User } from "./fixtures.ts"

const userEvent = (payload: Envelope["payload"], overrides: Partial<Envelope> = {}): Envelope => ({
  contractVersion: 1,
  messageId: "0190a000-0000-7000-8000-000000000001",
  entity: "User",
  entityId: "u-1",
  action: "created",
  version: 1,
  occurredAt: "2026-01-01T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload,
  ...overrides
})

const ada = { id: "u-1", companyId: "c-1", email: "ada@example.com", name: "Ada", active: true }

/** A contract `name` whose payload's `name` field is decoded and encoded by the given getters. */
const withNameCodec = <Name extends string>(
  name: Name,
  codec: {
    readonly decode: SchemaGetter.Getter<string, string>
    readonly encode: SchemaGetter.Getter<string, string>
  }
) =>
  Contract.make({
    name,
    owner: "accounts",
    payload: Schema.Struct({ id: Schema.String, name: Schema.String.pipe(Schema.decodeTo(Schema.String, codec)) }),
    id: "id"
  })

/** A contract whose payload schema decodes through an asynchronous transformation. */
const Slow = withNameCodec("Slow", {
  decode: SchemaGetter.transformEffect((name: string) => Effect.promise(() => Promise.resolve(name.toUpperCase()))),
  encode: SchemaGetter.transform((name: string) => name)
})

/** A contract whose payload schema transforms a field synchronously: stored in its encoded form. */
const Shouting = withNameCodec("Shouting", {
  decode: SchemaGetter.transform((name: string) => name.toUpperCase()),
  encode: SchemaGetter.transform((name: string) => `${name.toLowerCase()}!`)
})

describe("Subscription.prepare", () => {
  it.effect("keeps the payload as its schema encodes it: unknown fields dropped, transformed fields encoded", () =>
    Effect.gen(function*() {
      const users = Subscription.subscribe(User)
      const plain = yield* Subscription.prepared(users.prepare(userEvent({ ...ada, nickname: "countess" })))
      assert.deepStrictEqual(plain.payload, ada)
      const seen: Array<unknown> = []
      const shouting = Subscription.subscribe(Shouting, {
        handler: ({ payload }) => Effect.sync(() => void seen.push(payload))
      })
      const event = userEvent({ id: "s-1", name: "Quiet" }, { entity: "Shouting", entityId: "s-1" })
      const prepared = yield* Subscription.prepared(shouting.prepare(event))
      assert.deepStrictEqual(prepared.payload, { id: "s-1", name: "quiet!" })
      yield* prepared.handle?.(null) ?? Effect.void
      assert.deepStrictEqual(seen, [{ id: "s-1", name: "QUIET" }])
    }))

  it.effect("reports every issue of an invalid payload, not only the first", () =>
    Effect.gen(function*() {
      const users = Subscription.subscribe(User)
      const invalid = yield* Effect.flip(
        Subscription.prepared(users.prepare(userEvent({ ...ada, active: "yes", name: 7 })))
      )
      assert.strictEqual(invalid.reason, "InvalidPayload")
      assert.include(invalid.message, "active")
      assert.include(invalid.message, "name")
    }))

  it.effect("decodes the payload, gives its references and hands the decoded payload to the handler", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const users = Subscription.subscribe(User, {
        handler: ({ payload }) => Effect.sync(() => void seen.push(payload))
      })
      const preparing = users.prepare(userEvent(ada))
      assert.isTrue(Result.isResult(preparing), "a synchronous schema decodes without an Effect")
      const prepared = yield* Subscription.prepared(preparing)
      assert.deepStrictEqual(prepared.references, [{ entity: "Company", id: "c-1" }])
      assert.isDefined(prepared.handle)
      yield* prepared.handle?.(null) ?? Effect.void
      assert.deepStrictEqual(seen, [ada])
      const deleted = yield* Subscription.prepared(users.prepare(userEvent(null, { action: "deleted", version: 2 })))
      assert.deepStrictEqual(deleted.references, [])
    }))

  it.effect("decodes a payload whose schema is asynchronous", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const slow = Subscription.subscribe(Slow, {
        handler: ({ payload }) => Effect.sync(() => void seen.push(payload))
      })
      const event = userEvent({ id: "s-1", name: "quiet" }, { entity: "Slow", entityId: "s-1" })
      const preparing = slow.prepare(event)
      assert.isFalse(Result.isResult(preparing), "an asynchronous schema decodes through an Effect")
      const prepared = yield* Subscription.prepared(preparing)
      yield* prepared.handle?.(null) ?? Effect.void
      assert.deepStrictEqual(seen, [{ id: "s-1", name: "QUIET" }])
      const bad = yield* Effect.flip(Subscription.prepared(slow.prepare({ ...event, payload: { id: "s-1", name: 7 } })))
      assert.strictEqual(bad.reason, "InvalidPayload")
    }))

  it.effect("reports a foreign producer, an invalid payload and a payload of another entity", () =>
    Effect.gen(function*() {
      const users = Subscription.subscribe(User)
      assert.isUndefined(
        (yield* Subscription.prepared(users.prepare(userEvent(ada)))).handle,
        "no handler, nothing to run"
      )
      const foreign = yield* Effect.flip(Subscription.prepared(users.prepare(userEvent(ada, { producer: "billing" }))))
      assert.strictEqual(foreign.reason, "InvalidEnvelope")
      assert.include(foreign.message, `produced by "billing"`)
      const invalid = yield* Effect.flip(Subscription.prepared(users.prepare(userEvent({ ...ada, active: "yes" }))))
      assert.strictEqual(invalid.reason, "InvalidPayload")
      assert.include(invalid.message, "active")
      assert.strictEqual(invalid.messageId, "0190a000-0000-7000-8000-000000000001")
      const other = yield* Effect.flip(Subscription.prepared(users.prepare(userEvent({ ...ada, id: "u-2" }))))
      assert.strictEqual(other.reason, "InvalidPayload")
      assert.include(other.message, `"u-2"`)
    }))

  it.effect("ledger only: no payload to keep, the dependency fields as references, a previous copy without payload", () =>
    Effect.gen(function*() {
      const seen: Array<Subscription.LedgerEvent<User>> = []
      const users = Subscription.subscribe(User, {
        keepPayload: false,
        handler: (event) => Effect.sync(() => void seen.push(event))
      })
      assert.isFalse(users.keepPayload)
      assert.isTrue(Subscription.subscribe(User).keepPayload)
      const prepared = yield* Subscription.prepared(users.prepare(userEvent(ada, { version: 2 })))
      assert.isNull(prepared.payload)
      assert.deepStrictEqual(prepared.ledgerReferences, { companyId: "c-1" })
      assert.deepStrictEqual(prepared.references, [{ entity: "Company", id: "c-1" }])
      // a copy written while the subscription still kept payloads: the handler is not shown its payload
      const previous: CopyRow = {
        entity: "User",
        id: "u-1",
        version: 1,
        state: "live",
        payload: ada,
        deletedAt: null,
        syncedAt: 0,
        messageId: "m-1"
      }
      yield* prepared.handle?.(previous) ?? Effect.void
      assert.deepStrictEqual(seen.map((e) => [e.payload, e.previous]), [[ada, { ...previous, payload: null }]])
      const deleted = yield* Subscription.prepared(users.prepare(userEvent(null, { action: "deleted", version: 3 })))
      assert.deepStrictEqual([deleted.payload, deleted.ledgerReferences, deleted.references], [null, undefined, []])
      // invalid payloads are still refused, synchronous or not
      const invalid = yield* Effect.flip(Subscription.prepared(users.prepare(userEvent({ ...ada, active: "yes" }))))
      assert.strictEqual(invalid.reason, "InvalidPayload")
      const slow = Subscription.subscribe(Slow, { keepPayload: false })
      const event = userEvent({ id: "s-1", name: "quiet" }, { entity: "Slow", entityId: "s-1" })
      const later = yield* Subscription.prepared(slow.prepare(event))
      assert.deepStrictEqual([later.payload, later.ledgerReferences], [null, undefined])
      const bad = yield* Effect.flip(Subscription.prepared(slow.prepare({ ...event, payload: { id: "s-1", name: 7 } })))
      assert.strictEqual(bad.reason, "InvalidPayload")
    }))
})
