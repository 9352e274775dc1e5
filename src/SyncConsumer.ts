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
  type Scope,
  Stream,
  type Tracer
} from "effect"
import type { SqlError } from "effect/sql"
import type { Mutable } from "effect/Types"
import * as Broker from "./Broker.ts"
import type { Delivery } from "./Broker.ts"
import * as Contract from "./Contract.ts"
import { CopyRepository, type CopyRow, type Guard } from "./CopyRepository.ts"
import * as EntityLock from "./EntityLock.ts"
import * as Envelope from "./Envelope.ts"
import { type BrokerUnavailable, DependencyMissing, type EntityRef, StaleMessage } from "./Errors.ts"
import { type DeadRow, defaultClaimLeaseMillis, Inbox, maxPageSize, pruneBatchSize, type WaitingRow } from "./Inbox.ts"
import * as ConsumptionPause from "./internal/ConsumptionPause.ts"
import * as Decision from "./internal/Decision.ts"
import * as DeliveryBatches from "./internal/DeliveryBatches.ts"
import * as DeliveryDecoder from "./internal/DeliveryDecoder.ts"
import * as ParkedEvents from "./internal/ParkedEvents.ts"
import * as ProducerAuthentication from "./internal/ProducerAuthentication.ts"
import * as Retention from "./internal/Retention.ts"
import * as Signal from "./internal/Signal.ts"
import * as Verdict from "./internal/Verdict.ts"
import * as Metrics from "./Metrics.ts"
import * as RetrySchedule from "./RetrySchedule.ts"
import type * as Signature from "./Signature.ts"
import { type HandlerError, type Prepared, prepared as preparedOf, type Subscription } from "./Subscription.ts"
import * as Supervisor from "./Supervisor.ts"
import * as SyncConfig from "./SyncConfig.ts"
import * as Tracing from "./Tracing.ts"
import { Transactor } from "./Transactor.ts"

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
   * How long a delivery waits for company before its batch is applied (default 5 ms): an idle consumer's
   * first delivery opens the window; deliveries that arrived while a batch was applied go a window after
   * that batch was taken, at once when they fill a batch or the window has passed.
   */
  readonly batchWindow?: Duration.Input
  /** Parked events retried at once (default 16). */
  readonly concurrency?: number
  /** Unsettled deliveries held from the broker (default 500). */
  readonly prefetch?: number
  /** How often parked events are looked at when nothing woke the consumer (default 5 seconds). */
  readonly pollInterval?: Duration.Input
  /**
   * How often dedupe records past the retention are deleted (default 1 hour): once per interval across the
   * instances of the consumer (`Inbox.takeTurn`).
   */
  readonly pruneInterval?: Duration.Input
  /** Dedupe records one retention statement deletes at most (default `Inbox.pruneBatchSize`, 10 000). */
  readonly pruneBatchSize?: number
  /**
   * How long a claim of parked events keeps them from the other instances (default 30 seconds): the
   * parked events of an instance that died are retried by another once it ends.
   */
  readonly parkedLease?: Duration.Input
  /**
   * How long dedupe records are kept (default 7 days). A duplicate arriving later is still never applied
   * twice: the version guard classifies it as stale.
   */
  readonly retention?: Duration.Input
  /**
   * Ordered lanes (default none: one queue `<service>.sync` with competing instances): the service's
   * events are spread by entity over this many lane queues `<service>.sync.lane-<i>` behind its
   * consistent-hash exchange `<service>.lanes` (`Broker.laneQueues`; on RabbitMQ the
   * `rabbitmq_consistent_hash_exchange` plugin). Each lane has one active instance at a time, so an
   * entity's events are handled by one instance, in the order the relays published them (with
   * `RelayOptions.orderedByEntity`, version order); a lane moves to another instance when its consumer
   * goes; an instance applies the lanes it holds in one delivery loop, their deliveries sharing batches. An
   * event waits behind an earlier event of its entity that waits for a dependency (in process, or parked
   * in the inbox, on any instance), so handlers see each entity's versions in order. Every instance of the
   * service must use the same count (changing it re-maps the keys: drain the lanes first). `prefetch` is
   * shared over the lanes.
   */
  readonly lanes?: number
}

const defaults = SyncConfig.consumerDefaults

/** How often dedupe records past the retention are deleted by default: 1 hour. */
export const defaultPruneInterval: Duration.Input = "1 hour"

/** The task name of a consumer's retention clean-up in `Inbox.takeTurn`. */
export const pruneTask = (consumer: string): string => `inbox prune: ${consumer}`

/**
 * The retention clean-up of one interval of a consumer: when this instance takes the interval's turn
 * (`Inbox.takeTurn`), deletes the dedupe records older than `retention` (milliseconds) in statements of at
 * most `pruneBatchSize` records; `undefined` when another instance took the turn.
 */
