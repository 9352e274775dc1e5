/**
 * The CPU each stage of a pipeline spends per event when it runs alone, to find where the library and the
 * baseline differ:
 *
 *     node --import tsx bench/stages.ts [--events=20000] [--batch=100] [--warm-up=10000] [--pipelines=library,baseline] [--stages=owner,relay,consumer]
 *
 * For each pipeline, on two fresh databases: the consumer is started once and stopped (it declares its
 * queue); then `owner` writes the events in transactions of `--batch` entities, four at a time; `updates`
 * (only when named in `--stages`) writes each entity's new state once the same way; `relay` publishes them
 * (with no consumer running) until the queue holds them all; `consumer` applies them. Each stage is timed,
 * with its process CPU (user + system) and PostgreSQL's (all its processes on this machine, from `/proc`)
 * divided by the events. Every pipeline first runs untimed with `--warm-up` events, so that neither is
 * timed while the code it runs is still being compiled. With `BENCH_CPU_PROF=<dir>`, each timed stage
 * writes a CPU profile of its own span (`<pipeline>-<stage>.cpuprofile`) into that directory. With
 * `BENCH_HEAP_PROF=<dir>` instead, it writes a sampling profile of what it allocated, collected objects
 * included (`<pipeline>-<stage>.heapprofile`), and prints the bytes allocated per event.
 */
import amqp from "amqplib"
import { Effect, Redacted, References } from "effect"
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector/promises"
import * as Baseline from "./baseline.ts"
import { argument, read } from "./config.ts"
import { amqpUrl, makeNames } from "./contract.ts"
import * as Database from "./database.ts"
import * as Library from "./library.ts"
import { cpuMicros, postgresMicros } from "./stats.ts"
import type { MakePipeline, Pipeline } from "./workloads.ts"

const timedEvents = Number(argument("events") ?? "20000")
const warmUpEvents = Number(argument("warm-up") ?? "10000")
const batch = Number(argument("batch") ?? "100")
const pipelines = (argument("pipelines") ?? "library,baseline").split(",")
const stages = new Set((argument("stages") ?? "owner,relay,consumer").split(","))
/** Events in the outbox: one per entity, and one more with `updates`. */
const eventsPerEntity = stages.has("updates") ? 2 : 1

const queueDepth = (queue: string) =>
  Effect.promise(async () => {
    const connection = await amqp.connect(amqpUrl)
    try {
      const channel = await connection.createChannel()
      return (await channel.checkQueue(queue)).messageCount
    } finally {
      await connection.close()
    }
  })

const cpuProfileDir = process.env.BENCH_CPU_PROF ?? ""
const heapProfileDir = process.env.BENCH_HEAP_PROF ?? ""

/** A sampled allocation profile: a tree of call frames with the bytes each allocated itself. */
interface HeapNode {
  readonly selfSize: number
  readonly children: ReadonlyArray<HeapNode>
}
const allocatedBytes = (node: HeapNode): number =>
  node.children.reduce((sum, child) => sum + allocatedBytes(child), node.selfSize)

/** Profiles `effect` when `BENCH_CPU_PROF` or `BENCH_HEAP_PROF` is set; gives the bytes it allocated, if sampled. */
const profiled = <A, E, R>(file: string, effect: Effect.Effect<A, E, R>): Effect.Effect<number | undefined, E, R> =>
  cpuProfileDir === "" && heapProfileDir === "" ? Effect.as(effect, undefined) : Effect.acquireUseRelease(
    Effect.promise(async () => {
      const session = new Session()
      session.connect()
      if (cpuProfileDir !== "") {
        await session.post("Profiler.enable")
        await session.post("Profiler.start")
      } else {
        await session.post("HeapProfiler.enable")
        await session.post("HeapProfiler.startSampling", {
          samplingInterval: 4096,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: true
        })
      }
      return session
    }),
    (session) =>
      Effect.flatMap(effect, () =>
        Effect.promise(async () => {
          if (cpuProfileDir !== "") {
            const { profile } = await session.post("Profiler.stop")
            writeFileSync(`${cpuProfileDir}/${file}.cpuprofile`, JSON.stringify(profile))
            return undefined
          }
          const { profile } = await session.post("HeapProfiler.stopSampling")
          writeFileSync(`${heapProfileDir}/${file}.heapprofile`, JSON.stringify(profile))
          return allocatedBytes(profile.head)
        })),
    (session) => Effect.sync(() => session.disconnect())
  )

