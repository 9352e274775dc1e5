/**
 * Fault: RabbitMQ connections of the relay and of the consumer force-closed by the server
 * (`rabbitmqctl close_connection`), repeatedly, while a stream of writes goes through the real stack.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { quiet, setup, stream } from "./fixture.ts"
import { closeConnections } from "./rabbit.ts"
import { consumer, relay } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { writeStream } from "./writer.ts"

describe("faults: RabbitMQ connections force-closed", () => {
  it.live("loses nothing and applies nothing twice", () =>
    Effect.gen(function*() {
      const fixture = yield* setup("rabbit-close")
      yield* Layer.build(consumer(fixture.url, fixture.names))
      yield* Layer.build(relay(fixture.url, fixture.names))
      const writer = yield* writeStream(stream).pipe(Effect.provide(fixture.writer), Effect.forkChild)
      let rounds = 0
      let closed = 0
      while (writer.pollUnsafe() === undefined) {
        yield* Effect.sleep("1200 millis")
        const n = yield* closeConnections(fixture.names)
        if (n > 0) rounds++
        closed += n
      }
      const written = yield* Fiber.join(writer)
      const t = yield* awaitQuiescence(fixture.sql, fixture.names)
      yield* judge(
        "RabbitMQ connections force-closed",
        t,
        {
          injected: rounds,
          detail: `${closed} connections closed in ${rounds} rounds`
        },
        written,
        fixture.names
      )
    }).pipe(quiet), 120_000)
})
