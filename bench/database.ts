/**
 * The benchmark's databases: two fresh databases per phase (the owner's and the consumer's) on the local
 * server (`POSTGRES_ADMIN_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`, trust auth),
 * dropped when the phase is done; and the deletion of a phase's RabbitMQ queues and exchanges.
 */
import { PgClient } from "@effect/sql-pg"
import amqp from "amqplib"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { Broker } from "entity-sync"
import { amqpUrl, type Names } from "./contract.ts"

/** The maintenance database used for `CREATE DATABASE` / `DROP DATABASE`. */
export const adminUrl = process.env.POSTGRES_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

/** The URL of database `name` on the admin server. */
export const rawUrlOf = (name: string): string => {
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return url.toString()
}

const admin = <A>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, unknown>) =>
  SqlClient.SqlClient.use(f).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(adminUrl), maxConnections: 1, applicationName: "bench-admin" }))
  )

/** Creates the databases `names` (dropped first if they exist). */
export const create = (names: ReadonlyArray<string>): Effect.Effect<void, unknown> =>
  admin((sql) =>
    Effect.forEach(
      names,
      (name) =>
        Effect.andThen(sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`, sql`CREATE DATABASE ${sql(name)}`),
      {
        discard: true
      }
    )
  )

/** Drops the databases `names`, even with open connections. */
export const drop = (names: ReadonlyArray<string>): Effect.Effect<void, unknown> =>
  admin((sql) =>
    Effect.forEach(names, (name) => sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`, { discard: true })
  )

/** Writes every dirty buffer of the server to disk now (`CHECKPOINT`), so that a phase does not pay for the one before. */
export const checkpoint: Effect.Effect<void, unknown> = admin((sql) => Effect.asVoid(sql`CHECKPOINT`))

/** The server's version string. */
export const serverVersion: Effect.Effect<string, unknown> = admin((sql) =>
  Effect.map(sql<{ readonly version: string }>`SELECT version() AS version`, (rows) => rows[0]?.version ?? "unknown")
)

/** Deletes a phase's queues and exchanges, its `lanes` lane queues included (best effort). */
export const deleteTopology = (names: Names, lanes = 0): Effect.Effect<void> =>
  Effect.promise(async () => {
    const connection = await amqp.connect(amqpUrl)
    try {
      const each = async (f: (channel: amqp.Channel) => Promise<unknown>) => {
        const channel = await connection.createChannel()
        channel.on("error", () => undefined)
        await f(channel).catch(() => undefined)
        await channel.close().catch(() => undefined)
      }
      const laneQueues = Array.from({ length: lanes }, (_, i) => Broker.laneQueueOf(names.queue, i))
      for (const queue of [names.queue, ...laneQueues].flatMap((queue) => [queue, `${queue}.dead`])) {
        await each((channel) => channel.deleteQueue(queue))
      }
      for (const exchange of [names.exchange, names.deadLetterExchange, Broker.lanesExchangeOf(names.service)]) {
        await each((channel) => channel.deleteExchange(exchange))
      }
    } finally {
      await connection.close().catch(() => undefined)
    }
  }).pipe(Effect.timeoutOption("15 seconds"), Effect.asVoid)