/** One pass over the stages: timed (printed, profiled) or a warm-up. */
interface Pass {
  readonly events: number
  readonly timed: boolean
}

const timed = <A, E, R>(pass: Pass, name: string, pipeline: string, effect: Effect.Effect<A, E, R>) =>
  !pass.timed ? Effect.asVoid(effect) : Effect.gen(function*() {
    const { events } = pass
    const cpu = cpuMicros()
    const postgres = postgresMicros()
    const usage = process.cpuUsage()
    const start = performance.now()
    const allocated = yield* profiled(`${pipeline}-${name}`, effect)
    const seconds = (performance.now() - start) / 1000
    const micros = (cpuMicros() - cpu) / events
    const { system, user } = process.cpuUsage(usage)
    const postgresAfter = postgresMicros()
    const postgresPerEvent = postgres === undefined || postgresAfter === undefined
      ? ""
      : `, PostgreSQL ${Math.round((postgresAfter - postgres) / events)} µs/event`
    const allocatedPerEvent = allocated === undefined
      ? ""
      : `, ${(allocated / events / 1024).toFixed(1)} KiB allocated/event`
    yield* Effect.sync(() =>
      console.log(
        `${pipeline.padEnd(9)} ${name.padEnd(9)} ${
          Math.round(events / seconds).toLocaleString("en-US").padStart(7)
        } ev/s ` +
          `${Math.round(micros).toLocaleString("en-US").padStart(6)} µs CPU/event (user ${
            Math.round(user / events)
          }, system ${Math.round(system / events)})${postgresPerEvent}${allocatedPerEvent}`
      )
    )
  })

const until = (condition: Effect.Effect<boolean, unknown>) =>
  Effect.gen(function*() {
    while (!(yield* condition)) yield* Effect.sleep("50 millis")
  })

const runPipeline = (name: string, make: MakePipeline, pass: Pass) =>
  Effect.gen(function*() {
    const { events } = pass
    const run = Date.now().toString(36)
    const names = makeNames(run, `stages-${name}`)
    const owner = `bench_stages_${run}_${name}_owner`
    const consumer = `bench_stages_${run}_${name}_consumer`
    yield* Database.create([owner, consumer])
    const env = {
      ownerUrl: Redacted.make(Database.rawUrlOf(owner)),
      consumerUrl: Redacted.make(Database.rawUrlOf(consumer)),
      names,
      settings: read()
    }
    yield* Effect.scoped(Effect.gen(function*() {
      const pipeline: Pipeline = yield* make(env)
      yield* Effect.scoped(pipeline.startConsumer(null))
      const ids = Array.from({ length: events }, (_, i) => i)
      const chunks = Array.from(
        { length: Math.ceil(events / batch) },
        (_, c) => ids.slice(c * batch, c * batch + batch)
      )
      if (stages.has("owner")) {
        yield* timed(
          pass,
          "owner",
          name,
          Effect.forEach(chunks, (chunk) => pipeline.write("s", chunk), { concurrency: 4, discard: true })
        )
      } else yield* pipeline.fillOutbox("s", events)
      if (stages.has("updates")) {
        yield* timed(
          pass,
          "updates",
          name,
          Effect.forEach(chunks, (chunk) => pipeline.update("s", chunk, 1), { concurrency: 4, discard: true })
        )
      }
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Effect.sleep("200 millis")
        const relay = Effect.andThen(
          pipeline.startRelay,
          until(Effect.map(queueDepth(names.queue), (n) => n >= events * eventsPerEntity))
        )
        yield* stages.has("relay") ? timed(pass, "relay", name, relay) : relay
      }))
      const consumer = Effect.scoped(
        Effect.andThen(
          pipeline.startConsumer(null),
          until(Effect.map(pipeline.applied, (n) => n >= events * eventsPerEntity))
        )
      )
      if (stages.has("consumer")) yield* timed(pass, "consumer", name, consumer)
    }))
    yield* Database.deleteTopology(names)
    yield* Database.drop([owner, consumer])
  })

const passes: ReadonlyArray<Pass> = [
  ...(warmUpEvents > 0 ? [{ events: warmUpEvents, timed: false }] : []),
  { events: timedEvents, timed: true }
]

const main = Effect.forEach(
  passes,
  (pass) =>
    Effect.forEach(pipelines, (name) => runPipeline(name, name === "library" ? Library.make : Baseline.make, pass), {
      discard: true
    }),
  { discard: true }
).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))

Effect.runPromise(main).then(() => process.exit(0), (error: unknown) => {
  console.error(error)
  process.exit(1)
})
