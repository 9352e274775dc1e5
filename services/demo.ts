/**
 * The pattern's checklist as a scenario you can watch, in one process on the in-memory layers: the owner
 * "accounts" and the consumer "directory" each have their own database and share nothing but the broker.
 * Each step prints what it expected and what it saw; the process exits 0 only if every step held.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Context, Effect, Layer, Schedule, Schema } from "effect"
import {
  Broker,
  Contract,
  CopyRepository,
  MemoryBroker,
  MemorySync,
  Outbox,
  Producer,
  Relay,
  SourceRepository,
  SyncConsumer
} from "../src/index.ts"

const Company = Contract.make({
  name: "Company",
  owner: "accounts",
  id: "id",
  payload: Schema.Struct({ id: Schema.String, name: Schema.String })
})
const User = Contract.make({
  name: "User",
  owner: "accounts",
  id: "id",
  payload: Schema.Struct({
    id: Schema.String,
    companyId: Schema.String,
    email: Schema.String,
    name: Schema.String,
    active: Schema.Boolean
  }),
  dependencies: { companyId: Company }
})

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
// deactivation is published (the user was active before); inactive users otherwise stay private
const users = accounts.repository(User, {
  handleWhen: ({ action, after, before }) => after?.active === true || before?.active === true || action === "deleted"
})
const user = (id: string, companyId: string, active = true) => ({
  id,
  companyId,
  email: `${id}@example.test`,
  name: id,
  active
})

const relay = Relay.drain({ producer: "accounts" })

const program = Effect.gen(function*() {
  const broker = yield* Layer.build(MemoryBroker.layer())
  const ownerDb = yield* Layer.build(MemorySync.layer())
  const directory = yield* Layer.build(
    SyncConsumer.layer({
      service: "directory",
      subscriptions: [SyncConsumer.subscribe(Company), SyncConsumer.subscribe(User)],
      dependencyRetry: Schedule.spaced("100 millis").pipe(Schedule.upTo({ times: 5 })),
      inProcessRetries: 2
    }).pipe(Layer.provideMerge(MemorySync.layer()), Layer.provide(Layer.succeedContext(broker)))
  )
  const owner = Context.merge(ownerDb, broker)
  const asOwner = <A, E>(effect: Effect.Effect<A, E, Outbox.Outbox | SourceRepository.SourceRepository | Broker.Broker>) =>
    Effect.provide(effect, owner)
  const write = <A, E>(
    effect: Effect.Effect<A, E, Outbox.OutboxTransaction | SourceRepository.SourceRepository>
  ) => asOwner(Effect.tap(Outbox.transaction(effect), () => relay))
  const fullSync = (effect: Effect.Effect<number, unknown, Outbox.Outbox | SourceRepository.SourceRepository>) =>
    asOwner(Effect.tap(effect, () => relay))
  const inDirectory = <A, E>(
    effect: Effect.Effect<A, E, CopyRepository.CopyRepository | SyncConsumer.SyncConsumer>
  ) => Effect.provide(effect, directory)
  const copy = (entity: string, id: string) =>
    inDirectory(CopyRepository.CopyRepository.use((copies) => copies.get(entity, id))).pipe(
      Effect.map((c) => c === null ? "no copy" : { version: c.version, state: c.state, payload: c.payload })
    )

  let failed = 0
  const expect = <A>(name: string, expected: A, see: Effect.Effect<A, unknown>) =>
    Effect.gen(function*() {
      const same = (a: A) => JSON.stringify(a) === JSON.stringify(expected)
      const seen = yield* see.pipe(
        Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: same }),
        Effect.timeoutOption("5 seconds"),
        Effect.andThen(see)
      )
      if (!same(seen)) failed++
      yield* Console.log(
        `${same(seen) ? "ok  " : "FAIL"} ${name}\n       expected ${JSON.stringify(expected)}\n       saw      ${
          JSON.stringify(seen)
        }`
      )
    })

  yield* Console.log("entity-sync demo — accounts (owner) → broker → directory (consumer)\n")

  yield* write(companies.create({ id: "c-1", name: "Acme" }))
  yield* expect("create: Company c-1 is copied", { version: 1, state: "live", payload: { id: "c-1", name: "Acme" } }, copy("Company", "c-1"))

  yield* write(companies.update("c-1", (c) => ({ ...c, name: "Acme Corp" })))
  yield* expect("update: the copy follows", { version: 2, state: "live", payload: { id: "c-1", name: "Acme Corp" } }, copy("Company", "c-1"))

  // Company c-2 is written without an event, so its User arrives first
  yield* write(companies.create({ id: "c-2", name: "Beta" }, { dismissSendEvent: true }))
  yield* write(users.create(user("u-1", "c-2")))
  yield* expect("a User before its Company waits: no copy points to a missing Company", "no copy", copy("User", "u-1"))
  yield* fullSync(companies.fullSync({ ids: ["c-2"] }))
  yield* expect("…and applies as soon as the Company arrives (full sync of c-2)", 1, Effect.map(copy("User", "u-1"), (c) => typeof c === "string" ? 0 : c.version))

  // Company c-3 never arrives: the User is dead-lettered, then replayed once the Company exists
  yield* write(companies.create({ id: "c-3", name: "Gamma" }, { dismissSendEvent: true }))
  const u2 = yield* write(users.create(user("u-2", "c-3")))
  const deadLetters = inDirectory(SyncConsumer.SyncConsumer.use((c) => c.deadLetters)).pipe(
    Effect.map((rows) => rows.map((r) => `${r.error} ${r.envelope.entity}:${r.envelope.entityId}`))
  )
  yield* expect("a dependency that never arrives is dead-lettered", ["DependencyMissing User:u-2"], deadLetters)
  yield* fullSync(companies.fullSync({ ids: ["c-3"] }))
  const dead = yield* inDirectory(SyncConsumer.SyncConsumer.use((c) => c.deadLetters))
  yield* inDirectory(SyncConsumer.SyncConsumer.use((c) => c.replay(dead[0]!.messageId)))
  yield* expect("…and applies when replayed after its Company arrived", u2.version, Effect.map(copy("User", "u-2"), (c) => typeof c === "string" ? 0 : c.version))

  // handleWhen: inactive users stay private, deactivation is seen
  yield* write(users.create(user("u-3", "c-1", false)))
  yield* expect("an inactive user is not published", "no copy", copy("User", "u-3"))
  yield* write(users.update("u-3", (u) => ({ ...u, active: true })))
  yield* expect("…until activated", true, Effect.map(copy("User", "u-3"), (c) => typeof c !== "string"))
  yield* write(users.update("u-3", (u) => ({ ...u, active: false })))
  yield* expect("…and its deactivation is seen", false, Effect.map(copy("User", "u-3"), (c) => typeof c !== "string" && JSON.stringify(c.payload).includes("\"active\":true")))

  yield* write(users.softDelete("u-1"))
  yield* expect("soft delete: the copy keeps its row", "softDeleted", Effect.map(copy("User", "u-1"), (c) => typeof c === "string" ? c : c.state))
  yield* write(users.delete("u-3"))
  yield* expect("delete: the copy becomes a tombstone", { version: 4, state: "deleted", payload: null }, copy("User", "u-3"))

  // an out-of-order pair and a duplicate, published by hand
  yield* asOwner(Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v3" }))))
  yield* asOwner(Outbox.transaction(companies.update("c-1", (c) => ({ ...c, name: "v4" }))))
  yield* asOwner(Effect.gen(function*() {
    const outbox = yield* Outbox.Outbox
    const rows = yield* outbox.claim(10)
    const [v3, v4] = rows.map(Relay.toMessage)
    yield* (yield* Broker.Broker).publish([v4!, v3!, v4!])
    yield* outbox.markPublished(rows.map((r) => r.seq))
  }))
  yield* expect("out of order and duplicated: v4, v3, v4 → the copy holds v4 (v3 stale, v4 once)", { version: 4, state: "live", payload: { id: "c-1", name: "v4" } }, copy("Company", "c-1"))

  // a drifted copy is repaired by a full sync at the same version
  yield* inDirectory(CopyRepository.CopyRepository.use((copies) =>
    Effect.flatMap(copies.get("Company", "c-1"), (c) => copies.upsert({ ...c!, payload: { id: "c-1", name: "drifted" } }, "newerOrEqual"))
  ))
  yield* fullSync(companies.fullSync())
  yield* expect("full sync repairs a drifted copy", { version: 4, state: "live", payload: { id: "c-1", name: "v4" } }, copy("Company", "c-1"))

  const counts = (rows: ReadonlyArray<{ readonly state: string }>) =>
    ["live", "softDeleted", "deleted"].map((s) => rows.filter((r) => r.state === s).length).join("/")
  yield* Console.log("\n            owner (live/softDeleted/deleted)   directory copies")
  for (const entity of ["Company", "User"]) {
    const owned = yield* asOwner(SourceRepository.SourceRepository.use((s) => s.page(entity, { afterId: null, limit: 1000 })))
    const copied = yield* inDirectory(CopyRepository.CopyRepository.use((c) => c.list(entity)))
    yield* Console.log(`  ${entity.padEnd(8)}  ${counts(owned).padEnd(33)}  ${counts(copied)}`)
  }
  if (failed > 0) return yield* Effect.fail(new Error(`${failed} step(s) did not hold`))
  yield* Console.log("\nevery step held")
})

NodeRuntime.runMain(Effect.scoped(program))
