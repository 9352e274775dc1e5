/**
 * The benchmark's printed table: events/s of both pipelines and their ratio, the process CPU per event
 * (steadier than rates on a busy machine), latency percentiles, memory
 * while a backlog drains, peak RSS, and the DESIGN §7 targets (reported, never asserted).
 */
import type { Settings } from "./config.ts"
import type { BacklogDrain, BacklogFill, Latency, Throughput, Writes } from "./results.ts"
import { int, mib } from "./stats.ts"

type Pair<A> = { readonly library: A | undefined; readonly baseline: A | undefined }

/** The figures of one round: each workload's result of both pipelines. */
export interface Figures {
  readonly writes: Pair<Writes>
  readonly throughput: Pair<Throughput>
  readonly latency: Pair<Latency>
  /** The latency workload above the comfortable rate (`--pressure-rate`). */
  readonly pressure: Pair<Latency>
  /** The batched workload with ordered lanes (`library`) beside the library's on one queue (`baseline`). */
  readonly lanes: Pair<Throughput>
  /** The batched workload with 2 relays and 3 consumer instances (`library`) beside one of each (`baseline`). */
  readonly instances: Pair<Throughput>
  readonly backlogFill: Pair<BacklogFill>
  readonly backlogDrain: Pair<BacklogDrain>
}

/** One round: its figures and the 1-minute load average when each of its phases started. */
export interface Round {
  readonly round: number
  readonly figures: Figures
  readonly loadAverages: Readonly<Record<string, number>>
}

/** Everything the table shows. */
export interface TableInput {
  readonly settings: Settings
  readonly rounds: ReadonlyArray<Round>
  readonly peakRss: number
  readonly rssBoot: number
  readonly loadAverageAtEnd: ReadonlyArray<number>
  readonly machine: {
    readonly cores: number
    readonly node: string
    readonly loadAverageAtStart: ReadonlyArray<number>
  }
}

const row = (label: string, library: string, baseline: string, ratio = "") =>
  `${label.padEnd(46)}${library.padStart(28)}${baseline.padStart(28)}${ratio.padStart(18)}`

const defined = (values: ReadonlyArray<number | undefined>): ReadonlyArray<number> =>
  values.filter((v): v is number => v !== undefined && Number.isFinite(v))

/** The median of the values (the mean of the middle two for an even count); undefined when none. */
export const median = (values: ReadonlyArray<number | undefined>): number | undefined => {
  const sorted = [...defined(values)].sort((a, b) => a - b)
  if (sorted.length === 0) return undefined
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2
}

/** How a figure is written: its number, and its unit. */
interface Format {
  readonly number: (n: number) => string
  readonly unit: string
}

const rate: Format = { number: int, unit: "ev/s" }
const microseconds: Format = { number: int, unit: "µs" }
const milliseconds: Format = { number: (n) => n.toFixed(1), unit: "ms" }
const mebibytes: Format = { number: (n) => (n / 1024 / 1024).toFixed(1), unit: "MiB" }
const seconds: Format = { number: (n) => n.toFixed(1), unit: "s" }
const count: Format = { number: int, unit: "" }

/** The median with the range of the rounds, e.g. `5,120 ev/s (4,980–5,300)`; `—` when not measured. */
const spread = (values: ReadonlyArray<number | undefined>, format: Format): string => {
  const measured = defined(values)
  const mid = median(measured)
  if (mid === undefined) return "—"
  const unit = format.unit === "" ? "" : ` ${format.unit}`
  if (measured.length === 1) return `${format.number(mid)}${unit}`
  const range = `${format.number(Math.min(...measured))}–${format.number(Math.max(...measured))}`
  return `${format.number(mid)}${unit} (${range})`
}

const percent = (n: number) => `${(100 * n).toFixed(0)} %`
const bare = (n: number) => (100 * n).toFixed(0)

type Both = readonly [library: number | undefined, baseline: number | undefined]

/** A figure of both pipelines' results. */
const both = <A>(pair: Pair<A>, f: (a: A) => number | undefined): Both => [
  pair.library === undefined ? undefined : f(pair.library),
  pair.baseline === undefined ? undefined : f(pair.baseline)
]

/** Library over baseline per round, then their median and range. */
const ratios = (pairs: ReadonlyArray<Both>) =>
  defined(
    pairs.map(([library, baseline]) =>
      library === undefined || baseline === undefined || baseline === 0 ? undefined : library / baseline
    )
  )

