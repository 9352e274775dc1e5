/**
 * The faults of the convergence property, injected by wrapping the services a consumer instance is given
 * (the runtime is not changed): crash points where an instance freezes and is killed, lost acks, transient
 * database errors and database outages. A wrapped service behaves exactly like the one it wraps until a
 * fault is armed.
 */
import { Clock, Context, Effect, Queue, Stream } from "effect"
import { SqlError } from "effect/sql"
import { Broker } from "../../src/Broker.ts"
import { CopyRepository } from "../../src/CopyRepository.ts"
import { Inbox } from "../../src/Inbox.ts"
import { Transactor } from "../../src/Transactor.ts"

/** Where a consumer instance can crash around one of its transactions. */
export type CrashPoint = "receive/apply" | "apply/commit" | "commit/ack"

/** Every crash point, in pipeline order. */
export const crashPoints: ReadonlyArray<CrashPoint> = ["receive/apply", "apply/commit", "commit/ack"]

/** One event a consumer transaction applied, as its handler saw it. */
export interface AppliedEvent {
  readonly messageId: string
  readonly entity: string
  readonly entityId: string
  readonly version: number
  /** When its transaction applied it (virtual epoch milliseconds). */
  readonly at: number
  /** Its action, with "force" or "reset" when it is one. */
  readonly kind: string
  /** The generation of the consumer instance that applied it. */
  readonly instance: number | undefined
  /** Whether the copy existed before (its version), null when there was none. */
  readonly previousVersion: number | null
  /** A force-sync event that replaced a copy of the same version with another payload (a drift repaired). */
  readonly repaired: boolean
  /** A reset event that replaced a copy of a higher version. */
  readonly regressedByReset: boolean
}

/** What the handlers of one consumer transaction recorded; kept only if the transaction commits. */
export interface TransactionLog {
  readonly applied: Array<AppliedEvent>
}

/** The log of the consumer transaction the current fiber runs in (undefined outside one). */
export const OpenTransaction = Context.Reference<TransactionLog | undefined>("test/property/OpenTransaction", {
  defaultValue: () => undefined
})

/** The generation of the consumer instance a fiber belongs to: crash points fire only inside an instance. */
export const InstanceZone = Context.Reference<number | undefined>("test/property/InstanceZone", {
  defaultValue: () => undefined
})

/** The faults of the consumer's database, shared by every instance (they share the database). */
export interface DatabaseFaults {
  /** Until when (epoch milliseconds, virtual) transactions, probes and reads fail as if the server were gone. */
  downUntil: number
  /** How many of the next transactions fail just before they commit (and roll back). */
  failCommits: number
  /** How many of the next copy writes fail (a statement error inside the transaction). */
  failStatements: number
  /**
   * Copy writes of one entity failing again and again while the database answers (a row the statement
   * keeps tripping on): the first write after arming names the entity; its writes fail `remaining` times.
   */
  readonly stuck: { key: string | undefined; remaining: number }
}

/** The armed faults of one consumer instance. */
export interface InstanceHooks {
  readonly generation: number
  /** The next crash point this instance stops at; cleared when it fires. */
  armed: CrashPoint | undefined
  /** Whether the next ack is lost on its way to the broker. */
  loseAck: boolean
}

/** What a wrapped service tells the supervisor of the instances. */
export type Signal =
  | { readonly _tag: "Crashed"; readonly generation: number; readonly point: CrashPoint }
  | { readonly _tag: "AckLost"; readonly generation: number }

/** What the wrappers report while they work. */
export interface Observer {
  /** A consumer transaction committed with this log. */
  readonly committed: (log: TransactionLog) => void
  /** A hard delete found copies that still reference the entity (it must wait). */
  readonly deleteWaits: () => void
  /** A fault fired. */
  readonly fired: (fault: string) => void
}

const unreachable = () =>
  new SqlError.SqlError({
    reason: new SqlError.ConnectionError({ message: "connection refused (property outage)", cause: undefined })
  })

const failedStatement = (what: string) =>
  new SqlError.SqlError({
    reason: new SqlError.UnknownError({ message: `${what} failed (property fault)`, cause: undefined })
  })

/** Fails while the database is down. */
const whileDown = (db: DatabaseFaults): Effect.Effect<void, SqlError.SqlError> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => now < db.downUntil ? Effect.fail(unreachable()) : Effect.void)

/** Everything one instance's wrappers need. */
export interface Wiring {
  readonly db: DatabaseFaults
  readonly hooks: InstanceHooks
  readonly signals: Queue.Queue<Signal>
  readonly observer: Observer
}

/** Freezes the current fiber at `point` when the instance is armed for it, after telling the supervisor. */
const crashPoint = (wiring: Wiring, point: CrashPoint): Effect.Effect<void> =>
  Effect.flatMap(InstanceZone, (zone) => {
    const { hooks } = wiring
    if (zone !== hooks.generation || hooks.armed !== point) return Effect.void
    return Effect.suspend(() => {
      hooks.armed = undefined
      Queue.offerUnsafe(wiring.signals, { _tag: "Crashed", generation: hooks.generation, point })
      return Effect.never
    })
  })

