/**
 * R12: health of a service, as named checks. Readiness says whether the service can do its work now —
 * its database answers, its broker is connected, its consumer is subscribed (not paused by an outage), its
 * relay makes progress; liveness says whether a restart would help — it fails only when something is stuck
 * (a delivery unsettled far longer than any outage hold), never because a dependency is down (an outage
 * pauses, it is waited out). Every check names its cause while it fails (never a driver's error text, which
 * is in the parts' logs) and since when it has been in its state. `Health.layer` finds the parts in the context it is built in (`Transactor`, `Relay` with its
 * `Outbox`, `SyncConsumer`) and checks each one it finds; `toJson` is the body of `/health`.
 *
 * @since 0.2.0
 */
import { Clock, Context, Duration, Effect, Layer, Option } from "effect"
import { Outbox } from "./Outbox.ts"
import { Relay } from "./Relay.ts"
import { SyncConsumer } from "./SyncConsumer.ts"
import { Transactor } from "./Transactor.ts"

/** What one probe observed: fine, or failing with a cause (and since when, when the part knows it). */
export type Observation =
  | { readonly ok: true }
  | { readonly ok: false; readonly cause: string; readonly since?: number }

/** One named check of a report. */
export interface Check {
  readonly name: string
  readonly ok: boolean
  /** Since when (epoch milliseconds) the check has been in this state: the start, or its last change. */
  readonly since: number
  /** While failing: why. */
  readonly cause?: string
}

/** The checks of readiness or of liveness; `ok` when every one is. */
export interface Report {
  readonly ok: boolean
  readonly checks: ReadonlyArray<Check>
}

/** A check of the service's own: its name and its probe (e.g. a dependency the library does not know). */
export interface CustomCheck {
  readonly name: string
  readonly probe: Effect.Effect<Observation>
}

/** Settings of the health checks. */
export interface HealthOptions {
  /** How long a probe may take before its check fails (default 3 seconds). */
  readonly probeTimeout?: Duration.Input
  /**
   * How old the oldest unpublished outbox event may be while the relay counts as making progress (default
   * 1 minute).
   */
  readonly maxRelayLag?: Duration.Input
  /** How long a delivery may stay unsettled before the consumer counts as stuck, for liveness (default 15 minutes). */
  readonly maxUnsettled?: Duration.Input
  /** More readiness checks. */
  readonly readiness?: ReadonlyArray<CustomCheck>
  /** More liveness checks. */
  readonly liveness?: ReadonlyArray<CustomCheck>
}

/** The defaults of `HealthOptions`. */
export const defaults = {
  probeTimeout: "3 seconds",
  maxRelayLag: "1 minute",
  maxUnsettled: "15 minutes"
} as const

/** The health of a service: its readiness and its liveness, checked on each call. */
export class Health extends Context.Service<Health, {
  /** Whether the service can do its work now (database, broker, consumer, relay, and the custom checks). */
  readonly readiness: Effect.Effect<Report>
  /** Whether the service is alive, i.e. not stuck (a restart would not help while this holds). */
  readonly liveness: Effect.Effect<Report>
}>()("entity-sync/Health") {}

/** A check of one part: its name and what it observes now. */
interface Probe {
  readonly name: string
  readonly observe: Effect.Effect<Observation>
}

const fine: Observation = { ok: true }

const failing = (cause: string, since?: number): Observation =>
  since === undefined ? { ok: false, cause } : { ok: false, cause, since }

const seconds = (millis: number) => `${Math.round(millis / 100) / 10} s`

/** The first failing observation of several, the earliest-known `since` kept; ok when none fails. */
const firstFailing = (observations: ReadonlyArray<Observation>): Observation => {
  const failed = observations.filter((o): o is Extract<Observation, { ok: false }> => !o.ok)
  const first = failed[0]
  if (first === undefined) return { ok: true }
  const known = failed.flatMap((o) => (o.since === undefined ? [] : [o.since]))
  return failing(first.cause, known.length === 0 ? undefined : Math.min(...known))
}

/**
 * The probes of the parts found in the context: `database` (a `Transactor` probe, and what the relay and
 * the consumer report), `broker` (what the relay and the consumer report), `consumer` (subscribed: not
 * paused) and `relay` (the oldest unpublished event younger than `maxRelayLag`).
 */
