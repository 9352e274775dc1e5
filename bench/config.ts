/**
 * Benchmark settings, from `--name=value` arguments or `BENCH_*` environment variables (arguments win).
 *
 * | argument | variable | default | meaning |
 * |---|---|---|---|
 * | `--events` | `BENCH_EVENTS` | 20 000 | events of the owner-writes and batched end-to-end workloads (per pipeline) |
 * | `--batch` | `BENCH_WRITE_BATCH` | 100 | entities per owner transaction in those workloads |
 * | `--writers` | `BENCH_WRITERS` | 4 | concurrent owner transactions in those workloads |
 * | `--warm-up` | `BENCH_WARM_UP` | 10 000 | untimed events before the owner-writes, batched and latency workloads are timed (see the README) |
 * | `--rate` | `BENCH_LATENCY_RATE` | 500 | single-entity transactions per second of the latency workload |
 * | `--latency-seconds` | `BENCH_LATENCY_SECONDS` | 10 | how long the latency workload runs |
 * | `--lanes` | `BENCH_LANES` | 8 | ordered lanes of the `library-lanes` phase (the batched workload, relay `orderedByEntity`) |
 * | — | — | 2 + 3 | relays + consumer instances of the `library-instances` phase (the batched workload, in one process) |
 * | `--pressure-rate` | `BENCH_PRESSURE_RATE` | 1 000 | the latency workload's rate under pressure (above the comfortable rate) |
 * | `--backlog` | `BENCH_BACKLOG` | 200 000 (1 000 000 with `BENCH_BACKLOG_1M=1`) | outbox backlog drained in the memory phase |
 * | `--relay-batch` | `BENCH_RELAY_BATCH` | 100 | rows claimed per relay batch (both pipelines) |
 * | `--consumer-batch` | `BENCH_CONSUMER_BATCH` | 250 | deliveries applied per consumer transaction (both) |
 * | `--prefetch` | `BENCH_PREFETCH` | 500 | unsettled deliveries per consumer (both) |
 * | `--phases` | `BENCH_PHASES` | all | comma-separated subset of the phases (see `phases`) |
 * | `--rounds` | `BENCH_ROUNDS` | 3 | rounds of the phases, library and baseline interleaved in each |
 *
 * The baseline uses the library's default batch sizes, so the ratio compares implementations, not tuning.
 */
import { Schema } from "effect"

/** Every phase, in the order they run. */
export const phases = [
  "library-writes",
  "baseline-writes",
  "library-throughput",
  "baseline-throughput",
  "library-latency",
  "baseline-latency",
  "library-pressure",
  "baseline-pressure",
  "library-lanes",
  "library-instances",
  "library-backlog",
  "baseline-backlog"
] as const
export type Phase = (typeof phases)[number]

/** The settings of a run. */
export interface Settings {
  readonly events: number
  readonly writeBatch: number
  readonly writers: number
  readonly warmUp: number
  readonly rate: number
  readonly latencySeconds: number
  readonly pressureRate: number
  readonly lanes: number
  readonly backlog: number
  readonly relayBatch: number
  readonly consumerBatch: number
  readonly prefetch: number
  readonly phases: ReadonlyArray<Phase>
  readonly rounds: number
}

/** The value of the command-line argument `--<name>=<value>`, if given. */
export const argument = (name: string): string | undefined => {
  const prefix = `--${name}=`
  return process.argv.find((arg) => arg.startsWith(prefix))?.slice(prefix.length)
}

const setting = (name: string, variable: string, fallback: number): number => {
  const raw = argument(name) ?? process.env[variable]
  const value = raw === undefined ? fallback : Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} / ${variable}: not a positive number: ${raw}`)
  return Math.floor(value)
}

const isPhase = Schema.is(Schema.Literals(phases))

/** Reads the settings of this process. */
export const read = (): Settings => {
  const selected = (argument("phases") ?? process.env.BENCH_PHASES)?.split(",").map((p) => p.trim())
  const unknown = selected?.filter((p) => !isPhase(p)) ?? []
  if (unknown.length > 0) throw new Error(`unknown phases: ${unknown.join(", ")} (known: ${phases.join(", ")})`)
  return {
    events: setting("events", "BENCH_EVENTS", 20_000),
    writeBatch: setting("batch", "BENCH_WRITE_BATCH", 100),
    writers: setting("writers", "BENCH_WRITERS", 4),
    warmUp: setting("warm-up", "BENCH_WARM_UP", 10_000),
    rate: setting("rate", "BENCH_LATENCY_RATE", 500),
    latencySeconds: setting("latency-seconds", "BENCH_LATENCY_SECONDS", 10),
    pressureRate: setting("pressure-rate", "BENCH_PRESSURE_RATE", 1_000),
    lanes: setting("lanes", "BENCH_LANES", 8),
    backlog: setting("backlog", "BENCH_BACKLOG", process.env.BENCH_BACKLOG_1M === "1" ? 1_000_000 : 200_000),
    relayBatch: setting("relay-batch", "BENCH_RELAY_BATCH", 100),
    consumerBatch: setting("consumer-batch", "BENCH_CONSUMER_BATCH", 250),
    prefetch: setting("prefetch", "BENCH_PREFETCH", 500),
    phases: selected === undefined ? phases : phases.filter((p) => selected.includes(p)),
    rounds: setting("rounds", "BENCH_ROUNDS", 3)
  }
}