/**
 * The instance's transactions: crash points before, inside (after the work, before the commit) and after
 * each outermost transaction; transient commit failures; the outage. Handlers' logs are kept on commit.
 */
export const transactor = (inner: Transactor["Service"], wiring: Wiring): Transactor["Service"] =>
  Transactor.of({
    withTransaction: (effect) =>
      Effect.flatMap(OpenTransaction, (open) => {
        if (open !== undefined) return inner.withTransaction(effect)
        const log: TransactionLog = { applied: [] }
        const failCommit = Effect.suspend(() => {
          if (wiring.db.failCommits <= 0) return Effect.void
          wiring.db.failCommits--
          wiring.observer.fired("transient: commit fails")
          return Effect.fail(failedStatement("COMMIT"))
        })
        return Effect.gen(function*() {
          yield* crashPoint(wiring, "receive/apply")
          yield* whileDown(wiring.db)
          const result = yield* inner.withTransaction(
            effect.pipe(
              Effect.tap(() => crashPoint(wiring, "apply/commit")),
              Effect.tap(() => failCommit),
              Effect.provideService(OpenTransaction, log)
            )
          )
          wiring.observer.committed(log)
          yield* crashPoint(wiring, "commit/ack")
          return result
        })
      }),
    probe: Effect.andThen(whileDown(wiring.db), inner.probe)
  })

/** The instance's inbox: its reads outside transactions fail while the database is down. */
export const inbox = (inner: Inbox["Service"], wiring: Wiring): Inbox["Service"] => {
  const down = whileDown(wiring.db)
  return Inbox.of({
    ...inner,
    due: (consumer, now, limit) => Effect.andThen(down, inner.due(consumer, now, limit)),
    nextDueAt: (consumer) => Effect.andThen(down, inner.nextDueAt(consumer)),
    waiting: (consumer) => Effect.andThen(down, inner.waiting(consumer)),
    waitingPage: (consumer, options) => Effect.andThen(down, inner.waitingPage(consumer, options)),
    deadLetters: (consumer) => Effect.andThen(down, inner.deadLetters(consumer)),
    deadLetterPage: (consumer, options) => Effect.andThen(down, inner.deadLetterPage(consumer, options)),
    stats: (consumer) => Effect.andThen(down, inner.stats(consumer)),
    prune: (before) => Effect.andThen(down, inner.prune(before))
  })
}

/** The instance's copies: copy writes fail when a statement failure is armed; hard deletes that must wait are seen. */
export const copies = (inner: CopyRepository["Service"], wiring: Wiring): CopyRepository["Service"] => {
  const failStatement = Effect.suspend(() => {
    if (wiring.db.failStatements <= 0) return Effect.void
    wiring.db.failStatements--
    wiring.observer.fired("transient: statement fails")
    return Effect.fail(failedStatement("INSERT … ON CONFLICT"))
  })
  const failStuck = (keys: ReadonlyArray<string>) =>
    Effect.suspend(() => {
      const { stuck } = wiring.db
      if (stuck.remaining <= 0 || keys.length === 0) return Effect.void
      if (stuck.key === undefined) stuck.key = keys[0]
      if (!keys.includes(stuck.key!)) return Effect.void
      stuck.remaining--
      if (stuck.remaining === 0) stuck.key = undefined
      wiring.observer.fired("transient: statement fails on one entity, again and again")
      return Effect.fail(failedStatement(`INSERT … ON CONFLICT (${stuck.key ?? "entity"})`))
    })
  const keyOf = (row: { readonly entity: string; readonly id: string }) => `${row.entity}:${row.id}`
  return CopyRepository.of({
    ...inner,
    upsert: (row, guard) =>
      Effect.andThen(Effect.andThen(failStatement, failStuck([keyOf(row)])), inner.upsert(row, guard)),
    upsertMany: (rows) =>
      Effect.andThen(
        Effect.andThen(failStatement, failStuck(rows.map(({ row }) => keyOf(row)))),
        inner.upsertMany(rows)
      ),
    referencing: (entity, field, id) =>
      Effect.tap(inner.referencing(entity, field, id), (ids) =>
        Effect.sync(() => {
          if (ids.length > 0) wiring.observer.deleteWaits()
        }))
  })
}

/** The instance's broker connection: an armed ack is lost (the consumer believes it acked; the broker never hears). */
export const broker = (inner: Broker["Service"], wiring: Wiring): Broker["Service"] =>
  Broker.of({
    ...inner,
    subscribe: (queue, options) =>
      Stream.map(inner.subscribe(queue, options), (delivery) => ({
        ...delivery,
        ack: Effect.suspend(() => {
          if (!wiring.hooks.loseAck) return delivery.ack
          wiring.hooks.loseAck = false
          Queue.offerUnsafe(wiring.signals, { _tag: "AckLost", generation: wiring.hooks.generation })
          return Effect.void
        })
      }))
  })
