/**
 * The README's adoption path, on the real servers: an existing service's `users` table with 10,000 rows
 * and no version column; the adoption migration adds and backfills `version` (and an index in byte order
 * of the ids, for full sync's pages), the table is declared as the owner table of the User contract, and
 * the first full sync publishes every row through the relay and RabbitMQ to a consumer that starts empty,
 * in a database of its own. The consumer's copies converge to exactly the owner's rows (version 1, payloads
 * equal, the service's earlier soft deletes included); then ordinary writes through the repository
 * (update, soft delete, hard delete, re-create, create) reach it too.
 */
import { assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import { Clock, Context, type Duration, Effect, Layer, Schedule, Schema } from "effect"
import { Migrator, SqlClient, type SqlError } from "effect/sql"
import { afterAll } from "vitest"
import * as RabbitBroker from "../src/amqp/RabbitBroker.ts"
import * as Contract from "../src/Contract.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import * as Outbox from "../src/Outbox.ts"
import * as OwnerTable from "../src/OwnerTable.ts"
import * as PostgresSync from "../src/postgres/PostgresSync.ts"
import * as Producer from "../src/Producer.ts"
import * as Relay from "../src/Relay.ts"
import type { SourceRepository } from "../src/SourceRepository.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import * as TestPostgres from "./postgres.ts"

const rows = 10_000
const url = "amqp://guest:guest@127.0.0.1:5672"
const run = Math.random().toString(36).slice(2, 8)
const service = `adoption-${run}`
const rabbit = {
  url,
  exchange: `test.adoption.events.${run}`,
  deadLetterExchange: `test.adoption.dead.${run}`,
  replayExchange: `test.adoption.replay.${run}`
}

afterAll(async () => {
  const connection = await amqp.connect(url)
  const channel = await connection.createChannel()
  for (const queue of [`${service}.sync`, RabbitBroker.deadQueueOf(`${service}.sync`)]) await channel.deleteQueue(queue)
  for (const exchange of [rabbit.exchange, rabbit.deadLetterExchange, rabbit.replayExchange]) {
    await channel.deleteExchange(exchange)
  }
  await connection.close()
}, 30_000)

// The existing service: its users table, made by its first migration, and 10,000 rows written by its own
// code over time (every third without a nickname, every 500th soft-deleted).
const createUsers = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE users (
    id text PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    nickname text,
    active boolean NOT NULL DEFAULT true,
    login_count integer NOT NULL DEFAULT 0,
    password_hash text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
  )`
})

const fillUsers = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`INSERT INTO users (id, email, name, nickname, active, login_count, password_hash, created_at, updated_at,
      deleted_at)
    SELECT 'u-' || g, 'user' || g || '@example.test', 'User ' || g,
      CASE WHEN g % 3 = 0 THEN NULL ELSE 'nick ' || g END,
      g % 7 <> 0, g % 50, md5(g::text),
      now() - g * interval '1 minute', now() - g * interval '1 second',
      CASE WHEN g % 500 = 0 THEN now() - interval '1 hour' END
    FROM generate_series(1, ${rows}) AS g`
})

// The adoption migration (README, "Adopting entity-sync in an existing service"): the service's next one.
const addUsersVersion = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 1`
})

const serviceMigrations = (loader: Record<string, Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient>>) =>
  Migrator.make({})({ table: "users_service_migrations", loader: Migrator.fromRecord(loader) })

/** What the existing service ran before it adopted entity-sync. */
const before = serviceMigrations({ "1_create_users": createUsers })
/** Its migrations from then on, given to the stores layer. */
const after = serviceMigrations({ "1_create_users": createUsers, "2_users_version": addUsersVersion })

// The contract and the owner table. password_hash and created_at stay the service's own.
const User = Contract.make({
  name: "User",
  owner: "accounts",
  id: "id",
  payload: Schema.Struct({
    id: Schema.String,
    email: Schema.String,
    name: Schema.String,
    nickname: Schema.NullOr(Schema.String),
    active: Schema.Boolean,
    loginCount: Schema.Int
  })
})

const usersTable = OwnerTable.make(User, {
  tableName: "users",
  softDeleteColumn: "deleted_at",
  updatedAtColumn: "updated_at",
  columns: { loginCount: "login_count" }
})

const users = Producer.make("accounts").repository(User)

const ownerPrefix = "sync_"
const consumerPrefix = "directory_sync_"