const readinessProbes = (options: HealthOptions) =>
  Effect.gen(function*() {
    const transactor = yield* Effect.serviceOption(Transactor)
    const relay = yield* Effect.serviceOption(Relay)
    const outbox = yield* Effect.serviceOption(Outbox)
    const consumer = yield* Effect.serviceOption(SyncConsumer)
    const maxRelayLag = Duration.toMillis(Duration.fromInputUnsafe(options.maxRelayLag ?? defaults.maxRelayLag))
    const relayStatus = Option.map(relay, (r) => r.status)
    const consumerStatus = Option.map(consumer, (c) => c.status)
    const reported = (dependency: "database" | "broker") =>
      Effect.gen(function*() {
        const observations: Array<Observation> = []
        if (Option.isSome(relayStatus)) {
          const status = (yield* relayStatus.value)[dependency]
          if (!status.ok) {
            observations.push(failing(`the relay cannot reach the ${dependency}`, status.since))
          }
        }
        if (Option.isSome(consumerStatus)) {
          const paused = (yield* consumerStatus.value).paused
          if (paused !== null && paused.dependency === dependency) {
            observations.push(
              failing(`the consumer is paused: the ${dependency} does not answer`, paused.since)
            )
          }
        }
        return observations
      })
    const probes: Array<Probe> = []
    if (Option.isSome(transactor) || Option.isSome(relay) || Option.isSome(consumer)) {
      probes.push({
        name: "database",
        observe: Effect.gen(function*() {
          const probed: Observation = Option.isNone(transactor) ? fine : yield* transactor.value.probe.pipe(
            Effect.as<Observation>({ ok: true }),
            Effect.catch((error) => Effect.succeed(failing(`the database does not answer (${error.reason._tag})`)))
          )
          return firstFailing([probed, ...(yield* reported("database"))])
        })
      })
    }
    if (Option.isSome(relay) || Option.isSome(consumer)) {
      probes.push({ name: "broker", observe: Effect.map(reported("broker"), firstFailing) })
    }
    if (Option.isSome(consumerStatus)) {
      const status = consumerStatus.value
      probes.push({
        name: "consumer",
        observe: Effect.map(status, ({ paused }) =>
          paused === null
            ? fine
            : failing(
              `not subscribed: consumption is paused while the ${paused.dependency} does not answer`,
              paused.since
            ))
      })
    }
    if (Option.isSome(relay) && Option.isSome(outbox)) {
      const pending = outbox.value.pending
      probes.push({
        name: "relay",
        observe: Effect.gen(function*() {
          const { count, oldestCreatedAt } = yield* pending
          const now = yield* Clock.currentTimeMillis
          if (oldestCreatedAt === null || now - oldestCreatedAt <= maxRelayLag) return fine
          return failing(
            `no progress: the oldest of ${count} unpublished events is ${seconds(now - oldestCreatedAt)} old (at most ${
              seconds(maxRelayLag)
            })`,
            oldestCreatedAt + maxRelayLag
          )
        }).pipe(
          Effect.catch((error) => Effect.succeed(failing(`cannot read the outbox (${error.reason._tag})`)))
        )
      })
    }
    return probes
  })

/** The liveness probes: `process` (always ok) and, with a consumer, `consumer` (no delivery stuck unsettled). */
const livenessProbes = (options: HealthOptions) =>
  Effect.gen(function*() {
    const consumer = yield* Effect.serviceOption(SyncConsumer)
    const maxUnsettled = Duration.toMillis(Duration.fromInputUnsafe(options.maxUnsettled ?? defaults.maxUnsettled))
    const probes: Array<Probe> = [{ name: "process", observe: Effect.succeed(fine) }]
    if (Option.isSome(consumer)) {
      const status = consumer.value.status
      probes.push({
        name: "consumer",
        observe: Effect.gen(function*() {
          const { oldestUnsettledAt, paused } = yield* status
          const now = yield* Clock.currentTimeMillis
          if (paused !== null || oldestUnsettledAt === null || now - oldestUnsettledAt <= maxUnsettled) {
            return fine
          }
          return failing(
            `stuck: a delivery has been unsettled for ${seconds(now - oldestUnsettledAt)} (at most ${
              seconds(maxUnsettled)
            })`,
            oldestUnsettledAt + maxUnsettled
          )
        })
      })
    }
    return probes
  })

