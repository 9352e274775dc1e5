/**
 * A rolling deployment of a contract's new version on the real servers (PostgreSQL + RabbitMQ): the order
 * is consumers first, then the owner.
 *
 * `Item` (owner "shop") goes from version 1 (`{ id, name }`) to version 2 (`{ id, title, tags }`). The owner
 * "shop" and two consumer services, A and B, each run in a database of their own, each consumer with its own
 * queue `<service>.sync`; every deployment is a scope started and stopped in this process.
 *
 * 1. Everything on version 1: A and B copy the owner's Items (and its `Category`, a contract that stays on
 *    version 1 throughout).
 * 2. A is upgraded to version 2 while the owner keeps writing version 1: A upcasts what arrives.
 * 3. The owner is upgraded (its deployment migrates its stored Items with the contract's own migration) and
 *    publishes version 2, then republishes every Item (full sync) so copies written under version 1 take the
 *    new shape. A applies everything; B, still on version 1, dead-letters the Item events as
 *    `UnsupportedContractVersion` (listed, counted) and keeps applying Categories and the version 1 Items
 *    still in flight.
 * 4. B is upgraded and replays its dead letters by reason: everything converges.
 *
 * Finally: every owner event is in each consumer's inbox and was applied or found stale there (duplicates
 * aside), none was applied twice (a log written in the apply transaction), and both consumers' copies equal
 * the owner's final state, tombstones included, Items in the version 2 shape.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import { Context, Effect, Exit, Layer, Metric, type Redacted, Schedule, Schema, Scope } from "effect"
import { Migrator, SqlClient } from "effect/sql"
import { afterAll } from "vitest"
import * as RabbitBroker from "../src/amqp/RabbitBroker.ts"
import type { Broker } from "../src/Broker.ts"
import * as Contract from "../src/Contract.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import * as DeadLetters from "../src/DeadLetters.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import { SourceRepository } from "../src/SourceRepository.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { ownerSide } from "./harness.ts"
import * as TestPostgres from "./postgres.ts"

// ---------------------------------------------------------------------------------------------------
// The contracts

const ItemV1Payload = Schema.Struct({ id: Schema.String, name: Schema.String })
const ItemV2Payload = Schema.Struct({ id: Schema.String, title: Schema.String, tags: Schema.Array(Schema.String) })

/** `Item` as version 1 of the shared contracts package declares it. */
const ItemV1 = Contract.make({ name: "Item", owner: "shop", payload: ItemV1Payload, id: "id" })

/** `Item` as version 2 declares it: the new shape, and the migration from version 1. */
const ItemV2 = Contract.make({
  name: "Item",
  owner: "shop",
  payload: Contract.versions(ItemV1Payload).next(2, ItemV2Payload, (v1) => ({ id: v1.id, title: v1.name, tags: [] })),
  id: "id"
})

/** A contract of the same owner that stays on version 1 throughout. */
const Category = Contract.make({
  name: "Category",
  owner: "shop",
  payload: Schema.Struct({ id: Schema.String, label: Schema.String }),
  id: "id"
})

const shop = Producer.make("shop")
const itemsV1 = shop.repository(ItemV1)
const itemsV2 = shop.repository(ItemV2)
const categories = shop.repository(Category)

// ---------------------------------------------------------------------------------------------------
// Names of this run, and the RabbitMQ objects removed after it

const run = Math.random().toString(36).slice(2, 8)
const serviceA = `rolling-a-${run}`
const serviceB = `rolling-b-${run}`
const amqpUrl = "amqp://guest:guest@127.0.0.1:5672"
const rabbit = {
  url: amqpUrl,
  exchange: `test.rolling.events.${run}`,
  deadLetterExchange: `test.rolling.dead.${run}`,
  replayExchange: `test.rolling.replay.${run}`
}

afterAll(async () => {
  const connection = await amqp.connect(amqpUrl)
  const channel = await connection.createChannel()
  for (const service of [serviceA, serviceB]) {
    for (const queue of [`${service}.sync`, RabbitBroker.deadQueueOf(`${service}.sync`)]) {
      await channel.deleteQueue(queue)
    }
  }
  for (const exchange of [rabbit.exchange, rabbit.deadLetterExchange, rabbit.replayExchange]) {
    await channel.deleteExchange(exchange)
  }
  await connection.close()
}, 30_000)

