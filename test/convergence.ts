/**
 * The convergence property (DESIGN §2), reaching the hard cases. Each run generates an owner history
 * weighted toward valid writes (hot entities, Users of Companies created late, deleted and re-created, soft
 * and hard deletes, Companies written without an event) interleaved with faults: the memory broker reorders,
 * duplicates and delays; consumer instances crash between receive and apply, apply and commit, commit and
 * ack, or are killed; acks are lost; broker connections drop; the relay crashes between publish and mark and
 * the broker refuses publishes; the consumer's database fails a statement or a commit, or is down for a
 * while (R12: consumption pauses, nothing is dead-lettered); a second instance of the consumer shares its
 * stores and queue; copies drift behind the consumer's back and full syncs repair them; Users of Companies
 * that never arrive are dead-lettered as `DependencyMissing`, then replayed once the owner publishes them.
 *
 * Checked in every apply transaction and after every step: no copy references a missing Company (R5), a
 * copy's version never goes down except by a reset (R4/R8), no event is applied twice (R3). Checked at the
 * end: the copies equal the owner's rows (tombstones included), nothing is lost, nothing is dead-lettered
 * but the Users of never-arriving Companies, and those are applied after their replay.
 *
 * All time is virtual (TestClock). Seeds: fixed ones for reproducibility plus fresh ones each run; a failing
 * seed is printed with the command that replays it, and the distribution of what the runs exercised is
 * printed with the results.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Clock, Data, Effect, Exit, Layer, Metric, Option, Queue, Schema, Scope } from "effect"
import { Broker } from "../src/Broker.ts"
import { CopyRepository, type CopyRow } from "../src/CopyRepository.ts"
import { Inbox } from "../src/Inbox.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as SeededRandom from "../src/memory/SeededRandom.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Relay from "../src/Relay.ts"
import { SourceRepository } from "../src/SourceRepository.ts"
import * as Subscription from "../src/Subscription.ts"
import * as SyncConfig from "../src/SyncConfig.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Transactor } from "../src/Transactor.ts"
import { Company, User, UserV2 } from "./fixtures.ts"
import { consumerName, Pump, queueName, type Stores, tick } from "./harness.ts"
import * as Faults from "./property/faults.ts"
import * as Owner from "./property/owner.ts"
import { spread, Tally } from "./property/tally.ts"

/** Where a property runs: its stores, how real I/O is let through, and the test file that replays a seed. */
export interface PropertyKit {
  /** Fresh stores for one run; the owner's outbox leases claims for `leaseMillis`. */
  readonly stores: () => Stores
  readonly pump: Effect.Effect<void>
  /** The test file, for the replay command. */
  readonly file: string
  /** Whether a seed replays exactly (false where real I/O interleaves with the consumer's work). */
  readonly deterministic: boolean
  /**
   * Whether contract versions are mixed in flight: an instance of the owner already at User's version 2
   * writes beside one at version 1, the consumer is at version 2 and upcasts the version-1 events, full syncs
   * run at version 2. Only over the document store (the owner tables hold version 1's columns).
   */
  readonly mixedVersions?: boolean
}

/** How long the owner's outbox leases claimed rows in the property (a relay crash leaves them leased this long). */
export const leaseMillis = 5_000

/** The first fixed seed; `CONVERGENCE_SEED` replaces it (and turns fresh seeds off) to replay a run. */
const fixedSeed = 20261122

/** Outcomes of the consumer counted by its metrics (R10), reported per run. */
const outcomes: ReadonlyArray<Metrics.Outcome> = [
  "applied",
  "duplicate",
  "stale",
  "waiting",
  "parked",
  "woken",
  "deadLettered",
  "failed",
  "defect",
  "malformed"
]

/** A run that broke a rule: the defect says which. */
class PropertyViolation extends Data.TaggedError("PropertyViolation")<{
  readonly seed: number
  readonly detail: string
}> {
  override get message() {
    return `seed ${this.seed}:\n  ${this.detail}`
  }
}

/** Carries the messages a rolled-back `recordMany` found unrecorded out of its transaction. */
class Unrecorded extends Data.TaggedError("Unrecorded")<{ readonly messageIds: ReadonlySet<string> }> {}

/** The relay process dies between the broker's confirm and the mark (the defect a wrapped outbox raises). */
class RelayCrash extends Data.TaggedError("RelayCrash")<{}> {}

const decodeCompanyRef = Schema.decodeUnknownOption(Schema.Struct({ companyId: Schema.String }))
const companyOf = (payload: unknown): string | undefined => Option.getOrUndefined(decodeCompanyRef(payload))?.companyId
const keyOf = (row: { readonly entity: string; readonly id: string }) => `${row.entity}:${row.id}`
const isJsonObject = (json: Schema.Json | null): json is Schema.JsonObject =>
  typeof json === "object" && json !== null && !Array.isArray(json)

/** What one run reports to the whole property. */
interface RunReport {
  readonly tally: Tally
  readonly events: number
  readonly steps: number
  readonly stale: number
}

/** One consumer instance: its scope (closing it kills the instance) and its armed faults. */
interface Instance {
  readonly hooks: Faults.InstanceHooks
  readonly scope: Scope.Closeable
  readonly consumer: SyncConsumer.SyncConsumer["Service"]
}

