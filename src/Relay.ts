/**
 * The relay: claims due outbox rows, publishes them as confirmed batches and marks them published (R3).
 * It wakes when events are committed and polls as a fallback; a failed publish is rescheduled per row on a
 * `Schedule`, so a broker outage backs off and loses nothing, and it waits out database outages (R12).
 *
 * @since 0.1.0
 */
import { Clock, Config, Context, Duration, Effect, Fiber, Layer, Metric, Option, Schedule, type Tracer } from "effect"
import type { SqlError } from "effect/sql"
import { Broker, entityKey, entityKeyHeader, type OutgoingMessage } from "./Broker.ts"
import * as Envelope from "./Envelope.ts"
import * as Retention from "./internal/Retention.ts"
import * as Metrics from "./Metrics.ts"
import * as Outage from "./Outage.ts"
import { type ClaimOptions, Outbox, type OutboxRow, pruneBatchSize } from "./Outbox.ts"
import * as RetrySchedule from "./RetrySchedule.ts"
import * as Signature from "./Signature.ts"
import * as Supervisor from "./Supervisor.ts"
import * as SyncConfig from "./SyncConfig.ts"
import * as Tracing from "./Tracing.ts"
import { Transactor } from "./Transactor.ts"

/** Relay settings. */
export interface RelayOptions {
  /** The producing service, for metrics and logs. */
  readonly producer: string
  /** Rows claimed and published per batch (default 100). */
  readonly batchSize?: number
  /** Batches published and awaiting their confirms at once while draining (default 8). */
  readonly batchesInFlight?: number
  /** How often to look for due rows when no commit woke the relay (default 1 second). */
  readonly pollInterval?: Duration.Input
  /** Backoff of a row whose publish failed, by its attempts (default exponential from 100 ms, at most 30 s). */
  readonly retry?: RetrySchedule.RetrySchedule
  /** How long published rows stay in the outbox for replays (R9; default 7 days). */
  readonly retention?: Duration.Input
  /**
   * How often published rows past the retention are deleted (default 1 hour): once per interval across
   * the relays of the outbox (`Outbox.takeTurn`), whatever their number.
   */
  readonly pruneInterval?: Duration.Input
  /** Rows one retention statement deletes at most (default `Outbox.pruneBatchSize`, 10 000). */
  readonly pruneBatchSize?: number
  /** When set, every published message carries a signature of its body by this key (R11, `Signature`). */
  readonly signing?: Signature.SigningKey
  /**
   * How the relay waits for an unreachable database, by consecutive failures (default exponential from
   * 100 ms, at most 10 s); between waits it probes with `Transactor.probe`.
   */
  readonly outageBackoff?: RetrySchedule.RetrySchedule
  /** The exchange the broker publishes to, named by the publish spans (default `sync.events`; R10). */
  readonly exchange?: string
  /**
   * Publish each entity's events in version order even when several relays share the outbox (default
   * false; `Outbox.ClaimOptions`): what consumers with ordered lanes need end to end. It serializes the
   * relays' claims and publishes an entity's next event only after its previous one was confirmed, so it
   * costs throughput on hot entities; a single relay publishes in order either way.
   */
  readonly orderedByEntity?: boolean
}

/** How one dependency of the relay is doing. */
export interface DependencyStatus {
  /** False while its last operation failed. */
  readonly ok: boolean
  /** Since when (epoch milliseconds) it has been in this state: the relay's start or the last change. */
  readonly since: number
  /** While failing: the last error (at most `maxStatusError` characters). */
  readonly error?: string
}

/** What a running relay reports about its database (claims, marks) and its broker (publishes). */
export interface RelayStatus {
  readonly database: DependencyStatus
  readonly broker: DependencyStatus
}

/** The longest error text a `DependencyStatus` keeps. */
export const maxStatusError = 500

/** A relay running in the background (`layer`): its status, for health checks (R12). */
export class Relay extends Context.Service<Relay, {
  readonly status: Effect.Effect<RelayStatus>
}>()("entity-sync/Relay") {}

/**
 * Where a relay records how its dependencies are doing: `report` notes the outcome of an operation and
 * logs when that changes the state (never on every attempt); `status` reads it.
 */
