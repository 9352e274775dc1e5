/**
 * The consumer pipeline: decode → route by entity → dedupe → stale guard → dependencies → apply (copy
 * upsert and the user's handler) → commit → ack. Poison input is dead-lettered with its reason and the
 * consumer goes on (R6); events whose dependencies are missing wait on a `Schedule`, first in process, then
 * parked in the inbox, woken early when what they wait for is applied, and dead-lettered as
 * `DependencyMissing` when the budget is spent (R5). Every outcome is counted (R10).
 *
 * @since 0.1.0
 */
import {
  Cause,
  Clock,
  type Config,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberSet,
  Layer,
  Option,
  Pull,
  Queue,
  Result,
  Schedule,
  type Schema,
  type Scope,
  Stream
} from "effect"
import type { SqlError } from "effect/sql"
import * as Broker from "./Broker.ts"
import type { Delivery } from "./Broker.ts"
import { type CopyRow, CopyRepository, type Guard, passesGuard } from "./CopyRepository.ts"
import * as EntityLock from "./EntityLock.ts"
import * as Envelope from "./Envelope.ts"
import {
  type BrokerUnavailable,
  Defect,
  DependencyMissing,
  type EntityRef,
  ForgedProducer,
  MalformedMessage,
  StaleMessage
} from "./Errors.ts"
import { type DeadRow, Inbox, maxPageSize, type WaitingRow } from "./Inbox.ts"
import * as Signal from "./internal/Signal.ts"
import * as Metrics from "./Metrics.ts"
import * as Outage from "./Outage.ts"
import * as RetrySchedule from "./RetrySchedule.ts"
import { type HandlerError, type Prepared, prepared as preparedOf, type Preparing, type Subscription } from "./Subscription.ts"
import * as Signature from "./Signature.ts"
import * as Supervisor from "./Supervisor.ts"
import * as SyncConfig from "./SyncConfig.ts"
import { Transactor } from "./Transactor.ts"

export { type HandlerError, subscribe, type Subscription, type SyncEvent } from "./Subscription.ts"

/** Settings of a consumer. */
export interface ConsumerOptions<R> {
  /** The consuming service; its queue is `<service>.sync`. */
  readonly service: string
  readonly subscriptions: ReadonlyArray<Subscription<R>>
  /**
   * Retries of an event whose dependencies are missing (R5); when it ends the event is dead-lettered as
   * `DependencyMissing`. Default: 200 ms doubling, at most 5 minutes apart, for 24 hours.
   */
  readonly dependencyRetry?: RetrySchedule.RetrySchedule
  /** How many of those retries happen in process before the event is parked in the inbox (default 3). */
  readonly inProcessRetries?: number
  /** Largest accepted message body in bytes (default 256 KiB). */
  readonly maxBytes?: number
  /** Deepest nesting of arrays and objects accepted in a message body (default 32; R6). */
  readonly maxDepth?: number
  /** Most object keys accepted in a message body, over all its objects (default 10,000; R6). */
  readonly maxKeys?: number
  /**
   * R11: the broker logins allowed to publish each owner's events, by owner service. An owner missing here
   * may publish under its own service name only. Used when the broker vouches for publishers
   * (`Broker.vouchesForPublishers`); an event from any other login is dead-lettered as `ForgedProducer`.
   */
  readonly producers?: Readonly<Record<string, ReadonlyArray<string>>>
  /**
   * R11 by signatures: the public keys of owners that sign their events (`Signature`). An owner with keys
   * here must sign every event with one of them, valid at its arrival; an unsigned, tampered or wrongly
   * signed event is dead-lettered as `ForgedProducer`. For brokers that cannot vouch for publishers.
   */
  readonly verifyingKeys?: Signature.VerifyingKeys
  /**
   * R12: how long deliveries are held while the database is unreachable before they are given back to the
   * broker without spending a delivery attempt (default 10 minutes; keep it below RabbitMQ's
   * `consumer_timeout`, 30 minutes by default).
   */
  readonly holdLimit?: Duration.Input
  /** Most events applied in one transaction (default 250); events of one entity are applied in version order. */
  readonly batchSize?: number
  /**
   * How long an idle consumer waits for more deliveries after a first one before it applies the batch
   * (default 5 ms). Deliveries that arrived while the previous batch was being applied go at once.
   */
  readonly batchWindow?: Duration.Input
  /** Parked events retried at once (default 16). */
  readonly concurrency?: number
  /** Unsettled deliveries held from the broker (default 500). */
  readonly prefetch?: number
  /** How often parked events are looked at when nothing woke the consumer (default 5 seconds). */
  readonly pollInterval?: Duration.Input
  /**
   * How long dedupe records are kept (default 7 days). A duplicate arriving later is still never applied
   * twice: the version guard classifies it as stale.
   */
  readonly retention?: Duration.Input
}

const defaults = SyncConfig.consumerDefaults

/** The default dependency retry schedule (R5): 200 ms doubling, at most 5 minutes apart, for 24 hours. */
export const defaultDependencyRetry: RetrySchedule.RetrySchedule = SyncConfig.backoff({
  base: SyncConfig.consumerDefaults.retryBase,
  maxDelay: SyncConfig.consumerDefaults.retryMaxDelay,
  budget: SyncConfig.consumerDefaults.retryBudget
})

/** The queue of a consuming service and its bindings. */
export const queueOf = (service: string, subscriptions: ReadonlyArray<Subscription<unknown>>) => ({
  name: `${service}.sync`,
  bindings: subscriptions.map((s) => `${s.contract.owner}.${s.contract.name}.*`)
})

/** Why a consumer is paused (R12): the dependency that does not answer, since when, and its last error. */
export interface Paused {
  readonly dependency: "database" | "broker"
  /** Epoch milliseconds. */
  readonly since: number
  readonly error: string
}

/** What a consumer is doing, for health checks. */
export interface ConsumerStatus {
  /** Set while consumption is paused by an outage (R12). */
  readonly paused: Paused | null
  /** Deliveries being handled or held right now. */
  readonly inFlight: number
  /** When the oldest of them was taken (epoch milliseconds), null when there is none. */
  readonly oldestUnsettledAt: number | null
}

