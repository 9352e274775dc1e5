/**
 * Adversarial messages for the adversarial suite: a payload thousands of levels deep (built as a string),
 * entity names of 100–200 KB, bodies of several megabytes, entity names that would become metric labels,
 * each published under the owner's routing key by the owner's login (so that only its content is judged),
 * and a watch over the process: its RSS, and the warnings the runtime logs (a delivery loop restarting,
 * the longest log line).
 */
import { Effect, Logger, Metric, References } from "effect"
import { owner } from "./contract.ts"
import { withChannel } from "./rabbit.ts"
import type { Names } from "./stack.ts"

/** A kind of adversarial message. */
export type Kind = "deep" | "longName" | "huge" | "label"

/** An adversarial message that was published. */
export interface Sent {
  readonly messageId: string
  readonly kind: Kind
  readonly bytes: number
}

const header = (messageId: string, entity: string) =>
  `{"specversion":"1.0","id":"${messageId}","source":"${owner}","type":"entitysync.${entity}.created",` +
  `"subject":"bad","time":"${new Date().toISOString()}","datacontenttype":"application/json",` +
  `"entityversion":1,"contractversion":1,"forcesync":false,`

/** A valid-looking event whose payload nests `depth` arrays in an extra key (about `2 × depth` bytes). */
export const deepBody = (messageId: string, depth: number): string =>
  `${header(messageId, "Item")}"data":{"id":"bad","name":"deep","n":0,"tags":[],"extra":` +
  `${"[".repeat(depth)}${"]".repeat(depth)}}}`

/** An event whose entity name is `length` characters long. */
export const longNameBody = (messageId: string, length: number): string =>
  `${header(messageId, `E${"x".repeat(length - 1)}`)}"data":{"id":"bad","name":"n","n":0,"tags":[]}}`

/** A valid event whose payload carries `bytes` of text. */
export const hugeBody = (messageId: string, bytes: number): string =>
  `${header(messageId, "Item")}"data":{"id":"bad","name":"${"h".repeat(bytes)}","n":0,"tags":[]}}`

/** An event of an entity nobody subscribes to, with a fresh name each time (a would-be metric label). */
export const labelBody = (messageId: string, entity: string): string =>
  `${header(messageId, entity)}"data":{"id":"bad","name":"n","n":0,"tags":[]}}`

/** Publishes `bodies` to the test's exchange under the owner's routing key, as `guest`; confirmed. */
export const publishBad = (
  names: Names,
  bodies: ReadonlyArray<{ readonly messageId: string; readonly kind: Kind; readonly body: string }>
): Effect.Effect<ReadonlyArray<Sent>> =>
  withChannel(async (channel) => {
    for (const { body, messageId } of bodies) {
      channel.publish(names.exchange, `${owner}.Item.created`, Buffer.from(body), {
        persistent: true,
        messageId,
        type: "entitysync.Item.created",
        contentType: "application/json",
        userId: "guest"
      })
    }
    await channel.waitForConfirms()
    return bodies.map(({ body, kind, messageId }) => ({ messageId, kind, bytes: Buffer.byteLength(body) }))
  })

/** The warnings the runtime logged during a test. */
export interface Watch {
  /** Warnings that a loop stopped and is restarting. */
  readonly restarts: Array<string>
  warnings: number
  /** The longest first part of a logged message, in characters. */
  longestLine: number
  /** The highest RSS sampled, in bytes. */
  peakRss: number
  /** The first distinct warnings (their first 160 characters), at most 10. */
  readonly samples: Set<string>
}

/** A fresh watch. */
export const makeWatch = (): Watch => ({ restarts: [], warnings: 0, longestLine: 0, peakRss: 0, samples: new Set() })

/**
 * Runs `effect` with every warning and error captured in `watch` (nothing printed), and the RSS sampled
 * every 100 ms.
 */
export const watched = <A, E, R>(watch: Watch, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const capture = Logger.make((options) => {
    const first = Array.isArray(options.message) ? options.message[0] : options.message
    const text = typeof first === "string" ? first : String(first)
    watch.warnings++
    watch.longestLine = Math.max(watch.longestLine, text.length)
    if (text.includes("restarting")) watch.restarts.push(text.slice(0, 300))
    if (watch.samples.size < 10) watch.samples.add(text.slice(0, 160))
  })
  const sample = Effect.sync(() => {
    watch.peakRss = Math.max(watch.peakRss, process.memoryUsage().rss)
  }).pipe(Effect.andThen(Effect.sleep("100 millis")), Effect.forever)
  return Effect.gen(function*() {
    yield* Effect.forkScoped(sample)
    return yield* effect
  }).pipe(
    Effect.scoped,
    Effect.provide(Logger.layer([capture])),
    Effect.provideService(References.MinimumLogLevel, "Warn")
  )
}

/** The series of the metric registry: `name{attributes}`. */
export const series = Effect.map(
  Metric.snapshot,
  (metrics) => metrics.map((m) => `${m.id}${JSON.stringify(m.attributes ?? {})}`)
)

/** Mebibytes, for printing. */
export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`
