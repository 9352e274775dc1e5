/**
 * The benchmark's printed table: events/s of both pipelines and their ratio, the process CPU per event
 * (steadier than rates on a busy machine), latency percentiles, memory
 * while a backlog drains, peak RSS, and the DESIGN §7 targets (reported, never asserted).
 */
import type { Settings } from "./config.ts"
import type { BacklogDrain, BacklogFill, Latency, Throughput, Writes } from "./results.ts"
import { int, mib, micros, ms } from "./stats.ts"

type Pair<A> = { readonly library: A | undefined; readonly baseline: A | undefined }

/** Everything the table shows. */
export interface TableInput {
  readonly settings: Settings
  readonly figures: {
    readonly writes: Pair<Writes>
    readonly throughput: Pair<Throughput>
    readonly latency: Pair<Latency>
    readonly backlogFill: Pair<BacklogFill>
    readonly backlogDrain: Pair<BacklogDrain>
  }
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
  `${label.padEnd(46)}${library.padStart(16)}${baseline.padStart(16)}${ratio.padStart(12)}`

const ratio = (library: number | undefined, baseline: number | undefined) =>
  library === undefined || baseline === undefined ? "" : `${((100 * library) / baseline).toFixed(0)} %`

const rate = (n: number | undefined) => n === undefined ? "—" : `${int(n)} ev/s`
const opt = <A>(a: A | undefined, f: (a: A) => string) => a === undefined ? "—" : f(a)

const verdict = (ok: boolean | undefined) => ok === undefined ? "not measured" : ok ? "met" : "NOT met"

/** Renders the table. */
export const render = ({ figures, loadAverageAtEnd, machine, peakRss, rssBoot, settings }: TableInput): string => {
  const { backlogDrain: drain, backlogFill: fill, latency, throughput, writes } = figures
  const lines = [
    row("", "library", "baseline", "lib/base"),
    row(
      `Owner writes alone (${int(settings.events)}, ${settings.writeBatch}/tx): creates`,
      rate(writes.library?.creates.eventsPerSecond),
      rate(writes.baseline?.creates.eventsPerSecond),
      ratio(writes.library?.creates.eventsPerSecond, writes.baseline?.creates.eventsPerSecond)
    ),
    row(
      "  updates",
      rate(writes.library?.updates.eventsPerSecond),
      rate(writes.baseline?.updates.eventsPerSecond),
      ratio(writes.library?.updates.eventsPerSecond, writes.baseline?.updates.eventsPerSecond)
    ),
    row(
      "  CPU of the phase process per event: creates",
      opt(writes.library, (w) => micros(w.creates.cpuMicrosPerEvent)),
      opt(writes.baseline, (w) => micros(w.creates.cpuMicrosPerEvent)),
      ratio(writes.library?.creates.cpuMicrosPerEvent, writes.baseline?.creates.cpuMicrosPerEvent)
    ),
    row(
      "  updates",
      opt(writes.library, (w) => micros(w.updates.cpuMicrosPerEvent)),
      opt(writes.baseline, (w) => micros(w.updates.cpuMicrosPerEvent)),
      ratio(writes.library?.updates.cpuMicrosPerEvent, writes.baseline?.updates.cpuMicrosPerEvent)
    ),
    row(
      "  load average (1 min) when timed",
      opt(writes.library, (w) => (w.loadAverage[0] ?? Number.NaN).toFixed(2)),
      opt(writes.baseline, (w) => (w.loadAverage[0] ?? Number.NaN).toFixed(2))
    ),
    row(
      `Batched end-to-end (${int(settings.events)} events, ${settings.writeBatch}/tx)`,
      rate(throughput.library?.eventsPerSecond),
      rate(throughput.baseline?.eventsPerSecond),
      ratio(throughput.library?.eventsPerSecond, throughput.baseline?.eventsPerSecond)
    ),
    row(
      "  owner writes (creates) during it",
      rate(throughput.library?.writeEventsPerSecond),
      rate(throughput.baseline?.writeEventsPerSecond),
      ratio(throughput.library?.writeEventsPerSecond, throughput.baseline?.writeEventsPerSecond)
    ),
    row(
      `Backlog drain, relay + consumer (${int(settings.backlog)})`,
      rate(drain.library?.eventsPerSecond),
      rate(drain.baseline?.eventsPerSecond),
      ratio(drain.library?.eventsPerSecond, drain.baseline?.eventsPerSecond)
    ),
    row(
      "CPU of the phase process per event: batched",
      opt(throughput.library, (t) => micros(t.cpuMicrosPerEvent)),
      opt(throughput.baseline, (t) => micros(t.cpuMicrosPerEvent)),
      ratio(throughput.library?.cpuMicrosPerEvent, throughput.baseline?.cpuMicrosPerEvent)
    ),
    row(
      "  drain",
      opt(drain.library, (d) => micros(d.cpuMicrosPerEvent)),
      opt(drain.baseline, (d) => micros(d.cpuMicrosPerEvent)),
      ratio(drain.library?.cpuMicrosPerEvent, drain.baseline?.cpuMicrosPerEvent)
    ),
    row(
      `  latency workload (one event per transaction)`,
      opt(latency.library, (l) => micros(l.cpuMicrosPerEvent)),
      opt(latency.baseline, (l) => micros(l.cpuMicrosPerEvent)),
      ratio(latency.library?.cpuMicrosPerEvent, latency.baseline?.cpuMicrosPerEvent)
    ),
    row(
      `Latency commit → applied @ ${settings.rate}/s, achieved`,
      rate(latency.library?.achievedRate),
      rate(latency.baseline?.achievedRate)
    ),
    row("  p50", opt(latency.library, (l) => ms(l.p50)), opt(latency.baseline, (l) => ms(l.p50))),
    row("  p95", opt(latency.library, (l) => ms(l.p95)), opt(latency.baseline, (l) => ms(l.p95))),
    row("  p99", opt(latency.library, (l) => ms(l.p99)), opt(latency.baseline, (l) => ms(l.p99))),
    row("  max", opt(latency.library, (l) => ms(l.max)), opt(latency.baseline, (l) => ms(l.max))),
    row(
      "  not applied within 30 s",
      opt(latency.library, (l) => int(l.missing)),
      opt(latency.baseline, (l) => int(l.missing))
    ),
    row(
      `Backlog write, outbox only (s)`,
      opt(fill.library, (f) => `${f.seconds.toFixed(1)} s`),
      opt(fill.baseline, (f) => `${f.seconds.toFixed(1)} s`)
    ),
    row(
      "Backlog drain RSS: start",
      opt(drain.library, (d) => mib(d.rssStart)),
      opt(drain.baseline, (d) => mib(d.rssStart))
    ),
    row(
      "  at 25 % / 50 % / 75 % of the drain",
      opt(drain.library, (d) => d.rssQuartiles.map((q) => (q / 1024 / 1024).toFixed(0)).join("/")),
      opt(drain.baseline, (d) => d.rssQuartiles.map((q) => (q / 1024 / 1024).toFixed(0)).join("/"))
    ),
    row("  peak", opt(drain.library, (d) => mib(d.rssPeak)), opt(drain.baseline, (d) => mib(d.rssPeak))),
    row("  end", opt(drain.library, (d) => mib(d.rssEnd)), opt(drain.baseline, (d) => mib(d.rssEnd))),
    row(
      "Peak RSS of the phase process: throughput",
      opt(throughput.library, (t) => mib(t.peakRss)),
      opt(throughput.baseline, (t) => mib(t.peakRss))
    ),
    row("  latency", opt(latency.library, (l) => mib(l.peakRss)), opt(latency.baseline, (l) => mib(l.peakRss))),
    row("  backlog drain", opt(drain.library, (d) => mib(d.peakRss)), opt(drain.baseline, (d) => mib(d.peakRss))),
    `Peak RSS of any phase process: ${mib(peakRss)} (a phase process right after start-up, node + tsx: ${
      mib(rssBoot)
    })`,
    `Machine: ${machine.cores} cores, node ${machine.node}; load average at start ${
      machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")
    }, at end ${loadAverageAtEnd.map((l) => l.toFixed(2)).join(" ")}`,
    "",
    "DESIGN §7 targets (reported, not asserted):",
    `  ≥ 80 % of the baseline, batched:  ${
      verdict(
        throughput.library === undefined || throughput.baseline === undefined
          ? undefined
          : throughput.library.eventsPerSecond >= 0.8 * throughput.baseline.eventsPerSecond
      )
    }`,
    `  ≥ 5,000 events/s batched:         ${
      verdict(throughput.library === undefined ? undefined : throughput.library.eventsPerSecond >= 5_000)
    }`,
    `  p99 ≤ 50 ms at ${settings.rate} events/s:      ${
      verdict(latency.library === undefined ? undefined : latency.library.p99 <= 50 && latency.library.missing === 0)
    }`
  ]
  return lines.join("\n")
}
