/**
 * Child consumer processes for the SIGKILL test: started with `node --import tsx`, ready once they print
 * `ready`, killed with SIGKILL (and, at the latest, when the test's scope closes).
 */
import { Data, Deferred, Effect, type Redacted, Redacted as R, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import type { Names } from "./stack.ts"

/** The consumer process exited or did not say it was ready in time. */
class ProcessNotReady extends Data.TaggedError("ProcessNotReady")<{ readonly message: string }> {}

/** A running consumer process. */
export interface ConsumerProcess {
  readonly pid: number | undefined
  /** Kills it with SIGKILL and waits until it is gone. */
  readonly kill: Effect.Effect<void>
}

const exited = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
  })

const killNow = (child: ChildProcess) =>
  Effect.suspend(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    return exited(child)
  })

/** Starts a consumer process and waits (at most 60 s) until it is subscribed. */
export const startConsumerProcess = (
  url: Redacted.Redacted,
  names: Names
): Effect.Effect<ConsumerProcess, ProcessNotReady, Scope.Scope> =>
  startProcess("test/faults/consumer-process.ts", url, names, "consumer")

/**
 * Starts a process of `script` (with `FAULTS_DATABASE_URL`, `FAULTS_NAMES` and the extra `env`) and waits
 * (at most 60 s) until it prints `ready`; every further stdout line goes to `onLine`.
 */
export const startProcess = (
  script: string,
  url: Redacted.Redacted,
  names: Names,
  label: string,
  options: {
    readonly env?: Readonly<Record<string, string>>
    readonly onLine?: (line: string) => void
  } = {}
): Effect.Effect<ConsumerProcess, ProcessNotReady, Scope.Scope> =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, ["--import", "tsx", script], {
          env: {
            ...process.env,
            ...options.env,
            FAULTS_DATABASE_URL: R.value(url),
            FAULTS_NAMES: JSON.stringify(names)
          },
          stdio: ["ignore", "pipe", "inherit"]
        })
      ),
      killNow
    )
    const ready = yield* Deferred.make<void, ProcessNotReady>()
    let buffered = ""
    child.stdout?.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8")
      const lines = buffered.split("\n")
      buffered = lines.pop() ?? ""
      for (const line of lines) {
        if (line.includes("ready")) Deferred.doneUnsafe(ready, Effect.void)
        else options.onLine?.(line)
      }
    })
    child.once("exit", (code, signal) =>
      Deferred.doneUnsafe(
        ready,
        Effect.fail(new ProcessNotReady({ message: `${label} process exited early (${code ?? signal})` }))
      ))
    yield* Deferred.await(ready).pipe(
      Effect.timeoutOrElse({
        duration: "60 seconds",
        orElse: () => Effect.fail(new ProcessNotReady({ message: `${label} process not ready after 60 s` }))
      })
    )
    return { pid: child.pid, kill: killNow(child) }
  })