/**
 * Runs probes into a report, remembering since when each check has been in its state (a failing part's own
 * `since`, when it reports one, is kept). A probe that fails, dies or takes longer than `timeout` fails its
 * check.
 */
const reporter = (probes: ReadonlyArray<Probe>, timeout: Duration.Duration, start: number) => {
  const states = new Map<string, { readonly ok: boolean; readonly since: number }>()
  const observe = (probe: Probe) =>
    probe.observe.pipe(
      Effect.timeoutOption(timeout),
      Effect.map((observed) =>
        Option.getOrElse(observed, () => failing(`${probe.name}: no answer within ${Duration.format(timeout)}`))
      ),
      Effect.catchCause((cause) =>
        Effect.as(
          Effect.logWarning(`health: the ${probe.name} check failed`, cause),
          failing(`${probe.name}: the check itself failed (see the log)`)
        )
      )
    )
  return Effect.gen(function*() {
    const observations = yield* Effect.forEach(probes, observe, { concurrency: "unbounded" })
    const now = yield* Clock.currentTimeMillis
    const checks = probes.map((probe, i): Check => {
      const observation = observations[i] ?? failing("not observed")
      const previous = states.get(probe.name) ?? { ok: true, since: start }
      const since = observation.ok
        ? (previous.ok ? previous.since : now)
        : (observation.since ?? (previous.ok ? now : previous.since))
      states.set(probe.name, { ok: observation.ok, since })
      return observation.ok
        ? { name: probe.name, ok: true, since }
        : { name: probe.name, ok: false, since, cause: observation.cause }
    })
    return { ok: checks.every((check) => check.ok), checks }
  })
}

/** Makes the health checks of the parts found in the current context (see the module's description). */
export const make = (options: HealthOptions = {}): Effect.Effect<Health["Service"]> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const timeout = Duration.fromInputUnsafe(options.probeTimeout ?? defaults.probeTimeout)
    const custom = (checks: ReadonlyArray<CustomCheck> | undefined): ReadonlyArray<Probe> =>
      (checks ?? []).map((check) => ({ name: check.name, observe: check.probe }))
    const readiness = [...(yield* readinessProbes(options)), ...custom(options.readiness)]
    const liveness = [...(yield* livenessProbes(options)), ...custom(options.liveness)]
    return Health.of({
      readiness: reporter(readiness, timeout, start),
      liveness: reporter(liveness, timeout, start)
    })
  })

/** The health checks of the parts in the context the layer is built in. */
export const layer = (options?: HealthOptions): Layer.Layer<Health> => Layer.effect(Health, make(options))

/** One check as JSON: `{ ok, since, cause? }`, `since` in ISO-8601. */
export type CheckJson = {
  readonly ok: boolean
  readonly since: string
  readonly cause?: string
}

/** The body of `/health`: `status` (`ok` when ready and live), and every check by name. */
export type HealthJson = {
  readonly status: "ok" | "unavailable"
  readonly readiness: ChecksJson
  readonly liveness: ChecksJson
}

/** The checks of a report as JSON, by name. */
export type ChecksJson = { readonly [name: string]: CheckJson }

/** The checks of a report as JSON: `{ <name>: { ok, since, cause? } }`. */
export const checksJson = (report: Report): ChecksJson =>
  Object.fromEntries(report.checks.map((check) => [
    check.name,
    check.cause === undefined
      ? { ok: check.ok, since: new Date(check.since).toISOString() }
      : { ok: check.ok, since: new Date(check.since).toISOString(), cause: check.cause }
  ]))

/** The JSON of a readiness and a liveness report (`HealthJson`). */
export const toJson = (readiness: Report, liveness: Report): HealthJson => ({
  status: readiness.ok && liveness.ok ? "ok" : "unavailable",
  readiness: checksJson(readiness),
  liveness: checksJson(liveness)
})

/** Checks readiness and liveness now; the JSON of `/health` (`toJson`). */
export const check: Effect.Effect<HealthJson, never, Health> = Effect.gen(function*() {
  const health = yield* Health
  const [readiness, liveness] = yield* Effect.all([health.readiness, health.liveness], { concurrency: 2 })
  return toJson(readiness, liveness)
})
