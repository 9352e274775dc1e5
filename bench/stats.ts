/**
 * Measuring helpers of the benchmark: percentiles, a resident-set-size sampler and number formatting.
 */
import { readdirSync, readFileSync } from "node:fs"

/** The `p`-th percentile (0–100) of `values` (nearest rank); NaN when empty. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank] ?? Number.NaN
}

/** p50 / p95 / p99 / max of a sample, in its own unit. */
export interface Percentiles {
  readonly count: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
}

/** Summarizes a sample. */
export const summarize = (values: ReadonlyArray<number>): Percentiles => ({
  count: values.length,
  p50: percentile(values, 50),
  p95: percentile(values, 95),
  p99: percentile(values, 99),
  max: values.length === 0 ? Number.NaN : values.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY)
})

/** This process's resident set size, in bytes. */
export const rss = (): number => process.memoryUsage.rss()

/** The highest resident set size this process reached, in bytes. */
export const peakRss = (): number => process.resourceUsage().maxRSS * 1024

/** CPU time this process has used so far (user + system), in microseconds. */
export const cpuMicros = (): number => {
  const { system, user } = process.cpuUsage()
  return user + system
}

/**
 * CPU time the whole machine has spent busy so far (every core, every process: the pipeline, PostgreSQL,
 * RabbitMQ), in microseconds, from Linux's `/proc/stat` (in USER_HZ, 100 per second); undefined elsewhere.
 */
export const machineBusyMicros = (): number | undefined => {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal …: all but idle and iowait
    const busy = fields.reduce((sum, n, i) => (i === 3 || i === 4 || i > 7 ? sum : sum + n), 0)
    return Number.isFinite(busy) && fields.length >= 8 ? busy * 10_000 : undefined
  } catch {
    return undefined
  }
}

/**
 * CPU time PostgreSQL's processes on this machine have used so far (live backends and, through the
 * postmaster's children's times, exited ones), in microseconds, from Linux's `/proc` (USER_HZ, 100 per
 * second); undefined elsewhere.
 */
export const postgresMicros = (): number | undefined => {
  try {
    let ticks = 0
    for (const pid of readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue
      let stat: string
      try {
        stat = readFileSync(`/proc/${pid}/stat`, "utf8")
      } catch {
        continue // the process ended meanwhile
      }
      if (stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) !== "postgres") continue
      // after the name: state ppid … utime (12th) stime cutime cstime
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number)
      ticks += fields[11]! + fields[12]! + (fields[1] === 1 ? fields[13]! + fields[14]! : 0)
    }
    return ticks * 10_000
  } catch {
    return undefined
  }
}

/** Bytes as MiB with one decimal. */
export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

/** A number with thousands separators. */
export const int = (n: number): string => Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a"