/** Why a run failed, and its last steps. */
interface RunFailure {
  readonly error: unknown
  readonly log: ReadonlyArray<string>
}

/** The services the steps of a run use besides the ones captured at its start. */
type StepEnv = Broker | Outbox.Outbox | SourceRepository

/** One generated run with `seed`; fails naming the broken rule, with the run's last steps. */
const run = (seed: number, kit: PropertyKit): Effect.Effect<RunReport, RunFailure> => {
  const random = SeededRandom.make(seed)
  const int = (n: number) => Math.floor(random() * n)
  const tally = new Tally()
  const log: Array<string> = []
  const violations: Array<string> = []
  const violation = (detail: string) => {
    violations.push(detail)
  }
  const model = Owner.makeModel()
  const db: Faults.DatabaseFaults = {
    downUntil: 0,
    failCommits: 0,
    failStatements: 0,
    stuck: { key: undefined, remaining: 0 }
  }
  const batchSize = [1, 4, 250][int(3)]!
  const relayBatch = [2, 5, 100][int(3)]!
  const twoFromStart = random() < 0.4
  const stores = kit.stores()
  // full syncs run on the upgraded owner when versions are mixed; the owner's rows are compared in the
  // consumer's version (a row a version-1 instance wrote has no nickname: version 2 reads it as null)
  const ownerUsers = kit.mixedVersions === true ? Owner.usersV2 : Owner.users
  const currentShape = (entity: string, payload: Schema.Json | null): Schema.Json | null =>
    kit.mixedVersions === true && entity === "User" && isJsonObject(payload) && !("nickname" in payload)
      ? { ...payload, nickname: null }
      : payload

  // what committed consumer transactions applied (R3), and copies a reset may lower once (R8)
  const appliedHow = new Map<string, string>()
  let transactions = 0
  const appliedAt = new Map<string, number>()
  const resetKeys = new Set<string>()
  /** The last applies of every copy, for the report of a failure. */
  const histories = new Map<string, Array<string>>()
  let applyClock = 0
  const observer: Faults.Observer = {
    committed: (txLog) => {
      const transaction = ++transactions
      for (const event of txLog.applied) {
        const how =
          `${event.kind} t=${event.at} instance ${event.instance} transaction ${transaction} (of ${txLog.applied.length}) over ${
            event.previousVersion === null ? "no copy" : `v${event.previousVersion}`
          }`
        const before = appliedHow.get(event.messageId)
        if (before !== undefined) {
          violation(
            `R3: ${event.entity}:${event.entityId} v${event.version} (message ${event.messageId}) applied twice: ${before}; ${how}`
          )
        }
        appliedHow.set(event.messageId, how)
        appliedAt.set(event.messageId, ++applyClock)
        const key = `${event.entity}:${event.entityId}`
        histories.set(
          key,
          [...(histories.get(key) ?? []), `t=${event.at} v${event.version} ${event.messageId}`].slice(-8)
        )
        if (event.repaired) tally.add("outcomes", "repaired (drift replaced at its version)")
        if (event.regressedByReset) {
          resetKeys.add(`${event.entity}:${event.entityId}`)
          tally.add("outcomes", "repaired (copy ahead reset)")
        }
      }
    },
    deleteWaits: () => tally.add("outcomes", "hard delete waits for references"),
    fired: (fault) => tally.add("faults", fault)
  }

  return Effect.gen(function*() {
    const started = performance.now()
    const copies = yield* CopyRepository
    const inbox = yield* Inbox
    const transactor = yield* Transactor
    const broker = yield* Broker
    const controls = yield* MemoryBroker.MemoryBroker
    const outbox = yield* Outbox.Outbox
    const source = yield* SourceRepository
    const signals = yield* Queue.unbounded<Faults.Signal>()

    /** The check made inside every apply transaction, for the event's own rows (R4, R5). */
    const record = (event: Subscription.SyncEvent<unknown>) =>
      Effect.gen(function*() {
        const { envelope, previous } = event
        const where = `${envelope.entity}:${envelope.entityId} v${envelope.version}`
        const txLog = yield* Faults.OpenTransaction
        if (txLog === undefined) violation(`${where} applied outside a transaction`)
        const regressed = previous !== null && previous.version > envelope.version
        if (previous !== null && envelope.reset !== true) {
          if (envelope.forceSync ? regressed : previous.version >= envelope.version) {
            violation(`R4: ${where} applied over v${previous.version} (force sync: ${envelope.forceSync})`)
          }
        }
        txLog?.applied.push({
          messageId: envelope.messageId,
          entity: envelope.entity,
          entityId: envelope.entityId,
          version: envelope.version,
          at: yield* Clock.currentTimeMillis,
          instance: yield* Faults.InstanceZone,
          kind: `${envelope.action}${envelope.forceSync ? " force" : ""}${envelope.reset === true ? " reset" : ""}`,
          previousVersion: previous?.version ?? null,
          repaired: envelope.forceSync && previous !== null && previous.version === envelope.version &&
            JSON.stringify(previous.payload) !== JSON.stringify(envelope.payload),
          regressedByReset: envelope.reset === true && regressed
        })
        if (envelope.action === "deleted") {
          // handlers run once their batch's copies are written: a re-create later in the batch may be there already
          const now = envelope.entity === "Company" ? yield* copies.get("Company", envelope.entityId) : null
          if (now !== null && now.state === "deleted") {
            const referencing = yield* copies.referencing("User", "companyId", envelope.entityId)
            if (referencing.length > 0) violation(`R5: ${where} deleted while ${referencing.join(", ")} reference it`)
          }
          return
        }
        const company = envelope.entity === "User" ? companyOf(envelope.payload) : undefined
        if (company !== undefined) {
          const copy = yield* copies.get("Company", company)
          if (copy === null || copy.state === "deleted") {
            violation(`R5: ${where} applied while Company:${company} is missing`)
          }
        }
      })
    const options: SyncConsumer.ConsumerOptions<never> = {
      service: consumerName,
      subscriptions: [
        Subscription.subscribe(Company, { handler: record }),
        kit.mixedVersions === true
          ? Subscription.subscribe(UserV2, { handler: record })
          : Subscription.subscribe(User, { handler: record })
      ],
      dependencyRetry: SyncConfig.backoff({ base: "100 millis", maxDelay: "5 seconds", budget: "1 minute" }),
      inProcessRetries: 2,
      holdLimit: "3 seconds",
      batchSize
    }

    // consumer instances: slot 0 always runs (restarted after a crash), slot 1 comes and goes
    const instances: Array<Instance | undefined> = [undefined, undefined]
    let generations = 0
    const start = (slot: number) =>
      Effect.gen(function*() {
        const hooks: Faults.InstanceHooks = { generation: ++generations, armed: undefined, loseAck: false }
        const wiring: Faults.Wiring = { db, hooks, signals, observer }
        const scope = yield* Scope.make()
        const consumer = yield* SyncConsumer.make(options).pipe(
          Effect.provideService(Transactor, Faults.transactor(transactor, wiring)),
          Effect.provideService(Inbox, Faults.inbox(inbox, wiring)),
          Effect.provideService(CopyRepository, Faults.copies(copies, wiring)),
          Effect.provideService(Broker, Faults.broker(broker, wiring)),
          Effect.provideService(Faults.InstanceZone, hooks.generation),
          Scope.provide(scope)
        )
        instances[slot] = { hooks, scope, consumer }
      })
    const stop = (slot: number) =>
      Effect.gen(function*() {
        const instance = instances[slot]
        if (instance === undefined) return
        instances[slot] = undefined
        yield* Scope.close(instance.scope, Exit.void)
      })
    const live = () => instances.filter((i): i is Instance => i !== undefined)

    // the supervisor: kills an instance frozen at a crash point and restarts it; a lost ack breaks the connection
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const signal = yield* Queue.take(signals)
      if (signal._tag === "AckLost") {
        tally.add("faults", "ack lost, then the connection drops")
        return yield* controls.dropSubscriptions(queueName)
      }
      const slot = instances.findIndex((i) => i?.hooks.generation === signal.generation)
      if (slot < 0) return
      const held = yield* instances[slot]!.consumer.inFlight
      tally.add("faults", `consumer crash ${signal.point}`)
      if (held > 0) tally.add("faults", "consumer crash with unsettled deliveries")
      log.push(`  (instance ${slot} crashed ${signal.point} holding ${held})`)
      yield* stop(slot)
      yield* start(slot)
    })))
    yield* Effect.addFinalizer(() => Effect.andThen(stop(1), stop(0)))
    yield* start(0)
    if (twoFromStart) yield* start(1)

    /**
     * Publishes what is due. `crash` kills the relay once: `"beforeMark"` after the broker confirmed a batch,
     * before it is marked published; `"inPublish"` while it hands a batch to the broker, before any confirm.
     */
    const relay = (crash: "beforeMark" | "inPublish" | undefined) =>
      Effect.gen(function*() {
        let armed = crash
        const crashing = Outbox.Outbox.of({
          ...outbox,
          markPublished: (seqs) => {
            if (armed !== "beforeMark") return outbox.markPublished(seqs)
            armed = undefined
            return Effect.die(new RelayCrash())
          }
        })
        const crashingBroker = Broker.of({
          ...broker,
          publish: (batch) => {
            if (armed !== "inPublish") return broker.publish(batch)
            armed = undefined
            return Effect.die(new RelayCrash())
          }
        })
        const exit = yield* Effect.exit(
          Relay.drain({ producer: "accounts", batchSize: relayBatch }).pipe(
            Effect.provideService(Outbox.Outbox, crashing),
            Effect.provideService(Broker, crashingBroker)
          )
        )
        if (Exit.isSuccess(exit)) return exit.value
        if (Cause.squash(exit.cause) instanceof RelayCrash) {
          tally.add(
            "faults",
            crash === "beforeMark" ? "relay crash between publish and mark" : "relay crash while publishing"
          )
          return 0
        }
        return yield* exit
      })

    /** Dead rows: each must be a User waiting for an orphan Company (the only deliberate dead letters). */
    const deadRows = Effect.gen(function*() {
      const rows = yield* inbox.deadLetters(consumerName)
      for (const row of rows) {
        if (row.error === "DependencyMissing" && row.waitingFor.some((ref) => Owner.isOrphanCompany(ref.id))) continue
        if (reportedDead.has(row.messageId)) continue
        reportedDead.add(row.messageId)
        const now = yield* Clock.currentTimeMillis
        const waited: Array<string> = []
        for (const ref of row.waitingFor) {
          const copy = yield* copies.get(ref.entity, ref.id)
          const events = (yield* outbox.rows({ limit: 100_000 })).filter((r) =>
            r.envelope.entity === ref.entity && r.envelope.entityId === ref.id
          )
          waited.push(
            `${ref.entity}:${ref.id} copy ${copy === null ? "none" : `v${copy.version} ${copy.state}`}; applied ${
              JSON.stringify(histories.get(`${ref.entity}:${ref.id}`) ?? [])
            }; outbox ${
              JSON.stringify(events.map((r) =>
                `seq ${r.seq} v${r.envelope.version} created ${r.createdAt} published ${r.publishedAt} attempts ${r.attempts}`
              ))
            }`
          )
        }
        violation(
          `unexpected dead letter ${row.envelope.entity}:${row.envelope.entityId} v${row.envelope.version} at t=${now} (first seen ${row.firstSeenAt}, last ${row.lastSeenAt}): ${row.reason}\n    ${
            waited.join("\n    ")
          }`
        )
      }
      return rows
    })

    const reportedDead = new Set<string>()

    /** The operator replays the dead rows of published orphans (or all of them). */
    const replayed = new Map<string, { readonly key: string; readonly version: number; readonly at: number }>()
    const replayDead = (all: boolean) =>
      Effect.gen(function*() {
        const published = new Set(model.orphans.filter((o) => o.published).map((o) => o.company))
        const instance = instances[0]
        if (instance === undefined) return 0
        let n = 0
        for (const row of yield* deadRows) {
          if (!all && !row.waitingFor.some((ref) => published.has(ref.id))) continue
          const before = applyClock
          const done = yield* instance.consumer.replay(row.messageId).pipe(
            Effect.retry({ times: 5 }),
            Effect.catchTag("SqlError", () => Effect.succeed(false))
          )
          if (!done) continue
          n++
          tally.add("outcomes", "replayed")
          replayed.set(row.messageId, {
            key: `${row.envelope.entity}:${row.envelope.entityId}`,
            version: row.envelope.version,
            at: before
          })
        }
        return n
      })

    // R4 and R5 at this moment, over every copy
    const versions = new Map<string, number>()
    const checkCopies = (where: string) =>
      Effect.gen(function*() {
        // the reads are not one snapshot (consumers commit meanwhile on PostgreSQL): a User found referencing a
        // missing Company is read again; at the same version, it held that version when the Companies were read
        const usersCopied = yield* copies.list("User")
        const companiesCopied = new Map((yield* copies.list("Company")).map((row) => [row.id, row]))
        const suspects = usersCopied.filter((user) => {
          const company = companyOf(user.payload)
          if (user.state === "deleted" || company === undefined) return false
          const copy = companiesCopied.get(company)
          return copy === undefined || copy.state === "deleted"
        })
        if (suspects.length > 0) {
          const usersAfter = new Map((yield* copies.list("User")).map((row) => [row.id, row.version]))
          for (const user of suspects) {
            if (usersAfter.get(user.id) !== user.version) continue
            violation(
              `R5 ${where}: User:${user.id} v${user.version} references missing Company:${companyOf(user.payload)}`
            )
          }
        }
        for (const row of [...companiesCopied.values(), ...usersCopied]) {
          const key = keyOf(row)
          const before = versions.get(key)
          if (before !== undefined && row.version < before && !resetKeys.has(key)) {
            violation(`R4 ${where}: ${key} went down from v${before} to v${row.version}`)
          }
          versions.set(key, row.version)
        }
        resetKeys.clear()
      })

    /** Lets everything settle: nothing due in the outbox, the queue empty, nothing held, the database up. */
    const quiesce = (what: string, parkedToo: boolean) =>
      Effect.gen(function*() {
        // virtual time moves on in small steps while the consumer has work (on PostgreSQL it needs real time
        // for it: big steps would spend the budget of events waiting for what is in its queue), in growing
        // steps when only timers are left
        let idle = 0
        for (let round = 0; round < 3_000; round++) {
          yield* relay(undefined)
          const now = yield* Clock.currentTimeMillis
          if (now < db.downUntil || instances[0] === undefined) {
            yield* tick(Math.min(1_000, Math.max(1, db.downUntil - now)))
            continue
          }
          const depth = yield* controls.queueDepth(queueName)
          let held = 0
          for (const instance of live()) held += yield* instance.consumer.inFlight
          const busy = depth.ready + depth.unsettled > 0 || held > 0
          if (
            !busy && depth.delayed === 0 && (yield* outbox.pending).count === 0 &&
            (!parkedToo || (yield* inbox.stats(consumerName)).waiting === 0)
          ) return
          yield* tick(busy ? 10 : idle < 20 ? 50 : idle < 60 ? 1_000 : 5_000)
          if (!busy) idle++
        }
        const depth = yield* controls.queueDepth(queueName)
        const stats = yield* inbox.stats(consumerName)
        const pending = yield* outbox.pending
        return yield* Effect.die(
          new Error(
            `${what}: not quiet after 3000 rounds (queue ${
              JSON.stringify(depth)
            }, waiting ${stats.waiting}, outbox ${pending.count})`
          )
        )
      })

    /** A copy written behind the consumer's back: same version and another name, or ahead of the owner. */
    let drifts = 0
    const drifted = new Set<string>()
    const drift = (ahead: boolean) =>
      Effect.gen(function*() {
        const entity = random() < 0.5 ? "Company" : "User"
        const rows = (yield* copies.list(entity)).filter((r) => r.state !== "deleted" && isJsonObject(r.payload))
        if (rows.length === 0) return undefined
        const row = rows[int(rows.length)]!
        if (!isJsonObject(row.payload)) return undefined
        const payload = { ...row.payload, name: `drift-${++drifts}` }
        const version = ahead ? row.version + 3 : row.version
        const written = yield* copies.upsert({ ...row, payload, version, messageId: `drift-${drifts}` }, "newerOrEqual")
        if (!written) return undefined
        versions.set(keyOf(row), Math.max(versions.get(keyOf(row)) ?? 0, version))
        drifted.add(keyOf(row))
        tally.add("faults", ahead ? "copy drifts ahead of the owner" : "copy drifts at its version")
        return row
      })

    // the system's operations, with their weights
    const systemOps: ReadonlyArray<
      { readonly name: string; readonly weight: number; readonly run: () => Effect.Effect<unknown, unknown, StepEnv> }
    > = [
      { name: "relay", weight: 14, run: () => relay(undefined) },
      { name: "relay, crashing before the mark", weight: 1.2, run: () => relay("beforeMark") },
      { name: "relay, crashing while it publishes", weight: 0.8, run: () => relay("inPublish") },
      {
        name: "broker refuses publishes",
        weight: 1,
        run: () =>
          Effect.andThen(controls.publishFails(1 + int(2)), () => {
            tally.add("faults", "publish refused (broker unavailable to the relay)")
            return relay(undefined)
          })
      },
      {
        name: "time passes",
        weight: 6,
        run: () => tick(random() < 0.1 ? 20_000 : [5, 50, 200, 1_000, 3_000][int(5)]!)
      },
      {
        name: "arm a consumer crash",
        weight: 4,
        run: () =>
          Effect.sync(() => {
            const targets = live()
            const target = targets[int(targets.length)]
            if (target !== undefined) target.hooks.armed = Faults.crashPoints[int(Faults.crashPoints.length)]!
          })
      },
      {
        name: "kill a consumer instance",
        weight: 1,
        run: () =>
          Effect.gen(function*() {
            const slot = instances[1] !== undefined && random() < 0.5 ? 1 : 0
            const held = yield* instances[slot]?.consumer.inFlight ?? Effect.succeed(0)
            tally.add("faults", "consumer killed at a random moment")
            if (held > 0) tally.add("faults", "consumer crash with unsettled deliveries")
            yield* stop(slot)
            yield* start(slot)
          })
      },
      {
        name: "arm a lost ack",
        weight: 1.5,
        run: () =>
          Effect.sync(() => {
            const targets = live()
            const target = targets[int(targets.length)]
            if (target !== undefined) target.hooks.loseAck = true
          })
      },
      {
        name: "broker connection lost",
        weight: 2,
        run: () =>
          Effect.map(controls.dropSubscriptions(queueName), () => tally.add("faults", "broker connection lost"))
      },
      {
        name: "arm a transient database error",
        weight: 3,
        run: () =>
          Effect.sync(() => {
            if (random() < 0.5) db.failCommits++
            else db.failStatements++
          })
      },
      {
        name: "the copy writes of one entity fail 8 times in a row (the database answers)",
        weight: 0.8,
        run: () =>
          Effect.sync(() => {
            if (db.stuck.remaining > 0) return
            db.stuck.remaining = 8
            tally.add("faults", "copy writes of one entity fail 8 times in a row")
          })
      },
      {
        name: "database outage",
        weight: 0.8,
        run: () =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            if (now < db.downUntil) return
            const millis = 2_000 + int(28_000)
            db.downUntil = now + millis
            tally.add("faults", "database outage")
            tally.add("faults", "database outage, seconds in all", Math.round(millis / 1000))
          })
      },
      {
        name: "second consumer instance starts or stops",
        weight: 1.5,
        run: () =>
          Effect.gen(function*() {
            if (instances[1] === undefined) {
              tally.add("faults", "second instance started")
              yield* start(1)
            } else {
              tally.add("faults", "second instance stopped")
              yield* stop(1)
            }
          })
      },
      {
        name: "full sync",
        weight: 2,
        run: () =>
          Effect.gen(function*() {
            tally.add("operations", "full sync")
            const ids = random() < 0.5
              ? undefined
              : { ids: random() < 0.5 ? Owner.companyIds.slice(0, 2) : Owner.userIds.slice(0, 3) }
            const queued = random() < 0.5
              ? yield* Owner.companies.fullSync({ batchSize: 2, ...(ids?.ids[0]?.startsWith("c") ? ids : {}) })
              : yield* ownerUsers.fullSync({ batchSize: 3, ...(ids?.ids[0]?.startsWith("u") ? ids : {}) })
            tally.add("operations", "snapshot events", queued)
          })
      },
      { name: "copy drifts", weight: 2, run: () => drift(false) },
      {
        name: "copy drifts ahead; the operator resets it",
        weight: 0.7,
        run: () =>
          Effect.gen(function*() {
            yield* quiesce("before a reset", false)
            const row = yield* drift(true)
            if (row === undefined) return
            yield* (row.entity === "Company" ? Owner.companies : Owner.users).fullSync({ ids: [row.id], reset: true })
            yield* quiesce("after a reset", false)
          })
      },
      {
        name: "the owner publishes an orphan Company",
        weight: 1,
        run: () =>
          Effect.gen(function*() {
            const orphan = model.orphans.find((o) => !o.published)
            if (orphan === undefined) return
            tally.add("operations", "orphan Company published")
            yield* Owner.publishOrphan(orphan)
          })
      },
      {
        name: "the operator replays dead letters of published orphans",
        weight: 1,
        run: () =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            if (now >= db.downUntil) yield* replayDead(false)
          })
      }
    ]

    const steps = 40 + int(61)
    for (let i = 0; i < steps; i++) {
      const owned = Owner.candidates(model, random, kit.mixedVersions === true)
      const all = [
        ...owned.map((c) => ({ name: c.name, weight: c.weight, owner: true, run: () => c.write() })),
        ...systemOps.map((s) => ({ ...s, owner: false }))
      ]
      let at = random() * all.reduce((sum, c) => sum + c.weight, 0)
      const chosen = all.find((c) => (at -= c.weight) < 0) ?? all[0]!
      const eventsBefore = model.events
      log.push(`${i}: t=${yield* Clock.currentTimeMillis} ${chosen.name}`)
      tally.add(chosen.owner ? "owner writes" : "system steps", chosen.name)
      const outcome = yield* Effect.exit(chosen.run())
      if (Exit.isFailure(outcome)) {
        const error = Cause.findErrorOption(outcome.cause)
        if (
          Option.isSome(error) && typeof error.value === "object" && error.value !== null && "_tag" in error.value &&
          (error.value._tag === "EntityExists" || error.value._tag === "EntityNotFound")
        ) {
          violation(`the generator's model is wrong at step ${i} (${chosen.name}): ${String(error.value)}`)
        } else return yield* Effect.failCause(outcome.cause)
      }
      if (model.events === eventsBefore && chosen.owner) tally.add("system steps", "owner step without an event")
      yield* tick(1)
      for (const instance of live()) {
        if ((yield* instance.consumer.status).paused !== null) {
          tally.add("outcomes", "steps with a consumer paused by the outage")
        }
      }
      yield* checkCopies(`after step ${i} (${chosen.name})`)
      if (violations.length > 0) break
    }

    // the end: the faults stop; what never arrives is dead-lettered; the owner publishes it; the operator replays
    for (const instance of live()) {
      instance.hooks.armed = undefined
      instance.hooks.loseAck = false
    }
    db.failCommits = 0
    db.failStatements = 0
    db.stuck.remaining = 0
    db.stuck.key = undefined
    log.push("end: quiesce")
    const endStarted = performance.now()
    yield* quiesce("at the end", true)
    yield* checkCopies("at the end")
    const dead = yield* deadRows
    tally.add("outcomes", "dead-lettered (never-arriving Company)", dead.length)
    const unpublished = model.orphans.filter((orphan) => !orphan.published)
    for (const orphan of unpublished) yield* Owner.publishOrphan(orphan)
    if (unpublished.length > 0 && dead.length > 0) yield* quiesce("after the orphans were published", true)
    if ((yield* replayDead(true)) > 0 || (unpublished.length > 0 && dead.length === 0)) {
      yield* quiesce("after the replay", true)
      yield* checkCopies("after the replay")
    }
    if ((yield* inbox.deadLetters(consumerName)).length > 0) violation("dead letters remain after their replay")

    // drifts at the owner's version that no later event replaced: the operator's full sync repairs them
    const ownerOf = (entity: string) => source.page(entity, { afterId: null, limit: 1_000 })
    const repairs: Record<string, Array<string>> = { Company: [], User: [] }
    for (const entity of ["Company", "User"]) {
      const rows = new Map((yield* ownerOf(entity)).map((row) => [row.id, row]))
      for (const copy of yield* copies.list(entity)) {
        const row = rows.get(copy.id)
        if (!drifted.has(keyOf(copy)) || row === undefined || row.version !== copy.version) continue
        if (JSON.stringify(currentShape(entity, row.payload)) !== JSON.stringify(copy.payload)) {
          repairs[entity]!.push(copy.id)
        }
      }
    }
    if (repairs["Company"]!.length > 0) yield* Owner.companies.fullSync({ ids: repairs["Company"]! })
    if (repairs["User"]!.length > 0) yield* ownerUsers.fullSync({ ids: repairs["User"]! })
    if (repairs["Company"]!.length + repairs["User"]!.length > 0) {
      tally.add("operations", "full sync repairing drifted copies at the end")
      yield* quiesce("after the repair", true)
    }

    // the copies equal the owner's rows, tombstones included
    const finalCopies = new Map<string, CopyRow>()
    for (const entity of ["Company", "User"]) {
      const owner = (yield* ownerOf(entity)).map((row) => ({ ...row, payload: currentShape(entity, row.payload) }))
      const copied = yield* copies.list(entity)
      copied.forEach((row) => finalCopies.set(keyOf(row), row))
      const differ = JSON.stringify(copied.map((c) => [c.id, c.version, c.state, c.payload])) !==
        JSON.stringify(owner.map((o) => [o.id, o.version, o.state, o.payload]))
      if (differ) {
        violation(
          `${entity} copies differ from the owner's rows:\n    owner  ${
            JSON.stringify(owner.map((o) => [o.id, o.version, o.state, o.payload]))
          }\n    copies ${JSON.stringify(copied.map((c) => [c.id, c.version, c.state, c.payload]))}`
        )
      }
    }
    for (const [messageId, replay] of replayed) {
      const applied = appliedAt.get(messageId)
      if (applied !== undefined && applied > replay.at) tally.add("outcomes", "replayed, then applied")
      else if ((finalCopies.get(replay.key)?.version ?? 0) >= replay.version) {
        tally.add("outcomes", "replayed, then stale")
      } else violation(`replayed ${replay.key} v${replay.version} (message ${messageId}) was never applied`)
    }
    // nothing lost (R3): every event the owner committed was published and reached the consumer's inbox —
    // asked by recording them all in a transaction that is rolled back
    const events = yield* outbox.rows({ limit: 100_000 })
    const neverPublished = events.filter((row) => row.publishedAt === null)
    if (neverPublished.length > 0) violation(`${neverPublished.length} event(s) never published`)
    const unrecorded = yield* transactor.withTransaction(
      Effect.flatMap(
        inbox.recordMany(consumerName, events.map((row) => row.envelope.messageId)),
        (fresh) => Effect.fail(new Unrecorded({ messageIds: fresh }))
      )
    ).pipe(Effect.catchTag("Unrecorded", (rolledBack) => Effect.succeed(rolledBack.messageIds)))
    for (const row of events.filter((row) => unrecorded.has(row.envelope.messageId))) {
      violation(
        `R3: ${row.envelope.entity}:${row.envelope.entityId} v${row.envelope.version} (message ${row.envelope.messageId}) never reached the consumer's inbox`
      )
    }
    const brokerDead = yield* broker.deadLetters(queueName, { limit: 10 })
    if (brokerDead.total > 0) {
      violation(
        `the broker dead-lettered ${brokerDead.total} message(s): ${brokerDead.items.map((d) => d.reason).join("; ")}`
      )
    }

    // what the run exercised
    for (const entity of ["Company", "User"]) {
      for (const outcome of outcomes) {
        const n = yield* Metrics.outcomeCount(consumerName, entity, outcome)
        if (n > 0) tally.add("consumer outcomes (metrics)", outcome, n)
      }
    }
    const brokerStats = yield* controls.stats
    tally.add("broker", "published", brokerStats.published)
    tally.add("broker", "duplicated by the broker", brokerStats.duplicated)
    tally.add("broker", "delivered", brokerStats.delivered)
    tally.add("broker", "requeued (crash, lost connection)", brokerStats.requeued)
    tally.add("broker", "released during an outage (no attempt spent)", brokerStats.released)
    tally.add("runs", batchSize === 1 ? "consumer batch size 1" : `consumer batch size ${batchSize}`)
    tally.add("runs", twoFromStart ? "two instances from the start" : "one instance at the start")
    tally.add("real time", "milliseconds in the histories", Math.round(endStarted - started))
    tally.add("real time", "milliseconds in the ends", Math.round(performance.now() - endStarted))
    let stale = 0
    for (const entity of ["Company", "User"]) stale += yield* Metrics.outcomeCount(consumerName, entity, "stale")

    if (violations.length > 0) {
      return yield* Effect.die(new PropertyViolation({ seed, detail: violations.slice(0, 10).join("\n  ") }))
    }
    return { tally, events: model.events, steps, stale }
  }).pipe(
    Effect.provide(Layer.mergeAll(
      stores.owner,
      stores.consumer,
      MemoryBroker.layer({
        faults: {
          seed: Math.imul(seed, 0x9e3779b1),
          reorder: 0.3,
          duplicate: 0.15,
          delay: { probability: 0.3, max: "2 seconds" }
        }
      })
    )),
    Effect.scoped,
    Effect.provideService(Metric.MetricRegistry, new Map()),
    Effect.provideService(Pump, kit.pump),
    Effect.mapError((error) => ({ error, log: log.slice(-40) })),
    Effect.catchDefect((defect) => Effect.fail({ error: defect, log: log.slice(-40) }))
  )
}

