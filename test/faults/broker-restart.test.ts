/**
 * Fault: the RabbitMQ application stopped and started again (`rabbitmqctl stop_app` / `start_app`) during
 * the stream, twice. The quorum queue and every confirmed message survive; the relay and the consumer
 * reconnect. The app is always started again by a finalizer.
 *
 * It takes the whole broker down for a second or two, which would break every other client of the local
 * RabbitMQ, so `vitest.config.ts` runs it in a project of its own after every other test file. Measured
 * here (RabbitMQ 3.10, one node): stop_app ≈ 0.5 s, start_app ≈ 1.1 s, a quorum queue usable right after.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { quiet, setup, stream } from "./fixture.ts"
import { rabbitmqctl } from "./rabbit.ts"
import { consumer, relay } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { writeStream } from "./writer.ts"

/** Connections to the broker that are not this test's. */
const foreignConnections = (connectionPrefix: string) =>
  Effect.map(
    rabbitmqctl("list_connections", "client_properties", "--no-table-headers"),
    (listing) =>
      listing.split("\n").filter((line) =>
        line.trim() !== "" && !line.includes(`{"connection_name","${connectionPrefix}-`)
      ).length
  )

describe("faults: RabbitMQ application restarted", () => {
  it.live("loses nothing and applies nothing twice", () =>
    Effect.gen(function*() {
      const fixture = yield* setup("broker-restart")
      yield* Effect.addFinalizer(() => rabbitmqctl("start_app").pipe(Effect.ignore))
      yield* Layer.build(consumer(fixture.url, fixture.names))
      yield* Layer.build(relay(fixture.url, fixture.names))
      const writer = yield* writeStream(stream).pipe(Effect.provide(fixture.writer), Effect.forkChild)
      let restarts = 0
      while (writer.pollUnsafe() === undefined && restarts < 2) {
        yield* Effect.sleep("2500 millis")
        const others = yield* foreignConnections(fixture.names.connectionPrefix)
        if (others > 0) {
          return yield* Effect.die(new Error(`refusing to stop RabbitMQ: ${others} other client(s) are connected`))
        }
        yield* rabbitmqctl("stop_app")
        yield* Effect.sleep("1 second")
        yield* rabbitmqctl("start_app")
        restarts++
      }
      const written = yield* Fiber.join(writer)
      const t = yield* awaitQuiescence(fixture.sql, fixture.names)
      yield* judge("RabbitMQ application restarted", t, { injected: restarts }, written, fixture.names)
    }).pipe(quiet), 150_000)
})
