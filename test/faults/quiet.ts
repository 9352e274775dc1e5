/**
 * The log level of the fault-injection suite: `FAULTS_LOG_LEVEL` (default `None`). The runtime logs every
 * injected fault at warning or error level, which would drown each test's own result line.
 */
import { Effect, type LogLevel, Option, References, Schema } from "effect"

const logLevel = Option.getOrElse(
  Schema.decodeUnknownOption(Schema.Literals(["All", "Trace", "Debug", "Info", "Warn", "Error", "Fatal", "None"]))(
    process.env.FAULTS_LOG_LEVEL
  ),
  (): LogLevel.LogLevel => "None"
)

/** Runs `effect` (and the fibers it forks) with the suite's minimum log level. */
export const quiet = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.provideService(effect, References.MinimumLogLevel, logLevel)
