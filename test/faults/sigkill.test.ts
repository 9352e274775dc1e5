/**
 * Fault: the consumer runs in a child process that is killed with SIGKILL while it applies the stream (no
 * finalizer runs: open transactions die with their connections, unacked deliveries go back to the queue),
 * and a new process is started each time.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Schema } from "effect"
import { appliesTable } from "./contract.ts"
import { quiet, setup, stream } from "./fixture.ts"
import { startConsumerProcess } from "./process.ts"
import { relay } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { writeStream } from "./writer.ts"

const decodeCount = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ n: Schema.Int })))

describe("faults: consumer process killed with SIGKILL", () => {
  it.live("loses nothing and applies nothing twice", () =>
    Effect.gen(function*() {
      const fixture = yield* setup("sigkill")
      const applies = fixture.sql`SELECT count(*)::int AS n FROM ${fixture.sql(appliesTable)}`.pipe(
        Effect.flatMap(decodeCount),
        Effect.map((rows) => rows[0]?.n ?? 0)
      )
      yield* Layer.build(relay(fixture.url, fixture.names))
      let current = yield* startConsumerProcess(fixture.url, fixture.names)
      const writer = yield* writeStream(stream).pipe(Effect.provide(fixture.writer), Effect.forkChild)
      let kills = 0
      while (writer.pollUnsafe() === undefined) {
        // kill it while it is applying: after it applied something, at a random moment
        const before = yield* applies
        while ((yield* applies) === before && writer.pollUnsafe() === undefined) yield* Effect.sleep("50 millis")
        yield* Effect.sleep(200 + Math.floor(Math.random() * 800))
        if (writer.pollUnsafe() !== undefined) break
        yield* current.kill
        kills++
        current = yield* startConsumerProcess(fixture.url, fixture.names)
      }
      const written = yield* Fiber.join(writer)
      const t = yield* awaitQuiescence(fixture.sql, fixture.names)
      yield* current.kill
      yield* judge("consumer process killed with SIGKILL", t, { injected: kills }, written, fixture.names, {
        consumerInProcess: false
      })
    }).pipe(quiet), 150_000)
})
