/**
 * The workloads of the benchmark, written once against a small `Pipeline` interface that both the library
 * and the hand-written baseline implement: the owner's writes alone (creates, then updates), batched
 * end-to-end throughput, steady-rate commit → applied latency, and draining an outbox backlog while the
 * memory is watched.
 */
import { Clock, Effect, Fiber, type Redacted, type Scope } from "effect"
import os from "node:os"
import type { Settings } from "./config.ts"
import type { Names } from "./contract.ts"
import type * as Results from "./results.ts"
import { cpuMicros, machineBusyMicros, peakRss, rss, summarize } from "./stats.ts"

/** Where a phase runs: its two databases (owner, consumer), its RabbitMQ names and the settings. */
export interface PhaseEnv {
  readonly ownerUrl: Redacted.Redacted
  readonly consumerUrl: Redacted.Redacted
  readonly names: Names
  readonly settings: Settings
  /** The library's consumer reads this many ordered lanes, its relay publishing in order per entity. */
  readonly lanes?: number
  /** The library runs this many relays and consumer instances (default one of each). */
  readonly instances?: { readonly relays: number; readonly consumers: number }
}

/** Calls the pipeline makes into the workload when an event is applied (after its commit). */
export interface ApplyListener {
  readonly onApplied: (entityId: string) => void
}

/** A running sync pipeline, as the workloads drive it. */
export interface Pipeline {
  readonly name: "library" | "baseline"
  /** Commits `ids.length` new items in one owner transaction (with their events). */
  readonly write: (prefix: string, ids: ReadonlyArray<number>) => Effect.Effect<void, unknown>
  /**
   * Commits the new state of `ids.length` existing items (their `revision`) in one owner transaction, as a
   * handler that holds the whole new state writes it (no read of the items first).
   */
  readonly update: (prefix: string, ids: ReadonlyArray<number>, revision: number) => Effect.Effect<void, unknown>
  /** Appends `count` events straight to the outbox, 1 000 per transaction (for the backlog). */
  readonly fillOutbox: (prefix: string, count: number) => Effect.Effect<void, unknown>
  /** Starts the consumer (declares its queue) in the current scope. */
  readonly startConsumer: (listener: ApplyListener | null) => Effect.Effect<void, unknown, Scope.Scope>
  /** Starts the relay in the current scope. */
  readonly startRelay: Effect.Effect<void, unknown, Scope.Scope>
  /** Events applied by the consumer so far. */
  readonly applied: Effect.Effect<number>
}

/** Builds a pipeline in the current scope. */
export type MakePipeline = (env: PhaseEnv) => Effect.Effect<Pipeline, unknown, Scope.Scope>

const now = Effect.sync(() => performance.now())

/** Waits (polling every 5 ms) until `applied` reaches `count`; dies after `timeoutSeconds`. */
const awaitApplied = (pipeline: Pipeline, count: number, timeoutSeconds: number) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    while ((yield* pipeline.applied) < count) {
      if ((yield* Clock.currentTimeMillis) - start > timeoutSeconds * 1000) {
        return yield* Effect.die(new Error(`${pipeline.name}: only ${yield* pipeline.applied} of ${count} applied`))
      }
      yield* Effect.sleep("5 millis")
    }
  })

/** Writes `total` items in transactions of `batch`, `writers` transactions at a time. */
const writeAll = (pipeline: Pipeline, prefix: string, total: number, batch: number, writers: number) =>
  inBatches(total, batch, writers, (ids) => pipeline.write(prefix, ids))

/** Runs `f` on the numbers 0 … `total` - 1 in slices of `batch`, `writers` slices at a time. */
const inBatches = (
  total: number,
  batch: number,
  writers: number,
  f: (ids: ReadonlyArray<number>) => Effect.Effect<void, unknown>
) =>
  Effect.forEach(
    Array.from({ length: Math.ceil(total / batch) }, (_, t) => t),
    (t) => f(Array.from({ length: Math.min(batch, total - t * batch) }, (_, i) => t * batch + i)),
    { concurrency: writers, discard: true }
  )