export interface StatusTracker {
  readonly report: (
    dependency: keyof RelayStatus,
    outcome: { readonly ok: true } | { readonly ok: false; readonly error: string }
  ) => Effect.Effect<void>
  readonly status: Effect.Effect<RelayStatus>
}

/** A new `StatusTracker` for the relay of `producer`: both dependencies ok since now. */
export const makeStatusTracker = (producer: string): Effect.Effect<StatusTracker> =>
  Effect.map(Clock.currentTimeMillis, (start) => {
    const state: { -readonly [K in keyof RelayStatus]: DependencyStatus } = {
      database: { ok: true, since: start },
      broker: { ok: true, since: start }
    }
    const names = { database: "the database", broker: "the broker" }
    return {
      status: Effect.sync(() => ({ ...state })),
      report: (dependency, outcome) =>
        Effect.suspend(() => {
          const current = state[dependency]
          if (outcome.ok) {
            if (current.ok) return Effect.void
            return Effect.flatMap(Clock.currentTimeMillis, (now) => {
              state[dependency] = { ok: true, since: now }
              return Effect.logInfo(`relay: ${names[dependency]} answers again`, {
                producer,
                failingForMillis: now - current.since
              })
            })
          }
          const error = Signature.quote(outcome.error, maxStatusError)
          if (!current.ok) {
            state[dependency] = { ...current, error }
            return Effect.void
          }
          return Effect.flatMap(Clock.currentTimeMillis, (now) => {
            state[dependency] = { ok: false, since: now, error }
            return Effect.logWarning(`relay: ${names[dependency]} is failing; backing off until it answers`, {
              producer,
              error
            })
          })
        })
    }
  })

/** A tracker that records nothing, for drains run by hand. */
const untracked: StatusTracker = {
  report: () => Effect.void,
  status: Effect.die(new Error("entity-sync: this relay does not track its status"))
}

/** The default publish backoff: 100 ms doubling, capped at 30 s, never giving up (`SyncConfig.relayDefaults`). */
export const defaultRetry: RetrySchedule.RetrySchedule = SyncConfig.relayRetry(SyncConfig.relayDefaults.retryMaxDelay)

/** The broker message of an outbox row (DESIGN §3), with the signature headers when `signing` is given. */
export const toMessage = (row: OutboxRow, signing?: Signature.SigningKey): OutgoingMessage => {
  const body = Envelope.encode(row.envelope)
  const traceparent = row.envelope.traceparent
  const key = { [entityKeyHeader]: entityKey(row.envelope.entity, row.envelope.entityId) }
  const headers = signing === undefined
    ? (traceparent !== undefined ? { traceparent, ...key } : key)
    : traceparent !== undefined
    ? { traceparent, ...key, ...Signature.sign(signing, body) }
    : { ...key, ...Signature.sign(signing, body) }
  return {
    messageId: row.envelope.messageId,
    routingKey: Envelope.routingKey(row.envelope),
    type: Envelope.messageType(row.envelope),
    contentType: Envelope.contentType,
    body,
    headers
  }
}

const orderedClaim: ClaimOptions = { orderedByEntity: true }

/** How the relay claims rows, by its options. */
const claimOptions = (options: RelayOptions): ClaimOptions | undefined =>
  options.orderedByEntity === true ? orderedClaim : undefined

/** How often a drain claims from the start of the outbox rather than after the last row it took: 1 second. */
const fullClaimMillis = 1_000

/** The default of `RelayOptions.batchesInFlight`. */
export const defaultBatchesInFlight: number = SyncConfig.relayDefaults.batchesInFlight

/** What became of one published batch. */
interface BatchOutcome {
  /** When the broker was unavailable: milliseconds until the batch's rows are due again. */
  readonly retryAfter: number | undefined
}

/**
 * Publishes claimed rows as one batch, then marks the confirmed rows published and reschedules the
 * others on the retry schedule (the broker was unavailable, or nothing is bound to their routing key).
 */
const publishRows = (
  options: RelayOptions,
  rows: ReadonlyArray<OutboxRow>,
  tracker: StatusTracker
): Effect.Effect<BatchOutcome, SqlError.SqlError, Outbox | Broker> =>
  Tracing.span(Tracing.spanNames.publish, () => publishSpan(options, rows), () => publishBatch(options, rows, tracker))

