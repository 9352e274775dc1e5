/**
 * A consumer process for the SIGKILL test: runs the test's consumer (`stack.consumer`) on the database in
 * `FAULTS_DATABASE_URL` with the names in `FAULTS_NAMES` (JSON), prints `ready` once it is subscribed,
 * and runs until it is killed.
 *
 *     FAULTS_DATABASE_URL=postgres://… FAULTS_NAMES='{…}' node --import tsx test/faults/consumer-process.ts
 */
import { Effect, Layer, Redacted, Schema } from "effect"
import { quiet } from "./quiet.ts"
import { consumer, Names } from "./stack.ts"

const main = Effect.gen(function*() {
  const names = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(Names))(process.env.FAULTS_NAMES)
  const url = Redacted.make(process.env.FAULTS_DATABASE_URL ?? "")
  yield* Layer.build(consumer(url, names))
  yield* Effect.sync(() => process.stdout.write("ready\n"))
  return yield* Effect.never
}).pipe(Effect.scoped, quiet)

Effect.runFork(main).addObserver((exit) => {
  if (exit._tag === "Failure") {
    console.error("consumer process failed", exit.cause)
    process.exit(1)
  }
})
