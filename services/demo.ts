/**
 * `npm run demo`: both demo services in one process on the embedded default — each its own embedded
 * PostgreSQL (PGlite), sharing an in-memory broker — and the pattern's checklist played against them as a
 * scenario (`scenario/Scenario.ts`): each step prints what it expected and what it saw, then owner rows and
 * copies are counted side by side. Exits 0 only if every step held.
 *
 * `npm run demo -- --serve` also serves both HTTP APIs on 127.0.0.1 (accounts on 3001, directory on 3002;
 * `ACCOUNTS_PORT` and `DIRECTORY_PORT` change them), plays the scenario through them, and keeps running until
 * SIGINT so you can try the APIs with curl (see the README).
 *
 * The `/admin/*` routes need a bearer token: `ADMIN_TOKEN` when it is set, otherwise `demo-admin-token`
 * (printed at start). The library's settings (`SYNC_*`, see `SyncConfig`) apply to both services, except
 * the directory's dependency schedule and in-process retries, which the demo shortens.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Config, Console, Data, Effect, Exit, Layer, Redacted, References, Runtime } from "effect"
import { FetchHttpClient, HttpClient } from "effect/http"
import { SyncConfig } from "entity-sync"
import { MemoryBroker } from "entity-sync/memory"
import * as AccountsService from "./accounts/AccountsService.ts"
import * as DirectoryService from "./directory/DirectoryService.ts"
import * as HttpApp from "./http/HttpApp.ts"
import { Faults, make as makeFaults } from "./scenario/Faults.ts"
import * as Scenario from "./scenario/Scenario.ts"

/** Some steps of the scenario did not hold. */
class StepsFailed extends Data.TaggedError("StepsFailed")<{ readonly message: string }> {}

const serve = process.argv.includes("--serve")

/** Steps that did not hold, for the exit code. */
let failedSteps = 0

/** The admin token of the demo when `ADMIN_TOKEN` is not set. */
const demoAdminToken = "demo-admin-token"

const program = Effect.gen(function*() {
  yield* Console.log("starting accounts and directory: an embedded PostgreSQL each, one in-memory broker…")
  const adminToken = yield* Config.String("ADMIN_TOKEN").pipe(Config.withDefault(demoAdminToken))
  const http = { adminToken: Redacted.make(adminToken) }
  const broker = yield* Layer.build(MemoryBroker.layer())
  const accounts = yield* AccountsService.make({ database: {}, http, relay: yield* SyncConfig.relayOptions }).pipe(
    Effect.provideContext(broker)
  )
  const directory = yield* DirectoryService.make({
    database: {},
    http,
    consumer: {
      ...(yield* SyncConfig.consumerOptions),
      // a short dependency budget, so that the dead-letter step takes seconds, not a day
      dependencyRetry: SyncConfig.backoff({ base: "100 millis", maxDelay: "500 millis", budget: "3 seconds" }),
      inProcessRetries: 2
    }
  }).pipe(Effect.provideContext(broker))
  const faults = yield* makeFaults({
    ownerDatabase: accounts.database.url,
    consumerDatabase: directory.database.url
  }).pipe(Effect.provideContext(broker))

  const urls = serve
    ? yield* Effect.gen(function*() {
      const accountsPort = yield* Config.Port("ACCOUNTS_PORT").pipe(Config.withDefault(AccountsService.defaultPort))
      const directoryPort = yield* Config.Port("DIRECTORY_PORT").pipe(Config.withDefault(DirectoryService.defaultPort))
      const a = yield* HttpApp.listen(accounts.http, { port: accountsPort, host: "127.0.0.1" })
      const d = yield* HttpApp.listen(directory.http, { port: directoryPort, host: "127.0.0.1" })
      yield* Console.log(`accounts on ${a.url}, directory on ${d.url}`)
      yield* Console.log(`admin routes: Authorization: Bearer ${adminToken}`)
      return { accounts: a.url, directory: d.url }
    })
    : { accounts: "http://accounts", directory: "http://directory" }
  const client = serve
    ? yield* HttpClient.HttpClient.pipe(Effect.provide(FetchHttpClient.layer))
    : HttpApp.inProcessClient({ accounts: accounts.http, directory: directory.http })

  const result = yield* Scenario.run({ ...urls, adminToken }).pipe(
    Effect.provideService(HttpClient.HttpClient, client),
    Effect.provideService(Faults, faults)
  )
  failedSteps = result.failed.length
  if (serve) {
    yield* Console.log(
      `\nstill serving — try: curl ${urls.accounts}/users · curl ${urls.directory}/employees · ` +
        `curl ${urls.directory}/metrics · ` +
        `curl -H 'Authorization: Bearer ${adminToken}' ${urls.directory}/admin/dead-letters (Ctrl-C to stop)`
    )
    return yield* Effect.never
  }
  if (failedSteps > 0) {
    return yield* Effect.fail(
      new StepsFailed({ message: `${failedSteps} step(s) did not hold: ${result.failed.join("; ")}` })
    )
  }
}).pipe(
  // the services' own warnings (a dead letter, a retry) show between the steps; routine logs do not
  Effect.provideService(References.MinimumLogLevel, "Warn"),
  Effect.scoped
)

// SIGINT ends `--serve`: a clean exit when every step held
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)
    ? onExit(failedSteps > 0 ? 1 : 0)
    : Runtime.defaultTeardown(exit, onExit)

NodeRuntime.runMain(program, { teardown })
