/**
 * Ledger-only subscriptions (`keepPayload: false`) at the type level: their handlers are told that the
 * previous copy keeps no payload, while the event's own payload is the decoded contract type. Each
 * `@ts-expect-error` is a program that must not compile (`tsc.test.ts`). Nothing here runs.
 */
// @effect-diagnostics missingEffectError:off globalErrorInEffectFailure:off -- the forbidden program below fails with a plain Error on purpose
import { Effect } from "effect"
import { type CopyRepository, Subscription } from "../../src/index.ts"
import { Company, User } from "../fixtures.ts"

/** A ledger-only handler: `previous.payload` is `null`, the event's payload a `User`. */
export const ledger = Subscription.subscribe(User, {
  keepPayload: false,
  handler: ({ payload, previous }) =>
    Effect.sync(() => {
      const none: null | undefined = previous?.payload
      const ledgerRow: CopyRepository.LedgerRow | null = previous
      const companyId: string | undefined = payload?.companyId
      return [none, ledgerRow, companyId]
    })
})

/** A handler written for any copy still fits a ledger-only subscription (a ledger row is a copy). */
const anyCopy = (event: Subscription.SyncEvent<Company>) => Effect.sync(() => event.previous?.version)
export const reused = Subscription.subscribe(Company, { keepPayload: false, handler: anyCopy })

/** With payloads kept (the default, or `keepPayload` not a literal false), the previous payload may be there. */
export const kept = [
  Subscription.subscribe(User, {
    handler: ({ previous }) =>
      Effect.sync(() => {
        // @ts-expect-error a copy that keeps its payload may have one
        const none: null | undefined = previous?.payload
        return none
      })
  }),
  Subscription.subscribe(User, {
    keepPayload: Math.random() < 0.5,
    handler: ({ previous }) =>
      Effect.sync(() => {
        // @ts-expect-error not known to be ledger-only: the previous copy may keep its payload
        const ledgerRow: CopyRepository.LedgerRow | null = previous
        return ledgerRow
      })
  })
]

/** A ledger-only handler's error channel is limited as any other's. */
export const limited = Subscription.subscribe(User, {
  keepPayload: false,
  // @ts-expect-error a handler may fail only with HandlerError
  handler: () => Effect.fail(new Error("not a sync error"))
})