/** What enough generated runs must have exercised at least once (checked from `coverageRuns` runs on). */
const required: ReadonlyArray<readonly [string, string]> = [
  ...Faults.crashPoints.map((point) => ["faults", `consumer crash ${point}`] as const),
  ["faults", "consumer crash with unsettled deliveries"],
  ["faults", "relay crash between publish and mark"],
  ["faults", "relay crash while publishing"],
  ["faults", "copy writes of one entity fail 8 times in a row"],
  ["consumer outcomes (metrics)", "failed"],
  ["faults", "broker connection lost"],
  ["faults", "ack lost, then the connection drops"],
  ["faults", "transient: commit fails"],
  ["faults", "transient: statement fails"],
  ["faults", "database outage"],
  ["faults", "second instance started"],
  ["faults", "copy drifts at its version"],
  ["faults", "copy drifts ahead of the owner"],
  ["outcomes", "hard delete waits for references"],
  ["outcomes", "dead-lettered (never-arriving Company)"],
  ["outcomes", "replayed, then applied"],
  ["outcomes", "repaired (drift replaced at its version)"],
  ["outcomes", "repaired (copy ahead reset)"],
  ["outcomes", "steps with a consumer paused by the outage"],
  ["broker", "released during an outage (no attempt spent)"],
  ...(["applied", "duplicate", "stale", "waiting", "parked", "woken", "deadLettered"] as const).map((outcome) =>
    ["consumer outcomes (metrics)", outcome] as const
  )
]

