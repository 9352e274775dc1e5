/**
 * A PostgreSQL cluster of one test's own: `initdb` into a temporary directory, its own port on 127.0.0.1
 * (trust authentication), and `stop` / `start` for the test to take it away and bring it back. The cluster
 * is stopped and its directory deleted when the test's scope closes, whatever the outcome; clusters left
 * behind by a run that died (its process is gone) are removed when the next one is created.
 *
 * PostgreSQL refuses to run as root: as root, every PostgreSQL program runs as the `postgres` OS user
 * (`runuser -u postgres --`), which owns the directory. The binaries are `POSTGRES_BIN_DIR` or the newest
 * `/usr/lib/postgresql/<version>/bin`, else the `PATH`.
 */
import { Effect, Redacted, Schema, type Scope } from "effect"
import { execFile } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { chown, mkdtemp, rm } from "node:fs/promises"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** A PostgreSQL program of the private cluster failed; carries its command line and output. */
export class ClusterCommandFailed extends Schema.TaggedError<ClusterCommandFailed>()("ClusterCommandFailed", {
  command: Schema.String,
  output: Schema.String,
  message: Schema.String
}) {}

/** The directory of every private cluster starts with this, followed by the pid of the process owning it. */
const directoryPrefix = "entity-sync-outage-"

/** Where the PostgreSQL programs are (empty: on the `PATH`). */
const binDirectory = (): string => {
  const configured = process.env.POSTGRES_BIN_DIR
  if (configured !== undefined && configured !== "") return configured
  const root = "/usr/lib/postgresql"
  if (!existsSync(root)) return ""
  const versions = readdirSync(root)
    .filter((version) => /^\d+(\.\d+)?$/.test(version) && existsSync(join(root, version, "bin", "pg_ctl")))
    .sort((a, b) => Number(a) - Number(b))
  const newest = versions.at(-1)
  return newest === undefined ? "" : join(root, newest, "bin")
}

const asRoot = process.getuid?.() === 0

/** Runs a PostgreSQL program (as `postgres` when we are root); gives its output. */
const run = (program: string, args: ReadonlyArray<string>): Effect.Effect<string, ClusterCommandFailed> => {
  const bin = binDirectory()
  const path = bin === "" ? program : join(bin, program)
  const [file, argv] = asRoot ? ["runuser", ["-u", "postgres", "--", path, ...args]] : [path, [...args]]
  const command = [file, ...argv].join(" ")
  return Effect.callback<string, ClusterCommandFailed>((resume) => {
    execFile(file, argv, { timeout: 120_000 }, (error, stdout, stderr) => {
      const output = `${stdout}${stderr}`.slice(-4_000)
      resume(
        error === null
          ? Effect.succeed(output)
          : Effect.fail(new ClusterCommandFailed({ command, output, message: `${command} failed: ${error.message}` }))
      )
    })
  })
}

/** Whether a process exists. */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: it exists, it is someone else's
    return error instanceof Error && "code" in error && error.code === "EPERM"
  }
}

/** Stops (immediately) and deletes the clusters of processes that no longer exist. */
const removeStaleClusters: Effect.Effect<void> = Effect.gen(function*() {
  const stale = readdirSync(tmpdir()).filter((name) => {
    const match = new RegExp(`^${directoryPrefix}(\\d+)-`).exec(name)
    return match?.[1] !== undefined && !alive(Number(match[1]))
  })
  for (const name of stale) {
    yield* removeCluster(join(tmpdir(), name))
  }
})

/** Stops the cluster in `directory` (immediately, if it runs) and deletes the directory. */
const removeCluster = (directory: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    const data = join(directory, "data")
    if (existsSync(join(data, "postmaster.pid"))) {
      yield* run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]).pipe(Effect.ignore)
    }
    yield* Effect.promise(() => rm(directory, { recursive: true, force: true }))
  })

/** A TCP port nobody listens on right now, below the ephemeral range (so outgoing connections never take it). */
const freePort: Effect.Effect<number> = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const attempt = () => {
      const port = 20_000 + Math.floor(Math.random() * 10_000)
      const server = createServer()
      server.once("error", attempt)
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(port)))
    }
    attempt()
  })
)

/** A private PostgreSQL cluster, running, with its controls. */
export interface PrivateCluster {
  readonly port: number
  /** The directory holding the data directory, the log and the socket. */
  readonly directory: string
  /** The URL of the cluster's `postgres` database (the test's tables live there). */
  readonly url: Redacted.Redacted
  /** Stops the cluster (`pg_ctl stop -m fast`): clients are disconnected, new connections are refused. */
  readonly stop: Effect.Effect<void, ClusterCommandFailed>
  /** Starts it again; returns once it accepts connections. */
  readonly start: Effect.Effect<void, ClusterCommandFailed>
  /** The last lines of the server log (for a failure message). */
  readonly logTail: Effect.Effect<string>
}

/** Creates and starts a private cluster in the current scope; stopped and deleted when the scope closes. */
export const make: Effect.Effect<PrivateCluster, ClusterCommandFailed, Scope.Scope> = Effect.gen(function*() {
  yield* removeStaleClusters
  const directory = yield* Effect.acquireRelease(
    Effect.promise(() => mkdtemp(join(tmpdir(), `${directoryPrefix}${process.pid}-`))),
    removeCluster
  )
  if (asRoot) {
    const user = yield* postgresUser
    yield* Effect.promise(() => chown(directory, user.uid, user.gid))
  }
  const data = join(directory, "data")
  const log = join(directory, "server.log")
  yield* run("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
  let port = yield* freePort
  const startOn = (p: number) =>
    run("pg_ctl", [
      "-D",
      data,
      "-l",
      log,
      "-w",
      "-t",
      "60",
      "-o",
      // fsync off: a private, throw-away cluster (a fast stop still writes everything out)
      `-p ${p} -k ${directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60`,
      "start"
    ])
  // another process may take the port between the check and the start: try a few
  for (let attempt = 1;; attempt++) {
    const started = yield* Effect.result(startOn(port))
    if (started._tag === "Success") break
    if (attempt >= 3) return yield* started.failure
    port = yield* freePort
  }
  const url = Redacted.make(`postgres://postgres@127.0.0.1:${port}/postgres`)
  return {
    port,
    directory,
    url,
    stop: Effect.asVoid(run("pg_ctl", ["-D", data, "-m", "fast", "-w", "-t", "60", "stop"])),
    start: Effect.asVoid(startOn(port)),
    logTail: Effect.sync(() => existsSync(log) ? readFileSync(log, "utf8").split("\n").slice(-30).join("\n") : "")
  }
})

/** The uid and gid of the `postgres` OS user (from /etc/passwd). */
const postgresUser: Effect.Effect<{ readonly uid: number; readonly gid: number }, ClusterCommandFailed> = Effect
  .suspend(
    () => {
      const line = readFileSync("/etc/passwd", "utf8").split("\n").find((entry) => entry.startsWith("postgres:"))
      const fields = line?.split(":") ?? []
      const uid = Number(fields[2])
      const gid = Number(fields[3])
      return Number.isInteger(uid) && Number.isInteger(gid)
        ? Effect.succeed({ uid, gid })
        : Effect.fail(
          new ClusterCommandFailed({
            command: "runuser -u postgres",
            output: "",
            message: "PostgreSQL refuses to run as root and there is no `postgres` OS user to run it as"
          })
        )
    }
  )