/**
 * The publish span of a batch (R10): a root span of its own, linked to the trace of every event in it, with
 * the messaging attributes (the message id when the batch holds one event).
 */
const publishSpan = (options: RelayOptions, rows: ReadonlyArray<OutboxRow>): Tracer.SpanOptionsNoTrace => {
  const only = rows.length === 1 ? rows[0] : undefined
  return {
    kind: "producer",
    root: true,
    links: Tracing.linksOf(rows.map((row) => row.envelope.traceparent)),
    attributes: {
      [Tracing.attributes.messagingSystem]: Tracing.messagingSystem,
      [Tracing.attributes.operationType]: Tracing.operationTypes.publish,
      [Tracing.attributes.operationName]: Tracing.operationTypes.publish,
      [Tracing.attributes.destinationName]: options.exchange ?? Tracing.defaultExchange,
      [Tracing.attributes.producer]: options.producer,
      ...(only === undefined
        ? { [Tracing.attributes.batchMessageCount]: rows.length }
        : {
          [Tracing.attributes.messageId]: only.envelope.messageId,
          [Tracing.attributes.routingKey]: Envelope.routingKey(only.envelope),
          [Tracing.attributes.entity]: only.envelope.entity
        })
    }
  }
}

const publishBatch = (
  options: RelayOptions,
  rows: ReadonlyArray<OutboxRow>,
  tracker: StatusTracker
): Effect.Effect<BatchOutcome, SqlError.SqlError, Outbox | Broker> =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const broker = yield* Broker
    const signing = options.signing
    const messages = signing === undefined
      ? rows.map((row) => toMessage(row))
      : rows.map((row) => toMessage(row, signing))
    const failure = yield* broker.publish(messages).pipe(
      Effect.as(null),
      Effect.catchTags({
        BrokerUnavailable: (error) => Effect.succeed({ rows, error: error.message, unavailable: true }),
        PublishRejected: (error) => {
          const rejected = new Set(error.messageIds)
          return Effect.succeed({
            rows: rows.filter((row) => rejected.has(row.envelope.messageId)),
            error: error.message,
            unavailable: false
          })
        }
      })
    )
    yield* tracker.report("broker", failure?.unavailable === true ? { ok: false, error: failure.error } : { ok: true })
    const failed = new Set(failure?.rows.map((row) => row.seq))
    const published = rows.filter((row) => !failed.has(row.seq)).map((row) => row.seq)
    if (published.length > 0) {
      yield* outbox.markPublished(published)
      yield* Metrics.countPublished(options.producer, published.length)
    }
    if (failure === null || failure.rows.length === 0) return { retryAfter: undefined }
    const retryAfter = yield* reschedule(options, failure.rows, failure.error, failure.unavailable)
    return { retryAfter: failure.unavailable ? retryAfter : undefined }
  })

/**
 * Reschedules rows whose publish failed; gives the delay until they are due again, in milliseconds. An
 * unavailable broker is logged by the status tracker when it starts failing; each batch only at debug level.
 */
const reschedule = (options: RelayOptions, rows: ReadonlyArray<OutboxRow>, error: string, unavailable: boolean) =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const now = yield* Clock.currentTimeMillis
    const attempts = Math.max(...rows.map((row) => row.attempts)) + 1
    const delay = yield* RetrySchedule.delayAfter(options.retry ?? defaultRetry, attempts)
    const millis = Option.match(delay, { onNone: () => 30_000, onSome: Duration.toMillis })
    yield* outbox.markFailed(rows.map((row) => row.seq), { error, nextAttemptAt: now + millis })
    yield* Metric.update(Metric.withAttributes(Metrics.relayFailures, { producer: options.producer }), rows.length)
    yield* (unavailable ? Effect.logDebug : Effect.logWarning)("relay: publish failed, rescheduled", {
      producer: options.producer,
      events: rows.length,
      attempts,
      retryInMillis: millis,
      error
    })
    return millis
  })

/** What one pipelined drain did. */
interface DrainOutcome {
  /** Rows claimed in all. */
  readonly claimed: number
  /** Set when the broker was unavailable: milliseconds until the first rescheduled rows are due. */
  readonly retryAfter: number | undefined
}