export const pruneTurn = (
  inbox: Inbox["Service"],
  consumer: string,
  options: { readonly retention: number; readonly pruneInterval: Duration.Input; readonly pruneBatchSize: number }
): Effect.Effect<Retention.PruneRound | undefined, SqlError.SqlError> =>
  Retention.onTurn(
    inbox.takeTurn(pruneTask(consumer), Duration.toMillis(Duration.fromInputUnsafe(options.pruneInterval))),
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Retention.inBatches(
        (limit) => inbox.pruneBatch(now - options.retention, limit),
        options.pruneBatchSize
      ))
  )

/** The default dependency retry schedule (R5): 200 ms doubling, at most 5 minutes apart, for 24 hours. */
export const defaultDependencyRetry: RetrySchedule.RetrySchedule = SyncConfig.backoff({
  base: defaults.retryBase,
  maxDelay: defaults.retryMaxDelay,
  budget: defaults.retryBudget
})

/** The queue of a consuming service and its bindings. */
export const queueOf = (service: string, subscriptions: ReadonlyArray<Subscription<unknown>>) => ({
  name: `${service}.sync`,
  bindings: subscriptions.map((s) => `${s.contract.owner}.${s.contract.name}.*`)
})

/**
 * The queues a consuming service reads: `queueOf`, or with `lanes` its lane queues
 * (`<service>.sync.lane-<i>`, see `Broker.laneQueues`), whose names `DeadLetters` and the CLI take.
 */
export const queuesOf = (
  service: string,
  subscriptions: ReadonlyArray<Subscription<unknown>>,
  lanes?: number
): ReadonlyArray<Broker.QueueSpec> => {
  const queue = queueOf(service, subscriptions)
  return lanes === undefined ? [queue] : Broker.laneQueues(service, queue, lanes)
}

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

/** A copy changed under a batch transaction (another consumer instance wrote it): its events go one by one. */
class BatchConflict extends Data.TaggedError("BatchConflict")<{}> {}

