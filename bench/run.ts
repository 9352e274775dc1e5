/**
 * `npm run bench`: the library against the hand-written baseline on the local PostgreSQL and RabbitMQ.
 * Runs every phase (see `config.ts`) in a process of its own with two fresh databases, in rounds that
 * interleave the library's and the baseline's phases (a slow minute of a shared machine then touches both
 * pipelines rather than one), prints a table of medians and ranges, and writes every round's figures to
 * `bench/results/<date>.json`. It prints figures and never asserts timing.
 *
 *     npm run bench                                  # defaults: 3 interleaved rounds, about fifteen minutes
 *     npm run bench -- --rounds=1                    # one round
 *     npm run bench -- --phases=library-writes,baseline-writes   # the owner's writes alone
 *     npm run bench -- --events=50000 --phases=library-throughput,baseline-throughput
 *     BENCH_BACKLOG_1M=1 npm run bench -- --phases=library-backlog
 *     BENCH_CPU_PROF=/tmp/profiles npm run bench -- --phases=library-backlog   # a CPU profile per phase
 */
import { Data, Effect, Schema } from "effect"
import { spawn } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import os from "node:os"
import * as Config from "./config.ts"
import { makeNames, type Names } from "./contract.ts"
import * as Database from "./database.ts"
import { prefix, Report } from "./results.ts"
import { type Figures, render, type Round } from "./table.ts"

/** A phase's process exited without its report. */
class PhaseFailed extends Data.TaggedError("PhaseFailed")<{ readonly message: string }> {}

const decodeReport = Schema.decodeUnknownEffect(Schema.fromJsonString(Report))

/** `BENCH_CPU_PROF=<dir>`: every phase process writes a CPU profile (`--cpu-prof`) into that directory. */
const profile = process.env.BENCH_CPU_PROF === undefined || process.env.BENCH_CPU_PROF === ""
  ? []
  : ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`]

/**
 * The `--conditions` the orchestrator runs with (`npm run bench` passes `entity-sync-source`), passed on
 * to every phase process so that it imports the same code as the orchestrator: the package's sources
 * rather than a build in `dist/` that may be older.
 */
const conditions = process.execArgv.flatMap((arg, i, all) =>
  arg.startsWith("--conditions=") || arg.startsWith("-C=")
    ? [arg]
    : (arg === "--conditions" || arg === "-C") && all[i + 1] !== undefined
    ? [`--conditions=${all[i + 1]}`]
    : []
)

/** Runs `bench/phase.ts` in a child process; gives its report. */
const child = (
  phase: Config.Phase,
  step: string | null,
  env: Record<string, string>
): Effect.Effect<Report, unknown> =>
  Effect.flatMap(
    Effect.callback<string, PhaseFailed>((resume) => {
      const proc = spawn(process.execPath, [
        ...conditions,
        ...profile,
        "--import",
        "tsx",
        "bench/phase.ts",
        phase,
        ...(step === null ? [] : [step])
      ], {
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "inherit"]
      })
      let result: string | undefined
      let pending = ""
      proc.stdout.on("data", (chunk: Buffer) => {
        pending += chunk.toString("utf8")
        const lines = pending.split("\n")
        pending = lines.pop() ?? ""
        for (const line of lines) {
          if (line.startsWith(prefix)) result = line.slice(prefix.length)
          else process.stdout.write(`  [${phase}${step === null ? "" : ` ${step}`}] ${line}\n`)
        }
      })
      proc.on("exit", (code) => {
        if (pending.startsWith(prefix)) result = pending.slice(prefix.length)
        resume(
          code === 0 && result !== undefined
            ? Effect.succeed(result)
            : Effect.fail(
              new PhaseFailed({ message: `phase ${phase}${step === null ? "" : ` ${step}`} exited with ${code}` })
            )
        )
      })
    }),
    decodeReport
  )

/** The environment of a phase process: settings, databases and names. */
const phaseEnv = (
  settings: Config.Settings,
  names: Names,
  owner: string,
  consumer: string
): Record<string, string> => ({
  BENCH_OWNER_URL: Database.rawUrlOf(owner),
  BENCH_CONSUMER_URL: Database.rawUrlOf(consumer),
  BENCH_NAMES: JSON.stringify(names),
  BENCH_EVENTS: String(settings.events),
  BENCH_WRITE_BATCH: String(settings.writeBatch),
  BENCH_WRITERS: String(settings.writers),
  BENCH_WARM_UP: String(settings.warmUp),
  BENCH_LATENCY_RATE: String(settings.rate),
  BENCH_LATENCY_SECONDS: String(settings.latencySeconds),
  BENCH_PRESSURE_RATE: String(settings.pressureRate),
  BENCH_LANES: String(settings.lanes),
  BENCH_BACKLOG: String(settings.backlog),
  BENCH_RELAY_BATCH: String(settings.relayBatch),
  BENCH_CONSUMER_BATCH: String(settings.consumerBatch),
  BENCH_PREFETCH: String(settings.prefetch)
})

/** How long the machine rests before each phase, after a `CHECKPOINT`. */
const settlePause = "3 seconds"

/** Runs one phase with fresh databases and RabbitMQ names, cleaned up afterwards. */
const runPhase = (run: string, index: number, settings: Config.Settings, phase: Config.Phase) =>
  Effect.gen(function*() {
    const names = makeNames(run, phase)
    const owner = `bench_${run}_${index}_owner`
    const consumer = `bench_${run}_${index}_consumer`
    yield* Database.create([owner, consumer])
    // The previous phase's background work (dirty buffers, dropped databases and queues) is done first.
    yield* Database.checkpoint
    yield* Effect.sleep(settlePause)
    const env = phaseEnv(settings, names, owner, consumer)
    const loadAverage = os.loadavg()[0] ?? 0
    console.log(`- ${phase} … (load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")})`)
    const started = performance.now()
    const reports = phase.endsWith("backlog")
      ? [yield* child(phase, "fill", env), yield* child(phase, "drain", env)]
      : [yield* child(phase, null, env)]
    console.log(`  done in ${((performance.now() - started) / 1000).toFixed(1)} s`)
    return { reports, loadAverage }
  }).pipe(
    Effect.ensuring(
      Effect.all([
        Database.drop([`bench_${run}_${index}_owner`, `bench_${run}_${index}_consumer`]).pipe(Effect.ignore),
        Database.deleteTopology(makeNames(run, phase), settings.lanes)
      ])
    )
  )

