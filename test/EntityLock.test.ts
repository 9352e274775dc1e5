/**
 * EntityLock: effects holding a key exclude each other, disjoint keys run together, requests are served
 * first come, first served per key, and a request that fails or is interrupted gives its keys back.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import * as EntityLock from "../src/EntityLock.ts"

/** Forks `effect` under `keys`; it records its name when it starts and then waits for `done`. */
const holder = (lock: EntityLock.EntityLock, keys: ReadonlyArray<string>, name: string, log: Array<string>) =>
  Effect.gen(function*() {
    const done = yield* Deferred.make<void>()
    const fiber = yield* Effect.forkChild(
      lock(keys, Effect.andThen(Effect.sync(() => log.push(name)), Deferred.await(done)))
    )
    yield* Effect.yieldNow
    return { done, fiber }
  })

const finish = (h: { readonly done: Deferred.Deferred<void>; readonly fiber: Fiber.Fiber<void> }) =>
  Effect.andThen(Deferred.succeed(h.done, undefined), Fiber.join(h.fiber))

describe("EntityLock", () => {
  it.effect("an effect waits until the holder of one of its keys is done", () =>
    Effect.gen(function*() {
      const lock = EntityLock.make()
      const log: Array<string> = []
      const a = yield* holder(lock, ["x", "y"], "a", log)
      const b = yield* holder(lock, ["z", "y"], "b", log)
      assert.deepStrictEqual(log, ["a"])
      yield* finish(a)
      yield* Effect.yieldNow
      assert.deepStrictEqual(log, ["a", "b"])
      yield* finish(b)
    }))

  it.effect("effects on disjoint keys run at the same time", () =>
    Effect.gen(function*() {
      const lock = EntityLock.make()
      const log: Array<string> = []
      const a = yield* holder(lock, ["x", "y"], "a", log)
      const b = yield* holder(lock, ["z"], "b", log)
      assert.deepStrictEqual(log, ["a", "b"])
      yield* finish(a)
      yield* finish(b)
    }))

  it.effect("a request does not overtake an earlier one that wants one of its keys", () =>
    Effect.gen(function*() {
      const lock = EntityLock.make()
      const log: Array<string> = []
      const a = yield* holder(lock, ["x"], "a", log)
      const b = yield* holder(lock, ["x", "y"], "b", log) // waits for a
      const c = yield* holder(lock, ["y"], "c", log) // y is free, but b came first and wants it
      const d = yield* holder(lock, ["w"], "d", log) // nobody wants w
      assert.deepStrictEqual(log, ["a", "d"])
      yield* finish(a)
      yield* Effect.yieldNow
      assert.deepStrictEqual(log, ["a", "d", "b"])
      yield* finish(b)
      yield* Effect.yieldNow
      assert.deepStrictEqual(log, ["a", "d", "b", "c"])
      yield* finish(c)
      yield* finish(d)
    }))

  it.effect("a failing effect gives its keys back", () =>
    Effect.gen(function*() {
      const lock = EntityLock.make()
      const failed = yield* lock(["x"], Effect.fail("boom")).pipe(Effect.flip)
      assert.strictEqual(failed, "boom")
      assert.strictEqual(yield* lock(["x"], Effect.succeed("again")), "again")
    }))

  it.effect("an interrupted waiter leaves the queue, and the requests behind it go", () =>
    Effect.gen(function*() {
      const lock = EntityLock.make()
      const log: Array<string> = []
      const a = yield* holder(lock, ["x"], "a", log)
      const b = yield* holder(lock, ["x", "y"], "b", log)
      const c = yield* holder(lock, ["y"], "c", log)
      assert.deepStrictEqual(log, ["a"])
      yield* Fiber.interrupt(b.fiber)
      yield* Effect.yieldNow
      assert.deepStrictEqual(log, ["a", "c"])
      yield* finish(c)
      yield* finish(a)
      // every key is free again
      assert.strictEqual(yield* lock(["x", "y"], Effect.succeed("free")), "free")
    }))

  it.effect("an interrupted holder gives its keys back", () =>
    Effect.gen(function*() {
      const lock = EntityLock.make()
      const log: Array<string> = []
      const a = yield* holder(lock, ["x"], "a", log)
      const b = yield* holder(lock, ["x"], "b", log)
      yield* Fiber.interrupt(a.fiber)
      yield* Effect.yieldNow
      assert.deepStrictEqual(log, ["a", "b"])
      yield* finish(b)
    }))
})
