/**
 * The sync rules the compiler enforces. Each `@ts-expect-error` below is a program that must not compile;
 * `tsc.test.ts` (part of `npm test`) and `npm run typecheck` fail if one of them starts compiling. The
 * bypasses of R1 and R2 that ordinary code could try are in `one-owner.ts` and `atomic-outbox.ts`. The
 * runtime test runs the allowed variant.
 */
// @effect-diagnostics missingEffectContext:off missingEffectError:off -- the forbidden programs below are errors on purpose
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Layer } from "effect"
import { SqlError } from "effect/sql"
import { Broker } from "../../src/Broker.ts"
import { StaleMessage } from "../../src/Errors.ts"
import * as MemoryDatabase from "../../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../../src/memory/Outbox.ts"
import * as MemorySourceRepository from "../../src/memory/SourceRepository.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import * as Subscription from "../../src/Subscription.ts"
import { Company, Invoice, User } from "../fixtures.ts"

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const acme = { id: "c-1", name: "Acme" }

class Oops extends Data.TaggedError("Oops")<{}> {}

export const r1 = () => {
  // @ts-expect-error R1: "accounts" does not own Invoice (owned by "billing"), so it cannot produce its events
  accounts.repository(Invoice)
  const billing = Producer.make("billing")
  // @ts-expect-error R1: "billing" does not own Company
  billing.repository(Company)
  return billing.repository(Invoice)
}

export const r2 = () => {
  const create = companies.create(acme)
  // @ts-expect-error R2: a write outside the outbox transaction still needs OutboxTransaction
  const outside: Effect.Effect<unknown, unknown, SourceRepository> = create
  // @ts-expect-error R2: the broker is not reachable inside an outbox transaction
  const publishInside = Outbox.transaction(Effect.andThen(Broker.use(() => Effect.void), create))
  const inside: Effect.Effect<unknown, unknown, SourceRepository | Outbox.Outbox> = Outbox.transaction(create)
  return [outside, publishInside, inside]
}

export const handlerErrors = () => [
  // @ts-expect-error a handler may fail only with the sync errors and SqlError: Oops must be handled
  Subscription.subscribe(User, { handler: () => Effect.fail(new Oops()) }),
  Subscription.subscribe(User, {
    handler: (event) =>
      Effect.fail(
        new StaleMessage({
          messageId: event.envelope.messageId,
          entity: "User",
          entityId: event.envelope.entityId,
          version: event.envelope.version,
          currentVersion: event.envelope.version
        })
      )
  }),
  Subscription.subscribe(User, {
    handler: () => Effect.fail(new SqlError.SqlError({ reason: new SqlError.UnknownError({ cause: "x" }) }))
  }),
  Subscription.subscribe(User, {
    handler: () => Effect.fail(new Oops()).pipe(Effect.catchTag("Oops", () => Effect.void))
  })
]

const ownerStores = Layer.mergeAll(MemoryOutbox.layer(), MemorySourceRepository.layer()).pipe(
  Layer.provide(MemoryDatabase.layer)
)

describe("type-level rules: the allowed programs run", () => {
  it.effect("R1/R2: the owner writes in an outbox transaction and its event is in the outbox", () =>
    Effect.gen(function*() {
      yield* Outbox.transaction(companies.create(acme))
      const outbox = yield* Outbox.Outbox
      const rows = yield* outbox.rows()
      assert.deepStrictEqual(rows.map((r) => [r.envelope.producer, r.envelope.entity, r.envelope.action]), [
        ["accounts", "Company", "created"]
      ])
      assert.strictEqual((yield* companies.get(acme.id))?.version, 1)
    }).pipe(Effect.provide(ownerStores)))
})
