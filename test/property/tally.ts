/**
 * Counts of what the generated runs of the convergence property exercised, by kind (operations, faults,
 * outcomes, shapes of the runs), and their report in the test output.
 */

/** Named counters, grouped by kind. */
export class Tally {
  private readonly groups = new Map<string, Map<string, number>>()

  /** Adds `n` (default 1) to the counter `name` of `group`. */
  add(group: string, name: string, n = 1): void {
    let counters = this.groups.get(group)
    if (counters === undefined) {
      counters = new Map()
      this.groups.set(group, counters)
    }
    counters.set(name, (counters.get(name) ?? 0) + n)
  }

  /** The counter `name` of `group` (0 when never counted). */
  get(group: string, name: string): number {
    return this.groups.get(group)?.get(name) ?? 0
  }

  /** Adds every counter of `other` to this one. */
  merge(other: Tally): void {
    for (const [group, counters] of other.groups) {
      for (const [name, n] of counters) this.add(group, name, n)
    }
  }

  /** The counters as aligned text, one group per block, largest first. */
  format(): string {
    const lines: Array<string> = []
    for (const [group, counters] of this.groups) {
      lines.push(`  ${group}:`)
      const entries = [...counters.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      const width = Math.max(...entries.map(([name]) => name.length))
      for (const [name, n] of entries) lines.push(`    ${name.padEnd(width)}  ${n}`)
    }
    return lines.join("\n")
  }
}

/** The distribution of a number over the runs: mean, minimum, maximum, and how many runs are at most `low`. */
export const spread = (values: ReadonlyArray<number>, low: number): string => {
  if (values.length === 0) return "no runs"
  const mean = values.reduce((a, b) => a + b, 0) / values.length
  return `mean ${mean.toFixed(1)}, min ${Math.min(...values)}, max ${Math.max(...values)}, ${
    values.filter((v) => v <= low).length
  } run(s) ≤ ${low}`
}
