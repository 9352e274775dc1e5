/**
 * Fault: bursts of poison messages — bad JSON, a bad envelope, oversized bodies, an unknown entity, a bad
 * payload, the wrong producer — interleaved with the stream of good events. Every good event must be
 * applied once; every bad one must be dead-lettered (`broker.deadLetters`) with its reason, exactly once.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { Broker, maxDeadLetterPage } from "../../src/Broker.ts"
import { quiet, setup, stream } from "./fixture.ts"
import { publishBurst, type Published } from "./poison.ts"
import { broker, consumer, relay } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { writeStream } from "./writer.ts"

describe("faults: poison messages", () => {
  it.live(
    "dead-letters every bad message with its reason and applies every good one once",
    () =>
      Effect.gen(function*() {
        const fixture = yield* setup("poison")
        yield* Layer.build(consumer(fixture.url, fixture.names))
        yield* Layer.build(relay(fixture.url, fixture.names))
        const writer = yield* writeStream(stream).pipe(Effect.provide(fixture.writer), Effect.forkChild)
        const poison: Array<Published> = []
        let bursts = 0
        while (writer.pollUnsafe() === undefined) {
          yield* Effect.sleep("800 millis")
          // no more than one page of dead letters can be read back: a slow stream stops the bursts there
          if (poison.length + 50 > maxDeadLetterPage) continue
          poison.push(...(yield* publishBurst(fixture.names, bursts++, 3)))
        }
        const written = yield* Fiber.join(writer)
        const t = yield* awaitQuiescence(fixture.sql, fixture.names)

        const inspector = Context.get(yield* Layer.build(broker(fixture.names, "inspector")), Broker)
        const dead = (yield* inspector.deadLetters(fixture.names.queue, { limit: maxDeadLetterPage })).items
        const byId = new Map<string, Array<string>>()
        for (const letter of dead) byId.set(letter.messageId, [...(byId.get(letter.messageId) ?? []), letter.reason])
        const missing = poison.filter((p) => !byId.has(p.messageId))
        const twice = [...byId.values()].filter((reasons) => reasons.length > 1).length
        const wrongReason = poison.filter((p) => !(byId.get(p.messageId)?.[0] ?? "").startsWith(`${p.kind.reason}`))
        const good = dead.filter((letter) => !letter.messageId.startsWith("poison-"))
        yield* judge(
          "poison messages",
          t,
          {
            injected: poison.length,
            detail: `${poison.length} poison messages in ${bursts} bursts; dead-lettered ${dead.length}, ` +
              `missing ${missing.length}, twice ${twice}, wrong reason ${wrongReason.length}, good ones dead-lettered ${good.length}`
          },
          written,
          fixture.names
        )
        assert.deepStrictEqual(missing.map((p) => p.messageId), [], "poison messages not dead-lettered")
        assert.deepStrictEqual(
          wrongReason.map((p) => `${p.kind.kind}: ${byId.get(p.messageId)?.[0] ?? ""}`),
          [],
          "dead letters with the wrong reason"
        )
        assert.strictEqual(twice, 0, "poison messages dead-lettered twice")
        assert.strictEqual(good.length, 0, "good messages dead-lettered")
        assert.strictEqual(dead.length, poison.length)
      }).pipe(quiet),
    150_000
  )
})