/** From this many runs on, every case of `required` must have occurred. */
const coverageRuns = 50

/** The seeds of this test run: fixed ones, then fresh ones (none when `CONVERGENCE_SEED` replays a run). */
const seedsOf = (
  fixedRuns: number,
  freshRuns: number
): { readonly fixed: Array<number>; readonly fresh: Array<number> } => {
  const replay = process.env["CONVERGENCE_SEED"]
  const runs = process.env["CONVERGENCE_RUNS"]
  if (replay !== undefined) {
    const first = Number(replay)
    return { fixed: Array.from({ length: Number(runs ?? 1) }, (_, i) => first + i), fresh: [] }
  }
  const fixed = Array.from({ length: Number(runs ?? fixedRuns) }, (_, i) => fixedSeed + i)
  const freshCount = Number(process.env["CONVERGENCE_FRESH"] ?? freshRuns)
  const base = Date.now() % 1_000_000_007
  return { fixed, fresh: Array.from({ length: freshCount }, (_, i) => base + i * 7919) }
}

/** The command that replays one seed. */
export const replayCommand = (file: string, seed: number) =>
  `CONVERGENCE_SEED=${seed} CONVERGENCE_RUNS=1 NODE_OPTIONS='--import ./test/node20-polyfills.mjs' npx vitest run ${file}`

