/**
 * `Resync` on the memory stores and broker: a request on the bus is answered by the owner with a full
 * sync through its outbox; requests it cannot act on are dead-lettered with a reason; only contracts the
 * owner owns can be served (R1, checked by the compiler). The memory broker vouches for no publisher, so
 * requests are authenticated by the requester's signature (R11). The coalescing, rate-limiting and
 * outage tests run in virtual time (`resync-responder.test.ts`).
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer, Result, Schedule } from "effect"
import { Broker } from "../../src/Broker.ts"
import * as MemoryBroker from "../../src/memory/MemoryBroker.ts"
import * as MemorySync from "../../src/memory/MemorySync.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import * as Resync from "../../src/Resync.ts"
import * as Signature from "../../src/Signature.ts"
import { Company, Invoice } from "../fixtures.ts"

const companies = Producer.make("accounts").repository(Company)
const directoryKey = Signature.generateKeyPair("directory-1")
const owner = Resync.layer({
  owner: "accounts",
  targets: [{ contract: Company, fullSync: companies.fullSync }],
  verifyingKeys: { directory: [directoryKey.verifying] }
})
const system = owner.pipe(Layer.provideMerge(MemorySync.layer()), Layer.provideMerge(MemoryBroker.layer()))

const snapshots = Effect.flatMap(Outbox.Outbox, (outbox) => outbox.rows()).pipe(
  Effect.map((rows) => rows.map((r) => `${r.envelope.entityId}:${r.envelope.action}:${r.envelope.forceSync}`))
)

const until = <A>(effect: Effect.Effect<A, unknown, never>, done: (a: A) => boolean) =>
  effect.pipe(Effect.repeat({ schedule: Schedule.spaced("10 millis"), until: done }), Effect.timeout("5 seconds"))

const encoder = new TextEncoder()

describe("Resync", () => {
  it.live("a request on the bus is answered with snapshot events of the requested ids, then of all", () =>
    Effect.gen(function*() {
      for (const id of ["c-1", "c-2", "c-3"]) {
        yield* Outbox.transaction(companies.create({ id, name: id }, { dismissSendEvent: true }))
      }
      const signing = directoryKey.signing
      const request = yield* Resync.request({ contract: Company, requester: "directory", ids: ["c-1", "c-3"], signing })
      assert.deepInclude(request, { specVersion: 1, owner: "accounts", entity: "Company", requester: "directory" })
      const rows = yield* Effect.context<Outbox.Outbox>()
      const read = snapshots.pipe(Effect.provideContext(rows), Effect.orDie)
      assert.deepStrictEqual(yield* until(read, (r) => r.length === 2), ["c-1:snapshot:true", "c-3:snapshot:true"])
      yield* Resync.request({ contract: Company, requester: "directory", signing })
      assert.lengthOf(yield* until(read, (r) => r.length === 5), 5)
    }).pipe(Effect.provide(system)))

  it.live("a request with reset is answered with reset snapshots, apart from plain requests", () =>
    Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id: "c-1", name: "c-1" }, { dismissSendEvent: true }))
      const signing = directoryKey.signing
      const request = yield* Resync.request({ contract: Company, requester: "directory", reset: true, signing })
      assert.isTrue(request.reset)
      yield* Resync.request({ contract: Company, requester: "directory", signing })
      const rows = yield* Effect.context<Outbox.Outbox>()
      const read = Effect.flatMap(Outbox.Outbox, (outbox) => outbox.rows()).pipe(
        Effect.map((rows) => rows.map((r) => `${r.envelope.entityId}:${r.envelope.reset === true}`)),
        Effect.provideContext(rows),
        Effect.orDie
      )
      assert.sameMembers(yield* until(read, (r) => r.length === 2), ["c-1:true", "c-1:false"])
    }).pipe(Effect.provide(system)))

  it.live("requests it cannot act on are dead-lettered with a reason", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const body = (fields: Record<string, unknown>) =>
        encoder.encode(JSON.stringify({
          specVersion: 1,
          requestId: "r",
          owner: "accounts",
          entity: "Company",
          requester: "test",
          requestedAt: "2026-11-22T00:00:00.000Z",
          ...fields
        }))
      const message = (messageId: string, entity: string, content: Uint8Array) => ({
        messageId,
        routingKey: Resync.routingKey("accounts", entity),
        type: `resync.${entity}`,
        body: content,
        headers: {}
      })
      yield* broker.declare(Resync.queueOf("accounts"))
      yield* broker.publish([
        message("not-json", "Company", encoder.encode("{")),
        message("invalid", "Company", body({ requestedAt: "yesterday" })),
        message("unknown", "Invoice", body({ entity: "Invoice" })),
        message("elsewhere", "Company", body({ owner: "billing" })),
        message("too-many", "Company", body({ ids: Array.from({ length: Resync.maxIds + 1 }, (_, i) => `c-${i}`) }))
      ])
      const dead = yield* until(
        Effect.map(Effect.orDie(broker.deadLetters(Resync.queueOf("accounts").name)), (page) => page.items),
        (d) => d.length === 5
      )
      const reasons = Object.fromEntries(dead.map((d) => [d.messageId, d.reason]))
      assert.match(reasons["not-json"]!, /^NotJson: /)
      assert.match(reasons["invalid"]!, /^InvalidRequest: .*ISO-8601/)
      assert.match(reasons["unknown"]!, /^UnknownEntity: "accounts" does not resync Invoice \(it resyncs Company\)/)
      assert.match(reasons["elsewhere"]!, /^WrongOwner: the request is addressed to "billing"/)
      assert.match(reasons["too-many"]!, /^InvalidRequest: /)
    }).pipe(Effect.provide(system)))

  it("serves only contracts its owner owns (R1)", () => {
    const invoices = Producer.make("billing").repository(Invoice)
    // @ts-expect-error Invoice is owned by "billing", not "accounts"
    Resync.layer({ owner: "accounts", targets: [{ contract: Invoice, fullSync: invoices.fullSync }] })
    assert.ok(Resync.layer({ owner: "billing", targets: [{ contract: Invoice, fullSync: invoices.fullSync }] }))
  })

  it.live("requests that are not authenticated as their requester are dead-lettered as ForgedProducer", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      yield* Outbox.transaction(companies.create({ id: "c-1", name: "c-1" }, { dismissSendEvent: true }))
      const body = (requestId: string, requester: string) =>
        encoder.encode(JSON.stringify({
          specVersion: 1,
          requestId,
          owner: "accounts",
          entity: "Company",
          requester,
          requestedAt: "2026-11-22T00:00:00.000Z"
        }))
      const message = (messageId: string, content: Uint8Array, headers: Record<string, string>) => ({
        messageId,
        routingKey: Resync.routingKey("accounts", "Company"),
        type: "resync.Company",
        body: content,
        headers
      })
      const billingKey = Signature.generateKeyPair("billing-1")
      const signedByDirectory = body("as-signed", "directory")
      const headers = Signature.sign(directoryKey.signing, signedByDirectory)
      yield* broker.declare(Resync.queueOf("accounts"))
      yield* broker.publish([
        message("unsigned", body("unsigned", "directory"), {}),
        message(
          "other-key",
          body("other-key", "directory"),
          Signature.sign(billingKey.signing, body("other-key", "directory"))
        ),
        message("tampered", body("tampered", "directory"), headers),
        message("long-key", body("long-key", "directory"), { ...headers, [Signature.keyIdHeader]: "k".repeat(70_000) })
      ])
      const dead = yield* until(
        Effect.map(Effect.orDie(broker.deadLetters(Resync.queueOf("accounts").name)), (page) => page.items),
        (d) => d.length === 4
      )
      const reasons = Object.fromEntries(dead.map((d) => [d.messageId, d.reason]))
      assert.match(reasons["unsigned"]!, /^ForgedProducer: .*"directory".*Unsigned/)
      assert.match(reasons["other-key"]!, /^ForgedProducer: .*UnknownKey: key "billing-1" is not a key of "directory"/)
      assert.match(
        reasons["tampered"]!,
        /^ForgedProducer: .*BadSignature: the signature by key "directory-1" does not match/
      )
      assert.match(reasons["long-key"]!, /^ForgedProducer: .*MalformedSignature/)
      for (const d of dead) assert.isAtMost(new TextEncoder().encode(d.reason).byteLength, 1024)
      const rows = yield* Effect.orDie(snapshots)
      assert.deepStrictEqual(rows, [])
    }).pipe(Effect.provide(system)))

  describe("authenticate (R11)", () => {
    const request: Resync.ResyncRequest = {
      specVersion: 1,
      requestId: "r-1",
      owner: "accounts",
      entity: "Company",
      requester: "directory",
      requestedAt: "2026-11-22T00:00:00.000Z"
    }
    const body = encoder.encode(JSON.stringify(request))
    const now = Date.parse("2026-11-22T00:00:00.000Z")
    const vouched = (publisher: string | undefined, headers: Record<string, string> = {}) => ({
      publisher,
      body,
      headers
    })

    it("a broker that vouches: the requester's own login by default, or the logins configured for it", () => {
      const options = { vouchesForPublishers: true, now }
      assert.deepStrictEqual(
        Resync.authenticate(request, vouched("directory"), options),
        Result.succeed("login directory")
      )
      const other = Resync.authenticate(request, vouched("billing"), options)
      assert.deepStrictEqual(
        other,
        Result.fail(`published by broker login "billing", which may not ask for "directory" (allowed: "directory")`)
      )
      const mapped = { ...options, requesters: { directory: ["directory-svc", "ops"] } }
      assert.deepStrictEqual(Resync.authenticate(request, vouched("ops"), mapped), Result.succeed("login ops"))
      assert.isTrue(Result.isFailure(Resync.authenticate(request, vouched("directory"), mapped)))
      const nobody = Resync.authenticate(request, vouched(undefined), options)
      assert.isTrue(Result.isFailure(nobody))
      // a requester named like an Object property maps to its own name only
      const proto = { ...request, requester: "constructor" }
      assert.isTrue(Result.isFailure(Resync.authenticate(proto, vouched("directory"), mapped)))
    })

    it("a valid signature by a key of the requester is accepted whether or not the broker vouches", () => {
      const headers = Signature.sign(directoryKey.signing, body)
      const verifyingKeys = { directory: [directoryKey.verifying] }
      for (const vouchesForPublishers of [true, false]) {
        assert.deepStrictEqual(
          Resync.authenticate(request, vouched(undefined, headers), { vouchesForPublishers, verifyingKeys, now }),
          Result.succeed("key directory-1")
        )
      }
      // signed, but not validly: rejected even when the login would be allowed
      const bad = { ...headers, [Signature.keyIdHeader]: "other" }
      assert.isTrue(
        Result.isFailure(
          Resync.authenticate(request, vouched("billing", bad), { vouchesForPublishers: true, verifyingKeys, now })
        )
      )
      // a requester with keys must sign, whatever login the broker names
      assert.isTrue(
        Result.isFailure(
          Resync.authenticate(request, vouched("directory"), { vouchesForPublishers: true, verifyingKeys, now })
        )
      )
      // a broker that cannot vouch, for a requester without keys: left to the broker's own access control
      assert.deepStrictEqual(
        Resync.authenticate(request, vouched(undefined), { vouchesForPublishers: false, now }),
        Result.succeed("unauthenticated")
      )
    })
  })

  it.effect("the responder's settings are read from the environment", () =>
    Effect.gen(function*() {
      const read = (env: Record<string, string>) => Resync.responderConfig.parse(ConfigProvider.fromEnv({ env }))
      const defaults = yield* read({})
      assert.deepStrictEqual(defaults.requesters, {})
      assert.deepStrictEqual(defaults.verifyingKeys, {})
      assert.deepStrictEqual(defaults.rate, { syncs: 10, per: "1 hour" })
      const set = yield* read({
        SYNC_RESYNC_REQUESTER_LOGINS: JSON.stringify({ directory: ["directory-svc"] }),
        SYNC_VERIFYING_KEYS: JSON.stringify({ directory: [directoryKey.verifying] }),
        SYNC_RESYNC_WINDOW: "5 minutes",
        SYNC_RESYNC_MAX_SYNCS_PER_HOUR: "3"
      })
      assert.deepStrictEqual(set.requesters, { directory: ["directory-svc"] })
      assert.deepStrictEqual(set.verifyingKeys, { directory: [directoryKey.verifying] })
      assert.strictEqual(Duration.toMillis(Duration.fromInputUnsafe(set.window)), 300_000)
      assert.deepStrictEqual(set.rate, { syncs: 3, per: "1 hour" })
      const bad = yield* Effect.flip(read({ SYNC_RESYNC_REQUESTER_LOGINS: JSON.stringify({ directory: "x" }) }))
      assert.strictEqual(bad._tag, "ConfigError")
    }))
})
