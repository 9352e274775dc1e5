/**
 * What the admin CLI prints: text from the database made safe and bounded (control characters escaped,
 * long values cut), aligned tables, ages, JSON, and progress — a bar redrawn in place when stdout is a
 * terminal, plain lines otherwise.
 *
 * @since 0.2.0
 */
import { Effect } from "effect"

/** The longest value a table cell shows, in characters. */
export const maxCell = 80

/** The longest line the CLI prints from the database, in characters. */
export const maxLine = 2_000

// oxlint-disable-next-line no-control-regex -- what it matches is the point
const controls = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

/** Text as printed: control characters escaped (`\u001b` …), at most `max` characters (cut with `…`). */
export const shown = (text: string, max: number = maxLine): string => {
  const escaped = text.replace(controls, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
  return escaped.length <= max ? escaped : `${escaped.slice(0, Math.max(0, max - 1))}…`
}

/** Writes a line to stdout. */
export const line = (text: string): Effect.Effect<void> => Effect.sync(() => void process.stdout.write(`${text}\n`))

/** Writes a value as indented JSON to stdout. */
export const json = (value: unknown): Effect.Effect<void> => line(JSON.stringify(value, null, 2))

/** A table: a header row and rows of cells, columns padded to their widest cell (each cell bounded). */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const cells = [header, ...rows].map((row) => row.map((cell) => shown(cell, maxCell)))
  const widths = header.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? "").length)))
  return cells
    .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  "))
    .join("\n")
}

/** A duration in milliseconds for people: `850ms`, `12s`, `3m 20s`, `2h 5m`, `3d 4h`. */
export const age = (millis: number): string => {
  const ms = Math.max(0, Math.round(millis))
  if (ms < 1_000) return `${ms}ms`
  const s = Math.floor(ms / 1_000)
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m ${s % 60}s`
  const h = Math.floor(m / 60)
  if (h < 24) return `${h}h ${m % 60}m`
  return `${Math.floor(h / 24)}d ${h % 24}h`
}

/** An epoch-milliseconds time as ISO-8601 UTC. */
export const time = (millis: number): string => {
  const date = new Date(millis)
  return Number.isNaN(date.getTime()) ? String(millis) : date.toISOString()
}

/** Progress of a long operation: `step(done)` after each step, `end` when it is over. */
export interface Progress {
  readonly step: (done: number) => Effect.Effect<void>
  readonly end: Effect.Effect<void>
}

const barWidth = 30

/**
 * Progress of `label` over `total` items: a bar redrawn in place when stdout is a terminal, otherwise one
 * plain line per step (at most one a second, and the last).
 */
export const progress = (label: string, total: number): Progress => {
  const tty = process.stdout.isTTY === true
  let lastLine = 0
  let drawn = false
  const render = (done: number) => {
    const ratio = total <= 0 ? 1 : Math.min(1, done / total)
    const filled = Math.round(ratio * barWidth)
    return `${label} [${"#".repeat(filled)}${"-".repeat(barWidth - filled)}] ${done}/${total}`
  }
  return {
    step: (done) =>
      Effect.sync(() => {
        if (tty) {
          process.stdout.write(`\r${render(done)}`)
          drawn = true
          return
        }
        const now = Date.now()
        if (done >= total || now - lastLine >= 1_000) {
          lastLine = now
          process.stdout.write(`${label}: ${done}/${total}\n`)
        }
      }),
    end: Effect.sync(() => {
      if (tty && drawn) process.stdout.write("\n")
    })
  }
}
