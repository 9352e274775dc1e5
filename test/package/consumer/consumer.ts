/**
 * A TypeScript consumer of the packed package (`module: NodeNext`, `strict`, no `skipLibCheck`): the main
 * APIs type-check, and each `@ts-expect-error` is a program the sync rules forbid (R1, R2, handler errors).
 */
// @effect-diagnostics missingEffectContext:off missingEffectError:off -- the forbidden programs below are errors on purpose
import { Data, Effect, Layer, Schema } from "effect"
import {
  Broker,
  Contract,
  CopyRepository,
  Errors,
  Outbox,
  OwnerTable,
  Producer,
  Relay,
  type SourceRepository,
  Subscription,
  SyncConsumer
} from "entity-sync"
import { RabbitBroker } from "entity-sync/amqp"
import { Embedded } from "entity-sync/embedded"
import { MemoryBroker, MemorySync } from "entity-sync/memory"
import { PostgresSync } from "entity-sync/postgres"

export const Company = Contract.make({
  name: "Company",
  owner: "accounts",
  id: "id",
  payload: Schema.Struct({ id: Schema.String, name: Schema.String })
})

export const Invoice = Contract.make({
  name: "Invoice",
  owner: "billing",
  id: "id",
  payload: Schema.Struct({ id: Schema.String, amount: Schema.Number })
})

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)

/** The owner's write: the row and its event in one outbox transaction (R2). */
export const create: Effect.Effect<unknown, unknown, Outbox.Outbox | SourceRepository.SourceRepository> = Outbox
  .transaction(companies.create({ id: "c-1", name: "Acme" }))

/** A consumer with a handler that fails only with a sync error. */
export const directory = SyncConsumer.layer({
  service: "directory",
  subscriptions: [
    Subscription.subscribe(Company, {
      handler: (event) =>
        event.payload === null
          ? Effect.fail(
            new Errors.StaleMessage({
              messageId: event.envelope.messageId,
              entity: "Company",
              entityId: event.envelope.entityId,
              version: event.envelope.version,
              currentVersion: event.envelope.version
            })
          )
          : Effect.void
    })
  ]
})

export const inMemory = Layer.mergeAll(Relay.layer({ producer: "accounts" }), directory).pipe(
  Layer.provideMerge(MemorySync.layer()),
  Layer.provideMerge(MemoryBroker.layer())
)

export const copy = CopyRepository.CopyRepository.use((copies) => copies.get("Company", "c-1"))
export const onServers = [PostgresSync.layerConfig(), RabbitBroker.layerConfig, Embedded.layerSync()] as const

/** The owner's own table of Companies: the same repository writes it. */
export const companiesTable = OwnerTable.make(Company, { tableName: "companies", updatedAtColumn: "updated_at" })
export const onOwnTables = PostgresSync.layerConfig({ ownerTables: [companiesTable] })

class Oops extends Data.TaggedError("Oops")<{}> {}
declare const fromConfig: string

export const forbidden = [
  // @ts-expect-error R1: a service name read from configuration is not one literal
  Producer.make(fromConfig),
  // @ts-expect-error R1: "accounts" does not own Invoice
  accounts.repository(Invoice),
  ((): Effect.Effect<unknown, unknown, SourceRepository.SourceRepository> =>
    // @ts-expect-error R2: a write outside the outbox transaction still needs OutboxTransaction
    companies.create({ id: "c-2", name: "B" }))(),
  // @ts-expect-error R2: the broker is not reachable inside an outbox transaction
  Outbox.transaction(Effect.andThen(Broker.Broker.use(() => Effect.void), companies.create({ id: "c-3", name: "C" }))),
  // @ts-expect-error a row mapping must fit the contract: Company has no field "title"
  OwnerTable.make(Company, { tableName: "companies", columns: { title: "name" } }),
  // @ts-expect-error a handler may fail only with the sync errors and SqlError: Oops must be handled
  Subscription.subscribe(Company, { handler: () => Effect.fail(new Oops()) })
]
