// Run by plain `node` (no loader) in a project that installed the packed tarball with its required peers
// only (effect, @effect/sql-pg): the core, memory and postgres entry points load without amqplib and
// PGlite, and a company created by the owner reaches the consumer's copy through the memory broker.
import { Effect, Layer, Schedule, Schema } from "effect"
import { Contract, CopyRepository, Outbox, Producer, Relay, Subscription, SyncConsumer } from "entity-sync"
import { MemoryBroker, MemorySync } from "entity-sync/memory"
import { PostgresSync } from "entity-sync/postgres"

const Company = Contract.make({
  name: "Company",
  owner: "accounts",
  id: "id",
  payload: Schema.Struct({ id: Schema.String, name: Schema.String })
})

const companies = Producer.make("accounts").repository(Company)

const sync = Layer.mergeAll(
  Relay.layer({ producer: "accounts" }),
  SyncConsumer.layer({ service: "directory", subscriptions: [Subscription.subscribe(Company)] })
).pipe(Layer.provideMerge(MemorySync.layer()), Layer.provideMerge(MemoryBroker.layer()))

const copyOf = (id) =>
  CopyRepository.CopyRepository.use((copies) => copies.get("Company", id)).pipe(
    Effect.filterOrFail((copy) => copy !== null),
    Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 250 })
  )

const program = Effect.gen(function*() {
  yield* Outbox.transaction(companies.create({ id: "c-1", name: "Acme" }))
  return yield* copyOf("c-1")
}).pipe(Effect.provide(sync))

const copy = await Effect.runPromise(program)
const amqp = await import("entity-sync/amqp").then(() => "loaded", (error) => `${error.code}: ${error.message}`)
console.log(JSON.stringify({
  copy: { entity: copy.entity, id: copy.id, version: copy.version, payload: copy.payload },
  postgresLayer: typeof PostgresSync.layer,
  amqpWithoutAmqplib: amqp.split("\n")[0]
}))
