/**
 * Faults: crashes at the two points where a message is done on one side but not yet on the other,
 * repeatedly during a stream of writes — the relay interrupted after the broker confirmed a batch but
 * before it was marked published (its rows come back when the lease ends and are published again), and
 * the consumer interrupted after an apply committed but before its ack, or as a delivery arrives before
 * it is applied (the messages are redelivered).
 * Each crashed incarnation is replaced by a new one, as a restarted process would be.
 */
import { describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Scope } from "effect"
import { type CrashPoint, dyingAfterPublish, dyingAtAck, dyingAtReceive, makeCrashPoint } from "./crashes.ts"
import { type Fixture, quiet, setup, stream } from "./fixture.ts"
import { type BrokerWrapper, consumer, relay } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { writeStream, type WriteStreamResult } from "./writer.ts"

/**
 * Runs the stream while incarnations of one role crash and are replaced: each is armed after 300–900 ms
 * and dies at its next crash point. Gives the writer's result and the number of crashes.
 */
const crashRepeatedly = <A, B, E1, E2>(
  fixture: Fixture,
  incarnation: (wrap: BrokerWrapper) => Layer.Layer<A, E1>,
  wrapper: (crash: CrashPoint) => BrokerWrapper,
  steady: Layer.Layer<B, E2>
) =>
  Effect.gen(function*() {
    yield* Layer.build(steady)
    const writer = yield* writeStream(stream).pipe(Effect.provide(fixture.writer), Effect.forkChild)
    let crashes = 0
    while (writer.pollUnsafe() === undefined) {
      const scope = yield* Scope.make()
      const crash = yield* makeCrashPoint
      yield* Layer.build(incarnation(wrapper(crash))).pipe(Scope.provide(scope))
      yield* Effect.sleep(300 + Math.floor(Math.random() * 600))
      yield* crash.arm
      const died = yield* Deferred.await(crash.died).pipe(Effect.timeoutOption("5 seconds"))
      yield* Scope.close(scope, Exit.void)
      if (died._tag === "Some") crashes++
    }
    const written: WriteStreamResult = yield* Fiber.join(writer)
    return { written, crashes }
  })

describe("faults: crashes between the two sides of a handover", () => {
  it.live(
    "a relay interrupted between publish and mark-published, repeatedly: nothing lost, nothing applied twice",
    () =>
      Effect.gen(function*() {
        const fixture = yield* setup("relay-crash")
        const { crashes, written } = yield* crashRepeatedly(
          fixture,
          (wrap) => relay(fixture.url, fixture.names, { wrap }),
          dyingAfterPublish,
          consumer(fixture.url, fixture.names)
        )
        yield* Layer.build(relay(fixture.url, fixture.names))
        const t = yield* awaitQuiescence(fixture.sql, fixture.names)
        yield* judge(
          "relay interrupted between publish and mark-published",
          t,
          { injected: crashes },
          written,
          fixture.names
        )
      }).pipe(quiet),
    120_000
  )

  const consumerCrashes = [
    { test: "consumer-crash", point: "between apply and ack", wrapper: dyingAtAck },
    { test: "consumer-receive-crash", point: "between receive and apply", wrapper: dyingAtReceive }
  ]
  for (const { point, test, wrapper } of consumerCrashes) {
    it.live(
      `a consumer interrupted ${point}, repeatedly: nothing lost, nothing applied twice`,
      () =>
        Effect.gen(function*() {
          const fixture = yield* setup(test)
          const { crashes, written } = yield* crashRepeatedly(
            fixture,
            (wrap) => consumer(fixture.url, fixture.names, { wrap }),
            wrapper,
            relay(fixture.url, fixture.names)
          )
          yield* Layer.build(consumer(fixture.url, fixture.names))
          const t = yield* awaitQuiescence(fixture.sql, fixture.names)
          yield* judge(`consumer interrupted ${point}`, t, { injected: crashes }, written, fixture.names)
        }).pipe(quiet),
      120_000
    )
  }
})
