/**
 * `Health` in memory with the TestClock: a database outage fails readiness naming the database and since
 * when (liveness holds: an outage is waited out), and it recovers by itself; a consumer paused by the broker
 * is not subscribed; a relay whose oldest unpublished event is too old makes no progress; a delivery
 * unsettled for too long fails liveness; a probe that does not answer fails its check after the timeout.
 * Every check keeps since when it has been in its state. `toJson` is the body of `/health`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { SqlError } from "effect/sql"
import { TestClock } from "effect/testing"
import * as Health from "../src/Health.ts"
import { Outbox } from "../src/Outbox.ts"
import { Relay, type RelayStatus } from "../src/Relay.ts"
import { type ConsumerStatus, SyncConsumer } from "../src/SyncConsumer.ts"
import { Transactor } from "../src/Transactor.ts"
import * as Harness from "./harness.ts"

/** A database whose probe fails while `down` is set. */
const database = () => {
  const state = { down: false }
  const transactor = Transactor.of({
    withTransaction: (effect) => effect,
    probe: Effect.suspend(() =>
      state.down
        ? Effect.fail(
          new SqlError.SqlError({ reason: new SqlError.ConnectionError({ cause: new Error("connection refused") }) })
        )
        : Effect.void
    )
  })
  return { state, layer: Layer.succeed(Transactor, transactor) }
}

const checkOf = (report: Health.Report, name: string): Health.Check => {
  const found = report.checks.find((check) => check.name === name)
  assert.isDefined(found, `a check named ${name}`)
  return found!
}

const fine: ConsumerStatus = { paused: null, inFlight: 0, oldestUnsettledAt: null }

/** A consumer whose status is `status.current`. */
const consumer = (status: { current: ConsumerStatus }) =>
  Layer.mock(SyncConsumer, { service: "directory", status: Effect.sync(() => status.current) })

