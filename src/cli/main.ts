#!/usr/bin/env node
/**
 * The admin CLI `entity-sync` (the package's `bin`): `status`, `dead list|replay`, `outbox replay`,
 * `resync` and `prune`, on the service the environment names (`DATABASE_URL`, `AMQP_URL` and the other
 * settings of the services). Exit codes: 0 done, 1 failed, 2 bad usage, 3 canary failed, 130 interrupted
 * (SIGINT stops between steps: every step is a transaction of its own). Importing the module runs the CLI.
 *
 * @since 0.2.0
 */
import { Cause, Effect, Exit, Fiber, FileSystem, Layer, Path, References, Sink, Stdio, Stream, Terminal } from "effect"
import { CliError, Command } from "effect/cli"
import { ChildProcessSpawner } from "effect/process"
import * as Dead from "./Dead.ts"
import { exitCodes } from "./Errors.ts"
import * as OutboxCommands from "./Outbox.ts"
import { shown } from "./Output.ts"
import * as Prune from "./Prune.ts"
import * as Resync from "./Resync.ts"
import * as Status from "./Status.ts"

/** The CLI's version: the package's. */
export const version = "0.2.0"

/** The root command and its subcommands. */
export const root = Command.make("entity-sync").pipe(
  Command.withDescription(
    "Operate entity-sync: status, dead letters, outbox replays, resync requests and retention. Settings come " +
      "from the environment, as for the services: DATABASE_URL, SYNC_TABLE_PREFIX, AMQP_URL, SYNC_EXCHANGE…"
  ),
  Command.withSubcommands([Status.command, Dead.command, OutboxCommands.command, Resync.command, Prune.command])
)

const write = (stream: NodeJS.WriteStream) => () =>
  Sink.forEach((chunk: string | Uint8Array) => Effect.sync(() => void stream.write(chunk)))

/** What `effect/cli` needs from the platform, from Node's own process: no platform package required. */
const environment = Layer.mergeAll(
  FileSystem.layerNoop({}),
  Path.layer,
  Layer.succeed(
    Stdio.Stdio,
    Stdio.make({
      args: Effect.sync(() => process.argv.slice(2)),
      stdout: write(process.stdout),
      stderr: write(process.stderr),
      stdin: Stream.empty,
      stdoutIsTerminal: Effect.sync(() => process.stdout.isTTY === true),
      stderrIsTerminal: Effect.sync(() => process.stderr.isTTY === true),
      stdinIsTerminal: Effect.sync(() => process.stdin.isTTY === true)
    })
  ),
  Layer.succeed(
    Terminal.Terminal,
    Terminal.make({
      columns: Effect.sync(() => process.stdout.columns ?? 80),
      rows: Effect.sync(() => process.stdout.rows ?? 24),
      size: Effect.die("the admin CLI does not read the terminal"),
      readInput: Effect.die("the admin CLI does not read the terminal"),
      readLine: Effect.die("the admin CLI does not read the terminal"),
      display: (text) => Effect.sync(() => void process.stdout.write(text))
    })
  ),
  Layer.succeed(
    ChildProcessSpawner.ChildProcessSpawner,
    ChildProcessSpawner.make(() => Effect.die("the admin CLI starts no processes"))
  )
)

/** The exit code of a finished run, after printing its failure (if any) to stderr. */
export const exitCodeOf = (exit: Exit.Exit<void, unknown>): number => {
  if (Exit.isSuccess(exit)) return exitCodes.ok
  const failure = Cause.findErrorOption(exit.cause)
  if (failure._tag === "Some") {
    const error = failure.value
    if (CliError.isCliError(error)) {
      // effect/cli printed the help and the parse errors already
      return error._tag === "ShowHelp" && error.errors.length === 0 ? exitCodes.ok : exitCodes.usage
    }
    if (typeof error === "object" && error !== null && "_tag" in error && "message" in error) {
      const message = typeof error.message === "string" ? error.message : String(error.message)
      process.stderr.write(`entity-sync: ${shown(message)}\n`)
      return error._tag === "UsageError"
        ? exitCodes.usage
        : error._tag === "CanaryFailed"
        ? exitCodes.canary
        : exitCodes.failed
    }
    process.stderr.write(`entity-sync: ${shown(String(error))}\n`)
    return exitCodes.failed
  }
  if (Cause.hasInterruptsOnly(exit.cause)) {
    process.stderr.write("entity-sync: interrupted; every finished step is committed, run the command again to go on\n")
    return exitCodes.interrupted
  }
  process.stderr.write(`entity-sync: unexpected failure\n${shown(Cause.pretty(exit.cause), 10_000)}\n`)
  return exitCodes.failed
}

/** Runs the CLI on `process.argv`; SIGINT interrupts it between steps. Resolves with the exit code. */
export const main = (): Promise<number> =>
  new Promise((resolve) => {
    const fiber = Effect.runFork(
      Command.run(root, { version }).pipe(
        Effect.provide(environment),
        // the library's own warnings (a reconnect, a retry) are noise here: failures are reported as messages;
        // `--log-level warn` shows them
        Effect.provideService(References.MinimumLogLevel, "Error"),
        Effect.exit
      )
    )
    const interrupt = () => {
      process.stderr.write("\nentity-sync: stopping after the current step…\n")
      Effect.runFork(Fiber.interrupt(fiber))
    }
    process.once("SIGINT", interrupt)
    process.once("SIGTERM", interrupt)
    fiber.addObserver((exit) => {
      process.removeListener("SIGINT", interrupt)
      process.removeListener("SIGTERM", interrupt)
      resolve(exitCodeOf(Exit.isSuccess(exit) ? exit.value : exit))
    })
  })

// The module is the entry point: importing it runs the CLI.
void main().then((code) => {
  process.exitCode = code
  // the stores and the broker are closed by now; a socket left behind must not hold the exit
  setTimeout(() => process.exit(code), 100).unref()
})
