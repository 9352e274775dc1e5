import { Effect, Layer, Schema } from "effect"
import { Contract, CopyRepository, Outbox, Producer, Relay, Subscription, SyncConsumer } from "entity-sync"
import { MemoryBroker, MemorySync } from "entity-sync/memory"

// A contract, shared by the owner service and its consumers
const Company = Contract.make({
  name: "Company",
  owner: "accounts",
  id: "id",
  payload: Schema.Struct({ id: Schema.String, name: Schema.String })
})

// The owner writes the entity and appends its event in one transaction (R1, R2)
const companies = Producer.make("accounts").repository(Company)
const write = Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))

// The relay publishes the outbox; the consumer keeps a copy
const sync = Layer.mergeAll(
  Relay.layer({ producer: "accounts" }),
  SyncConsumer.layer({ service: "directory", subscriptions: [Subscription.subscribe(Company)] })
).pipe(Layer.provideMerge(MemorySync.layer()), Layer.provideMerge(MemoryBroker.layer()))

export const program = Effect.gen(function*() {
  yield* write
  yield* Effect.sleep("100 millis")
  return yield* CopyRepository.CopyRepository.use((copies) => copies.get("Company", "c-1"))
}).pipe(Effect.provide(sync))