/**
 * Claims and publishes batches until a claim comes back short (nothing more is due) or the broker is
 * unavailable, with up to `batchesInFlight` batches awaiting their confirms at once; returns when every
 * batch is settled (marked published or rescheduled). On failure or interruption the batches still in
 * flight are interrupted: their rows stay leased and come back when the lease ends.
 *
 * Order: a batch is claimed only after the previous one was handed to the broker, which sends publish
 * calls in the order they begin (see `Broker.publish`), so one relay's rows reach the broker in `seq`
 * order and the events of an entity keep their order. When the broker is unavailable the relay stops
 * claiming, lets the batches in flight settle and waits until the rescheduled rows are due, so they are
 * retried first and in order. Only rows the broker refused while later batches were already in flight (a
 * nack, an unroutable message) can reach it after those; consumers order events by version (R4), so this
 * costs a stale message at most.
 */
const pipelined = (
  options: RelayOptions,
  tracker: StatusTracker
): Effect.Effect<DrainOutcome, SqlError.SqlError, Outbox | Broker> =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const batchSize = Math.max(1, Math.floor(options.batchSize ?? SyncConfig.relayDefaults.batchSize))
    const rows = yield* Tracing.untraced(outbox.claim(batchSize, claimOptions(options)))
    if (rows.length === 0) return { claimed: 0, retryAfter: undefined }
    // a short first claim is all that is due: one batch, published here
    if (rows.length < batchSize) {
      const outcome = yield* publishRows(options, rows, tracker)
      return { claimed: rows.length, retryAfter: outcome.retryAfter }
    }
    return yield* pipelinedFrom(options, batchSize, rows, tracker)
  })

/** `pipelined` once a first full batch was claimed: it goes out first, the next ones while it awaits its confirms. */
const pipelinedFrom = (
  options: RelayOptions,
  batchSize: number,
  first: ReadonlyArray<OutboxRow>,
  tracker: StatusTracker
): Effect.Effect<DrainOutcome, SqlError.SqlError, Outbox | Broker> =>
  Effect.scoped(Effect.gen(function*() {
    const outbox = yield* Outbox
    const depth = Math.max(1, Math.floor(options.batchesInFlight ?? defaultBatchesInFlight))
    const inFlight: Array<Fiber.Fiber<void, SqlError.SqlError>> = []
    let claimed = 0
    // set by the first batch the broker could not take: no further batch is claimed from then on
    let retryAfter: number | undefined
    const publish = (rows: ReadonlyArray<OutboxRow>) =>
      Effect.map(publishRows(options, rows, tracker), (outcome) => {
        if (outcome.retryAfter !== undefined) {
          retryAfter = Math.min(retryAfter ?? outcome.retryAfter, outcome.retryAfter)
        }
      })
    const settleOldest = Effect.suspend(() => {
      const oldest = inFlight.shift()
      return oldest === undefined ? Effect.void : Fiber.join(oldest)
    })
    // The next claim starts after the last row taken (`ClaimOptions.afterSeq`), and from the start again at
    // least every `fullClaimMillis`: rows below it that are due (committed late, a dead relay's) wait at most
    // that long, or until the drain ends. Ordered claims always start from the start.
    let fullClaimAt = yield* Clock.currentTimeMillis
    const claimNext = (after: number) =>
      Effect.gen(function*() {
        if (options.orderedByEntity === true) return yield* outbox.claim(batchSize, orderedClaim)
        const now = yield* Clock.currentTimeMillis
        if (now - fullClaimAt < fullClaimMillis) return yield* outbox.claim(batchSize, { afterSeq: after })
        fullClaimAt = now
        return yield* outbox.claim(batchSize)
      })
    let rows = first
    while (true) {
      claimed += rows.length
      inFlight.push(yield* Effect.forkScoped(publish(rows), { startImmediately: true }))
      const last = rows[rows.length - 1]
      if (rows.length < batchSize || last === undefined) break
      while (inFlight.length >= depth && retryAfter === undefined) yield* settleOldest
      if (retryAfter !== undefined) break
      rows = yield* Tracing.untraced(claimNext(last.seq))
      if (rows.length === 0) break
    }
    while (inFlight.length > 0) yield* settleOldest
    return { claimed, retryAfter }
  }))

