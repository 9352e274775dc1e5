/**
 * One phase of the benchmark in a process of its own (so each reports its own peak RSS), started by
 * `bench/run.ts`:
 *
 *     node --import tsx bench/phase.ts <phase> [fill|drain]
 *
 * with `BENCH_OWNER_URL`, `BENCH_CONSUMER_URL`, `BENCH_NAMES` (JSON) and the `BENCH_*` settings in the
 * environment. Prints its result as one line `RESULT {…}` on standard output.
 */
import { Effect, Redacted, References, Schema } from "effect"
import * as Baseline from "./baseline.ts"
import { type Phase, phases, read } from "./config.ts"
import { Names } from "./contract.ts"
import * as Library from "./library.ts"
import { prefix, type Report, type Result } from "./results.ts"
import * as Workloads from "./workloads.ts"

const isPhase = Schema.is(Schema.Literals(phases))

const run = (phase: Phase, step: string | undefined, env: Workloads.PhaseEnv): Effect.Effect<Result, unknown> => {
  const make = phase.startsWith("library") ? Library.make : Baseline.make
  if (phase.endsWith("writes")) return Workloads.writes(make, env)
  if (phase.endsWith("throughput")) return Workloads.throughput(make, env)
  if (phase === "library-lanes") return Workloads.throughput(make, { ...env, lanes: env.settings.lanes })
  if (phase === "library-instances") {
    return Workloads.throughput(make, { ...env, instances: { relays: 2, consumers: 3 } })
  }
  if (phase.endsWith("latency")) return Workloads.latency(make, env)
  if (phase.endsWith("pressure")) {
    return Workloads.latency(make, { ...env, settings: { ...env.settings, rate: env.settings.pressureRate } })
  }
  return step === "fill" ? Workloads.backlogFill(make, env) : Workloads.backlogDrain(make, env)
}

const main = Effect.gen(function*() {
  const phase = process.argv[2]
  if (!isPhase(phase)) return yield* Effect.die(new Error(`unknown phase ${String(phase)}`))
  const names = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(Names))(process.env.BENCH_NAMES)
  const env: Workloads.PhaseEnv = {
    ownerUrl: Redacted.make(process.env.BENCH_OWNER_URL ?? ""),
    consumerUrl: Redacted.make(process.env.BENCH_CONSUMER_URL ?? ""),
    names,
    settings: read()
  }
  const rssBoot = process.memoryUsage.rss()
  const result = yield* run(phase, process.argv[3], env)
  const report: Report = { rssBoot, result }
  yield* Effect.sync(() => process.stdout.write(`${prefix}${JSON.stringify(report)}\n`))
}).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))

Effect.runPromise(main).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  }
)