/**
 * The convergence property on the given stores: `fixedRuns` fixed seeds and `freshRuns` fresh ones
 * (`CONVERGENCE_RUNS`, `CONVERGENCE_FRESH` override; `CONVERGENCE_SEED` replays from one seed).
 */
export const convergence = (name: string, kit: PropertyKit, fixedRuns: number, freshRuns: number) => {
  const { fixed, fresh } = seedsOf(fixedRuns, freshRuns)
  const seeds = [...fixed, ...fresh]
  describe(name, () => {
    it.effect(
      `copies converge to the owner's state through crashes, outages, drift and never-arriving dependencies (${fixed.length} fixed seeds${
        fixed.length === 0 ? "" : ` from ${fixed[0]}`
      }, ${fresh.length} fresh)`,
      () =>
        Effect.gen(function*() {
          const total = new Tally()
          const events: Array<number> = []
          const stepsPerRun: Array<number> = []
          let staleFree = 0
          const failures: Array<string> = []
          for (const seed of seeds) {
            const exit = yield* Effect.exit(run(seed, kit))
            if (Exit.isSuccess(exit)) {
              total.merge(exit.value.tally)
              events.push(exit.value.events)
              stepsPerRun.push(exit.value.steps)
              if (exit.value.stale === 0) staleFree++
              continue
            }
            const failure = Cause.findErrorOption(exit.cause)
            const detail = Option.isSome(failure)
              ? `${
                failure.value.error instanceof Error ? failure.value.error.message : String(failure.value.error)
              }\n  last steps:\n    ${failure.value.log.join("\n    ")}`
              : Cause.pretty(exit.cause)
            const message = `convergence failed for seed ${seed}\n  replay: ${replayCommand(kit.file, seed)}${
              kit.deterministic ? "" : " (real I/O interleaves differently each time: it may take a few replays)"
            }\n  ${detail}`
            console.error(message)
            failures.push(`seed ${seed}: ${replayCommand(kit.file, seed)}`)
            if (failures.length >= 3) break
          }
          console.log(
            [
              `${name}: ${events.length} runs passed of ${seeds.length} (${
                fixed.length === 0 ? "no fixed seeds" : `fixed seeds ${fixed[0]} to ${fixed.at(-1)}`
              }, ${
                fresh.length === 0 ? "no fresh seeds" : `fresh seeds ${fresh[0]}, ${fresh[0]}+7919, … ${fresh.at(-1)}`
              })`,
              `  owner events per run: ${spread(events, 5)}`,
              `  steps per run: ${spread(stepsPerRun, 0)}`,
              `  runs without a stale event: ${staleFree}`,
              total.format()
            ].join("\n")
          )
          assert.deepStrictEqual(failures, [], "failing seeds (each line replays one)")
          if (seeds.length >= coverageRuns) {
            const missing = required.filter(([group, counter]) => total.get(group, counter) === 0)
            assert.deepStrictEqual(missing, [], "cases the generated runs never exercised")
          }
        }),
      900_000
    )
  })
}