/** The broker connection of one deployment. */
const broker = (deployment: string): Layer.Layer<Broker> =>
  RabbitBroker.layer({ ...rabbit, connectionName: `rolling-${run}-${deployment}` })

// ---------------------------------------------------------------------------------------------------
// Deployments

/** The owner's table prefix and the consumers'. */
const ownerPrefix = "shop_"
const consumerPrefix = "sync_"

/**
 * The owner's data migration of its version 2 deployment: every stored Item payload of version 1 becomes
 * version 2 through the contract's own migration (decoded by the upcast of version 1, encoded by version 2).
 */
const itemsToV2: Effect.Effect<void, unknown, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const upcast = Contract.decoderOf(ItemV2, 1)
  if (upcast === undefined) return yield* Effect.die(new Error("Item version 2 has no upcast of version 1"))
  const decodeV1 = Schema.decodeUnknownEffect(upcast)
  const encodeV2 = Schema.encodeEffect(ItemV2.payload)
  const rows = yield* sql<{ readonly id: string; readonly payload: unknown }>`
    SELECT id, payload FROM ${sql(`${ownerPrefix}source`)} WHERE entity = 'Item' AND payload IS NOT NULL`
  for (const row of rows) {
    const v2 = yield* encodeV2(yield* decodeV1(row.payload))
    yield* sql`UPDATE ${sql(`${ownerPrefix}source`)} SET payload = ${JSON.stringify(v2)}::jsonb
      WHERE entity = 'Item' AND id = ${row.id}`
  }
})

const ownerMigrations = Migrator.make({})({
  loader: Migrator.fromRecord({ "1_items_to_contract_version_2": itemsToV2 }),
  table: `${ownerPrefix}service_migrations`
})

/** The owner service at a contract version: its stores (document store, outbox) and its relay. */
const ownerDeployment = (url: Redacted.Redacted, version: 1 | 2) =>
  Relay.layer({ producer: "shop", pollInterval: "100 millis" }).pipe(
    Layer.provideMerge(ownerSide(PostgresSync.layer({
      prefix: ownerPrefix,
      leaseMillis: 2_000,
      ...(version === 2 ? { migrations: ownerMigrations } : {})
    }))),
    Layer.provide(PgClient.layer({ url, maxConnections: 6 })),
    Layer.provide(broker(`shop-v${version}`))
  )

/** The consumer's own log of what it applied: written by its handlers, in the apply transaction. */
const appliedLog = "applied_log"

const logApplied = <A>(consumerVersion: number) => (event: Subscription.SyncEvent<A>) =>
  SqlClient.SqlClient.use((sql) =>
    sql`INSERT INTO ${
      sql(appliedLog)
    } (message_id, entity, entity_id, entity_version, event_contract, consumer_contract)
      VALUES (${event.envelope.messageId}, ${event.envelope.entity}, ${event.envelope.entityId},
        ${event.envelope.version}, ${event.envelope.contractVersion}, ${consumerVersion})`
  ).pipe(Effect.asVoid)

/** A consumer service built with the Item contract of `version` (Category always on version 1). */
const consumerDeployment = (service: string, url: Redacted.Redacted, version: 1 | 2) => {
  const items = version === 1
    ? Subscription.subscribe(ItemV1, { handler: logApplied(1) })
    : Subscription.subscribe(ItemV2, { handler: logApplied(2) })
  return SyncConsumer.layer({
    service,
    subscriptions: [items, Subscription.subscribe(Category, { handler: logApplied(version) })],
    producers: { shop: ["guest"] },
    pollInterval: "200 millis"
  }).pipe(
    Layer.provideMerge(PostgresSync.layer({ prefix: consumerPrefix })),
    Layer.provideMerge(PgClient.layer({ url, maxConnections: 6 })),
    Layer.provideMerge(broker(`${service}-v${version}`))
  )
}

