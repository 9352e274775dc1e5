/**
 * What each benchmark phase reports to the orchestrator (one JSON line on its standard output, prefixed
 * `RESULT `), as Schemas so the orchestrator decodes rather than trusts it.
 */
import { Schema } from "effect"

const Pipeline = Schema.Literals(["library", "baseline"])

/** The batched end-to-end workload. */
export const Throughput = Schema.Struct({
  kind: Schema.Literal("throughput"),
  pipeline: Pipeline,
  events: Schema.Number,
  /** From the first write to the last apply. */
  seconds: Schema.Number,
  eventsPerSecond: Schema.Number,
  /** How long the owner's writes took, and their rate. */
  writeSeconds: Schema.Number,
  writeEventsPerSecond: Schema.Number,
  /** CPU time of the phase process (user + system) per event over the measured span, in microseconds. */
  cpuMicrosPerEvent: Schema.Number,
  peakRss: Schema.Number
})
export type Throughput = typeof Throughput.Type

/** How long one half of the owner-writes workload took, its rate and the process CPU per event. */
export const Timed = Schema.Struct({
  seconds: Schema.Number,
  eventsPerSecond: Schema.Number,
  /** CPU time of the phase process (user + system) per event, in microseconds. */
  cpuMicrosPerEvent: Schema.Number
})

/** The owner's writes alone: creates, then updates of the same items. */
export const Writes = Schema.Struct({
  kind: Schema.Literal("writes"),
  pipeline: Pipeline,
  events: Schema.Number,
  creates: Timed,
  updates: Timed,
  /** The machine's load average (1, 5, 15 min) when the timed writes started. */
  loadAverage: Schema.Array(Schema.Number),
  peakRss: Schema.Number
})
export type Writes = typeof Writes.Type

/** The steady single-entity workload: commit → applied latency. */
export const Latency = Schema.Struct({
  kind: Schema.Literal("latency"),
  pipeline: Pipeline,
  events: Schema.Number,
  targetRate: Schema.Number,
  achievedRate: Schema.Number,
  p50: Schema.Number,
  p95: Schema.Number,
  p99: Schema.Number,
  max: Schema.Number,
  /** Events committed but not applied within 30 s of the end. */
  missing: Schema.Number,
  /** CPU time of the phase process (user + system) per event over the measured span, in microseconds. */
  cpuMicrosPerEvent: Schema.Number,
  /**
   * CPU time the whole machine spent per event over the measured span (the phase process, PostgreSQL,
   * RabbitMQ and anything else running), in microseconds; absent where `/proc/stat` cannot be read.
   */
  machineCpuMicrosPerEvent: Schema.optional(Schema.Number),
  peakRss: Schema.Number
})
export type Latency = typeof Latency.Type

/** Writing the backlog (no relay, no consumer). */
export const BacklogFill = Schema.Struct({
  kind: Schema.Literal("backlog-fill"),
  pipeline: Pipeline,
  events: Schema.Number,
  seconds: Schema.Number
})
export type BacklogFill = typeof BacklogFill.Type

/** Draining the backlog in a fresh process: the memory over time. */
export const BacklogDrain = Schema.Struct({
  kind: Schema.Literal("backlog-drain"),
  pipeline: Pipeline,
  events: Schema.Number,
  seconds: Schema.Number,
  eventsPerSecond: Schema.Number,
  rssStart: Schema.Number,
  rssPeak: Schema.Number,
  rssEnd: Schema.Number,
  /** RSS at 25 %, 50 % and 75 % of the drain, to show the trend. */
  rssQuartiles: Schema.Array(Schema.Number),
  heapUsedEnd: Schema.Number,
  /** CPU time of the phase process (user + system) per event over the measured span, in microseconds. */
  cpuMicrosPerEvent: Schema.Number,
  peakRss: Schema.Number
})
export type BacklogDrain = typeof BacklogDrain.Type

/** Any phase result. */
export const Result = Schema.Union([Writes, Throughput, Latency, BacklogFill, BacklogDrain])
export type Result = typeof Result.Type

/** The line prefix of a result. */
export const prefix = "RESULT "

/** What a phase process prints: its result and its RSS right after start-up (the process floor). */
export const Report = Schema.Struct({ rssBoot: Schema.Number, result: Result })
export type Report = typeof Report.Type