/**
 * Starts a consumer in the current scope: it subscribes to `<service>.sync`, or to its lanes (`lanes`),
 * reconnecting on broker errors, and works off parked events. Interrupting the scope stops it; unsettled deliveries are redelivered.
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
    const withKeys = EntityLock.make()
    /** Deliveries taken and not settled yet, with the time each was taken (insertion order: oldest first). */
    const unsettled = new Map<Delivery, number>()
    const settled = (delivery: Delivery) => {
      unsettled.delete(delivery)
    }
    // events of a batch that wait for a dependency, in process, while the next batches go on
    const waiters = yield* FiberSet.make<void, never>()
    // Ordered lanes: an event waits behind an earlier event of its entity that waits, in process or parked,
    // so that the handlers see each entity's versions in order.
    const ordered = options.lanes !== undefined

    const routes = new Map(options.subscriptions.map((s) => [s.contract.name, s]))
    for (const s of options.subscriptions) {
      yield* Effect.orDie(Contract.check(s.contract))
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
        s.contract.dependencies.filter((d) => d.entity === entity).map((d) => ({
          entity: s.contract.name,
          field: d.field
        }))
      )

    const decoder = DeliveryDecoder.make<R>({
      consumer,
      routes,
      limits: {
        ...(options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes }),
        ...(options.maxDepth === undefined ? {} : { maxDepth: options.maxDepth }),
        ...(options.maxKeys === undefined ? {} : { maxKeys: options.maxKeys })
      },
      authenticate: ProducerAuthentication.make({
        owners: new Map(options.subscriptions.map((s) => [s.contract.name, s.contract.owner])),
        producers: options.producers,
        verifyingKeys: options.verifyingKeys ?? {},
        brokerVouches: broker.vouchesForPublishers
      })
    })

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

    const pause = ConsumptionPause.make({
      consumer,
      transactor,
      holdLimit: Duration.toMillis(Duration.fromInputUnsafe(options.holdLimit ?? defaults.holdLimit)),
      heldCount: () => unsettled.size,
      releaseHeld
    })

    // After every commit that applied something: wakes the in-process waiters.
    const applied = yield* Signal.make()
    const parked = yield* ParkedEvents.make({
      consumer,
      inbox,
      pollInterval: Duration.fromInputUnsafe(options.pollInterval ?? defaults.pollInterval),
      concurrency: options.concurrency ?? defaults.concurrency,
      leaseMillis: options.parkedLease === undefined
        ? defaultClaimLeaseMillis
        : Duration.toMillis(Duration.fromInputUnsafe(options.parkedLease)),
      awaitResumed: pause.awaitResumed
    })

    /** A metric label for an entity named by a message: only subscribed contracts, `unknown` otherwise (R6). */
    const labelOf = (entity: string | undefined) => entity !== undefined && routes.has(entity) ? entity : "unknown"
    const count = (entity: string | undefined, outcome: Metrics.Outcome) =>
      Metrics.countOutcome(consumer, labelOf(entity), outcome)

    // R10: the consumer's spans, made only while spans are recorded (`Tracing.span`). Names and attributes
    // hold only subscribed entity names and bounded strings from the message.
    const queueName = `${consumer}.sync`
    const applySpanNames = new Map<string, string>()
    const applySpanName = (entity: string) => {
      const label = labelOf(entity)
      let name = applySpanNames.get(label)
      if (name === undefined) {
        name = Tracing.spanNames.apply(label)
        applySpanNames.set(label, name)
      }
      return name
    }
    const messagingAttributes = (operation: string) => ({
      [Tracing.attributes.messagingSystem]: Tracing.messagingSystem,
      [Tracing.attributes.operationType]: operation,
      [Tracing.attributes.operationName]: operation,
      [Tracing.attributes.destinationName]: queueName,
      [Tracing.attributes.consumerGroup]: consumer
    })
    const receiveSpan = (deliveries: number): Tracer.SpanOptionsNoTrace => ({
      kind: "consumer",
      root: true,
      attributes: {
        ...messagingAttributes(Tracing.operationTypes.receive),
        [Tracing.attributes.batchMessageCount]: deliveries
      }
    })
    const applyAttributes = (envelope: Envelope.Envelope) => ({
      ...messagingAttributes(Tracing.operationTypes.process),
      [Tracing.attributes.messageId]: Envelope.bounded(envelope.messageId),
      [Tracing.attributes.entity]: labelOf(envelope.entity),
      [Tracing.attributes.entityId]: Envelope.bounded(envelope.entityId),
      [Tracing.attributes.action]: envelope.action,
      [Tracing.attributes.version]: envelope.version,
      [Tracing.attributes.producer]: Envelope.bounded(envelope.producer)
    })
    /** An event's span: a child of its traceparent (a root without one), linked to its batch's span. */
    const applySpan = (envelope: Envelope.Envelope, batch: Tracer.Span | undefined): Tracer.SpanOptionsNoTrace => {
      const parent = Tracing.parentOf(envelope.traceparent)
      return {
        kind: "consumer",
        ...(parent === undefined ? { root: true } : { parent }),
        ...(batch === undefined ? {} : { links: [{ span: batch, attributes: {} }] }),
        attributes: applyAttributes(envelope)
      }
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
          if (Decision.isMissing(copy)) missing.push(ref)
        }
        return missing
      })

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

    // Ordered lanes: whether an earlier event of the event's entity is parked.
    const parkedBefore = (envelope: Envelope.Envelope) =>
      Effect.map(
        inbox.earliestWaiting(consumer, [Decision.selfRef(envelope)]),
        (rows) => rows.some((row) => row.version < envelope.version)
      )

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
          waitingFor: Decision.uniqueRefs([...missing, Decision.selfRef(envelope)]),
          attempts: a.attempt,
          firstSeenAt: a.firstSeenAt,
          lastSeenAt: now
        }
        if (Option.isNone(delay)) {
          yield* inbox.deadLetter({ ...row, error: error._tag, reason: Broker.boundReason(error.message) })
          return { _tag: "deadLettered", error } satisfies Verdict.Verdict
        }
        parked.noteParked()
        yield* inbox.park({ ...row, nextAttemptAt: now + Duration.toMillis(delay.value) })
        return { _tag: "parked", error } satisfies Verdict.Verdict
      })

    // One attempt, inside the caller's transaction. Reads come first, so a "missing" verdict (when the event
    // may not park yet) has written nothing; the inbox record is taken just before anything is written. A
    // parked event is claimed by deleting its waiting row instead: another instance retrying it at the same
    // time finds none and takes it for a duplicate (R3).
    const applyInTransaction = (a: Attempt): Effect.Effect<Verdict.Verdict, HandlerError, R> =>
      Effect.gen(function*() {
        const { envelope } = a
        const fresh = a.parked === null
          ? inbox.record(consumer, envelope.messageId)
          : inbox.release(consumer, envelope.messageId)
        if (ordered && (yield* parkedBefore(envelope))) {
          if (!(yield* fresh)) return Verdict.duplicate
          return yield* parkOrDeadLetter({ ...a, mayPark: true }, [Decision.selfRef(envelope)])
        }
        let facts: Decision.Facts = { current: yield* copies.get(envelope.entity, envelope.entityId, "forUpdate") }
        let decision = Decision.decide(envelope, facts, !a.mayPark)
        while (decision._tag === "ask") {
          facts = decision.question === "fresh"
            ? { ...facts, fresh: yield* fresh }
            : { ...facts, missing: a.reported.length > 0 ? a.reported : yield* missingOf(envelope, a.prepared) }
          decision = Decision.decide(envelope, facts, !a.mayPark)
        }
        switch (decision._tag) {
          case "duplicate":
            return Verdict.duplicate
          case "stale":
            return { _tag: "stale", error: staleError(envelope, decision.currentVersion) } satisfies Verdict.Verdict
          case "missing":
            return a.mayPark
              ? yield* parkOrDeadLetter(a, decision.missing)
              : {
                _tag: "missing",
                error: missingError(envelope, decision.missing, a.attempt)
              } satisfies Verdict.Verdict
        }
        const { current } = facts
        const now = yield* Clock.currentTimeMillis
        const written = yield* copies.upsert(
          Decision.copyOf(envelope, a.prepared, now),
          Decision.guardOf(envelope)
        )
        if (!written) {
          return {
            _tag: "stale",
            error: staleError(envelope, current?.version ?? envelope.version)
          } satisfies Verdict.Verdict
        }
        if (a.prepared.handle !== undefined) yield* a.prepared.handle(current)
        return Verdict.applied
      })

    const unwoken = <A>(fallback: A) => (error: SqlError.SqlError) =>
      Effect.as(
        Effect.logWarning("consumer: could not wake parked events; they wait for their next retry", error),
        fallback
      )

    /** Makes the parked events waiting for what a committed transaction applied due; how many. */
    const wakeAfterCommit = (refs: ReadonlyArray<EntityRef>) =>
      parked.wake(refs).pipe(Effect.catchTag("SqlError", unwoken(0)))

    // An apply and a park on two instances at once, each in its own transaction, must not both miss the
    // other: the park reads its dependencies in its snapshot, and the apply's wake looks for parked events in
    // its own. So the apply wakes after its commit, and the park, once committed, reads what the event waits
    // for again and makes it due if some of that has arrived (a copy now there, or a copy that no longer
    // references a deleted entity): one of the two always sees the other. Dependencies a handler reported
    // are its own to judge: not read. A wake that fails leaves the event to its next retry.
    const afterCommit = (a: Attempt, verdict: Verdict.Verdict): Effect.Effect<Verdict.Verdict> =>
      Effect.gen(function*() {
        if (verdict._tag === "applied") {
          return (yield* wakeAfterCommit([Decision.selfRef(a.envelope)])) > 0 ? Verdict.appliedWoke : verdict
        }
        if (verdict._tag !== "parked" || a.reported.length > 0) return verdict
        const self = Decision.selfKey(a.envelope)
        const waited = verdict.error.missing.filter((ref) => Decision.refKey(ref) !== self)
        if (waited.length === 0) return verdict
        const still = new Set((yield* missingOf(a.envelope, a.prepared)).map(Decision.refKey))
        const arrived = waited.filter((ref) => !still.has(Decision.refKey(ref)))
        if (arrived.length > 0 && (yield* inbox.wake(consumer, arrived)) > 0) yield* parked.changed.fire
        return verdict
      }).pipe(Effect.catchTag("SqlError", unwoken(verdict)))

    // An attempt, with the handler's own StaleMessage / DependencyMissing / MalformedMessage settled in a
    // second transaction (the first one rolled back).
    const attemptSettled = (a: Attempt): Effect.Effect<Verdict.Verdict, SqlError.SqlError, R> =>
      transactor.withTransaction(applyInTransaction(a)).pipe(
        Effect.flatMap((verdict) => afterCommit(a, verdict)),
        Effect.catchTags({
          StaleMessage: (error) =>
            transactor.withTransaction(Effect.gen(function*() {
              if (a.parked === null) yield* inbox.record(consumer, a.envelope.messageId)
              else yield* inbox.release(consumer, a.envelope.messageId)
              return { _tag: "stale", error } satisfies Verdict.Verdict
            })),
          DependencyMissing: (error) =>
            a.mayPark && a.reported.length === 0
              ? attemptSettled({ ...a, reported: error.missing })
              : Effect.succeed({ _tag: "missing", error } satisfies Verdict.Verdict),
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
              return { _tag: "deadLettered", error } satisfies Verdict.Verdict
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
     * Counts and logs the outcomes of settled events (`Verdict.record`); wakes the in-process waiters if
     * something was applied, and the parked-event worker if parked events changed.
     */
    const reportAll = (
      envelopes: ReadonlyArray<Envelope.Envelope>,
      verdicts: ReadonlyArray<Verdict.Verdict>,
      woken: boolean
    ) =>
      Effect.gen(function*() {
        const recorded = yield* Verdict.record(consumer, envelopes, verdicts, woken)
        if (recorded.applied) yield* applied.fire
        if (recorded.parkedChanged) yield* parked.changed.fire
      })

    const report = (envelope: Envelope.Envelope, verdict: Verdict.Verdict, woken: boolean) =>
      reportAll([envelope], [verdict], woken)

    // A fresh delivery: in-process retries, then parking. Its verdict ends the event's span, if any.
    const handleEnvelope = (envelope: Envelope.Envelope, prepared: Prepared<R>, span: Tracer.Span | undefined) =>
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
          const verdict = yield* withKeys([Decision.selfKey(envelope)], attemptSettled(a)).pipe(
            retryOnSqlError
          )
          if (verdict._tag !== "missing") {
            yield* Verdict.endSpan(span, verdict, waited)
            return yield* report(envelope, verdict, waited)
          }
          const delay = yield* RetrySchedule.delayAfter(schedule, attempt, firstSeenAt)
          if (Option.isNone(delay)) {
            // the budget is spent while still in process: park with the schedule's verdict (dead letter)
            const final = yield* withKeys(
              [Decision.selfKey(envelope)],
              attemptSettled({ ...a, mayPark: true })
            )
            yield* Verdict.endSpan(span, final, waited)
            return yield* report(envelope, final, waited)
          }
          if (!waited) {
            yield* count(envelope.entity, "waiting")
            if (span !== undefined) Verdict.annotate(span, verdict, false, yield* Clock.currentTimeNanos)
          }
          waited = true
          yield* Signal.awaitAtMost(wake, delay.value)
          attempt++
        }
      })

    type Item = DeliveryDecoder.Item<R>

    /**
     * Dead-letters a delivery with a bounded reason (the broker adapter falls back to its own dead-lettering
     * if that fails); a broker that cannot be reached redelivers it.
     */
    const deadLetter = (delivery: Delivery, rejection: DeliveryDecoder.Rejection, span?: Tracer.Span) =>
      Effect.gen(function*() {
        yield* count(rejection.entity, DeliveryDecoder.outcomeOf(rejection))
        if (span !== undefined) {
          span.event(Tracing.events.deadLettered, yield* Clock.currentTimeNanos, {
            [Tracing.attributes.messageId]: Envelope.bounded(delivery.messageId),
            [Tracing.attributes.outcome]: DeliveryDecoder.outcomeOf(rejection),
            [Tracing.attributes.reason]: Envelope.bounded(rejection.message, 500)
          })
        }
        yield* Effect.logWarning(`consumer "${consumer}": dead-lettered ${Broker.boundReason(rejection.message)}`)
        yield* delivery.deadLetter(Broker.boundReason(rejection.message)).pipe(
          Effect.catchTag(
            "BrokerUnavailable",
            (error) =>
              Effect.logWarning(
                `consumer: could not dead-letter message ${
                  Envelope.bounded(delivery.messageId)
                }; it will be redelivered`,
                error
              )
          )
        )
      }).pipe(Effect.ensuring(Effect.sync(() => settled(delivery))))

    // Acks the deliveries of a committed batch. When the channel has closed, the broker redelivers them.
    const ackAll = (deliveries: ReadonlyArray<Delivery>) =>
      Effect.forEach(deliveries, (delivery) => delivery.ack, { discard: true }).pipe(
        Effect.catchTag(
          "BrokerUnavailable",
          (error) =>
            Effect.logWarning(
              `consumer: could not settle ${deliveries.length} messages; they will be redelivered`,
              error
            )
        ),
        Effect.ensuring(Effect.sync(() => deliveries.forEach(settled)))
      )

    /** The typed failure of a cause, if any, and the cause squashed to one value (its failure or defect). */
    const problemOf = <E>(cause: Cause.Cause<E>): { readonly error: Option.Option<E>; readonly defect: unknown } => ({
      error: Cause.findErrorOption(cause),
      defect: Cause.squash(cause)
    })

    // One event on its own: in-process retries, then parking; acked after its commit. A database outage
    // pauses it and retries it after (R12); a defect dead-letters it alone (R6); a database error while the
    // database answers gives it back to the broker, which counts a delivery attempt.
    const settleOne = (item: Item, span?: Tracer.Span): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        const { delivery, envelope } = item
        while (unsettled.has(delivery)) {
          const exit = yield* Effect.exit(handleEnvelope(envelope, item.prepared, span))
          if (Exit.isSuccess(exit)) return yield* ackAll([delivery])
          if (Cause.hasInterrupts(exit.cause)) return yield* Effect.interrupt
          const { defect, error } = problemOf(exit.cause)
          if (yield* pause.pausedBy(defect)) continue
          if (Option.isNone(error)) {
            const rejection = DeliveryDecoder.defectOf(delivery, defect, envelope.entity)
            yield* Verdict.endSpan(span, { outcome: "defect", reason: rejection.message }, false)
            return yield* deadLetter(delivery, rejection)
          }
          yield* Verdict.endSpan(span, { outcome: "failed" }, false)
          yield* count(envelope.entity, "failed")
          yield* Effect.logError("consumer: database error; message requeued", error.value)
          return yield* delivery.nack({ requeue: true }).pipe(
            Effect.catchTag("BrokerUnavailable", (e) => Effect.logWarning("consumer: could not requeue a message", e)),
            Effect.ensuring(Effect.sync(() => settled(delivery)))
          )
        }
      }).pipe(
        // given back to the broker (R12) or interrupted: ends the span if no verdict did
        Effect.ensuring(Verdict.endSpan(span, { outcome: "released" }, false))
      )

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
          selves.push(Decision.selfRef(item.envelope))
        }
        const dependencies = Decision.uniqueRefs(items.flatMap((item) => item.prepared.references))
          .filter((ref) => !selfKeys.has(Decision.refKey(ref)))
        const state = new Map<string, CopyRow>()
        for (const row of yield* copies.getMany(selves, "forUpdate")) state.set(Decision.refKey(row), row)
        for (const row of yield* copies.getMany(dependencies, "forShare")) state.set(Decision.refKey(row), row)
        const fresh = new Set(yield* inbox.recordMany(consumer, items.map((item) => item.envelope.messageId)))
        // ordered lanes: the lowest parked version of each entity; events after it wait behind it
        const parkedFrom = new Map<string, number>()
        if (ordered) {
          for (const row of yield* inbox.earliestWaiting(consumer, selves)) {
            parkedFrom.set(Decision.refKey(row), row.version)
          }
        }

        const writes = new Map<string, { readonly row: CopyRow; readonly guard: Guard }>()
        const handlers: Array<Effect.Effect<void, HandlerError, R>> = []
        const flush = Effect.gen(function*() {
          const rows = [...writes.values()]
          writes.clear()
          // fewer written than decided: a copy changed under the batch (another instance inserted it)
          if ((yield* copies.upsertMany(rows)) < rows.length) return yield* new BatchConflict()
          for (const handle of handlers.splice(0)) yield* handle
        })

        const verdicts: Array<Verdict.Verdict> = []
        const appliedRefs: Array<EntityRef> = []
        let pending = items.map((_, i) => i)
        while (pending.length > 0) {
          const waiting: Array<number> = []
          // ordered lanes: the entities with an event that waits in this pass
          const held = new Set<string>()
          for (const i of pending) {
            const { envelope, key, prepared } = items[i]!
            if (ordered && (held.has(key) || (parkedFrom.get(key) ?? Infinity) < envelope.version)) {
              if (!fresh.has(envelope.messageId)) {
                verdicts[i] = Verdict.duplicate
                continue
              }
              held.add(key)
              verdicts[i] = { _tag: "missing", error: missingError(envelope, [Decision.selfRef(envelope)], 1) }
              waiting.push(i)
              continue
            }
            // a message stays fresh until its event is settled: one that waits gets another pass
            const facts: Mutable<Decision.Facts> = { current: state.get(key) ?? null }
            let decision = Decision.decide(envelope, facts, false)
            while (decision._tag === "ask") {
              if (decision.question === "fresh") facts.fresh = fresh.has(envelope.messageId)
              else {
                if (envelope.action === "deleted" && writes.size > 0 && dependents(envelope.entity).length > 0) {
                  yield* flush
                }
                const missing = envelope.action === "deleted"
                  ? yield* missingOf(envelope, prepared)
                  : prepared.references.filter((ref) => Decision.isMissing(state.get(Decision.refKey(ref))))
                facts.missing = missing
              }
              decision = Decision.decide(envelope, facts, false)
            }
            switch (decision._tag) {
              case "duplicate":
                verdicts[i] = Verdict.duplicate
                continue
              case "stale":
                fresh.delete(envelope.messageId)
                verdicts[i] = { _tag: "stale", error: staleError(envelope, decision.currentVersion) }
                continue
              case "missing":
                verdicts[i] = { _tag: "missing", error: missingError(envelope, decision.missing, 1) }
                waiting.push(i)
                held.add(key)
                continue
            }
            fresh.delete(envelope.messageId)
            const { current } = facts
            const row = Decision.copyOf(envelope, prepared, now)
            state.set(key, row)
            writes.set(key, { row, guard: Decision.guardOf(envelope) })
            if (prepared.handle !== undefined) handlers.push(prepared.handle(current))
            appliedRefs.push(Decision.selfRef(envelope))
            verdicts[i] = Verdict.applied
          }
          if (waiting.length === pending.length) break
          pending = waiting
        }
        yield* flush
        yield* inbox.forget(consumer, pending.map((i) => items[i]!.envelope.messageId))
        return { verdicts, appliedRefs }
      })

    // Ordered lanes: per entity, the events settling on their own, the first in process and the others
    // queued behind it in arrival (version) order; an entity is here while one of its events is.
    const settling = new Map<string, Array<{ readonly item: Item; readonly span: Tracer.Span | undefined }>>()
    const settleInOrder = (item: Item, span: Tracer.Span | undefined) =>
      Effect.suspend(() => {
        const queued = settling.get(item.key)
        if (queued !== undefined) {
          queued.push({ item, span })
          return Effect.void
        }
        const queue = [{ item, span }]
        settling.set(item.key, queue)
        const drain = Effect.whileLoop({
          while: () => queue.length > 0,
          body: () => {
            const next = queue.shift()!
            return settleOne(next.item, next.span)
          },
          step: () => {}
        }).pipe(Effect.ensuring(Effect.sync(() => settling.delete(item.key))))
        return Effect.asVoid(FiberSet.run(waiters, drain))
      })
    // An event that settles on its own while the next batches go on.
    const settleAside = (item: Item, span: Tracer.Span | undefined) =>
      ordered ? settleInOrder(item, span) : Effect.asVoid(FiberSet.run(waiters, settleOne(item, span)))

    /**
     * A batch of decoded deliveries in one transaction, in arrival order with the events of one entity in
     * version order. Events that must wait for a dependency continue on their own. If the database is down,
     * the batch waits for it (R12); if the transaction fails otherwise, every event is retried on its own,
     * so that a failure or a defect of one event touches no other (R6).
     */
    const applyBatch = (
      items: ReadonlyArray<Item>,
      spans: ReadonlyMap<Item, Tracer.Span> | undefined
    ): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        const held = items.filter((item) => unsettled.has(item.delivery))
        if (spans !== undefined && held.length < items.length) {
          for (const item of items) {
            if (!unsettled.has(item.delivery)) yield* Verdict.endSpan(spans.get(item), { outcome: "released" }, false)
          }
        }
        // ordered lanes: an entity's events queue behind the one settling on its own
        const inBatch: Array<Item> = []
        for (const item of held) {
          if (ordered && settling.has(item.key)) yield* settleInOrder(item, spans?.get(item))
          else inBatch.push(item)
        }
        if (inBatch.length === 0) return
        const batch = Decision.inEntityVersionOrder(inBatch, (item) => item.envelope.version)
        const now = yield* Clock.currentTimeMillis
        const keys = [...new Set(batch.map((item) => item.key))]
        const exit = yield* Effect.exit(withKeys(keys, transactor.withTransaction(applyAll(batch, now))))
        if (Exit.isFailure(exit)) {
          if (Cause.hasInterrupts(exit.cause)) return yield* Effect.interrupt
          if (yield* pause.pausedBy(problemOf(exit.cause).defect)) return yield* applyBatch(batch, spans)
          yield* Effect.logDebug("consumer: batch failed; applying its events one by one", exit.cause)
          if (ordered) {
            return yield* Effect.forEach(batch, (item) => settleInOrder(item, spans?.get(item)), { discard: true })
          }
          return yield* Effect.forEach(batch, (item) => settleOne(item, spans?.get(item)), {
            concurrency: "unbounded",
            discard: true
          })
        }
        const woken = yield* wakeAfterCommit(Decision.uniqueRefs(exit.value.appliedRefs))
        const verdicts = woken > 0
          ? exit.value.verdicts.map((v): Verdict.Verdict => v._tag === "applied" ? Verdict.appliedWoke : v)
          : exit.value.verdicts
        yield* reportAll(batch.map((item) => item.envelope), verdicts, false)
        const done: Array<Delivery> = []
        for (let i = 0; i < batch.length; i++) {
          const item = batch[i]!
          const verdict = verdicts[i]!
          const span = spans?.get(item)
          if (verdict._tag === "missing") yield* settleAside(item, span)
          else {
            yield* Verdict.endSpan(span, verdict, false)
            done.push(item.delivery)
          }
        }
        yield* ackAll(done)
      })

    /**
     * Deliveries as they come: each decoded on its own (a bad one is dead-lettered alone), then applied. When
     * spans are recorded (R10) the batch runs in a receive span linked to every event's trace, and each event
     * in a span of its own whose parent is the event's `traceparent`.
     */
    const settleBatch = (deliveries: ReadonlyArray<Delivery>) =>
      Tracing.span(Tracing.spanNames.receive, () => receiveSpan(deliveries.length), (batchSpan) =>
        Effect.gen(function*() {
          const takenAt = yield* Clock.currentTimeMillis
          for (const delivery of deliveries) unsettled.set(delivery, takenAt)
          const items: Array<Item> = []
          for (const delivery of deliveries) {
            const decoding = decoder.decode(delivery, takenAt)
            const decoded = Result.isResult(decoding) ? decoding : yield* decoding
            if (Result.isSuccess(decoded)) items.push(decoded.success)
            else yield* deadLetter(delivery, decoded.failure, batchSpan)
          }
          if (batchSpan === undefined) return yield* applyBatch(items, undefined)
          batchSpan.addLinks(Tracing.linksOf(items.map((item) => item.envelope.traceparent)))
          const spans = new Map<Item, Tracer.Span>()
          for (const item of items) {
            spans.set(
              item,
              yield* Effect.makeSpan(applySpanName(item.envelope.entity), applySpan(item.envelope, batchSpan))
            )
          }
          yield* applyBatch(items, spans).pipe(
            Effect.onInterrupt(() =>
              Effect.forEach(spans.values(), (span) => Verdict.endSpan(span, { outcome: "interrupted" }, false))
            )
          )
        }))

    // A parked event that is due, in a span of its own (when spans are recorded) child of its traceparent.
    const retryParked = (row: WaitingRow) =>
      Tracing.span(applySpanName(row.envelope.entity), () => ({
        ...applySpan(row.envelope, undefined),
        attributes: { ...applyAttributes(row.envelope), [Tracing.attributes.attempt]: row.attempts + 1 }
      }), (span) =>
        retryParkedIn(row, span))

    const retryParkedIn = (row: WaitingRow, span: Tracer.Span | undefined) =>
      Effect.gen(function*() {
        const result = yield* Effect.result(preparedOf(decoder.route(row.envelope)))
        if (result._tag === "Failure") {
          const error = result.failure
          const now = yield* Clock.currentTimeMillis
          yield* transactor.withTransaction(
            inbox.deadLetter({ ...row, error: error._tag, reason: Broker.boundReason(error.message), lastSeenAt: now })
          )
          const deadLettered: Verdict.Verdict = { _tag: "deadLettered", error }
          if (span !== undefined) Verdict.annotate(span, deadLettered, true, yield* Clock.currentTimeNanos)
          return yield* report(row.envelope, deadLettered, true)
        }
        const verdict = yield* withKeys(
          [Decision.selfKey(row.envelope)],
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
        if (span !== undefined) Verdict.annotate(span, verdict, true, yield* Clock.currentTimeNanos)
        yield* report(row.envelope, verdict, true)
      })

    // The subscription ending (the broker adapter stopping) ends the loop; unsettled deliveries are redelivered.
    const batches = {
      batchSize: Math.max(1, Math.floor(options.batchSize ?? defaults.batchSize)),
      batchWindow: Duration.fromInputUnsafe(options.batchWindow ?? defaults.batchWindow)
    }
    const queues = queuesOf(consumer, options.subscriptions, options.lanes)
    const prefetch = options.prefetch ?? defaults.prefetch
    const lanePrefetch = Math.max(1, Math.ceil(prefetch / queues.length))
    const declareQueues = Effect.forEach(queues, (queue) => broker.declare(queue), { discard: true })
    // With lanes, every lane is subscribed (the broker makes this instance the active consumer of some,
    // maybe none, maybe all) and their deliveries are applied in one loop, in batches as large as one
    // queue's: each lane's deliveries stay in their order, and an entity is in one lane only, so each
    // entity's events stay in theirs.
    const subscribe = (queue: Broker.QueueSpec) => broker.subscribe(queue, { prefetch: lanePrefetch })
    const consume = Effect.scoped(Effect.gen(function*() {
      const deliveries = yield* Stream.toQueue(
        queues.length === 1
          ? subscribe(queues[0]!)
          : Stream.mergeAll(queues.map(subscribe), { concurrency: "unbounded" }),
        { capacity: "unbounded" }
      )
      received = deliveries
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          received = undefined
        })
      )
      const nextBatch = DeliveryBatches.make(deliveries, batches)
      return yield* Effect.forever(Effect.flatMap(nextBatch, settleBatch))
    })).pipe(Pull.catchDone(() => Effect.void))

    const forever = <E>(name: string, effect: Effect.Effect<void, E, R>) =>
      Supervisor.restarting(`consumer "${consumer}": ${name}`, effect).pipe(
        Effect.provideContext(context),
        Effect.forkScoped
      )
    yield* declareQueues.pipe(
      Effect.tapError((error) =>
        Effect.logWarning(
          `consumer "${consumer}": cannot declare its queue ${queues[0]?.name ?? ""}` +
            `${queues.length > 1 ? ` (and its ${queues.length} lanes)` : ""}; retrying every second`,
          error
        )
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
        if (Exit.isSuccess(yield* Effect.exit(declareQueues))) {
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
      Effect.forever(
        parked.work(retryParked).pipe(
          Effect.catchTag(
            "SqlError",
            (error) => Effect.flatMap(pause.pausedBy(error), (paused) => paused ? Effect.void : Effect.fail(error))
          )
        )
      )
    )
    // Once per interval across the instances of the consumer (`Inbox.takeTurn`), in bounded statements.
    const retention = Duration.toMillis(Duration.fromInputUnsafe(options.retention ?? defaults.retention))
    const pruneInterval = Duration.fromInputUnsafe(options.pruneInterval ?? defaultPruneInterval)
    yield* forever(
      "retention clean-up",
      Tracing.untraced(pruneTurn(inbox, consumer, {
        retention,
        pruneInterval,
        pruneBatchSize: options.pruneBatchSize ?? pruneBatchSize
      })).pipe(
        Effect.repeat(Schedule.spaced(pruneInterval))
      )
    )

    const lookAtParked = Effect.suspend(() => {
      parked.noteParked()
      return parked.changed.fire
    })

    return SyncConsumer.of({
      service: consumer,
      deadLetters: Effect.map(inbox.deadLetterPage(consumer, { limit: maxPageSize }), (page) => page.items),
      replay: (messageId) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const replayed = yield* transactor.withTransaction(inbox.replay(consumer, messageId, now))
          if (replayed) yield* lookAtParked
          return replayed
        }),
      waiting: Effect.map(inbox.waitingPage(consumer, { limit: maxPageSize }), (page) => page.items),
      lookAtParked,
      inFlight: Effect.sync(() => unsettled.size),
      status: Effect.sync((): ConsumerStatus => {
        const oldest = unsettled.values().next()
        return {
          paused: pause.paused() ?? brokerOutage ?? null,
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