/**
 * Publishes until no row is due or the broker is unavailable (pipelined, see `pipelined`). Returns how many
 * rows were claimed in all.
 */
export const drain = (options: RelayOptions): Effect.Effect<number, SqlError.SqlError, Outbox | Broker> =>
  Effect.map(pipelined(options, untracked), (outcome) => outcome.claimed)

const recordLag = (producer: string) =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const { oldestCreatedAt } = yield* outbox.pending
    const now = yield* Clock.currentTimeMillis
    yield* Metrics.recordRelayLag(producer, oldestCreatedAt === null ? 0 : now - oldestCreatedAt)
  })

/** How often at most the relay measures its lag (`Metrics.relayLag`), a count over the unpublished rows. */
const lagInterval = 1_000

/** The default of `RelayOptions.outageBackoff`: 100 ms doubling, at most 10 s. */
export const defaultOutageBackoff: RetrySchedule.RetrySchedule = SyncConfig.backoff({
  base: SyncConfig.relayDefaults.outageBase,
  maxDelay: SyncConfig.relayDefaults.outageMaxDelay
})

/** Waits until the database answers after a failure (see `Outage.awaitDatabase`); the failures in a row. */
const awaitDatabase = (options: RelayOptions, failures: number) =>
  Effect.flatMap(
    Effect.serviceOption(Transactor),
    (transactor) =>
      Outage.awaitDatabase(transactor, { schedule: options.outageBackoff ?? defaultOutageBackoff, failures })
  )

const errorText = (error: SqlError.SqlError) => error.message || String(error.reason._tag)

/**
 * Runs the relay forever: publish what is due, then wait for a commit or the poll interval. After the
 * broker was unavailable it waits until the rescheduled rows are due instead, so that they go first.
 * `tracker` records how the database and the broker are doing (a new one when not given).
 *
 * R12: while the owner's database is unreachable (a claim, a mark or a wake-up fails with `SqlError`) the
 * relay stops: nothing is lost (unmarked rows stay in the outbox and are published again, which consumers
 * dedupe), it backs off and probes the database with `Transactor.probe` (when the context has a
 * `Transactor`; otherwise it simply tries again after the backoff) and resumes by itself once it answers.
 * It logs once when the database or the broker starts failing and once when it answers again.
 */
export const run = (
  options: RelayOptions,
  tracker?: StatusTracker
): Effect.Effect<never, never, Outbox | Broker> =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const status = tracker ?? (yield* makeStatusTracker(options.producer))
    const pollInterval = Duration.fromInputUnsafe(options.pollInterval ?? SyncConfig.relayDefaults.pollInterval)
    let lagRecordedAt = -Infinity
    const round = Effect.gen(function*() {
      const woken = yield* Effect.forkChild(Tracing.untraced(outbox.awaitAppended), { startImmediately: true })
      yield* Effect.gen(function*() {
        const { retryAfter } = yield* pipelined(options, status)
        yield* status.report("database", { ok: true })
        const now = yield* Clock.currentTimeMillis
        if (now - lagRecordedAt >= lagInterval) {
          yield* Tracing.untraced(recordLag(options.producer))
          lagRecordedAt = now
        }
        if (retryAfter === undefined) yield* Fiber.join(woken).pipe(Effect.timeoutOption(pollInterval))
        else yield* Effect.sleep(Duration.millis(retryAfter))
      }).pipe(Effect.ensuring(Fiber.interrupt(woken)))
    })
    // consecutive rounds that failed on the database
    let failures = 0
    while (true) {
      const outcome = yield* Effect.result(round)
      if (outcome._tag === "Success") {
        failures = 0
        continue
      }
      yield* status.report("database", { ok: false, error: errorText(outcome.failure) })
      failures = yield* awaitDatabase(options, failures)
    }
  })

/** What one retention clean-up did: rows deleted, and in how many statements. */
export type PruneRound = Retention.PruneRound

/**
 * Deletes published rows older than the retention (R9), in statements of at most `pruneBatchSize` rows
 * that each commit on their own; returns how many and in how many statements.
 */