/** A running deployment: what it provides, and how to stop it. */
interface Deployment<A> {
  readonly context: Context.Context<A>
  readonly stop: Effect.Effect<void>
}

/** Starts a deployment in a scope of its own (closed with the test's at the latest). */
const start = <A, E>(layer: Layer.Layer<A, E>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Scope.Scope)
    const context = yield* Layer.buildWithScope(layer, scope)
    const deployment: Deployment<A> = { context, stop: Scope.close(scope, Exit.void) }
    return deployment
  })

// ---------------------------------------------------------------------------------------------------
// The owner's workload: creates, updates, soft and hard deletes, deterministic

/** A small deterministic generator (mulberry32). */
const random = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

type State = "live" | "softDeleted" | "deleted"

/** One entity's writes at the owner, each in its own outbox transaction. */
interface Writes {
  readonly create: (id: string, n: number) => Effect.Effect<unknown, unknown, Outbox.Outbox | SourceRepository>
  readonly update: (id: string, n: number) => Effect.Effect<unknown, unknown, Outbox.Outbox | SourceRepository>
  readonly softDelete: (id: string) => Effect.Effect<unknown, unknown, Outbox.Outbox | SourceRepository>
  readonly delete: (id: string) => Effect.Effect<unknown, unknown, Outbox.Outbox | SourceRepository>
}

const itemWritesV1: Writes = {
  create: (id, n) => Outbox.transaction(itemsV1.create({ id, name: `${id} #${n}` })),
  update: (id, n) => Outbox.transaction(itemsV1.update(id, (item) => ({ ...item, name: `${id} #${n}` }))),
  softDelete: (id) => Outbox.transaction(itemsV1.softDelete(id)),
  delete: (id) => Outbox.transaction(itemsV1.delete(id))
}

const itemWritesV2: Writes = {
  create: (id, n) => Outbox.transaction(itemsV2.create({ id, title: `${id} #${n}`, tags: [`t${n % 5}`] })),
  update: (id, n) =>
    Outbox.transaction(
      itemsV2.update(id, (item) => ({ ...item, title: `${id} #${n}`, tags: [...item.tags, `t${n}`] }))
    ),
  softDelete: (id) => Outbox.transaction(itemsV2.softDelete(id)),
  delete: (id) => Outbox.transaction(itemsV2.delete(id))
}

const categoryWrites: Writes = {
  create: (id, n) => Outbox.transaction(categories.create({ id, label: `${id} #${n}` })),
  update: (id, n) => Outbox.transaction(categories.update(id, (c) => ({ ...c, label: `${id} #${n}` }))),
  softDelete: (id) => Outbox.transaction(categories.softDelete(id)),
  delete: (id) => Outbox.transaction(categories.delete(id))
}

/** The owner's entities of one contract as the workload knows them, and its writes. */
const workload = (prefix: string, count: number, seed: number) => {
  const ids = Array.from({ length: count }, (_, i) => `${prefix}-${String(i).padStart(2, "0")}`)
  const states = new Map<string, State>()
  const next = random(seed)
  let n = 0
  /** Writes `ops` changes with `writes`, touching ids at random; gives the ids it wrote. */
  const write = (writes: Writes, ops: number) =>
    Effect.gen(function*() {
      const touched = new Set<string>()
      for (let i = 0; i < ops; i++) {
        const id = ids[Math.floor(next() * ids.length)]!
        const state = states.get(id)
        const roll = next()
        n++
        if (state === undefined || state === "deleted") {
          yield* writes.create(id, n)
          states.set(id, "live")
        } else if (state === "softDeleted" || roll < 0.15) {
          yield* writes.delete(id)
          states.set(id, "deleted")
        } else if (roll < 0.25) {
          yield* writes.softDelete(id)
          states.set(id, "softDeleted")
        } else {
          yield* writes.update(id, n)
        }
        touched.add(id)
      }
      return touched
    })
  return { ids, write }
}

// ---------------------------------------------------------------------------------------------------
// Checks

/** JSON with object keys sorted (jsonb gives keys in an order of its own). */
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b)))
      : v)

/** An entity as both sides can be compared: version, state and payload. */
interface Held {
  readonly id: string
  readonly version: number
  readonly state: string
  readonly payload: string
}