/** Times `effect` over `events` events: wall time, rate and the process CPU per event. */
const timed = (events: number, effect: Effect.Effect<void, unknown>) =>
  Effect.gen(function*() {
    const start = yield* now
    const cpuStart = cpuMicros()
    yield* effect
    const seconds = ((yield* now) - start) / 1000
    return { seconds, eventsPerSecond: events / seconds, cpuMicrosPerEvent: (cpuMicros() - cpuStart) / events }
  })

/**
 * The owner's writes alone (no relay, no consumer): after a warm-up of `warmUp` creates and their updates,
 * `events` new items created in transactions of `writeBatch` by `writers` concurrent writers, then each of
 * them updated once, in the same transactions; each half timed on its own.
 */
export const writes = (make: MakePipeline, env: PhaseEnv): Effect.Effect<Results.Writes, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const { events, warmUp, writeBatch, writers } = env.settings
    const pipeline = yield* make(env)
    yield* inBatches(warmUp, writeBatch, writers, (ids) => pipeline.write("warm", ids))
    yield* inBatches(warmUp, writeBatch, writers, (ids) => pipeline.update("warm", ids, 1))
    const loadAverage = os.loadavg()
    const creates = yield* timed(events, inBatches(events, writeBatch, writers, (ids) => pipeline.write("w", ids)))
    const updates = yield* timed(
      events,
      inBatches(events, writeBatch, writers, (ids) => pipeline.update("w", ids, 1))
    )
    return {
      kind: "writes",
      pipeline: pipeline.name,
      events,
      creates,
      updates,
      loadAverage,
      peakRss: peakRss()
    } satisfies Results.Writes
  }))

/**
 * Batched end-to-end throughput: `warmUp` warm-up events, then `events` new items written in transactions
 * of `writeBatch` by `writers` concurrent writers while the relay and the consumer run; timed from the
 * first write to the last apply.
 */
export const throughput = (make: MakePipeline, env: PhaseEnv): Effect.Effect<Results.Throughput, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const { events, warmUp, writeBatch, writers } = env.settings
    const pipeline = yield* make(env)
    yield* pipeline.startConsumer(null)
    yield* pipeline.startRelay
    yield* writeAll(pipeline, "warm", warmUp, writeBatch, writers)
    yield* awaitApplied(pipeline, warmUp, 120)
    const start = yield* now
    const cpuStart = cpuMicros()
    yield* writeAll(pipeline, "t", events, writeBatch, writers)
    const written = yield* now
    yield* awaitApplied(pipeline, warmUp + events, 600)
    const end = yield* now
    const cpu = cpuMicros() - cpuStart
    const seconds = (end - start) / 1000
    const writeSeconds = (written - start) / 1000
    return {
      kind: "throughput",
      pipeline: pipeline.name,
      events,
      seconds,
      eventsPerSecond: events / seconds,
      writeSeconds,
      writeEventsPerSecond: events / writeSeconds,
      cpuMicrosPerEvent: cpu / events,
      peakRss: peakRss()
    } satisfies Results.Throughput
  }))

/**
 * Steady-rate latency: single-item transactions started every 1/`rate` s for `latencySeconds` (after a
 * warm-up: `warmUp` single-item transactions as fast as `writers` make them, then one second at the same
 * rate); for each, the time from its commit returning at the owner to its apply committing at the consumer.
 */