export const pruneRound = (options: RelayOptions): Effect.Effect<PruneRound, SqlError.SqlError, Outbox> =>
  Effect.gen(function*() {
    const outbox = yield* Outbox
    const now = yield* Clock.currentTimeMillis
    const retention = Duration.toMillis(
      Duration.fromInputUnsafe(options.retention ?? SyncConfig.relayDefaults.retention)
    )
    return yield* Retention.inBatches(
      (limit) => outbox.pruneBatch(now - retention, limit),
      options.pruneBatchSize ?? pruneBatchSize
    )
  })

/** Deletes published rows older than the retention (R9) in bounded statements; returns how many. */
export const prune = (options: RelayOptions): Effect.Effect<number, SqlError.SqlError, Outbox> =>
  Effect.map(pruneRound(options), (round) => round.deleted)

/** The task name of the outbox's retention clean-up in `Outbox.takeTurn`. */
export const pruneTask = "outbox prune"

/**
 * The retention clean-up of one interval: runs `pruneRound` when this relay takes the interval's turn
 * (`Outbox.takeTurn`), so that it runs once per `pruneInterval` across the relays of the outbox;
 * `undefined` when another relay took it.
 */
export const pruneTurn = (
  options: RelayOptions
): Effect.Effect<PruneRound | undefined, SqlError.SqlError, Outbox> =>
  Effect.flatMap(Outbox, (outbox) =>
    Retention.onTurn(
      outbox.takeTurn(
        pruneTask,
        Duration.toMillis(
          Duration.fromInputUnsafe(options.pruneInterval ?? SyncConfig.relayDefaults.pruneInterval)
        )
      ),
      pruneRound(options)
    ))

const restartable = <R>(name: string, effect: Effect.Effect<unknown, never, R>) =>
  Effect.forkScoped(Supervisor.restarting(`relay: ${name}`, effect))

/**
 * Deletes published rows past the retention once per `pruneInterval` across the relays (`pruneTurn`); a
 * clean-up the database fails is logged and left to the next interval (R12: the relay's status already
 * tells about the outage).
 */
const pruneForever = (options: RelayOptions) =>
  Tracing.untraced(pruneTurn(options)).pipe(
    Effect.catchTag("SqlError", (error) =>
      Effect.logWarning("relay: retention clean-up failed; trying again at the next interval", {
        producer: options.producer,
        error: Signature.quote(errorText(error), maxStatusError)
      })),
    Effect.repeat(Schedule.spaced(options.pruneInterval ?? SyncConfig.relayDefaults.pruneInterval))
  )

/**
 * A relay running in the background for the lifetime of the layer, with its retention clean-up; it waits
 * out database outages by itself (R12), and both loops restart after a defect. The `Relay` service it
 * provides tells how its database and broker are doing.
 */
export const layer = (options: RelayOptions): Layer.Layer<Relay, never, Outbox | Broker> =>
  Layer.effect(
    Relay,
    Effect.gen(function*() {
      const tracker = yield* makeStatusTracker(options.producer)
      // the counters exist from the first scrape, so that `rate()` and absence alerts work at once
      yield* Metrics.countPublished(options.producer, 0)
      yield* Metric.update(Metric.withAttributes(Metrics.relayFailures, { producer: options.producer }), 0)
      yield* restartable("publishing", run(options, tracker))
      yield* restartable("retention clean-up", pruneForever(options))
      return Relay.of({ status: tracker.status })
    })
  )

/**
 * `layer` with its options from `SyncConfig.relayOptions`: the environment variables documented at
 * `SyncConfig.relay`, the signing key (`SYNC_SIGNING_KEY`, `SYNC_SIGNING_KEY_ID`; unset: no signatures) and
 * the exchange the publish spans name (`SYNC_EXCHANGE`, default `sync.events`).
 */
export const layerConfig = (
  options: { readonly producer: string }
): Layer.Layer<Relay, Config.ConfigError, Outbox | Broker> =>
  Layer.unwrap(Effect.gen(function*() {
    const settings = yield* SyncConfig.relayOptions
    const exchange = yield* Config.String("SYNC_EXCHANGE").pipe(Config.withDefault(Tracing.defaultExchange))
    return layer({ ...settings, exchange, producer: options.producer })
  }))
