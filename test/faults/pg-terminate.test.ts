/**
 * Fault: the PostgreSQL backends of the relay and of the consumer (`application_name` faults-relay /
 * faults-consumer on this test's database) terminated with `pg_terminate_backend`, repeatedly, while a
 * stream of writes goes through the real stack. Each round waits until the consumer (odd rounds) or the
 * relay (even rounds) is inside a transaction or a statement — mid-batch — and then terminates every
 * backend of both, the `LISTEN` connections included. The writer's own connections are left alone.
 */
import { describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer, Schema } from "effect"
import type { SqlClient } from "effect/sql"
import { quiet, setup, stream } from "./fixture.ts"
import { consumer, relay, roles } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { writeStream } from "./writer.ts"

const Terminated = Schema.Array(Schema.Struct({ inTransaction: Schema.Boolean, terminated: Schema.Boolean }))
const decodeTerminated = Schema.decodeUnknownEffect(Terminated)

/**
 * Terminates the relay's and the consumer's backends if one of `target`'s is in a transaction right now;
 * gives how many were terminated (0 if `target` was idle), and how many of them were in a transaction.
 */
const terminateIfBusy = (sql: SqlClient.SqlClient, target: string) =>
  sql`WITH backends AS (
      SELECT pid, application_name, xact_start IS NOT NULL AS in_tx FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND application_name IN (${roles.relay}, ${roles.consumer})
    )
    SELECT in_tx AS "inTransaction", pg_terminate_backend(pid) AS terminated FROM backends
    WHERE EXISTS (SELECT 1 FROM backends WHERE in_tx AND application_name = ${target})`.pipe(
    Effect.flatMap(decodeTerminated),
    Effect.map((rows) => ({
      terminated: rows.filter((r) => r.terminated).length,
      inTransaction: rows.filter((r) => r.terminated && r.inTransaction).length
    }))
  )

/** Polls `terminateIfBusy` every 5 ms for up to 3 s. */
const terminateMidTransaction = (sql: SqlClient.SqlClient, target: string) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    while (true) {
      const killed = yield* terminateIfBusy(sql, target)
      if (killed.terminated > 0 || (yield* Clock.currentTimeMillis) - start > 3_000) return killed
      yield* Effect.sleep("5 millis")
    }
  })

describe("faults: PostgreSQL backends terminated", () => {
  it.live("loses nothing and applies nothing twice", () =>
    Effect.gen(function*() {
      const fixture = yield* setup("pg-terminate")
      yield* Layer.build(consumer(fixture.url, fixture.names))
      yield* Layer.build(relay(fixture.url, fixture.names))
      const writer = yield* writeStream(stream).pipe(Effect.provide(fixture.writer), Effect.forkChild)
      let rounds = 0
      let terminated = 0
      let inTransaction = 0
      while (writer.pollUnsafe() === undefined) {
        yield* Effect.sleep(300 + Math.floor(Math.random() * 500))
        const killed = yield* terminateMidTransaction(fixture.sql, rounds % 2 === 0 ? roles.consumer : roles.relay)
        if (killed.terminated > 0) rounds++
        terminated += killed.terminated
        inTransaction += killed.inTransaction
      }
      const written = yield* Fiber.join(writer)
      const t = yield* awaitQuiescence(fixture.sql, fixture.names)
      yield* judge(
        "PostgreSQL backends terminated",
        t,
        {
          injected: rounds,
          detail: `${terminated} backends terminated in ${rounds} rounds, ${inTransaction} of them mid-transaction`
        },
        written,
        fixture.names
      )
    }).pipe(quiet), 120_000)
})