/** The owner's rows as the service's own SQL sees them: live and soft-deleted rows, and tombstones. */
const OwnerRow = Schema.Struct({
  id: Schema.String,
  email: Schema.NullOr(Schema.String),
  name: Schema.NullOr(Schema.String),
  nickname: Schema.NullOr(Schema.String),
  active: Schema.NullOr(Schema.Boolean),
  login_count: Schema.NullOr(Schema.Number),
  version: Schema.Number,
  state: Schema.Literals(["live", "softDeleted", "deleted"])
})

type Expected = readonly [id: string, version: number, state: string, payload: unknown]

const ownerState = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const found = yield* sql`SELECT id, email, name, nickname, active, login_count, version::int AS version,
      CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'softDeleted' END AS state
    FROM users
    UNION ALL
    SELECT id, NULL, NULL, NULL, NULL, NULL, version::int, 'deleted' FROM ${sql(`${ownerPrefix}tombstones`)}
    WHERE entity = 'User'`
  const decoded = yield* Schema.decodeUnknownEffect(Schema.Array(OwnerRow))(found).pipe(Effect.orDie)
  return decoded
    .map((row): Expected => [
      row.id,
      row.version,
      row.state,
      row.state === "deleted" ? null : {
        id: row.id,
        email: row.email ?? "",
        name: row.name ?? "",
        nickname: row.nickname,
        active: row.active ?? false,
        loginCount: row.login_count ?? 0
      }
    ])
    .sort(byId)
})

const byId = (a: Expected, b: Expected) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)

const Count = Schema.Struct({ count: Schema.Number })

const countOf = (statement: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<unknown>, SqlError.SqlError>) =>
  SqlClient.SqlClient.use(statement).pipe(
    Effect.flatMap(Schema.decodeUnknownEffect(Schema.Array(Count))),
    Effect.map((found) => found[0]?.count ?? 0),
    Effect.orDie
  )

/** Polls (real time) until `check` satisfies `until`, failing after `deadline`. */
const waitFor = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  until: (a: A) => boolean,
  deadline: Duration.Input = "60 seconds"
) =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until }),
    Effect.timeoutOption(deadline),
    Effect.flatMap((a) => a._tag === "Some" ? Effect.succeed(a.value) : Effect.die(new Error("timed out waiting")))
  )