/** Rows as `Held`, by id; payloads as canonical JSON. */
const held = (
  rows: ReadonlyArray<
    { readonly id: string; readonly version: number; readonly state: string; readonly payload: unknown }
  >
): ReadonlyArray<Held> =>
  rows
    .map((r) => ({ id: r.id, version: r.version, state: r.state, payload: canonical(r.payload) }))
    .sort((a, b) => a.id.localeCompare(b.id))

/** The owner's rows of an entity, tombstones included. */
const ownerRows = (entity: string) =>
  SourceRepository.use((source) => source.page(entity, { afterId: null, limit: 10_000 })).pipe(Effect.map(held))

/** A consumer's copies of an entity, tombstones included. */
const copyRows = (entity: string) => CopyRepository.use((copies) => copies.list(entity)).pipe(Effect.map(held))

/** The first difference between what a consumer holds and what it should; undefined when they are equal. */
const difference = (
  expected: ReadonlyArray<Held>,
  actual: ReadonlyArray<Held>,
  options: { readonly payloads: boolean }
): string | undefined => {
  const byId = new Map(actual.map((a) => [a.id, a]))
  for (const e of expected) {
    const a = byId.get(e.id)
    if (a === undefined) return `${e.id}: missing (expected version ${e.version})`
    if (a.version !== e.version || a.state !== e.state) {
      return `${e.id}: version ${a.version} ${a.state}, expected ${e.version} ${e.state}`
    }
    if (options.payloads && a.payload !== e.payload) return `${e.id}: payload ${a.payload}, expected ${e.payload}`
  }
  if (actual.length !== expected.length) return `${actual.length} copies, expected ${expected.length}`
  return undefined
}

/** Polls `check` (undefined: satisfied; else what is still wrong) until it holds, at most `seconds`. */
const waitUntil = <E, R>(label: string, check: Effect.Effect<string | undefined, E, R>, seconds = 20) =>
  Effect.gen(function*() {
    let last: string | undefined = "not checked yet"
    const satisfied = yield* check.pipe(
      Effect.tap((outcome) => Effect.sync(() => (last = outcome))),
      Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (outcome) => outcome === undefined }),
      Effect.timeoutOption(`${seconds} seconds`)
    )
    if (satisfied._tag === "None") return yield* Effect.die(new Error(`timed out waiting: ${label}: ${last}`))
  })

const outcome = (service: string, entity: string, name: Metrics.Outcome) => Metrics.outcomeCount(service, entity, name)

/** Every dead letter of a consumer service matching `filter`, over all pages. */
const allDeadLetters = (service: string, filter?: DeadLetters.Filter) =>
  Effect.gen(function*() {
    const entries: Array<DeadLetters.DeadLetterEntry> = []
    let after: string | undefined
    let totals = { inbox: 0, broker: 0 }
    while (true) {
      const page: DeadLetters.Listing = yield* DeadLetters.list({ service }, {
        limit: 100,
        ...(after === undefined ? {} : { after }),
        ...(filter === undefined ? {} : { filter })
      })
      entries.push(...page.items)
      totals = page.totals
      if (page.next === null) return { entries, totals }
      after = page.next
    }
  })

// ---------------------------------------------------------------------------------------------------