/** A running consumer: its operator controls. */
export class SyncConsumer extends Context.Service<SyncConsumer, {
  readonly service: string
  /**
   * Events given up on (DependencyMissing, or a handler's MalformedMessage), oldest first: at most
   * `Inbox.maxPageSize` (`DeadLetters.list` pages through all, with the broker's dead letters).
   */
  readonly deadLetters: Effect.Effect<ReadonlyArray<DeadRow>, SqlError.SqlError>
  /** Puts a dead-lettered event back to waiting, due now; false when there is no such dead letter. */
  readonly replay: (messageId: string) => Effect.Effect<boolean, SqlError.SqlError>
  /** Events parked until their dependencies arrive, earliest due first: at most `Inbox.maxPageSize`. */
  readonly waiting: Effect.Effect<ReadonlyArray<WaitingRow>, SqlError.SqlError>
  /**
   * Makes the consumer look for due parked events now, e.g. after dead rows were replayed through the
   * inbox itself (`DeadLetters.replay`); otherwise it looks within its poll interval.
   */
  readonly lookAtParked: Effect.Effect<void>
  /** Deliveries being handled right now. */
  readonly inFlight: Effect.Effect<number>
  /** Whether it is paused, and its unsettled deliveries. */
  readonly status: Effect.Effect<ConsumerStatus>
}>()("entity-sync/SyncConsumer") {}

type Verdict =
  /** `wokeParked`: the apply made parked events due (see `Inbox.wake`). */
  | { readonly _tag: "applied"; readonly wokeParked: boolean }
  | { readonly _tag: "missing"; readonly error: DependencyMissing }
  | { readonly _tag: "duplicate" }
  | { readonly _tag: "stale"; readonly error: StaleMessage }
  | { readonly _tag: "parked"; readonly error: DependencyMissing }
  | { readonly _tag: "deadLettered"; readonly error: DependencyMissing | MalformedMessage }

const appliedVerdict: Verdict = { _tag: "applied", wokeParked: false }
const wokeVerdict: Verdict = { _tag: "applied", wokeParked: true }
const duplicateVerdict: Verdict = { _tag: "duplicate" }

/** A copy changed under a batch transaction (another consumer instance wrote it): its events go one by one. */
class BatchConflict extends Data.TaggedError("BatchConflict")<{}> {}

/** The copy an event leaves behind, with its payload as the contract's schema shapes it (R6). */
const copyOf = (envelope: Envelope.Envelope, payload: Schema.Json | null, syncedAt: number): CopyRow => ({
  entity: envelope.entity,
  id: envelope.entityId,
  version: envelope.version,
  state: envelope.action === "deleted" ? "deleted" : envelope.action === "softDeleted" ? "softDeleted" : "live",
  payload,
  deletedAt: envelope.action === "deleted" || envelope.action === "softDeleted" ? Date.parse(envelope.occurredAt) : null,
  syncedAt,
  messageId: envelope.messageId
})

/**
 * The version guard of an event: force-sync events also replace an equal version (R8); a reset replaces
 * any version (the owner repairs a copy that is ahead of it).
 */
const guardOf = (envelope: Envelope.Envelope): Guard =>
  envelope.reset === true ? "any" : envelope.forceSync ? "newerOrEqual" : "newer"

/** Arrival order, except that the events of one entity take that entity's places in version order. */
const inEntityVersionOrder = <T extends { readonly key: string }>(
  items: ReadonlyArray<T>,
  versionOf: (item: T) => number
): ReadonlyArray<T> => {
  const byKey = new Map<string, Array<T>>()
  let repeated = false
  for (const item of items) {
    const group = byKey.get(item.key)
    if (group === undefined) byKey.set(item.key, [item])
    else {
      group.push(item)
      repeated = true
    }
  }
  if (!repeated) return items
  for (const group of byKey.values()) group.sort((a, b) => versionOf(a) - versionOf(b))
  return items.map((item) => byKey.get(item.key)!.shift()!)
}

const refKey = (ref: EntityRef) => `${ref.entity}:${ref.id}`
const selfRef = (envelope: Envelope.Envelope): EntityRef => ({ entity: envelope.entity, id: envelope.entityId })
const uniqueRefs = (refs: ReadonlyArray<EntityRef>) => [...new Map(refs.map((r) => [refKey(r), r])).values()]

/**
 * Starts a consumer in the current scope: it subscribes to `<service>.sync` (reconnecting on broker
 * errors) and works off parked events. Interrupting the scope stops it; unsettled deliveries are redelivered.
 */
export const make = <R>(
  options: ConsumerOptions<R>
): Effect.Effect<
  SyncConsumer["Service"],
  never,
  Broker.Broker | Inbox | CopyRepository | Transactor | Scope.Scope | R