describe("adopting entity-sync in an existing service", () => {
  it.live(
    `a users table of ${rows} rows without versions: the first full sync brings an empty consumer to the owner's rows`,
    () =>
      Effect.gen(function*() {
        // The existing service, before adoption.
        const ownerDatabase = yield* Layer.build(TestPostgres.layer({ maxConnections: 10 }))
        const inOwnerDatabase = Effect.provideContext(ownerDatabase)
        yield* before.pipe(inOwnerDatabase)
        yield* fillUsers.pipe(inOwnerDatabase)
        const versionColumns = yield* countOf((sql) =>
          sql`SELECT count(*)::int AS count FROM information_schema.columns
            WHERE table_name = 'users' AND column_name = 'version'`
        ).pipe(inOwnerDatabase)
        assert.strictEqual(versionColumns, 0)

        // Adoption: the stores layer runs the library's migrations, then the service's (adding the
        // version column), then checks the owner table against its declaration.
        const owner = yield* Layer.build(
          Layer.mergeAll(
            PostgresSync.layer({ prefix: ownerPrefix, ownerTables: [usersTable], migrations: after }),
            RabbitBroker.layer({ ...rabbit, connectionName: `${service}-owner` })
          ).pipe(Layer.provide(Layer.succeedContext(ownerDatabase)))
        )
        const asOwner = Effect.provideContext(Context.merge(ownerDatabase, owner))
        const backfilled = yield* ownerState.pipe(asOwner)
        assert.strictEqual(backfilled.length, rows)
        assert.isTrue(backfilled.every(([, version]) => version === 1))
        yield* Layer.build(Relay.layer({ producer: "accounts" })).pipe(asOwner)

        // A consumer that starts empty, in its own database.
        const consumerDatabase = yield* Layer.build(TestPostgres.layer({ maxConnections: 10 }))
        const consumer = yield* Layer.build(
          SyncConsumer.layer({
            service,
            subscriptions: [Subscription.subscribe(User)],
            producers: { accounts: ["guest"] }
          }).pipe(
            Layer.provideMerge(PostgresSync.layer({ prefix: consumerPrefix })),
            Layer.provideMerge(RabbitBroker.layer({ ...rabbit, connectionName: `${service}-consumer` })),
            Layer.provide(Layer.succeedContext(consumerDatabase))
          )
        )
        const asConsumer = Effect.provideContext(Context.merge(consumerDatabase, consumer))
        const copies = countOf((sql) =>
          sql`SELECT count(*)::int AS count FROM ${sql(`${consumerPrefix}copies`)} WHERE entity = 'User'`
        ).pipe(asConsumer)
        assert.strictEqual(yield* copies, 0)
        const consumerState = CopyRepository.use((repository) => repository.list("User")).pipe(
          Effect.map((listed) =>
            listed.map((copy): Expected => [copy.id, copy.version, copy.state, copy.payload]).sort(byId)
          ),
          asConsumer
        )

        // The first full sync: one snapshot (or softDeleted) event per row, in batches of 100.
        const started = yield* Clock.currentTimeMillis
        const queued = yield* users.fullSync().pipe(asOwner)
        const synced = yield* Clock.currentTimeMillis
        assert.strictEqual(queued, rows)
        yield* waitFor(copies, (n) => n === rows)
        const converged = yield* Clock.currentTimeMillis
        yield* Effect.logInfo(
          `adoption: full sync of ${rows} rows queued in ${synced - started} ms, ` +
            `the consumer converged ${converged - started} ms after it started`
        )
        const expected = yield* ownerState.pipe(asOwner)
        assert.deepStrictEqual(yield* consumerState, expected)
        assert.strictEqual(expected.filter(([, , state]) => state === "softDeleted").length, rows / 500)
        assert.deepStrictEqual(expected.find(([id]) => id === "u-3")?.[3], {
          id: "u-3",
          email: "user3@example.test",
          name: "User 3",
          nickname: null,
          active: true,
          loginCount: 3
        })

        // Ordinary writes after adoption.
        const copyOf = (id: string) => CopyRepository.use((repository) => repository.get("User", id)).pipe(asConsumer)
        const write = <A, E>(effect: Effect.Effect<A, E, Outbox.OutboxTransaction | SourceRepository>) =>
          Outbox.transaction(effect).pipe(asOwner)
        yield* write(users.update("u-1", (user) => ({ ...user, name: "Ann", loginCount: user.loginCount + 1 })))
        yield* write(users.softDelete("u-2"))
        yield* write(users.delete("u-3"))
        const tombstone = yield* countOf((sql) =>
          sql`SELECT count(*)::int AS count FROM ${sql(`${ownerPrefix}tombstones`)}
            WHERE entity = 'User' AND id = 'u-3' AND version = 2`
        ).pipe(asOwner)
        assert.strictEqual(tombstone, 1)
        yield* waitFor(copyOf("u-3"), (copy) => copy?.state === "deleted" && copy.version === 2)
        const recreated = yield* write(users.create({
          id: "u-3",
          email: "user3@example.test",
          name: "User 3, again",
          nickname: null,
          active: true,
          loginCount: 0
        }))
        assert.strictEqual(recreated.version, 3)
        const created = yield* write(users.create({
          id: "u-new",
          email: "new@example.test",
          name: "New",
          nickname: "n",
          active: true,
          loginCount: 0
        }))
        assert.strictEqual(created.version, 1)

        yield* waitFor(copyOf("u-new"), (copy) => copy?.version === 1)
        yield* waitFor(copyOf("u-3"), (copy) => copy?.state === "live" && copy.version === 3)
        const final = yield* ownerState.pipe(asOwner)
        assert.deepStrictEqual(final.find(([id]) => id === "u-1")?.slice(0, 3), ["u-1", 2, "live"])
        assert.deepStrictEqual(final.find(([id]) => id === "u-2")?.slice(0, 3), ["u-2", 2, "softDeleted"])
        assert.strictEqual(final.length, rows + 1)
        yield* waitFor(copyOf("u-1"), (copy) => copy?.version === 2)
        yield* waitFor(copyOf("u-2"), (copy) => copy?.state === "softDeleted" && copy.version === 2)
        assert.deepStrictEqual(yield* consumerState, final)
        const dead = yield* countOf((sql) => sql`SELECT count(*)::int AS count FROM ${sql(`${consumerPrefix}dead`)}`)
          .pipe(asConsumer)
        assert.strictEqual(dead, 0)
      }),
    180_000
  )
})