describe("rolling deployment of a contract's new version (PostgreSQL + RabbitMQ)", () => {
  it.live(
    "consumers first, then the owner: a consumer still on the old version dead-letters, then catches up by replay",
    () =>
      Effect.gen(function*() {
        // one database per service
        const database = Effect.map(
          Layer.build(TestPostgres.database),
          (context) => Context.get(context, TestPostgres.TestDatabase)
        )
        const shopDb = yield* database
        const aDb = yield* database
        const bDb = yield* database
        for (const db of [aDb, bDb]) {
          yield* SqlClient.SqlClient.use((sql) =>
            sql`CREATE TABLE ${sql(appliedLog)} (
              seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
              message_id text NOT NULL, entity text NOT NULL, entity_id text NOT NULL, entity_version bigint NOT NULL,
              event_contract integer NOT NULL, consumer_contract integer NOT NULL)`
          ).pipe(Effect.provide(PgClient.layer({ url: db.url, maxConnections: 1 })))
        }

        const items = workload("item", 40, 1)
        const cats = workload("cat", 8, 2)

        const onOwner = <X, E>(
          owner: Deployment<Outbox.Outbox | SourceRepository>,
          effect: Effect.Effect<X, E, Outbox.Outbox | SourceRepository>
        ) => Effect.provide(effect, owner.context)
        const converged = (
          owner: Deployment<Outbox.Outbox | SourceRepository>,
          consumer: Deployment<CopyRepository>,
          entity: string
        ) =>
          Effect.gen(function*() {
            const expected = yield* onOwner(owner, ownerRows(entity))
            const actual = yield* Effect.provide(copyRows(entity), consumer.context)
            const diff = difference(expected, actual, { payloads: true })
            return diff === undefined ? undefined : `${entity}: ${diff}`
          })
        const bothConverged = (
          owner: Deployment<Outbox.Outbox | SourceRepository>,
          consumer: Deployment<CopyRepository>
        ) =>
          Effect.gen(function*() {
            return (yield* converged(owner, consumer, "Item")) ?? (yield* converged(owner, consumer, "Category"))
          })

        // ---------------------------------------------------------------------------------------------
        // 1. Everything on version 1 (consumers start first: their queues exist before anything is published)
        let a = yield* start(consumerDeployment(serviceA, aDb.url, 1))
        let b = yield* start(consumerDeployment(serviceB, bDb.url, 1))
        let owner = yield* start(ownerDeployment(shopDb.url, 1))

        yield* onOwner(
          owner,
          Effect.gen(function*() {
            yield* items.write(itemWritesV1, 100)
            yield* cats.write(categoryWrites, 20)
          })
        )
        yield* waitUntil("A on version 1 copies the owner", bothConverged(owner, a))
        yield* waitUntil("B on version 1 copies the owner", bothConverged(owner, b))

        // ---------------------------------------------------------------------------------------------
        // 2. A is upgraded to version 2; the owner keeps writing version 1, during and after A's restart
        yield* a.stop
        const whileADown = yield* onOwner(owner, items.write(itemWritesV1, 30))
        a = yield* start(consumerDeployment(serviceA, aDb.url, 2))
        const afterAUp = yield* onOwner(owner, items.write(itemWritesV1, 30))
        yield* onOwner(owner, cats.write(categoryWrites, 5))
        const touchedInPhase2 = new Set([...whileADown, ...afterAUp])

        /** What A should hold for an Item the owner holds at version 1: its upcast to version 2. */
        const upcastOf = (row: Held): string => {
          if (row.state === "deleted") return row.payload
          const v1 = Schema.decodeUnknownSync(ItemV1Payload)(JSON.parse(row.payload))
          return canonical({ id: v1.id, title: v1.name, tags: [] })
        }
        yield* waitUntil(
          "A on version 2 upcasts the version 1 events",
          Effect.gen(function*() {
            const expected = yield* onOwner(owner, ownerRows("Item"))
            const actual = yield* Effect.provide(copyRows("Item"), a.context)
            const versions = difference(expected, actual, { payloads: false })
            if (versions !== undefined) return versions
            // every Item A applied since its upgrade holds the version 2 shape of the owner's version 1 payload
            const touched = expected.filter((e) => touchedInPhase2.has(e.id))
            return difference(
              touched.map((e) => ({ ...e, payload: upcastOf(e) })),
              actual.filter((c) => touchedInPhase2.has(c.id)),
              { payloads: true }
            )
          })
        )
        yield* waitUntil("B on version 1 keeps copying the owner", bothConverged(owner, b))
        const aUpcast = yield* SqlClient.SqlClient.use((sql) =>
          sql<{ readonly count: string }>`SELECT count(*) AS count FROM ${sql(appliedLog)}
            WHERE entity = 'Item' AND event_contract = 1 AND consumer_contract = 2`
        ).pipe(Effect.provide(a.context))
        assert.isAbove(Number(aUpcast[0]!.count), 0, "A applied version 1 events with its version 2 contract")

        // ---------------------------------------------------------------------------------------------
        // 3. The owner is upgraded: it migrates its stored Items, publishes version 2 and republishes all
        //    Items (full sync) so copies written under version 1 take the new shape
        yield* owner.stop
        // what the owner held at the switch: all B may hold until it is upgraded
        const itemsAtSwitch = yield* Effect.provide(
          SqlClient.SqlClient.use((sql) =>
            sql<{ readonly id: string; readonly version: string; readonly state: string; readonly payload: unknown }>`
              SELECT id, version, state, payload FROM ${sql(`${ownerPrefix}source`)} WHERE entity = 'Item'`
          ),
          PgClient.layer({ url: shopDb.url, maxConnections: 1 })
        )
        owner = yield* start(ownerDeployment(shopDb.url, 2))
        const migrated = yield* onOwner(owner, ownerRows("Item"))
        for (const row of migrated) {
          if (row.state !== "deleted") {
            assert.isTrue(Schema.is(ItemV2Payload)(JSON.parse(row.payload)), `${row.id} is migrated: ${row.payload}`)
          }
        }

        yield* onOwner(
          owner,
          Effect.gen(function*() {
            for (let round = 0; round < 4; round++) {
              yield* items.write(itemWritesV2, 10)
              yield* cats.write(categoryWrites, 4)
            }
            yield* itemsV2.fullSync()
            yield* cats.write(categoryWrites, 4)
          })
        )
        const outbox = Context.get(owner.context, Outbox.Outbox)
        const v2Events = (yield* outbox.rows()).filter((row) => row.envelope.contractVersion === 2)
        assert.isTrue(v2Events.every((row) => row.envelope.entity === "Item"), "only Items are published at version 2")
        assert.isAbove(v2Events.length, 40)

        yield* waitUntil("A on version 2 applies the version 2 events", bothConverged(owner, a))
        yield* waitUntil(
          "B on version 1 dead-letters every version 2 event",
          Effect.map(outcome(serviceB, "Item", "unsupportedVersion"), (n) =>
            n === v2Events.length ? undefined : `${n} of ${v2Events.length} counted`)
        )
        // meanwhile B applied everything else: all Categories, and Items up to the switch
        yield* waitUntil("B keeps applying the Categories", converged(owner, b, "Category"))
        const bItems = yield* Effect.provide(copyRows("Item"), b.context)
        assert.isUndefined(
          difference(
            held(itemsAtSwitch.map((r) => ({ ...r, version: Number(r.version) }))),
            bItems,
            { payloads: true }
          ),
          "B holds exactly the owner's Items as they were at the switch"
        )
        const listed = yield* allDeadLetters(serviceB, { reasons: ["UnsupportedContractVersion"] }).pipe(
          Effect.provide(b.context)
        )
        assert.deepStrictEqual(
          listed.entries.map((e) =>
            e.messageId
          ).sort(),
          v2Events.map((row) => row.envelope.messageId).sort(),
          "B lists each version 2 event as a dead letter"
        )
        for (const entry of listed.entries) {
          assert.strictEqual(entry.error, "UnsupportedContractVersion")
          assert.strictEqual(entry.entity, "Item")
          assert.strictEqual(entry.store, "broker")
        }
        assert.deepStrictEqual(listed.totals, { inbox: 0, broker: v2Events.length }, "B has no other dead letters")
        const aDead = yield* allDeadLetters(serviceA).pipe(Effect.provide(a.context))
        assert.deepStrictEqual(aDead.totals, { inbox: 0, broker: 0 }, "A dead-lettered nothing")

        // ---------------------------------------------------------------------------------------------
        // 4. B is upgraded and replays its dead letters by reason
        yield* b.stop
        b = yield* start(consumerDeployment(serviceB, bDb.url, 2))
        const replayed = yield* DeadLetters.replay({ service: serviceB }, { reasons: ["UnsupportedContractVersion"] })
          .pipe(Effect.provide(b.context))
        assert.deepStrictEqual(replayed, { inbox: 0, broker: v2Events.length, brokerUnread: 0 })
        yield* onOwner(
          owner,
          Effect.gen(function*() {
            yield* items.write(itemWritesV2, 10)
            yield* cats.write(categoryWrites, 4)
          })
        )
        yield* waitUntil("A converges", bothConverged(owner, a))
        yield* waitUntil("B converges after its replay", bothConverged(owner, b))
        yield* waitUntil(
          "the owner's outbox is published",
          Effect.map(onOwner(owner, outbox.pending), (p) => p.count === 0 ? undefined : `${p.count} pending`)
        )

        // ---------------------------------------------------------------------------------------------
        // Nothing lost, nothing applied twice, the same final state everywhere
        const events = yield* outbox.rows()
        const eventIds = new Set(events.map((row) => row.envelope.messageId))
        assert.strictEqual(eventIds.size, events.length)
        const finalItems = yield* onOwner(owner, ownerRows("Item"))
        for (const row of finalItems) {
          if (row.state === "deleted") assert.strictEqual(row.payload, "null")
          else assert.isTrue(Schema.is(ItemV2Payload)(JSON.parse(row.payload)), `${row.id}: ${row.payload}`)
        }
        assert.isTrue(finalItems.some((row) => row.state === "deleted"), "the history has tombstones")
        assert.isTrue(finalItems.some((row) => row.state === "softDeleted"), "the history has soft deletes")

        const figures: Record<string, unknown> = {
          events: events.length,
          itemEvents: events.filter((r) => r.envelope.entity === "Item").length,
          v2Events: v2Events.length,
          replayed: replayed.broker
        }
        for (const [service, consumer] of [[serviceA, a], [serviceB, b]] as const) {
          const { inboxIds, log } = yield* Effect.provide(
            Effect.gen(function*() {
              const sql = yield* SqlClient.SqlClient
              const inboxIds = yield* sql<{ readonly messageId: string }>`
                SELECT message_id AS "messageId" FROM ${sql(`${consumerPrefix}inbox`)} WHERE consumer = ${service}`
              const log = yield* sql<{ readonly messageId: string; readonly entity: string }>`
                SELECT message_id AS "messageId", entity FROM ${sql(appliedLog)} ORDER BY seq`
              return { inboxIds, log }
            }),
            consumer.context
          )
          // nothing lost: the inbox recorded every event the owner published
          const received = new Set(inboxIds.map((r) => r.messageId))
          const lost = [...eventIds].filter((id) => !received.has(id))
          assert.deepStrictEqual(lost, [], `${service} received every event`)
          // none applied twice, and only the owner's
          const appliedIds = log.map((r) => r.messageId)
          assert.strictEqual(new Set(appliedIds).size, appliedIds.length, `${service} applied no event twice`)
          assert.isTrue(appliedIds.every((id) => eventIds.has(id)))
          // every event applied or found stale once (duplicates counted apart)
          for (const entity of ["Item", "Category"]) {
            const ofEntity = events.filter((r) => r.envelope.entity === entity).length
            const applied = yield* outcome(service, entity, "applied")
            const stale = yield* outcome(service, entity, "stale")
            const duplicate = yield* outcome(service, entity, "duplicate")
            assert.strictEqual(
              log.filter((r) => r.entity === entity).length,
              applied,
              `${service} ${entity}: the log holds every apply`
            )
            assert.strictEqual(applied + stale, ofEntity, `${service} ${entity}: every event applied or stale once`)
            figures[`${service === serviceA ? "A" : "B"} ${entity}`] = { applied, stale, duplicate }
          }
          const dead = yield* allDeadLetters(service).pipe(Effect.provide(consumer.context))
          assert.deepStrictEqual(dead.totals, { inbox: 0, broker: 0 }, `${service} has no dead letter left`)
        }
        assert.strictEqual(yield* outcome(serviceA, "Item", "unsupportedVersion"), 0)
        assert.strictEqual(yield* outcome(serviceB, "Item", "unsupportedVersion"), v2Events.length)
        yield* Effect.log(`rolling deployment figures: ${JSON.stringify(figures)}`)

        yield* a.stop
        yield* b.stop
        yield* owner.stop
      }).pipe(Effect.scoped, Effect.provideService(Metric.MetricRegistry, new Map())),
    90_000
  )
})
