/**
 * Measuring helpers of the benchmark: percentiles, a resident-set-size sampler and number formatting.
 */

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

/** Bytes as MiB with one decimal. */
export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

/** A number with thousands separators. */
export const int = (n: number): string => Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a"