describe("Health", () => {
  it.effect("a database outage fails readiness naming the database and since when; it recovers", () =>
    Effect.gen(function*() {
      const db = database()
      const health = yield* Health.make().pipe(Effect.provide(db.layer))
      const ready = yield* health.readiness
      assert.isTrue(ready.ok)
      assert.deepStrictEqual(ready.checks.map((check) => check.name), ["database"])
      assert.deepStrictEqual(checkOf(ready, "database"), { name: "database", ok: true, since: 0 })

      yield* TestClock.adjust("10 seconds")
      db.state.down = true
      const down = yield* health.readiness
      assert.isFalse(down.ok)
      const failing = checkOf(down, "database")
      assert.isFalse(failing.ok)
      assert.strictEqual(failing.since, 10_000)
      assert.match(failing.cause ?? "", /the database does not answer \(ConnectionError\)/)
      const json = Health.toJson(down, yield* health.liveness)
      assert.strictEqual(json.status, "unavailable")
      assert.deepStrictEqual(json.readiness["database"], {
        ok: false,
        since: "1970-01-01T00:00:10.000Z",
        cause: failing.cause!
      })
      // an outage is waited out: liveness holds
      assert.isTrue((yield* health.liveness).ok)

      yield* TestClock.adjust("1 minute")
      assert.strictEqual(checkOf(yield* health.readiness, "database").since, 10_000, "still failing since the start")

      db.state.down = false
      yield* TestClock.adjust("5 seconds")
      const recovered = yield* health.readiness
      assert.isTrue(recovered.ok)
      assert.deepStrictEqual(checkOf(recovered, "database"), { name: "database", ok: true, since: 75_000 })
      assert.strictEqual(Health.toJson(recovered, yield* health.liveness).status, "ok")
    }))

  it.effect("a consumer paused by the broker is not subscribed; the broker is named, since the pause", () =>
    Effect.gen(function*() {
      const status = { current: fine }
      const health = yield* Health.make().pipe(Effect.provide(Layer.merge(database().layer, consumer(status))))
      const ready = yield* health.readiness
      assert.isTrue(ready.ok)
      assert.deepStrictEqual(ready.checks.map((check) => check.name), ["database", "broker", "consumer"])

      yield* TestClock.adjust("30 seconds")
      status.current = { ...fine, paused: { dependency: "broker", since: 20_000, error: "socket closed" } }
      const paused = yield* health.readiness
      assert.isFalse(paused.ok)
      assert.isTrue(checkOf(paused, "database").ok)
      assert.deepInclude(checkOf(paused, "broker"), { ok: false, since: 20_000 })
      assert.match(checkOf(paused, "broker").cause ?? "", /the consumer is paused: the broker does not answer/)
      assert.deepInclude(checkOf(paused, "consumer"), { ok: false, since: 20_000 })
      assert.match(checkOf(paused, "consumer").cause ?? "", /not subscribed/)
      assert.isTrue((yield* health.liveness).ok, "a pause is not a reason to restart")

      status.current = fine
      yield* TestClock.adjust("1 second")
      const resumed = yield* health.readiness
      assert.isTrue(resumed.ok)
      assert.strictEqual(checkOf(resumed, "consumer").since, 31_000)
    }))

  it.effect("a relay: its failing dependency is named with the relay's since; an old backlog is no progress", () =>
    Effect.gen(function*() {
      const relayStatus: { current: RelayStatus } = {
        current: { database: { ok: true, since: 0 }, broker: { ok: true, since: 0 } }
      }
      const pending: { current: { count: number; oldestCreatedAt: number | null } } = {
        current: { count: 0, oldestCreatedAt: null }
      }
      const parts = Layer.mergeAll(
        database().layer,
        Layer.succeed(Relay, Relay.of({ status: Effect.sync(() => relayStatus.current) })),
        Layer.mock(Outbox, { pending: Effect.sync(() => pending.current) })
      )
      const health = yield* Health.make({ maxRelayLag: "1 minute" }).pipe(Effect.provide(parts))
      const ready = yield* health.readiness
      assert.deepStrictEqual(ready.checks.map((check) => check.name), ["database", "broker", "relay"])
      assert.isTrue(ready.ok)

      yield* TestClock.adjust("2 minutes")
      relayStatus.current = {
        ...relayStatus.current,
        broker: { ok: false, since: 90_000, error: "BrokerUnavailable: connection reset" }
      }
      pending.current = { count: 42, oldestCreatedAt: 30_000 }
      const stalled = yield* health.readiness
      assert.deepInclude(checkOf(stalled, "broker"), { ok: false, since: 90_000 })
      assert.match(checkOf(stalled, "broker").cause ?? "", /the relay cannot reach the broker/)
      assert.deepInclude(checkOf(stalled, "relay"), { ok: false, since: 90_000 })
      assert.match(checkOf(stalled, "relay").cause ?? "", /the oldest of 42 unpublished events is 90 s old/)

      relayStatus.current = { ...relayStatus.current, broker: { ok: true, since: 125_000 } }
      pending.current = { count: 0, oldestCreatedAt: null }
      yield* TestClock.adjust("10 seconds")
      assert.isTrue((yield* health.readiness).ok)
    }))

  it.effect("a delivery unsettled for too long fails liveness (not while paused)", () =>
    Effect.gen(function*() {
      const status = { current: fine }
      const health = yield* Health.make({ maxUnsettled: "10 minutes" }).pipe(
        Effect.provide(Layer.merge(database().layer, consumer(status)))
      )
      status.current = { ...fine, inFlight: 1, oldestUnsettledAt: 0 }
      yield* TestClock.adjust("10 minutes")
      assert.isTrue((yield* health.liveness).ok)
      yield* TestClock.adjust("1 second")
      const stuck = yield* health.liveness
      assert.isFalse(stuck.ok)
      assert.deepInclude(checkOf(stuck, "consumer"), { ok: false, since: 600_000 })
      assert.match(checkOf(stuck, "consumer").cause ?? "", /stuck: a delivery has been unsettled for 601 s/)
      assert.isTrue(checkOf(stuck, "process").ok)

      status.current = { ...status.current, paused: { dependency: "database", since: 0, error: "down" } }
      assert.isTrue((yield* health.liveness).ok, "held through an outage: not stuck")
    }))

  it.effect("a probe that does not answer fails its check after the probe timeout", () =>
    Effect.gen(function*() {
      const hanging = Layer.succeed(
        Transactor,
        Transactor.of({ withTransaction: (effect) => effect, probe: Effect.never })
      )
      const health = yield* Health.make({ probeTimeout: "2 seconds" }).pipe(Effect.provide(hanging))
      const fiber = yield* Effect.forkChild(health.readiness)
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      assert.deepInclude(checkOf(report, "database"), { ok: false, since: 2_000 })
      assert.match(checkOf(report, "database").cause ?? "", /no answer within 2s/)
    }))

  it.effect("custom checks join readiness and liveness", () =>
    Effect.gen(function*() {
      const health = yield* Health.make({
        readiness: [{ name: "search-index", probe: Effect.succeed({ ok: false, cause: "rebuilding" }) }],
        liveness: [{ name: "worker", probe: Effect.succeed({ ok: true }) }]
      })
      const json = Health.toJson(yield* health.readiness, yield* health.liveness)
      assert.deepStrictEqual(json, {
        status: "unavailable",
        readiness: { "search-index": { ok: false, since: "1970-01-01T00:00:00.000Z", cause: "rebuilding" } },
        liveness: {
          process: { ok: true, since: "1970-01-01T00:00:00.000Z" },
          worker: { ok: true, since: "1970-01-01T00:00:00.000Z" }
        }
      })
    }))

  it.effect("a running memory system: database, broker and consumer ready, process and consumer live", () =>
    Effect.gen(function*() {
      const json = yield* Health.check.pipe(Effect.provide(Health.layer().pipe(Layer.provide(Harness.systemLayer()))))
      assert.strictEqual(json.status, "ok")
      assert.deepStrictEqual(Object.keys(json.readiness), ["database", "broker", "consumer"])
      assert.deepStrictEqual(Object.keys(json.liveness), ["process", "consumer"])
    }))
})
