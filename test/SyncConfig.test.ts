/**
 * Every setting documented in `SyncConfig` reaches the component it is for: set through a `ConfigProvider`,
 * each environment variable arrives in the options the relay and the consumer are started with — by the
 * library's `layerConfig` (`SyncConfig.relayOptions`, `SyncConfig.consumerOptions`) and by the demo
 * services (`AccountsService.relayOptions`, `DirectoryService.consumerOptions` of their `config`) — and,
 * unset, each gives its documented default.
 */
import { assert, describe, it } from "@effect/vitest"
import { type Config, ConfigProvider, Duration, Effect, Option } from "effect"
import { readFileSync } from "node:fs"
import * as AccountsService from "../services/accounts/AccountsService.ts"
import * as DirectoryService from "../services/directory/DirectoryService.ts"
import type { RelayOptions } from "../src/Relay.ts"
import * as RetrySchedule from "../src/RetrySchedule.ts"
import * as Signature from "../src/Signature.ts"
import * as SyncConfig from "../src/SyncConfig.ts"
import type { ConsumerOptions } from "../src/SyncConsumer.ts"

type Env = Readonly<Record<string, string>>
type Consumer = Omit<ConsumerOptions<unknown>, "service" | "subscriptions">

/** One setting: the variables that set it, and what a component's options show unset and set. */
interface Row<Options> {
  readonly env: Env
  /** The setting as the options show it (durations in milliseconds, schedules by some of their delays). */
  readonly observe: (options: Options) => Effect.Effect<unknown>
  readonly unset: unknown
  readonly set: unknown
}

const read = <A>(config: Config.Config<A>, env: Env) => config.parse(ConfigProvider.fromEnv({ env }))

const millis = (duration: Duration.Input | undefined) =>
  Effect.succeed(duration === undefined ? undefined : Duration.toMillis(Duration.fromInputUnsafe(duration)))

/** The delays of `schedule` after these numbers of attempts, in milliseconds (null once its budget is spent). */
const delays = (schedule: RetrySchedule.RetrySchedule | undefined, attempts: ReadonlyArray<number>) =>
  schedule === undefined ?
    Effect.succeed(undefined) :
    Effect.forEach(attempts, (n) =>
      Effect.map(RetrySchedule.delayAfter(schedule, n), (delay) =>
        Option.match(delay, {
          onNone: () => null,
          onSome: Duration.toMillis
        })))

const plain = (value: unknown) => Effect.succeed(value)

const signing = Signature.generateKeyPair("accounts-test")
const verifying = { accounts: [signing.verifying] }

const relayRows: Readonly<Record<string, Row<Omit<RelayOptions, "producer">>>> = {
  SYNC_RELAY_BATCH_SIZE: {
    env: { SYNC_RELAY_BATCH_SIZE: "7" },
    observe: (o) => plain(o.batchSize),
    unset: 100,
    set: 7
  },
  SYNC_RELAY_ORDERED_BY_ENTITY: {
    env: { SYNC_RELAY_ORDERED_BY_ENTITY: "true" },
    observe: (o) => plain(o.orderedByEntity),
    unset: false,
    set: true
  },
  SYNC_RELAY_BATCHES_IN_FLIGHT: {
    env: { SYNC_RELAY_BATCHES_IN_FLIGHT: "3" },
    observe: (o) => plain(o.batchesInFlight),
    unset: 8,
    set: 3
  },
  SYNC_RELAY_POLL_INTERVAL: {
    env: { SYNC_RELAY_POLL_INTERVAL: "250 millis" },
    observe: (o) => millis(o.pollInterval),
    unset: 1_000,
    set: 250
  },
  SYNC_OUTBOX_RETENTION: {
    env: { SYNC_OUTBOX_RETENTION: "2 days" },
    observe: (o) => millis(o.retention),
    unset: 7 * 24 * 3_600_000,
    set: 2 * 24 * 3_600_000
  },
  // 100 ms doubling: the tenth delay would be 51.2 s, so it shows the cap
  SYNC_RELAY_RETRY_MAX_DELAY: {
    env: { SYNC_RELAY_RETRY_MAX_DELAY: "2 seconds" },
    observe: (o) => delays(o.retry, [1, 10]),
    unset: [100, 30_000],
    set: [100, 2_000]
  },
  "SYNC_SIGNING_KEY, SYNC_SIGNING_KEY_ID": {
    env: { SYNC_SIGNING_KEY: String(signing.signing.privateKey), SYNC_SIGNING_KEY_ID: "accounts-test" },
    observe: (o) => plain(o.signing?.keyId),
    unset: undefined,
    set: "accounts-test"
  }
}

