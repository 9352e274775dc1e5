/**
 * What each pipeline sends PostgreSQL for one owner transaction: the statements and the round trips of a
 * transaction of creates and of one of updates, read off the wire (the frontend messages the process
 * writes to its PostgreSQL sockets), then the mean time of such transactions run one after another:
 *
 *     node --conditions=entity-sync-source --import tsx bench/statements.ts [--batch=100] [--transactions=50] [--pipelines=library,baseline] [--full] [--keep]
 *
 * A statement is an `Execute` (extended protocol) or a `Query` (simple protocol); a round trip ends with a
 * `Sync` or a `Query`. No relay and no consumer run.
 */
import { Effect, Redacted, References } from "effect"
import { Socket } from "node:net"
import * as Baseline from "./baseline.ts"
import { argument, read } from "./config.ts"
import { makeNames } from "./contract.ts"
import * as Database from "./database.ts"
import * as Library from "./library.ts"
import type { MakePipeline } from "./workloads.ts"

const batch = Number(argument("batch") ?? "100")
const transactions = Number(argument("transactions") ?? "50")
const pipelines = (argument("pipelines") ?? "library,baseline").split(",")
/** `--full`: each statement's whole text rather than its first 150 characters. */
const full = process.argv.includes("--full")
/** `--keep`: the databases are kept (their names printed), e.g. for `EXPLAIN ANALYZE` of the statements. */
const keep = process.argv.includes("--keep")

/** What the wire showed while recording. */
interface Wire {
  recording: boolean
  statements: Array<string>
  roundTrips: number
  /** Prepared statements by name, learned from every `Parse` (recording or not). */
  readonly prepared: Map<string, string>
  /** The statement of each portal bound but not yet executed, per socket. */
  readonly bound: WeakMap<object, string>
}

const wire: Wire = { recording: false, statements: [], roundTrips: 0, prepared: new Map(), bound: new WeakMap() }

const cstring = (buffer: Buffer, offset: number): readonly [string, number] => {
  const end = buffer.indexOf(0, offset)
  return end < 0 ? ["", buffer.length] : [buffer.toString("utf8", offset, end), end + 1]
}

/** Reads the frontend messages of one write (type byte, int32 length, body); ignores anything else. */
const observe = (socket: object, buffer: Buffer) => {
  let offset = 0
  while (offset + 5 <= buffer.length) {
    const type = String.fromCharCode(buffer[offset] ?? 0)
    const length = buffer.readInt32BE(offset + 1)
    if (length < 4 || offset + 1 + length > buffer.length) return
    const body = offset + 5
    if (type === "P") {
      const [name, next] = cstring(buffer, body)
      const [query] = cstring(buffer, next)
      wire.prepared.set(name, query)
      wire.bound.set(socket, query)
    } else if (type === "B") {
      const [, next] = cstring(buffer, body)
      const [name] = cstring(buffer, next)
      const query = wire.prepared.get(name)
      if (query !== undefined) wire.bound.set(socket, query)
    } else if (wire.recording && type === "E") wire.statements.push(wire.bound.get(socket) ?? "?")
    else if (wire.recording && type === "Q") {
      wire.statements.push(cstring(buffer, body)[0])
      wire.roundTrips++
    } else if (wire.recording && type === "S") wire.roundTrips++
    offset += 1 + length
  }
}

const write = Socket.prototype.write
Reflect.set(Socket.prototype, "write", function(this: Socket, ...args: Array<unknown>): unknown {
  const [chunk] = args
  if (Buffer.isBuffer(chunk)) observe(this, chunk)
  return Reflect.apply(write, this, args)
})

/** Records the statements `effect` sends. */
const recorded = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    wire.statements = []
    wire.roundTrips = 0
    wire.recording = true
    yield* Effect.ensuring(effect, Effect.sync(() => void (wire.recording = false)))
    return { statements: wire.statements, roundTrips: wire.roundTrips }
  })

const show = (label: string, seen: { readonly statements: ReadonlyArray<string>; readonly roundTrips: number }) => {
  const counts = new Map<string, number>()
  for (const statement of seen.statements) {
    const text = statement.replace(/\s+/g, " ").trim().slice(0, full ? undefined : 150)
    counts.set(text, (counts.get(text) ?? 0) + 1)
  }
  console.log(`  ${label}: ${seen.statements.length} statements, ${seen.roundTrips} round trips`)
  for (const [text, count] of counts) console.log(`    ${String(count).padStart(4)} × ${text}`)
}

const mean = (effect: Effect.Effect<void, unknown>, count: number) =>
  Effect.gen(function*() {
    const start = performance.now()
    for (let i = 0; i < count; i++) yield* effect
    return (performance.now() - start) / count
  })

const runPipeline = (name: string, make: MakePipeline) =>
  Effect.gen(function*() {
    const run = Date.now().toString(36)
    const owner = `bench_statements_${run}_${name}_owner`
    const consumer = `bench_statements_${run}_${name}_consumer`
    yield* Database.create([owner, consumer])
    const env = {
      ownerUrl: Redacted.make(Database.rawUrlOf(owner)),
      consumerUrl: Redacted.make(Database.rawUrlOf(consumer)),
      names: makeNames(run, `statements-${name}`),
      settings: read()
    }
    yield* Effect.scoped(Effect.gen(function*() {
      const pipeline = yield* make(env)
      const ids = (t: number) => Array.from({ length: batch }, (_, i) => t * batch + i)
      // Warm-up: the code is compiled and the statements prepared before anything is recorded.
      for (let t = 0; t < 20; t++) yield* pipeline.write("warm", ids(t))
      for (let t = 0; t < 20; t++) yield* pipeline.update("warm", ids(t), 1)
      console.log(`${name} (${batch} per transaction)`)
      show("create", yield* recorded(pipeline.write("probe", ids(0))))
      show("update", yield* recorded(pipeline.update("probe", ids(0), 1)))
      let t = 1
      const creates = yield* mean(Effect.suspend(() => pipeline.write("m", ids(t++))), transactions)
      t = 1
      const updates = yield* mean(Effect.suspend(() => pipeline.update("m", ids(t++), 1)), transactions)
      console.log(
        `  one writer, ${transactions} transactions each: create ${creates.toFixed(2)} ms/tx (${
          Math.round((1000 * batch) / creates)
        } ev/s), update ${updates.toFixed(2)} ms/tx (${Math.round((1000 * batch) / updates)} ev/s)`
      )
    }))
    if (keep) console.log(`  kept databases ${owner}, ${consumer}`)
    else yield* Database.drop([owner, consumer])
  })

const main = Effect.forEach(
  pipelines,
  (name) => runPipeline(name, name === "library" ? Library.make : Baseline.make),
  { discard: true }
).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))

Effect.runPromise(main).then(() => process.exit(0), (error: unknown) => {
  console.error(error)
  process.exit(1)
})
