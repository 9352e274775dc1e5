/**
 * `Resync` on the memory stores and broker: a request on the bus is answered by the owner with a full
 * sync through its outbox; requests it cannot act on are dead-lettered with a reason; only contracts the
 * owner owns can be served (R1, checked by the compiler).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { Broker } from "../../src/Broker.ts"
import * as MemoryBroker from "../../src/memory/MemoryBroker.ts"
import * as MemorySync from "../../src/memory/MemorySync.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import * as Resync from "../../src/Resync.ts"
import { Company, Invoice } from "../fixtures.ts"

const companies = Producer.make("accounts").repository(Company)
const owner = Resync.layer({ owner: "accounts", targets: [{ contract: Company, fullSync: companies.fullSync }] })
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
      const request = yield* Resync.request({ contract: Company, requester: "directory", ids: ["c-1", "c-3"] })
      assert.deepInclude(request, { specVersion: 1, owner: "accounts", entity: "Company", requester: "directory" })
      const rows = yield* Effect.context<Outbox.Outbox>()
      const read = snapshots.pipe(Effect.provideContext(rows), Effect.orDie)
      assert.deepStrictEqual(yield* until(read, (r) => r.length === 2), ["c-1:snapshot:true", "c-3:snapshot:true"])
      yield* Resync.request({ contract: Company, requester: "directory" })
      assert.lengthOf(yield* until(read, (r) => r.length === 5), 5)
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
})