const consumerRows: Readonly<Record<string, Row<Consumer>>> = {
  SYNC_CONSUMER_BATCH_SIZE: {
    env: { SYNC_CONSUMER_BATCH_SIZE: "17" },
    observe: (o) => plain(o.batchSize),
    unset: 250,
    set: 17
  },
  SYNC_CONSUMER_BATCH_WINDOW: {
    env: { SYNC_CONSUMER_BATCH_WINDOW: "20 millis" },
    observe: (o) => millis(o.batchWindow),
    unset: 5,
    set: 20
  },
  SYNC_PREFETCH: { env: { SYNC_PREFETCH: "42" }, observe: (o) => plain(o.prefetch), unset: 500, set: 42 },
  SYNC_DEPENDENCY_RETRY_BASE: {
    env: { SYNC_DEPENDENCY_RETRY_BASE: "50 millis" },
    observe: (o) => delays(o.dependencyRetry, [1, 2]),
    unset: [200, 400],
    set: [50, 100]
  },
  // 200 ms doubling: the twelfth delay would be 409.6 s, so it shows the cap (well within the budget)
  SYNC_DEPENDENCY_RETRY_MAX_DELAY: {
    env: { SYNC_DEPENDENCY_RETRY_MAX_DELAY: "1 second" },
    observe: (o) => delays(o.dependencyRetry, [12]),
    unset: [300_000],
    set: [1_000]
  },
  // the twentieth attempt comes about an hour in: within 24 hours, long past 10 seconds
  SYNC_DEPENDENCY_RETRY_BUDGET: {
    env: { SYNC_DEPENDENCY_RETRY_BUDGET: "10 seconds" },
    observe: (o) => delays(o.dependencyRetry, [20]),
    unset: [300_000],
    set: [null]
  },
  SYNC_IN_PROCESS_RETRIES: {
    env: { SYNC_IN_PROCESS_RETRIES: "0" },
    observe: (o) => plain(o.inProcessRetries),
    unset: 3,
    set: 0
  },
  SYNC_MAX_MESSAGE_BYTES: {
    env: { SYNC_MAX_MESSAGE_BYTES: "1024" },
    observe: (o) => plain(o.maxBytes),
    unset: 262_144,
    set: 1_024
  },
  SYNC_MAX_JSON_DEPTH: { env: { SYNC_MAX_JSON_DEPTH: "4" }, observe: (o) => plain(o.maxDepth), unset: 32, set: 4 },
  SYNC_MAX_JSON_KEYS: { env: { SYNC_MAX_JSON_KEYS: "50" }, observe: (o) => plain(o.maxKeys), unset: 10_000, set: 50 },
  SYNC_PRODUCER_LOGINS: {
    env: { SYNC_PRODUCER_LOGINS: JSON.stringify({ accounts: ["accounts", "accounts-relay"] }) },
    observe: (o) => plain(o.producers),
    unset: {},
    set: { accounts: ["accounts", "accounts-relay"] }
  },
  SYNC_VERIFYING_KEYS: {
    env: { SYNC_VERIFYING_KEYS: JSON.stringify(verifying) },
    observe: (o) => plain(o.verifyingKeys),
    unset: {},
    set: verifying
  },
  SYNC_HOLD_LIMIT: {
    env: { SYNC_HOLD_LIMIT: "1 minute" },
    observe: (o) => millis(o.holdLimit),
    unset: 600_000,
    set: 60_000
  },
  SYNC_INBOX_RETENTION: {
    env: { SYNC_INBOX_RETENTION: "1 day" },
    observe: (o) => millis(o.retention),
    unset: 7 * 24 * 3_600_000,
    set: 24 * 3_600_000
  },
  SYNC_CONSUMER_LANES: {
    env: { SYNC_CONSUMER_LANES: "8" },
    observe: (o) => plain(o.lanes),
    unset: undefined,
    set: 8
  },
  SYNC_PARKED_LEASE: {
    env: { SYNC_PARKED_LEASE: "10 seconds" },
    observe: (o) => millis(o.parkedLease),
    unset: 30_000,
    set: 10_000
  }
}

/** Who receives the options, and how they are read from an environment. */
interface Receiver<Options> {
  readonly name: string
  readonly options: (env: Env) => Effect.Effect<Options, Config.ConfigError>
}

const relayReceivers: ReadonlyArray<Receiver<Omit<RelayOptions, "producer">>> = [
  { name: "Relay.layerConfig (SyncConfig.relayOptions)", options: (env) => read(SyncConfig.relayOptions, env) },
  {
    name: "the accounts service's relay",
    options: (env) => Effect.map(read(AccountsService.config, env), AccountsService.relayOptions)
  }
]

const consumerReceivers: ReadonlyArray<Receiver<Consumer>> = [
  {
    name: "SyncConsumer.layerConfig (SyncConfig.consumerOptions)",
    options: (env) => read(SyncConfig.consumerOptions, env)
  },
  {
    name: "the directory service's consumer",
    options: (env) => Effect.map(read(DirectoryService.config, env), DirectoryService.consumerOptions)
  }
]

const table = <Options>(rows: Readonly<Record<string, Row<Options>>>, receivers: ReadonlyArray<Receiver<Options>>) => {
  for (const receiver of receivers) {
    describe(receiver.name, () => {
      for (const [variables, row] of Object.entries(rows)) {
        it.effect(`${variables}: its default when unset, its value when set`, () =>
          Effect.gen(function*() {
            const unset = yield* row.observe(yield* receiver.options({}))
            assert.deepStrictEqual(unset, row.unset, `${variables} unset`)
            const set = yield* row.observe(yield* receiver.options(row.env))
            assert.deepStrictEqual(set, row.set, `${variables} set`)
          }))
      }
    })
  }
}

describe("every setting reaches the relay", () => {
  table(relayRows, relayReceivers)
})

describe("every setting reaches the consumer", () => {
  table(consumerRows, consumerReceivers)
})

describe("the settings' documentation", () => {
  const variablesIn = (text: string) => new Set(text.match(/\bSYNC_[A-Z_]+[A-Z]\b/g) ?? [])
  const tested = new Set([...Object.keys(relayRows), ...Object.keys(consumerRows)].flatMap((key) => key.split(", ")))

  it("every variable SyncConfig documents has a row here, and every row is documented there", () => {
    const documented = variablesIn(readFileSync(new URL("../src/SyncConfig.ts", import.meta.url), "utf8"))
    assert.deepStrictEqual([...documented].sort(), [...tested].sort())
  })

  it("the README names every one of them", () => {
    const readme = variablesIn(readFileSync(new URL("../README.md", import.meta.url), "utf8"))
    assert.deepStrictEqual([...tested].filter((variable) => !readme.has(variable)), [])
  })
})
