/**
 * Settings read with Config: defaults, overrides, clear errors; and durable retries that follow a Schedule.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option, Schedule } from "effect"
import * as RetrySchedule from "../src/RetrySchedule.ts"
import * as SyncConfig from "../src/SyncConfig.ts"

const withEnv = (env: Record<string, string>) =>
  Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env }))

describe("SyncConfig", () => {
  it.effect("has documented defaults", () =>
    Effect.gen(function*() {
      const relay = yield* SyncConfig.relay
      const consumer = yield* SyncConfig.consumer
      assert.deepStrictEqual(
        [
          relay.batchSize,
          relay.batchesInFlight,
          Duration.toMillis(relay.pollInterval),
          Duration.toHours(relay.retention)
        ],
        [100, 8, 1000, 168]
      )
      assert.deepStrictEqual(
        [consumer.batchSize, consumer.prefetch, consumer.inProcessRetries, consumer.maxBytes],
        [250, 500, 3, 262144]
      )
      assert.strictEqual(Duration.toHours(consumer.retryBudget), 24)
    }).pipe(withEnv({})))

  it.effect("reads overrides from the environment", () =>
    Effect.gen(function*() {
      const consumer = yield* SyncConfig.consumer
      assert.deepStrictEqual(
        [consumer.batchSize, Duration.toMillis(consumer.retryBase), consumer.inProcessRetries],
        [10, 50, 0]
      )
    }).pipe(
      withEnv({ SYNC_CONSUMER_BATCH_SIZE: "10", SYNC_DEPENDENCY_RETRY_BASE: "50 millis", SYNC_IN_PROCESS_RETRIES: "0" })
    ))

  it.effect("rejects a bad value with the name of the setting", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(SyncConfig.relay)
      assert.include(error.message, "SYNC_RELAY_BATCH_SIZE")
    }).pipe(withEnv({ SYNC_RELAY_BATCH_SIZE: "0" })))
})

describe("RetrySchedule", () => {
  const millis = (o: Option.Option<Duration.Duration>) => Option.map(o, Duration.toMillis)

  it.effect("gives the schedule's delay after n attempts, and none once its budget is spent", () =>
    Effect.gen(function*() {
      const schedule = SyncConfig.backoff({ base: "100 millis", maxDelay: "1 second", budget: "3 seconds" })
      const delays = yield* Effect.forEach([1, 2, 3, 4, 5, 6, 7], (n) => RetrySchedule.delayAfter(schedule, n))
      // retries start at 0.1, 0.3, 0.7, 1.5, 2.5 and 3.5 s: the last one is past the 3 s budget
      assert.deepStrictEqual(delays.map(millis), [
        Option.some(100),
        Option.some(200),
        Option.some(400),
        Option.some(800),
        Option.some(1000),
        Option.some(1000),
        Option.none()
      ])
    }))

  it.effect("follows a count-limited schedule", () =>
    Effect.gen(function*() {
      const schedule = Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 2 }))
      assert.deepStrictEqual(
        (yield* Effect.forEach([1, 2, 3], (n) => RetrySchedule.delayAfter(schedule, n))).map(millis),
        [Option.some(1000), Option.some(1000), Option.none()]
      )
    }))
})
