/**
 * R2 against ordinary code: the ways an entity could be saved without its event, as a user would write
 * them, without a cast, through the package entry. Each `@ts-expect-error` is a program that must not
 * compile; `tsc.test.ts` fails if one starts to. What the types cannot stop (a service leaked out of its
 * transaction, a copy of a live one) dies at run time: see test/owner-rules.test.ts. Nothing here runs.
 */
// @effect-diagnostics missingEffectContext:off missingEffectError:off -- the forbidden programs below are errors on purpose
import { Effect, Layer } from "effect"
import type { SqlError } from "effect/sql"
import { Broker, Outbox, Producer, SourceRepository } from "../../src/index.ts"
import { Company } from "../fixtures.ts"

const companies = Producer.make("accounts").repository(Company)
const acme = { id: "c-1", name: "Acme" }
const handMade = { append: () => Effect.void }
const row: SourceRepository.SourceRow = {
  entity: "Company",
  id: "c-1",
  version: 1,
  state: "live",
  payload: acme,
  updatedAt: 0,
  deletedAt: null
}

/** The allowed program: the write and its event in `Outbox.transaction`. */
export const allowed = (): Effect.Effect<unknown, unknown, Outbox.Outbox | SourceRepository.SourceRepository> =>
  Outbox.transaction(
    Effect.gen(function*() {
      yield* companies.create(acme)
      // inside the transaction, the store's writes and the transaction's service are reachable
      yield* SourceRepository.SourceRepository.use((sources) => sources.put(row, 1))
      yield* Outbox.OutboxTransaction.use((tx) => tx.append([]))
    })
  )

/** A write needs the transaction's service, and only `Outbox.transaction` can provide one. */
export const handMadeTransactions = () => [
  // @ts-expect-error R2: a write outside the outbox transaction still needs OutboxTransaction
  ((): Effect.Effect<unknown, unknown, SourceRepository.SourceRepository> => companies.create(acme))(),
  // @ts-expect-error R2: a hand-made OutboxTransaction provided to a write
  Effect.provideService(companies.create(acme), Outbox.OutboxTransaction, { append: () => Effect.void }),
  // @ts-expect-error R2: the same, from a variable
  Effect.provideService(companies.create(acme), Outbox.OutboxTransaction, handMade),
  // @ts-expect-error R2: the same, through a layer
  Effect.provide(companies.create(acme), Layer.succeed(Outbox.OutboxTransaction, handMade)),
  // @ts-expect-error R2: the same, through the curried layer constructor
  Layer.succeed(Outbox.OutboxTransaction)(handMade),
  // @ts-expect-error R2: the same, through a mock layer (the brand is not an effect, so it is required)
  Layer.mock(Outbox.OutboxTransaction)(handMade),
  // @ts-expect-error R2: the service's own constructor wants the brand too
  Outbox.OutboxTransaction.of(handMade),
  // @ts-expect-error R2: a context holding a hand-made one
  Effect.provideContext(companies.create(acme), Outbox.OutboxTransaction.context(handMade))
]

/** Nothing public writes owner rows without the transaction. */
export const rowWritesWithoutTransaction = () => {
  const put = SourceRepository.SourceRepository.use((sources) => sources.put(row, null))
  const create = SourceRepository.SourceRepository.use((sources) =>
    sources.create([{ entity: "Company", id: "c-1", payload: acme, updatedAt: 0 }])
  )
  // @ts-expect-error R2: SourceRepository.put needs the outbox transaction
  const putAlone: Effect.Effect<boolean, SqlError.SqlError, SourceRepository.SourceRepository> = put
  // @ts-expect-error R2: so does SourceRepository.create
  const createAlone: Effect.Effect<unknown, unknown, SourceRepository.SourceRepository> = create
  return [
    putAlone,
    createAlone,
    // @ts-expect-error R2: the outbox's buffered appends are not exported
    Outbox.makeBufferedAppends,
    // @ts-expect-error R2: nor is anything else that makes a transaction's service
    Outbox.whileOpen
  ]
}

/** The broker is not reachable as a requirement inside the transaction. */
export const brokerInside = () => [
  // @ts-expect-error R2: the broker is not reachable inside an outbox transaction
  Outbox.transaction(Effect.andThen(Broker.Broker.use(() => Effect.void), companies.create(acme))),
  // (a Broker value captured before the transaction is a plain value: documented on Outbox and in the README)
  Outbox.transaction(companies.create(acme))
]