export const latency = (make: MakePipeline, env: PhaseEnv): Effect.Effect<Results.Latency, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const { latencySeconds, rate, warmUp, writers } = env.settings
    const appliedAt = new Map<string, number>()
    const pipeline = yield* make(env)
    yield* pipeline.startConsumer({ onApplied: (id) => appliedAt.set(id, performance.now()) })
    yield* pipeline.startRelay

    const steady = (prefix: string, count: number) =>
      Effect.gen(function*() {
        const committedAt = new Map<string, number>()
        const fibers: Array<Fiber.Fiber<void, unknown>> = []
        const start = yield* now
        for (let i = 0; i < count; i++) {
          const wait = start + (i * 1000) / rate - (yield* now)
          if (wait >= 1) yield* Effect.sleep(Math.floor(wait))
          const record = Effect.sync(() => void committedAt.set(`${prefix}-${i}`, performance.now()))
          fibers.push(yield* Effect.forkChild(Effect.andThen(pipeline.write(prefix, [i]), record)))
        }
        yield* Fiber.joinAll(fibers)
        const end = yield* now
        return { committedAt, seconds: (end - start) / 1000 }
      })

    yield* writeAll(pipeline, "burst", warmUp, 1, writers)
    yield* awaitApplied(pipeline, warmUp, 120)
    const warm = yield* steady("warm", rate)
    yield* awaitApplied(pipeline, warmUp + warm.committedAt.size, 60)
    const cpuStart = cpuMicros()
    const machineStart = machineBusyMicros()
    const measured = yield* steady("lat", Math.round(rate * latencySeconds))
    const deadline = (yield* now) + 30_000
    const isDone = () => [...measured.committedAt.keys()].every((id) => appliedAt.has(id))
    while (!isDone() && (yield* now) < deadline) yield* Effect.sleep("10 millis")
    const cpu = cpuMicros() - cpuStart
    const machineEnd = machineBusyMicros()
    const latencies: Array<number> = []
    let missing = 0
    for (const [id, committed] of measured.committedAt) {
      const applied = appliedAt.get(id)
      if (applied === undefined) missing++
      else latencies.push(applied - committed)
    }
    const summary = summarize(latencies)
    return {
      kind: "latency",
      pipeline: pipeline.name,
      events: measured.committedAt.size,
      targetRate: rate,
      achievedRate: measured.committedAt.size / measured.seconds,
      p50: summary.p50,
      p95: summary.p95,
      p99: summary.p99,
      max: summary.max,
      missing,
      cpuMicrosPerEvent: cpu / measured.committedAt.size,
      ...(machineStart === undefined || machineEnd === undefined
        ? {}
        : { machineCpuMicrosPerEvent: (machineEnd - machineStart) / measured.committedAt.size }),
      peakRss: peakRss()
    } satisfies Results.Latency
  }))

/** Writes the backlog to the outbox; no relay or consumer runs. */
export const backlogFill = (make: MakePipeline, env: PhaseEnv): Effect.Effect<Results.BacklogFill, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const pipeline = yield* make(env)
    const start = yield* now
    yield* pipeline.fillOutbox("b", env.settings.backlog)
    return {
      kind: "backlog-fill",
      pipeline: pipeline.name,
      events: env.settings.backlog,
      seconds: ((yield* now) - start) / 1000
    } satisfies Results.BacklogFill
  }))

/**
 * Drains the backlog (in a process that did not write it): starts the consumer and the relay, then
 * samples the RSS every 100 ms until every event is applied.
 */
export const backlogDrain = (make: MakePipeline, env: PhaseEnv): Effect.Effect<Results.BacklogDrain, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const total = env.settings.backlog
    const pipeline = yield* make(env)
    const rssStart = rss()
    const start = yield* now
    const cpuStart = cpuMicros()
    yield* pipeline.startConsumer(null)
    yield* pipeline.startRelay
    let rssPeak = rssStart
    const quartiles: Array<number> = []
    while (true) {
      const applied = yield* pipeline.applied
      const current = rss()
      rssPeak = Math.max(rssPeak, current)
      while (quartiles.length < 3 && applied >= ((quartiles.length + 1) * total) / 4) quartiles.push(current)
      if (applied >= total) break
      if ((yield* now) - start > 1_800_000) {
        return yield* Effect.die(new Error(`drain: ${applied} of ${total} after 30 min`))
      }
      yield* Effect.sleep("100 millis")
    }
    const end = yield* now
    const rssEnd = rss()
    const seconds = (end - start) / 1000
    return {
      kind: "backlog-drain",
      pipeline: pipeline.name,
      events: total,
      seconds,
      eventsPerSecond: total / seconds,
      rssStart,
      rssPeak: Math.max(rssPeak, rssEnd),
      rssEnd,
      rssQuartiles: quartiles,
      heapUsedEnd: process.memoryUsage().heapUsed,
      cpuMicrosPerEvent: (cpuMicros() - cpuStart) / total,
      peakRss: peakRss()
    } satisfies Results.BacklogDrain
  }))
