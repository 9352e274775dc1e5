/**
 * The demo services on real infrastructure, for the services' tests: a PostgreSQL database per service
 * (created and dropped by `test/postgres.ts`), a RabbitMQ virtual host per test (created with `rabbitmqctl`
 * and deleted afterwards, so queues, exchanges and messages never leak between tests or runs), and the
 * services started from the environment exactly as their entry points start them — in process, or as a
 * child process that can be sent SIGTERM.
 */
import { ConfigProvider, Context, Effect, Layer, Redacted, Schedule, type Scope } from "effect"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { createServer } from "node:net"
import { promisify } from "node:util"
import * as Standalone from "../../services/runtime/Standalone.ts"
import * as Postgres from "../postgres.ts"

const execFileAsync = promisify(execFile)
/** Runs `rabbitmqctl`, retried for a while (the node may be restarting its app, e.g. for another test). */
const rabbitmqctl = (...args: ReadonlyArray<string>) =>
  Effect.tryPromise(() => execFileAsync("rabbitmqctl", ["-q", ...args])).pipe(
    Effect.retry({ schedule: Schedule.spaced("1 second"), times: 30 }),
    Effect.orDie
  )

let counter = 0

/** A RabbitMQ virtual host of its own (guest has every permission on it); deleted when the scope closes. */
export const virtualHost: Effect.Effect<{ readonly name: string; readonly url: string }, never, Scope.Scope> = Effect
  .acquireRelease(
    Effect.gen(function*() {
      const name = `entity-sync-services-${process.pid}-${Date.now().toString(36)}-${counter++}`
      yield* rabbitmqctl("add_vhost", name)
      yield* rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
      return { name, url: `amqp://guest:guest@127.0.0.1:5672/${encodeURIComponent(name)}` }
    }),
    ({ name }) => rabbitmqctl("delete_vhost", name).pipe(Effect.ignore)
  )

/** Messages ready for delivery in `queue` of virtual host `vhost` (0 if the queue does not exist yet). */
export const readyMessages = (vhost: string, queue: string): Effect.Effect<number> =>
  Effect.map(rabbitmqctl("list_queues", "-p", vhost, "name", "messages_ready", "--no-table-headers"), ({ stdout }) => {
    const line = stdout.split("\n").map((l) => l.trim().split(/\s+/)).find(([name]) => name === queue)
    return line === undefined ? 0 : Number(line[1])
  })

/** A fresh PostgreSQL database; dropped when the scope closes. Its URL. */
export const database: Effect.Effect<Redacted.Redacted, unknown, Scope.Scope> = Effect.map(
  Layer.build(Layer.fresh(Postgres.database)),
  (context) => Context.get(context, Postgres.TestDatabase).url
)

/** The admin token the services under test are started with. */
export const adminToken = "test-admin-token"

/** The environment of a service under test: its database, the virtual host, any free port, fast retries. */
export const environment = (options: {
  readonly databaseUrl: Redacted.Redacted
  readonly amqpUrl: string
  readonly port?: number
}): Record<string, string> => ({
  PORT: String(options.port ?? 0),
  HOST: "127.0.0.1",
  ADMIN_TOKEN: adminToken,
  DATABASE_URL: Redacted.value(options.databaseUrl),
  DATABASE_POOL_SIZE: "5",
  AMQP_URL: options.amqpUrl,
  AMQP_CONNECTION_NAME: "entity-sync-services-test",
  SYNC_RELAY_POLL_INTERVAL: "200 millis",
  SYNC_DEPENDENCY_RETRY_BASE: "100 millis",
  SYNC_DEPENDENCY_RETRY_MAX_DELAY: "500 millis",
  SYNC_DEPENDENCY_RETRY_BUDGET: "3 seconds",
  SYNC_IN_PROCESS_RETRIES: "2",
  // every service of a test publishes with the virtual host's login (R11: the owner's events come from it)
  SYNC_PRODUCER_LOGINS: JSON.stringify({ accounts: ["guest"] }),
  SYNC_RESYNC_REQUESTER_LOGINS: JSON.stringify({ directory: ["guest"], test: ["guest"] })
})

/**
 * Starts a service in process from `env`, as its entry point would, and waits until it has started (unless
 * `ready: false`: then it returns as soon as it listens); it stops when the scope closes.
 */
export const startInProcess = <Options, E>(
  service: Standalone.ServiceDefinition<Options, E>,
  env: Record<string, string>,
  options?: { readonly ready?: boolean }
): Effect.Effect<Standalone.Started, unknown, Scope.Scope> =>
  Standalone.start(service).pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })),
    Effect.tap((started) => (options?.ready === false ? Effect.void : started.ready))
  )

/** A free TCP port on 127.0.0.1. */
export const freePort: Effect.Effect<number> = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A service running as a child process. */
export interface Child {
  readonly process: ChildProcess
  /** Everything it printed so far. */
  readonly output: () => string
  /** Resolves with its exit code (null when killed by a signal it did not handle). */
  readonly exited: Promise<number | null>
}

/**
 * Runs `node --conditions=entity-sync-source --import tsx <entry>` from the repository root with `env` added to this process's; the
 * child is killed (SIGKILL) when the scope closes, if it is still running.
 */
export const spawnService = (entry: string, env: Record<string, string>): Effect.Effect<Child, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["--conditions=entity-sync-source", "--import", "tsx", entry], {
        cwd: new URL("../../", import.meta.url).pathname,
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
      return { process: child, output: () => output, exited }
    }),
    (child) =>
      Effect.sync(() => {
        if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill("SIGKILL")
      })
  )
