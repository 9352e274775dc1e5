/**
 * A relay or consumer process for the scale-out test: runs the test's relay (`stack.relay`) or consumer
 * (`stack.consumer`), chosen by `FAULTS_ROLE`, on the database in `FAULTS_DATABASE_URL` with the names in
 * `FAULTS_NAMES` (JSON), prints `ready` once it runs, and runs until it is killed. A consumer prints
 * `outcomes {"duplicate":…,"stale":…}` every 500 ms: the redeliveries it dropped and the stale events.
 *
 *     FAULTS_ROLE=relay FAULTS_DATABASE_URL=postgres://… FAULTS_NAMES='{…}' node --import tsx test/faults/scale-process.ts
 */
import { Effect, Layer, Redacted, Schedule, Schema } from "effect"
import * as Metrics from "../../src/Metrics.ts"
import { quiet } from "./quiet.ts"
import { consumer, Names, relay } from "./stack.ts"

const main = Effect.gen(function*() {
  const names = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(Names))(process.env.FAULTS_NAMES)
  const url = Redacted.make(process.env.FAULTS_DATABASE_URL ?? "")
  const isRelay = process.env.FAULTS_ROLE === "relay"
  if (isRelay) yield* Layer.build(relay(url, names))
  else yield* Layer.build(consumer(url, names))
  yield* Effect.sync(() => process.stdout.write("ready\n"))
  if (isRelay) return yield* Effect.never
  const outcome = (kind: Metrics.Outcome) => Metrics.outcomeCount(names.service, "Item", kind)
  return yield* Effect.gen(function*() {
    const counts = { duplicate: yield* outcome("duplicate"), stale: yield* outcome("stale") }
    yield* Effect.sync(() => process.stdout.write(`outcomes ${JSON.stringify(counts)}\n`))
  }).pipe(Effect.repeat(Schedule.spaced("500 millis")), Effect.andThen(Effect.never))
}).pipe(Effect.scoped, quiet)

Effect.runFork(main).addObserver((exit) => {
  if (exit._tag === "Failure") {
    console.error(`${process.env.FAULTS_ROLE ?? "consumer"} process failed`, exit.cause)
    process.exit(1)
  }
})