const main = Effect.gen(function*() {
  const settings = Config.read()
  const date = new Date()
  const run = date.toISOString().replace(/[-:T.Z]/g, "").slice(2, 14)
  const machine = {
    cores: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? "unknown",
    memory: os.totalmem(),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    postgres: yield* Database.serverVersion,
    loadAverageAtStart: os.loadavg()
  }
  console.log(
    `entity-sync benchmark ${date.toISOString()} — ${machine.cores} cores, node ${machine.node}, ` +
      `load average ${machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")}`
  )
  // library and baseline interleaved: every round runs each workload's phases one after the other
  const reports: Array<Report> = []
  const rounds: Array<Round> = []
  let index = 0
  for (let round = 1; round <= settings.rounds; round++) {
    if (settings.rounds > 1) console.log(`round ${round} of ${settings.rounds}`)
    const results = new Map<Config.Phase, ReadonlyArray<Report["result"]>>()
    const loadAverages: Record<string, number> = {}
    for (const phase of settings.phases) {
      const ran = yield* runPhase(run, index++, settings, phase)
      reports.push(...ran.reports)
      results.set(phase, ran.reports.map((r) => r.result))
      loadAverages[phase] = ran.loadAverage
    }
    const of = <K extends Report["result"]["kind"]>(kind: K, phase: Config.Phase) =>
      results.get(phase)?.find((r): r is Extract<Report["result"], { kind: K }> => r.kind === kind)
    const pair = <K extends Report["result"]["kind"]>(kind: K, library: Config.Phase, baseline: Config.Phase) => ({
      library: of(kind, library),
      baseline: of(kind, baseline)
    })
    const figures: Figures = {
      writes: pair("writes", "library-writes", "baseline-writes"),
      throughput: pair("throughput", "library-throughput", "baseline-throughput"),
      latency: pair("latency", "library-latency", "baseline-latency"),
      pressure: pair("latency", "library-pressure", "baseline-pressure"),
      lanes: { library: of("throughput", "library-lanes"), baseline: of("throughput", "library-throughput") },
      instances: { library: of("throughput", "library-instances"), baseline: of("throughput", "library-throughput") },
      backlogFill: pair("backlog-fill", "library-backlog", "baseline-backlog"),
      backlogDrain: pair("backlog-drain", "library-backlog", "baseline-backlog")
    }
    rounds.push({ round, figures, loadAverages })
  }
  const loadAverageAtEnd = os.loadavg()
  const peakRss = Math.max(...reports.map((r) => r.result.kind === "backlog-fill" ? 0 : r.result.peakRss))
  const rssBoot = Math.min(...reports.map((r) => r.rssBoot))
  console.log("")
  console.log(render({ settings, rounds, peakRss, rssBoot, loadAverageAtEnd, machine }))
  const file = `bench/results/${date.toISOString().replace(/:/g, "-")}.json`
  mkdirSync("bench/results", { recursive: true })
  writeFileSync(
    file,
    `${
      JSON.stringify(
        {
          date: date.toISOString(),
          machine: { ...machine, loadAverageAtEnd },
          settings,
          rounds,
          peakRss,
          rssBoot,
          reports
        },
        null,
        2
      )
    }\n`
  )
  console.log(`\nfigures written to ${file}`)
})

Effect.runPromise(main).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  }
)
