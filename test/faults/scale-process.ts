/**
 * A relay or consumer process for the scale-out tests: runs the test's relay (`stack.relay`) or consumer
 * (`stack.consumer`, its connection named `<connectionPrefix>-consumer-<pid>`), chosen by `FAULTS_ROLE`, on the database in `FAULTS_DATABASE_URL` with the names in
 * `FAULTS_NAMES` (JSON), prints `ready` once it runs, and runs until it is killed. A consumer prints
 * `outcomes {"duplicate":…,"stale":…,"waiting":…,"parked":…,"woken":…,"deadLettered":…}` every 500 ms,
 * summed over the contract's entities: the redeliveries it dropped, the stale events, the events that
 * waited for a dependency in process, that it parked, that it applied after waiting, and given up on.
 *
 *     FAULTS_ROLE=relay FAULTS_DATABASE_URL=postgres://… FAULTS_NAMES='{…}' node --import tsx test/faults/scale-process.ts
 */
import { Effect, Layer, Redacted, Schedule, Schema } from "effect"
import * as Metrics from "../../src/Metrics.ts"
import { entities } from "./contract.ts"
import { quiet } from "./quiet.ts"
import { consumer, Names, relay } from "./stack.ts"

const main = Effect.gen(function*() {
  const names = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(Names))(process.env.FAULTS_NAMES)
  const url = Redacted.make(process.env.FAULTS_DATABASE_URL ?? "")
  const isRelay = process.env.FAULTS_ROLE === "relay"
  if (isRelay) yield* Layer.build(relay(url, names))
  else yield* Layer.build(consumer(url, names, { role: `consumer-${process.pid}` }))
  yield* Effect.sync(() => process.stdout.write("ready\n"))
  if (isRelay) return yield* Effect.never
  const outcome = (kind: Metrics.Outcome) =>
    Effect.map(
      Effect.forEach(entities, (entity) => Metrics.outcomeCount(names.service, entity, kind)),
      (counts) => counts.reduce((a, b) => a + b, 0)
    )
  return yield* Effect.gen(function*() {
    const counts = {
      duplicate: yield* outcome("duplicate"),
      stale: yield* outcome("stale"),
      waiting: yield* outcome("waiting"),
      parked: yield* outcome("parked"),
      woken: yield* outcome("woken"),
      deadLettered: yield* outcome("deadLettered")
    }
    yield* Effect.sync(() => process.stdout.write(`outcomes ${JSON.stringify(counts)}\n`))
  }).pipe(Effect.repeat(Schedule.spaced("500 millis")), Effect.andThen(Effect.never))
}).pipe(Effect.scoped, quiet)

Effect.runFork(main).addObserver((exit) => {
  if (exit._tag === "Failure") {
    console.error(`${process.env.FAULTS_ROLE ?? "consumer"} process failed`, exit.cause)
    process.exit(1)
  }
})
