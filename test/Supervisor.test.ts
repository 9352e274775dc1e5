/**
 * Supervised loops: restarted after failures and defects on a doubling backoff that starts over after a
 * healthy run; stopped only by success or interruption.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber } from "effect"
import { SqlError } from "effect/sql"
import { TestClock } from "effect/testing"
import * as Supervisor from "../src/Supervisor.ts"

/** A loop that runs `script[i]` on its i-th start and records when each start happened. */
const scripted = (script: ReadonlyArray<Effect.Effect<string, string>>) => {
  const starts: Array<number> = []
  const loop = Effect.gen(function*() {
    starts.push(yield* Clock.currentTimeMillis)
    const step = script[starts.length - 1]
    return yield* step ?? Effect.never
  })
  return { starts, loop }
}

const lostConnection = new SqlError.SqlError({
  reason: new SqlError.ConnectionError({ message: "terminating connection", cause: undefined })
})

describe("Supervisor.restarting", () => {
  it.effect("restarts after failures and defects with a doubling delay, and returns the loop's success", () =>
    Effect.gen(function*() {
      const { loop, starts } = scripted([
        Effect.fail("boom"),
        Effect.die(lostConnection),
        Effect.fail("boom"),
        Effect.succeed("done")
      ])
      const fiber = yield* Supervisor.restarting("test loop", loop).pipe(Effect.forkChild)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), "done")
      assert.deepStrictEqual(starts, [0, 100, 300, 700])
    }))

  it.effect("caps the delay and starts the backoff over after a healthy run", () =>
    Effect.gen(function*() {
      const failAfter = (ms: number) => Effect.andThen(Effect.sleep(ms), Effect.fail("boom"))
      const { loop, starts } = scripted([
        Effect.fail("boom"),
        Effect.fail("boom"),
        Effect.fail("boom"),
        failAfter(60_000),
        Effect.fail("boom")
      ])
      yield* Supervisor.restarting("test loop", loop, { maxDelay: "250 millis", healthyAfter: "30 seconds" }).pipe(
        Effect.forkChild
      )
      yield* TestClock.adjust("2 minutes")
      // 100, 200, then capped at 250; the minute-long run resets the backoff: 100, then 200 again
      assert.deepStrictEqual(starts, [0, 100, 300, 550, 60_650, 60_850])
    }))

  it.effect("stops when interrupted", () =>
    Effect.gen(function*() {
      const { loop, starts } = scripted([Effect.fail("boom"), Effect.fail("boom")])
      const fiber = yield* Supervisor.restarting("test loop", loop).pipe(Effect.forkChild)
      yield* TestClock.adjust("150 millis")
      yield* Fiber.interrupt(fiber)
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(starts, [0, 100])
    }))
})