> =>
  Effect.gen(function*() {
    const consumer = options.service
    const broker = yield* Broker.Broker
    const inbox = yield* Inbox
    const copies = yield* CopyRepository
    const transactor = yield* Transactor
    const context = yield* Effect.context<R>()
    const schedule = options.dependencyRetry ?? defaultDependencyRetry
    const inProcessRetries = options.inProcessRetries ?? defaults.inProcessRetries
    const pollInterval = Duration.fromInputUnsafe(options.pollInterval ?? defaults.pollInterval)
    const withKeys = EntityLock.make()
    /** Deliveries taken and not settled yet, with the time each was taken (insertion order: oldest first). */
    const unsettled = new Map<Delivery, number>()
    const settled = (delivery: Delivery) => {
      unsettled.delete(delivery)
    }
    // R11: the broker logins allowed for each subscribed owner (its own service name unless configured)
    const producers = new Map(
      options.subscriptions.map(({ contract: { owner } }) => [owner, new Set(options.producers?.[owner] ?? [owner])])
    )
    const verifyingKeys = options.verifyingKeys ?? {}
    const holdLimit = Duration.toMillis(Duration.fromInputUnsafe(options.holdLimit ?? defaults.holdLimit))
    // events of a batch that wait for a dependency, in process, while the next batches go on
    const waiters = yield* FiberSet.make<void, never>()

    const routes = new Map(options.subscriptions.map((s) => [s.contract.name, s]))
    for (const s of options.subscriptions) {
      for (const dep of s.contract.dependencies) {
        if (!routes.has(dep.entity)) {
          return yield* Effect.die(
            new Error(
              `consumer "${consumer}": ${s.contract.name}.${dep.field} depends on ${dep.entity}, which it does not subscribe to`
            )
          )
        }
      }
    }
    const dependents = (entity: string) =>
      options.subscriptions.flatMap((s) =>
        s.contract.dependencies.filter((d) => d.entity === entity).map((d) => ({ entity: s.contract.name, field: d.field }))
      )

    // After every commit that applied something: wakes the in-process waiters.
    const applied = yield* Signal.make()
    // After a commit that parked events or made parked ones due, and after a replay: wakes the parked-event
    // worker, which otherwise looks only when the next parked event is due (or after the poll interval).
    const parkedChanged = yield* Signal.make()

    /** A metric label for an entity named by a message: only subscribed contracts, `unknown` otherwise (R6). */
    const labelOf = (entity: string | undefined) => entity !== undefined && routes.has(entity) ? entity : "unknown"
    const count = (entity: string | undefined, outcome: Metrics.Outcome) =>
      Metrics.countOutcome(consumer, labelOf(entity), outcome)

    // Whether parked events may exist for this consumer: set when this instance parks or replays one, and
    // from what the parked-event worker finds (it looks at least once per poll interval, so the parked
    // events of other instances of the service are known within that interval). Applies wake parked events
    // only then, which spares every apply a statement while nothing is parked.
    const parked = { maybe: true, changes: 0 }
    const noteParked = () => {
      parked.maybe = true
      parked.changes++
    }
    const wakeParked = (refs: ReadonlyArray<EntityRef>) =>
      parked.maybe ? inbox.wake(consumer, refs) : Effect.succeed(0)

    /** The event decoded for its subscription (synchronously when it can be, see `Preparing`). */
    const route = (envelope: Envelope.Envelope): Preparing<R> => {
      const subscription = routes.get(envelope.entity)
      if (subscription !== undefined) return subscription.prepare(envelope)
      return Result.fail(
        new MalformedMessage({
          reason: "UnknownEntity",
          detail: `consumer "${consumer}" does not subscribe to ${Envelope.bounded(envelope.entity)} (it knows ${
            [...routes.keys()].join(", ")
          })`,
          messageId: envelope.messageId,
          entity: Envelope.bounded(envelope.entity)
        })
      )
    }

    const missingOf = (envelope: Envelope.Envelope, prepared: Prepared<R>) =>
      Effect.gen(function*() {
        if (envelope.action === "deleted") {
          // a hard delete waits until no copy references the entity (R5 from the other side)
          const refs: Array<EntityRef> = []
          for (const d of dependents(envelope.entity)) {
            const ids = yield* copies.referencing(d.entity, d.field, envelope.entityId)
            refs.push(...ids.map((id) => ({ entity: d.entity, id })))
          }
          return refs
        }
        const missing: Array<EntityRef> = []
        for (const ref of prepared.references) {
          const copy = yield* copies.get(ref.entity, ref.id, "forShare")
          if (isMissing(copy ?? undefined)) missing.push(ref)
        }
        return missing
      })

    const isStale = (envelope: Envelope.Envelope, current: CopyRow | null) =>
      current !== null && !passesGuard(guardOf(envelope), envelope.version, current.version)

    const isMissing = (copy: CopyRow | undefined) => copy === undefined || copy.state === "deleted"

    const staleError = (envelope: Envelope.Envelope, currentVersion: number) =>
      new StaleMessage({
        messageId: envelope.messageId,
        entity: envelope.entity,
        entityId: envelope.entityId,
        version: envelope.version,
        currentVersion
      })

    interface Attempt {
      readonly envelope: Envelope.Envelope
      readonly prepared: Prepared<R>
      /** The parked row when retrying a parked event; null for a fresh delivery. */
      readonly parked: WaitingRow | null
      /** 1 for the first attempt. */
      readonly attempt: number
      /** Whether a missing dependency parks (or dead-letters) the event rather than failing the attempt. */
      readonly mayPark: boolean
      /** Missing entities reported by the handler in an earlier attempt. */
      readonly reported: ReadonlyArray<EntityRef>
      readonly firstSeenAt: number
    }

    const missingError = (envelope: Envelope.Envelope, missing: ReadonlyArray<EntityRef>, attempts: number) =>
      new DependencyMissing({
        messageId: envelope.messageId,
        entity: envelope.entity,
        entityId: envelope.entityId,
        version: envelope.version,
        missing,
        attempts
      })

    // Parks the event, or dead-letters it when the schedule is spent. Runs inside the transaction.
    const parkOrDeadLetter = (a: Attempt, missing: ReadonlyArray<EntityRef>) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const { envelope } = a
        const error = missingError(a.envelope, missing, a.attempt)
        const delay = yield* RetrySchedule.delayAfter(schedule, a.attempt, a.firstSeenAt)
        const row = {
          consumer,
          messageId: envelope.messageId,
          envelope,
          waitingFor: uniqueRefs([...missing, selfRef(envelope)]),
          attempts: a.attempt,
          firstSeenAt: a.firstSeenAt,
          lastSeenAt: now
        }
        if (Option.isNone(delay)) {
          yield* inbox.deadLetter({ ...row, error: error._tag, reason: Broker.boundReason(error.message) })
          return { _tag: "deadLettered", error } satisfies Verdict
        }
        noteParked()
        yield* inbox.park({ ...row, nextAttemptAt: now + Duration.toMillis(delay.value) })
        return { _tag: "parked", error } satisfies Verdict
      })

    // One attempt, inside the caller's transaction. Reads come first, so a "missing" verdict (when the event
    // may not park yet) has written nothing; the inbox record is taken just before anything is written. A
    // parked event is claimed by deleting its waiting row instead: another instance retrying it at the same
    // time finds none and takes it for a duplicate (R3).
    const applyInTransaction = (a: Attempt): Effect.Effect<Verdict, HandlerError, R> =>
      Effect.gen(function*() {
        const { envelope } = a
        const fresh = a.parked === null
          ? inbox.record(consumer, envelope.messageId)
          : inbox.release(consumer, envelope.messageId)
        const current = yield* copies.get(envelope.entity, envelope.entityId, "forUpdate")
        if (current !== null && isStale(envelope, current)) {
          if (!(yield* fresh)) return { _tag: "duplicate" } satisfies Verdict
          return { _tag: "stale", error: staleError(envelope, current.version) } satisfies Verdict
        }
        const missing = a.reported.length > 0 ? a.reported : yield* missingOf(envelope, a.prepared)
        if (missing.length > 0) {
          if (!a.mayPark) return { _tag: "missing", error: missingError(a.envelope, missing, a.attempt) } satisfies Verdict
          if (!(yield* fresh)) return { _tag: "duplicate" } satisfies Verdict
          return yield* parkOrDeadLetter(a, missing)
        }
        if (!(yield* fresh)) return { _tag: "duplicate" } satisfies Verdict
        const now = yield* Clock.currentTimeMillis
        const written = yield* copies.upsert(copyOf(envelope, a.prepared.payload, now), guardOf(envelope))
        if (!written) {
          return { _tag: "stale", error: staleError(envelope, current?.version ?? envelope.version) } satisfies Verdict
        }
        if (a.prepared.handle !== undefined) yield* a.prepared.handle(current)
        const woken = yield* wakeParked([selfRef(envelope)])
        return { _tag: "applied", wokeParked: woken > 0 } satisfies Verdict
      })

    // An attempt, with the handler's own StaleMessage / DependencyMissing / MalformedMessage settled in a
    // second transaction (the first one rolled back).
    const attemptSettled = (a: Attempt): Effect.Effect<Verdict, SqlError.SqlError, R> =>
      transactor.withTransaction(applyInTransaction(a)).pipe(
        Effect.catchTags({
          StaleMessage: (error) =>
            transactor.withTransaction(Effect.gen(function*() {
              if (a.parked === null) yield* inbox.record(consumer, a.envelope.messageId)
              else yield* inbox.release(consumer, a.envelope.messageId)
              return { _tag: "stale", error } satisfies Verdict
            })),
          DependencyMissing: (error) =>
            a.mayPark && a.reported.length === 0
              ? attemptSettled({ ...a, reported: error.missing })
              : Effect.succeed({ _tag: "missing", error } satisfies Verdict),
          MalformedMessage: (error) =>
            transactor.withTransaction(Effect.gen(function*() {
              const now = yield* Clock.currentTimeMillis
              if (a.parked === null) yield* inbox.record(consumer, a.envelope.messageId)
              yield* inbox.deadLetter({
                consumer,
                messageId: a.envelope.messageId,
                envelope: a.envelope,
                error: error._tag,
                reason: Broker.boundReason(error.message),
                waitingFor: [],
                attempts: a.attempt,
                firstSeenAt: a.firstSeenAt,
                lastSeenAt: now
              })
              return { _tag: "deadLettered", error } satisfies Verdict
            }))
        })
      )

    const retryOnSqlError = <A, E extends { readonly _tag: string }, R2>(effect: Effect.Effect<A, E, R2>) =>
      Effect.retry(effect, {
        schedule: Schedule.exponential("50 millis"),
        times: 5,
        while: (error: E) => error._tag === "SqlError"
      })

    /**
     * Counts and logs the outcomes of settled events (R10), each counter updated once per call; wakes the
     * in-process waiters if something was applied, and the parked-event worker if parked events changed.
     */
    const reportAll = (
      envelopes: ReadonlyArray<Envelope.Envelope>,
      verdicts: ReadonlyArray<Verdict>,
      woken: boolean
    ) =>
      Effect.gen(function*() {
        const counts = new Map<string, { entity: string; outcome: Metrics.Outcome; n: number }>()
        const tally = (entity: string, outcome: Metrics.Outcome) => {
          const key = `${outcome}:${entity}`
          const entry = counts.get(key)
          if (entry === undefined) counts.set(key, { entity, outcome, n: 1 })
          else entry.n++
        }
        const now = yield* Clock.currentTimeMillis
        const latencies = new Map<string, Array<number>>()
        let anyApplied = false
        let anyParkedChange = false
        for (let i = 0; i < envelopes.length; i++) {
          const envelope = envelopes[i]!
          const verdict = verdicts[i]!
          switch (verdict._tag) {
            case "missing":
              break
            case "applied": {
              anyApplied = true
              if (verdict.wokeParked) anyParkedChange = true
              tally(envelope.entity, "applied")
              if (woken) tally(envelope.entity, "woken")
              const latency = Math.max(0, now - Date.parse(envelope.occurredAt))
              const ofEntity = latencies.get(envelope.entity)
              if (ofEntity === undefined) latencies.set(envelope.entity, [latency])
              else ofEntity.push(latency)
              break
            }
            case "duplicate":
              tally(envelope.entity, "duplicate")
              break
            case "parked":
              anyParkedChange = true
              tally(envelope.entity, "parked")
              yield* Effect.logDebug(verdict.error.message)
              break
            case "stale":
              tally(envelope.entity, "stale")
              yield* Effect.logDebug(verdict.error.message)
              break
            case "deadLettered":
              tally(envelope.entity, "deadLettered")
              yield* Effect.logWarning(`dead-lettered: ${verdict.error.message}`)
              break
          }
        }
        for (const { entity, n, outcome } of counts.values()) yield* Metrics.countOutcome(consumer, entity, outcome, n)
        for (const [entity, millis] of latencies) yield* Metrics.recordApplyLatencies(entity, millis)
        if (anyApplied) yield* applied.fire
        if (anyParkedChange) yield* parkedChanged.fire
      })

    const report = (envelope: Envelope.Envelope, verdict: Verdict, woken: boolean) =>
      reportAll([envelope], [verdict], woken)

    const awaitApplied = (deferred: Deferred.Deferred<void>, delay: Duration.Duration) =>
      Deferred.await(deferred).pipe(Effect.timeoutOption(delay), Effect.asVoid)

    // A fresh delivery: in-process retries, then parking.
    const handleEnvelope = (envelope: Envelope.Envelope, prepared: Prepared<R>) =>
      Effect.gen(function*() {
        const firstSeenAt = yield* Clock.currentTimeMillis
        let attempt = 1
        let waited = false
        while (true) {
          const wake = yield* applied.current
          const a: Attempt = {
            envelope,
            prepared,
            parked: null,
            attempt,
            mayPark: attempt > inProcessRetries,
            reported: [],
            firstSeenAt
          }
          const verdict = yield* withKeys([refKey(selfRef(envelope))], attemptSettled(a)).pipe(retryOnSqlError)
          if (verdict._tag !== "missing") return yield* report(envelope, verdict, waited)
          const delay = yield* RetrySchedule.delayAfter(schedule, attempt, firstSeenAt)
          if (Option.isNone(delay)) {
            // the budget is spent while still in process: park with the schedule's verdict (dead letter)
            return yield* report(
              envelope,
              yield* withKeys([refKey(selfRef(envelope))], attemptSettled({ ...a, mayPark: true })),
              waited
            )
          }
          if (!waited) yield* count(envelope.entity, "waiting")
          waited = true
          yield* awaitApplied(wake, delay.value)
          attempt++
        }
      })

    interface Item {
      /** The entity's key (`refKey`). */
      readonly key: string
      readonly delivery: Delivery
      readonly envelope: Envelope.Envelope
      readonly prepared: Prepared<R>
    }

    /** Why a delivery is dead-lettered as soon as it is read (R6, R11). */
    type Rejection = MalformedMessage | ForgedProducer | Defect

    const limits: Envelope.Limits = {
      ...(options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes }),
      ...(options.maxDepth === undefined ? {} : { maxDepth: options.maxDepth }),
      ...(options.maxKeys === undefined ? {} : { maxKeys: options.maxKeys })
    }

    /**
     * R11: `ForgedProducer` unless the event carries a valid signature of its contract's owner (for an owner
     * with verifying keys), or else the broker vouches that it was published by a login allowed for that
     * owner. A broker that cannot vouch (in memory) leaves it to signatures.
     */
    const authenticate = (delivery: Delivery, envelope: Envelope.Envelope, now: number): ForgedProducer | undefined => {
      const owner = routes.get(envelope.entity)?.contract.owner
      if (owner === undefined) return undefined // not subscribed: routing dead-letters it as UnknownEntity
      if (verifyingKeys[owner] !== undefined) {
        const verified = Signature.verify(verifyingKeys, owner, delivery.body, delivery.headers, now)
        return Result.isSuccess(verified) ? undefined : Signature.forgedProducer(verified.failure, { ...envelope, owner })
      }
      if (!broker.vouchesForPublishers) return undefined
      const publisher = delivery.publisher
      const allowed = producers.get(owner) ?? new Set<string>()
      if (publisher !== undefined && allowed.has(publisher)) return undefined
      const logins = [...allowed].map((login) => `"${login}"`).join(", ")
      return new ForgedProducer({
        messageId: envelope.messageId,
        entity: envelope.entity,
        owner,
        ...(publisher === undefined ? {} : { publisher: Envelope.bounded(publisher) }),
        detail: publisher === undefined
          ? `the broker vouches for no publisher (no user-id); ${owner}'s events may come only from ${logins}`
          : `published by broker login "${Envelope.bounded(publisher)}"; ${owner}'s events may come only from ${logins}`
      })
    }

    /** A defect met while handling one delivery: dead-lettered for it alone (R6). */
    const defectOf = (delivery: Delivery, defect: unknown, entity?: string) =>
      new Defect({
        messageId: Envelope.bounded(delivery.messageId),
        ...(entity === undefined ? {} : { entity: Envelope.bounded(entity) }),
        detail: Envelope.bounded(defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect), 500)
      })

    /** A delivery decoded, authenticated and routed; a `Result` when that was synchronous (see `Preparing`). */
    const decodeDelivery = (
      delivery: Delivery,
      now: number
    ): Result.Result<Item, Rejection> | Effect.Effect<Item, Rejection> => {
      const decoded = Envelope.decodeResult(delivery.body, limits)
      if (Result.isFailure(decoded)) return Result.fail(decoded.failure)
      const envelope = decoded.success
      const forged = authenticate(delivery, envelope, now)
      if (forged !== undefined) return Result.fail(forged)
      const preparing = route(envelope)
      const key = refKey(selfRef(envelope))
      const item = (prepared: Prepared<R>): Item => ({ key, delivery, envelope, prepared })
      return Result.isResult(preparing) ? Result.map(preparing, item) : Effect.map(preparing, item)
    }

    /** `decodeDelivery` with its defects caught for the delivery alone. */
    const decodeOne = (delivery: Delivery, now: number): Effect.Effect<Result.Result<Item, Rejection>> => {
      let decoding: Result.Result<Item, Rejection> | Effect.Effect<Item, Rejection>
      try {
        decoding = decodeDelivery(delivery, now)
      } catch (defect) {
        return Effect.succeed(Result.fail(defectOf(delivery, defect)))
      }
      return Result.isResult(decoding) ? Effect.succeed(decoding) : Effect.result(decoding).pipe(
        Effect.catchDefect((defect) => Effect.succeed(Result.fail(defectOf(delivery, defect))))
      )
    }

    const outcomeOf = (rejection: Rejection): Metrics.Outcome =>
      rejection._tag === "ForgedProducer" ? "forged" : rejection._tag === "Defect" ? "defect" : "malformed"

    /**
     * Dead-letters a delivery with a bounded reason (the broker adapter falls back to its own dead-lettering
     * if that fails); a broker that cannot be reached redelivers it.
     */
    const deadLetter = (delivery: Delivery, rejection: Rejection) =>
      Effect.gen(function*() {
        yield* count(rejection.entity, outcomeOf(rejection))
        yield* Effect.logWarning(`consumer "${consumer}": dead-lettered ${Broker.boundReason(rejection.message)}`)
        yield* delivery.deadLetter(Broker.boundReason(rejection.message)).pipe(
          Effect.catchTag("BrokerUnavailable", (error) =>
            Effect.logWarning(`consumer: could not dead-letter message ${Envelope.bounded(delivery.messageId)}; it will be redelivered`, error))
        )
      }).pipe(Effect.ensuring(Effect.sync(() => settled(delivery))))

    // Acks the deliveries of a committed batch. When the channel has closed, the broker redelivers them.
    const ackAll = (deliveries: ReadonlyArray<Delivery>) =>
      Effect.forEach(deliveries, (delivery) => delivery.ack, { discard: true }).pipe(
        Effect.catchTag("BrokerUnavailable", (error) =>
          Effect.logWarning(`consumer: could not settle ${deliveries.length} messages; they will be redelivered`, error)),
        Effect.ensuring(Effect.sync(() => deliveries.forEach(settled)))
      )

    /** The outage consumption is paused by (R12), and how its waiters learn that it is over. */
    let outage: { readonly paused: Paused; readonly recovered: Deferred.Deferred<void> } | undefined
    /** The deliveries received and not taken yet, while the delivery loop runs. */
    let received: Queue.Dequeue<Delivery, BrokerUnavailable | Cause.Done> | undefined

    /** Gives every unsettled delivery back to the broker without spending a delivery attempt (R12). */
    const releaseHeld = Effect.gen(function*() {
      const waiting = received === undefined ? [] : yield* Queue.clear(received).pipe(Effect.orElseSucceed(() => []))
      const held = [...unsettled.keys(), ...waiting]
      yield* Effect.forEach(held, (delivery) =>
        delivery.release.pipe(
          Effect.catchTag("BrokerUnavailable", () => Effect.void), // its channel is gone: the broker has it back
          Effect.ensuring(Effect.sync(() => settled(delivery)))
        ), { concurrency: 16, discard: true })
      yield* Effect.logInfo(`consumer "${consumer}": gave ${held.length} held deliveries back to the broker`)
    })

    /**
     * R12: after a failure, whether the database is down. If it is, consumption pauses: the failing work and
     * every other delivery are held, unsettled; the parked-event worker waits; the database is probed
     * (`Outage.awaitDatabase`), and deliveries held for `holdLimit` are given back to the broker without
     * spending a delivery attempt. Returns true once the database answers again; false at once when it answers.
     */
    const pausedByOutage = (problem: unknown): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        if (outage === undefined && (yield* Outage.answers(transactor))) return false
        if (outage !== undefined) {
          yield* Deferred.await(outage.recovered)
          return true
        }
        const since = yield* Clock.currentTimeMillis
        const detail = problem instanceof Error ? problem.message : String(problem)
        const current = {
          paused: { dependency: "database", since, error: Envelope.bounded(detail, 500) } satisfies Paused,
          recovered: Deferred.makeUnsafe<void>()
        }
        outage = current
        yield* Effect.logWarning(
          `consumer "${consumer}": the database does not answer; consumption paused with ${unsettled.size} deliveries held`,
          current.paused.error
        )
        const resumed = Effect.suspend(() => {
          outage = undefined
          return Deferred.succeed(current.recovered, undefined)
        })
        yield* Outage.awaitDatabase(Option.some(transactor), { hold: { limit: holdLimit, release: releaseHeld } }).pipe(
          Effect.ensuring(resumed)
        )
        const now = yield* Clock.currentTimeMillis
        yield* Effect.logInfo(`consumer "${consumer}": the database answers again after ${now - since} ms; consumption resumed`)
        return true
      })

    /** The typed failure of a cause, if any, and the cause squashed to one value (its failure or defect). */
    const problemOf = <E>(cause: Cause.Cause<E>): { readonly error: Option.Option<E>; readonly defect: unknown } => ({
      error: Cause.findErrorOption(cause),
      defect: Cause.squash(cause)
    })

    // One event on its own: in-process retries, then parking; acked after its commit. A database outage
    // pauses it and retries it after (R12); a defect dead-letters it alone (R6); a database error while the
    // database answers gives it back to the broker, which counts a delivery attempt.
    const settleOne = (item: Item): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        const { delivery, envelope } = item
        while (unsettled.has(delivery)) {
          const exit = yield* Effect.exit(handleEnvelope(envelope, item.prepared))
          if (Exit.isSuccess(exit)) return yield* ackAll([delivery])
          if (Cause.hasInterrupts(exit.cause)) return yield* Effect.interrupt
          const { defect, error } = problemOf(exit.cause)
          if (yield* pausedByOutage(defect)) continue
          if (Option.isNone(error)) return yield* deadLetter(delivery, defectOf(delivery, defect, envelope.entity))
          yield* count(envelope.entity, "failed")
          yield* Effect.logError("consumer: database error; message requeued", error.value)
          return yield* delivery.nack({ requeue: true }).pipe(
            Effect.catchTag("BrokerUnavailable", (e) => Effect.logWarning("consumer: could not requeue a message", e)),
            Effect.ensuring(Effect.sync(() => settled(delivery)))
          )
        }
      })

    /**
     * Applies a batch of fresh deliveries set-based, in one transaction: the copies it touches are locked and
     * read at once, its messages recorded at once, verdicts decided in order (events of one entity in version
     * order), the copies written at once, then the handlers run in event order. Events whose dependencies
     * come later in the batch get another pass; events still missing are left unrecorded, to wait on their
     * own. A hard delete of an entity others depend on first writes what the batch applied so far, so the
     * reverse-dependency check sees it.
     */
    const applyAll = (items: ReadonlyArray<Item>, now: number) =>
      Effect.gen(function*() {
        const selves: Array<EntityRef> = []
        const selfKeys = new Set<string>()
        for (const item of items) {
          if (selfKeys.has(item.key)) continue
          selfKeys.add(item.key)
          selves.push(selfRef(item.envelope))
        }
        const dependencies = uniqueRefs(items.flatMap((item) => item.prepared.references))
          .filter((ref) => !selfKeys.has(refKey(ref)))
        const state = new Map<string, CopyRow>()
        for (const row of yield* copies.getMany(selves, "forUpdate")) state.set(refKey(row), row)
        for (const row of yield* copies.getMany(dependencies, "forShare")) state.set(refKey(row), row)
        const fresh = new Set(yield* inbox.recordMany(consumer, items.map((item) => item.envelope.messageId)))

        const writes = new Map<string, { readonly row: CopyRow; readonly guard: Guard }>()
        const handlers: Array<Effect.Effect<void, HandlerError, R>> = []
        const flush = Effect.gen(function*() {
          const rows = [...writes.values()]
          writes.clear()
          // fewer written than decided: a copy changed under the batch (another instance inserted it)
          if ((yield* copies.upsertMany(rows)) < rows.length) return yield* new BatchConflict()
          for (const handle of handlers.splice(0)) yield* handle
        })

        const verdicts: Array<Verdict> = []
        const appliedRefs: Array<EntityRef> = []
        let pending = items.map((_, i) => i)
        while (pending.length > 0) {
          const waiting: Array<number> = []
          for (const i of pending) {
            const { envelope, key, prepared } = items[i]!
            const current = state.get(key)
            if (current !== undefined && isStale(envelope, current)) {
              verdicts[i] = fresh.delete(envelope.messageId)
                ? { _tag: "stale", error: staleError(envelope, current.version) }
                : duplicateVerdict
              continue
            }
            if (envelope.action === "deleted" && writes.size > 0 && dependents(envelope.entity).length > 0) {
              yield* flush
            }
            const missing = envelope.action === "deleted"
              ? yield* missingOf(envelope, prepared)
              : prepared.references.filter((ref) => isMissing(state.get(refKey(ref))))
            if (missing.length > 0) {
              if (fresh.has(envelope.messageId)) {
                verdicts[i] = { _tag: "missing", error: missingError(envelope, missing, 1) }
                waiting.push(i)
              } else verdicts[i] = duplicateVerdict
              continue
            }
            if (!fresh.delete(envelope.messageId)) {
              verdicts[i] = duplicateVerdict
              continue
            }
            const row = copyOf(envelope, prepared.payload, now)
            state.set(key, row)
            writes.set(key, { row, guard: guardOf(envelope) })
            if (prepared.handle !== undefined) handlers.push(prepared.handle(current ?? null))
            appliedRefs.push(selfRef(envelope))
            verdicts[i] = appliedVerdict
          }
          if (waiting.length === pending.length) break
          pending = waiting
        }
        yield* flush
        yield* inbox.forget(consumer, pending.map((i) => items[i]!.envelope.messageId))
        const woken = yield* wakeParked(uniqueRefs(appliedRefs))
        return woken > 0
          ? verdicts.map((v): Verdict => v._tag === "applied" ? wokeVerdict : v)
          : verdicts
      })

    /**
     * A batch of decoded deliveries in one transaction, in arrival order with the events of one entity in
     * version order. Events that must wait for a dependency continue on their own. If the database is down,
     * the batch waits for it (R12); if the transaction fails otherwise, every event is retried on its own,
     * so that a failure or a defect of one event touches no other (R6).
     */
    const applyBatch = (items: ReadonlyArray<Item>): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        const held = items.filter((item) => unsettled.has(item.delivery))
        if (held.length === 0) return
        const ordered = inEntityVersionOrder(held, (item) => item.envelope.version)
        const now = yield* Clock.currentTimeMillis
        const keys = [...new Set(held.map((item) => item.key))]
        const exit = yield* Effect.exit(withKeys(keys, transactor.withTransaction(applyAll(ordered, now))))
        if (Exit.isFailure(exit)) {
          if (Cause.hasInterrupts(exit.cause)) return yield* Effect.interrupt
          if (yield* pausedByOutage(problemOf(exit.cause).defect)) return yield* applyBatch(ordered)
          yield* Effect.logDebug("consumer: batch failed; applying its events one by one", exit.cause)
          return yield* Effect.forEach(ordered, settleOne, { concurrency: "unbounded", discard: true })
        }
        const verdicts = exit.value
        yield* reportAll(ordered.map((item) => item.envelope), verdicts, false)
        const done: Array<Delivery> = []
        for (let i = 0; i < ordered.length; i++) {
          const item = ordered[i]!
          if (verdicts[i]!._tag === "missing") yield* FiberSet.run(waiters, settleOne(item))
          else done.push(item.delivery)
        }
        yield* ackAll(done)
      })

    /** Deliveries as they come: each decoded on its own (a bad one is dead-lettered alone), then applied. */
    const settleBatch = (deliveries: ReadonlyArray<Delivery>) =>
      Effect.gen(function*() {
        const takenAt = yield* Clock.currentTimeMillis
        for (const delivery of deliveries) unsettled.set(delivery, takenAt)
        const items: Array<Item> = []
        for (const delivery of deliveries) {
          const decoded = yield* decodeOne(delivery, takenAt)
          if (Result.isSuccess(decoded)) items.push(decoded.success)
          else yield* deadLetter(delivery, decoded.failure)
        }
        yield* applyBatch(items)
      })

    // A parked event that is due.
    const retryParked = (row: WaitingRow) =>
      Effect.gen(function*() {
        const result = yield* Effect.result(preparedOf(route(row.envelope)))
        if (result._tag === "Failure") {
          const error = result.failure
          const now = yield* Clock.currentTimeMillis
          yield* transactor.withTransaction(
            inbox.deadLetter({ ...row, error: error._tag, reason: Broker.boundReason(error.message), lastSeenAt: now })
          )
          return yield* report(row.envelope, { _tag: "deadLettered", error }, true)
        }
        const verdict = yield* withKeys(
          [refKey(selfRef(row.envelope))],
          attemptSettled({
            envelope: row.envelope,
            prepared: result.success,
            parked: row,
            attempt: row.attempts + 1,
            mayPark: true,
            reported: [],
            firstSeenAt: row.firstSeenAt
          })
        ).pipe(retryOnSqlError)
        yield* report(row.envelope, verdict, true)
      })

    const workParked = Effect.gen(function*() {
      while (true) {
        if (outage !== undefined) yield* Deferred.await(outage.recovered)
        const wake = yield* parkedChanged.current
        const now = yield* Clock.currentTimeMillis
        const changes = parked.changes
        const due = yield* inbox.due(consumer, now, 100)
        yield* Effect.forEach(due, retryParked, { concurrency: options.concurrency ?? defaults.concurrency, discard: true })
        if (due.length === 100) continue
        const next = yield* inbox.nextDueAt(consumer)
        if (next !== null) parked.maybe = true
        else if (parked.changes === changes) parked.maybe = false
        const later = yield* Clock.currentTimeMillis
        const wait = next === null
          ? pollInterval
          : Duration.min(pollInterval, Duration.millis(Math.max(0, next - later)))
        if (next !== null && next <= later) continue
        yield* awaitApplied(wake, wait)
      }
    })

    // Batches of up to `batchSize`. Deliveries that arrived while the previous batch was applied go at once
    // (they have waited already); otherwise the first delivery opens a window of `batchWindow` for more.
    // The subscription ending (the broker adapter stopping) ends the loop; unsettled deliveries are redelivered.
    const batchSize = Math.max(1, Math.floor(options.batchSize ?? defaults.batchSize))
    const batchWindow = Duration.fromInputUnsafe(options.batchWindow ?? defaults.batchWindow)
    const queue = queueOf(consumer, options.subscriptions)
    const consume = Effect.scoped(Effect.gen(function*() {
      const deliveries = yield* Stream.toQueue(broker.subscribe(queue, { prefetch: options.prefetch ?? defaults.prefetch }), {
        capacity: "unbounded"
      })
      received = deliveries
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          received = undefined
        })
      )
      const rest = (first: ReadonlyArray<Delivery>) =>
        Effect.andThen(Effect.sleep(batchWindow), Queue.takeBetween(deliveries, 0, batchSize - first.length)).pipe(
          Pull.catchDone(() => Effect.succeed([])),
          Effect.map((later) => later.length === 0 ? first : [...first, ...later])
        )
      const batch = Effect.suspend(() => {
        const take = Queue.takeBetween(deliveries, 1, batchSize)
        return Queue.sizeUnsafe(deliveries) > 0
          ? take
          : Effect.flatMap(take, (first) => first.length < batchSize ? rest(first) : Effect.succeed(first))
      })
      return yield* Effect.forever(Effect.flatMap(batch, settleBatch))
    })).pipe(Pull.catchDone(() => Effect.void))

    const forever = <E>(name: string, effect: Effect.Effect<void, E, R>) =>
      Supervisor.restarting(`consumer "${consumer}": ${name}`, effect).pipe(
        Effect.provideContext(context),
        Effect.forkScoped
      )
    yield* broker.declare(queue).pipe(
      Effect.tapError((error) =>
        Effect.logWarning(`consumer "${consumer}": cannot declare its queue ${queue.name}; retrying every second`, error)
      ),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.orDie
    )
    // The broker unreachable: the subscription is tried again (100 ms doubling, at most 5 s apart), and the
    // consumer reports itself paused by the broker meanwhile (R12).
    let brokerOutage: Paused | undefined
    const consumeResuming = Effect.gen(function*() {
      let delay = 100
      while (true) {
        const exit = yield* Effect.exit(consume)
        if (Exit.isSuccess(exit)) return
        const error = Cause.findErrorOption(exit.cause)
        if (Option.isNone(error) || error.value._tag !== "BrokerUnavailable") return yield* Effect.failCause(exit.cause)
        if (brokerOutage === undefined) {
          brokerOutage = {
            dependency: "broker",
            since: yield* Clock.currentTimeMillis,
            error: Envelope.bounded(error.value.message, 500)
          }
          yield* Effect.logWarning(`consumer "${consumer}": the broker is unavailable; retrying`, brokerOutage.error)
        }
        yield* Effect.sleep(Duration.millis(delay))
        delay = Math.min(delay * 2, 5_000)
        if (Exit.isSuccess(yield* Effect.exit(broker.declare(queue)))) {
          delay = 100
          brokerOutage = undefined
          yield* Effect.logInfo(`consumer "${consumer}": the broker answers again; consuming`)
        }
      }
    })
    yield* forever("delivery loop", consumeResuming)
    // A database outage pauses the worker until the database answers (R12); other failures restart it.
    yield* forever(
      "parked-event worker",
      Effect.forever(workParked.pipe(
        Effect.catchTag("SqlError", (error) =>
          Effect.flatMap(pausedByOutage(error), (paused) => paused ? Effect.void : Effect.fail(error)))
      ))
    )
    const retention = Duration.toMillis(Duration.fromInputUnsafe(options.retention ?? defaults.retention))
    yield* forever(
      "retention clean-up",
      Effect.flatMap(Clock.currentTimeMillis, (now) => inbox.prune(now - retention)).pipe(
        Effect.repeat(Schedule.spaced("1 hour"))
      )
    )

    return SyncConsumer.of({
      service: consumer,
      deadLetters: Effect.map(inbox.deadLetterPage(consumer, { limit: maxPageSize }), (page) => page.items),
      replay: (messageId) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const replayed = yield* transactor.withTransaction(inbox.replay(consumer, messageId, now))
          if (replayed) {
            noteParked()
            yield* parkedChanged.fire
          }
          return replayed
        }),
      waiting: Effect.map(inbox.waitingPage(consumer, { limit: maxPageSize }), (page) => page.items),
      lookAtParked: Effect.suspend(() => {
        noteParked()
        return parkedChanged.fire
      }),
      inFlight: Effect.sync(() => unsettled.size),
      status: Effect.sync((): ConsumerStatus => {
        const oldest = unsettled.values().next()
        return {
          paused: outage?.paused ?? brokerOutage ?? null,
          inFlight: unsettled.size,
          oldestUnsettledAt: oldest.done === true ? null : oldest.value
        }
      })
    })
  })

/** A consumer running for the lifetime of the layer. */
export const layer = <R>(
  options: ConsumerOptions<R>
): Layer.Layer<SyncConsumer, never, Broker.Broker | Inbox | CopyRepository | Transactor | R> =>
  Layer.effect(SyncConsumer, make(options))

/**
 * `layer` with its options from `SyncConfig.consumerOptions` (environment variables, documented at
 * `SyncConfig.consumer`).
 */
export const layerConfig = <R>(
  options: Pick<ConsumerOptions<R>, "service" | "subscriptions">
): Layer.Layer<SyncConsumer, Config.ConfigError, Broker.Broker | Inbox | CopyRepository | Transactor | R> =>
  Layer.unwrap(Effect.map(SyncConfig.consumerOptions, (settings) => layer({ ...settings, ...options })))