const verdict = (ok: boolean | undefined) => ok === undefined ? "not measured" : ok ? "met" : "NOT met"

/** Renders the table. */
export const render = ({ loadAverageAtEnd, machine, peakRss, rounds, rssBoot, settings }: TableInput): string => {
  const figures = rounds.map((r) => r.figures)
  /** A figure of both pipelines over the rounds, with the median of the per-round ratios. */
  const metric = (
    label: string,
    pick: (f: Figures) => Both,
    format: Format,
    withRatio = true
  ) => {
    const pairs = figures.map(pick)
    const r = ratios(pairs)
    const ratioText = !withRatio || r.length === 0
      ? ""
      : r.length === 1
      ? percent(r[0] ?? Number.NaN)
      : `${bare(median(r) ?? Number.NaN)} (${bare(Math.min(...r))}–${bare(Math.max(...r))}) %`
    return row(label, spread(pairs.map((p) => p[0]), format), spread(pairs.map((p) => p[1]), format), ratioText)
  }
  const medianOf = (pick: (f: Figures) => number | undefined) => median(figures.map(pick))
  const batchedRatio = median(ratios(figures.map((f) => both(f.throughput, (t) => t.eventsPerSecond))))
  const batched = medianOf((f) => f.throughput.library?.eventsPerSecond)
  const p99 = medianOf((f) => f.latency.library?.p99)
  const missing = medianOf((f) => f.latency.library?.missing)
  /** RSS at 25 %, 50 % and 75 % of the drain (medians of the rounds), in MiB. */
  const quartiles = (side: (f: Figures) => BacklogDrain | undefined) => {
    if (!figures.some((f) => side(f) !== undefined)) return "—"
    return [0, 1, 2].map((q) =>
      ((median(figures.map((f) => side(f)?.rssQuartiles[q])) ?? Number.NaN) / 1024 / 1024).toFixed(0)
    ).join("/")
  }
  const lines = [
    `${rounds.length} round${rounds.length === 1 ? "" : "s"}, library and baseline interleaved; each figure is the ` +
    `median (range) of the rounds, each ratio the median of the per-round ratios; timed after ` +
    `${int(settings.warmUp)} warm-up events.`,
    row("", "library", "baseline", "lib/base"),
    metric(
      `Owner writes alone (${int(settings.events)}, ${settings.writeBatch}/tx): creates`,
      (f) => both(f.writes, (w) => w.creates.eventsPerSecond),
      rate
    ),
    metric("  updates (the new state, no read)", (f) => both(f.writes, (w) => w.updates.eventsPerSecond), rate),
    metric(
      "  CPU of the phase process per event: creates",
      (f) => both(f.writes, (w) => w.creates.cpuMicrosPerEvent),
      microseconds
    ),
    metric("  updates", (f) => both(f.writes, (w) => w.updates.cpuMicrosPerEvent), microseconds),
    metric(
      `Batched end-to-end (${int(settings.events)} events, ${settings.writeBatch}/tx)`,
      (f) => both(f.throughput, (t) => t.eventsPerSecond),
      rate
    ),
    metric("  owner writes (creates) during it", (f) => both(f.throughput, (t) => t.writeEventsPerSecond), rate),
    metric(
      `Library with ${settings.lanes} lanes / on one queue, batched`,
      (f) => both(f.lanes, (t) => t.eventsPerSecond),
      rate
    ),
    metric("  CPU per event", (f) => both(f.lanes, (t) => t.cpuMicrosPerEvent), microseconds),
    metric(
      "Library with 2 relays + 3 consumers / one of each",
      (f) => both(f.instances, (t) => t.eventsPerSecond),
      rate
    ),
    metric("  CPU per event", (f) => both(f.instances, (t) => t.cpuMicrosPerEvent), microseconds),
    metric(
      `Backlog drain, relay + consumer (${int(settings.backlog)})`,
      (f) => both(f.backlogDrain, (d) => d.eventsPerSecond),
      rate
    ),
    metric(
      "CPU of the phase process per event: batched",
      (f) => both(f.throughput, (t) => t.cpuMicrosPerEvent),
      microseconds
    ),
    metric("  drain", (f) => both(f.backlogDrain, (d) => d.cpuMicrosPerEvent), microseconds),
    metric(
      "  latency workload (one event per transaction)",
      (f) => both(f.latency, (l) => l.cpuMicrosPerEvent),
      microseconds
    ),
    metric(
      "  whole machine (all processes), latency",
      (f) => both(f.latency, (l) => l.machineCpuMicrosPerEvent),
      microseconds
    ),
    metric(
      `Latency commit → applied @ ${settings.rate}/s, achieved`,
      (f) => both(f.latency, (l) => l.achievedRate),
      rate
    ),
    metric("  p50", (f) => both(f.latency, (l) => l.p50), milliseconds),
    metric("  p95", (f) => both(f.latency, (l) => l.p95), milliseconds),
    metric("  p99", (f) => both(f.latency, (l) => l.p99), milliseconds),
    metric("  max", (f) => both(f.latency, (l) => l.max), milliseconds),
    metric("  not applied within 30 s", (f) => both(f.latency, (l) => l.missing), count, false),
    metric(
      `Under pressure @ ${settings.pressureRate}/s, achieved`,
      (f) => both(f.pressure, (l) => l.achievedRate),
      rate
    ),
    metric("  p50", (f) => both(f.pressure, (l) => l.p50), milliseconds),
    metric("  p99", (f) => both(f.pressure, (l) => l.p99), milliseconds),
    metric("  max", (f) => both(f.pressure, (l) => l.max), milliseconds),
    metric("  not applied within 30 s", (f) => both(f.pressure, (l) => l.missing), count, false),
    metric("  CPU per event", (f) => both(f.pressure, (l) => l.cpuMicrosPerEvent), microseconds),
    metric(
      "  the whole machine's CPU per event",
      (f) => both(f.pressure, (l) => l.machineCpuMicrosPerEvent),
      microseconds
    ),
    metric("Backlog write, outbox only (s)", (f) => both(f.backlogFill, (b) => b.seconds), seconds),
    metric("Backlog drain RSS: start", (f) => both(f.backlogDrain, (d) => d.rssStart), mebibytes, false),
    row(
      "  at 25 % / 50 % / 75 % of the drain",
      quartiles((f) => f.backlogDrain.library),
      quartiles((f) => f.backlogDrain.baseline)
    ),
    metric("  peak", (f) => both(f.backlogDrain, (d) => d.rssPeak), mebibytes, false),
    metric("  end", (f) => both(f.backlogDrain, (d) => d.rssEnd), mebibytes, false),
    metric("Peak RSS of the phase process: throughput", (f) => both(f.throughput, (t) => t.peakRss), mebibytes, false),
    metric("  latency", (f) => both(f.latency, (l) => l.peakRss), mebibytes, false),
    metric("  backlog drain", (f) => both(f.backlogDrain, (d) => d.peakRss), mebibytes, false),
    `Peak RSS of any phase process: ${mib(peakRss)} (a phase process right after start-up, node + tsx: ${
      mib(rssBoot)
    })`,
    `Machine: ${machine.cores} cores, node ${machine.node}; load average at start ${
      machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")
    }, at end ${loadAverageAtEnd.map((l) => l.toFixed(2)).join(" ")}`,
    "",
    "Each round (a contended round shows as a high load average or a latency rate below the target):",
    ...rounds.map((r) =>
      `  round ${r.round}: load average (1 min) when each phase started ${
        Object.entries(r.loadAverages).map(([phase, load]) => `${phase} ${load.toFixed(2)}`).join(", ")
      }; latency achieved ${
        both(r.figures.latency, (l) => l.achievedRate).map((n) => spread([n], rate)).join(" / ")
      }, under pressure ${
        both(r.figures.pressure, (l) => l.achievedRate).map((n) => spread([n], rate)).join(" / ")
      } (library / baseline)`
    ),
    "",
    "DESIGN §7 targets (reported, not asserted; on the medians):",
    `  ≥ 80 % of the baseline, batched:  ${verdict(batchedRatio === undefined ? undefined : batchedRatio >= 0.8)}`,
    `  ≥ 5,000 events/s batched:         ${verdict(batched === undefined ? undefined : batched >= 5_000)}`,
    `  p99 ≤ 50 ms at ${settings.rate} events/s:      ${
      verdict(p99 === undefined ? undefined : p99 <= 50 && missing === 0)
    }`
  ]
  return lines.join("\n")
}
