/**
 * The convergence property (DESIGN §2): for random owner histories over Company and User (a User depends
 * on its Company) delivered through the memory broker with reordering, duplicates, delays and consumer
 * crashes, and with full syncs (R8) interleaved, once the system is quiet the copies equal the owner's final state (tombstones included), no
 * event was applied twice, nothing was lost, and no copy ever referenced a missing Company — checked inside
 * every apply transaction and after every step. All time is virtual.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric, Option, Schedule, Schema } from "effect"
import type { SqlError } from "effect/sql"
import type { Broker } from "../src/Broker.ts"
import { CopyRepository } from "../src/CopyRepository.ts"
import type { EntityExists, EntityNotFound } from "../src/Errors.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as SeededRandom from "../src/memory/SeededRandom.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Producer from "../src/Producer.ts"
import { SourceRepository } from "../src/SourceRepository.ts"
import * as SyncConsumer from "../src/SyncConsumer.ts"
import { Company, User } from "./fixtures.ts"
import type { ChecklistStores } from "./checklist.ts"
import { isQuiet, Pump, queueName, relay, systemLayer, tick } from "./harness.ts"

/** The first run's seed; run i uses SEED + i. Override with CONVERGENCE_SEED / CONVERGENCE_RUNS to replay. */
const SEED = Number(process.env["CONVERGENCE_SEED"] ?? 20261122)

/** Owner operations and the system's events, with their weights in a generated history. */
const operations = [
  ["createCompany", 12],
  ["renameCompany", 6],
  ["deleteCompany", 6],
  ["softDeleteCompany", 3],
  ["createUser", 14],
  ["renameUser", 6],
  ["moveUser", 10],
  ["toggleUser", 4],
  ["deleteUser", 6],
  ["softDeleteUser", 3],
  ["relay", 18],
  ["advance", 8],
  ["crash", 4],
  ["fullSync", 2]
] as const
type Operation = typeof operations[number][0]
const totalWeight = operations.reduce((sum, [, w]) => sum + w, 0)
const operationAt = (n: number): Operation => {
  let rest = n
  for (const [op, weight] of operations) {
    if (rest < weight) return op
    rest -= weight
  }
  return "relay"
}

/** One step of a history: an operation, the user / company it is about, and a duration. */
interface Step {
  readonly op: Operation
  readonly user: number
  readonly company: number
  readonly millis: number
}

/** A weighted random history of 20 to 80 steps over 4 companies and 6 users. */
const historyOf = (seed: number): ReadonlyArray<Step> => {
  const random = SeededRandom.make(seed)
  const int = (n: number) => Math.floor(random() * n)
  return Array.from({ length: 20 + int(61) }, () => ({
    op: operationAt(int(totalWeight)),
    user: int(6),
    company: int(4),
    millis: [1, 10, 100, 1000][int(4)]!
  }))
}

const accounts = Producer.make("accounts")
const companies = accounts.repository(Company)
const users = accounts.repository(User)

const companyId = (i: number) => `c-${i}`
const userId = (i: number) => `u-${i}`

/** Users (not deleted) that reference a company at the owner. */
const referencingUsers = (company: string) =>
  Effect.gen(function*() {
    const source = yield* SourceRepository
    const rows = yield* source.page("User", { afterId: null, limit: 1000 })
    return rows.filter((r) => r.state !== "deleted" && companyOf(r.payload) === company)
  })

const companyOf = (payload: unknown): string | undefined =>
  Option.getOrUndefined(decodeCompanyRef(payload))?.companyId
const decodeCompanyRef = Schema.decodeUnknownOption(Schema.Struct({ companyId: Schema.String }))

const ownerStep = (
  step: Step
): Effect.Effect<
  unknown,
  EntityExists | EntityNotFound | SqlError.SqlError,
  Outbox.Outbox | SourceRepository | MemoryBroker.MemoryBroker | Broker
> => {
  const c = companyId(step.company)
  const u = userId(step.user)
  switch (step.op) {
    case "createCompany":
      return Outbox.transaction(companies.create({ id: c, name: `n${step.millis}` }))
    case "renameCompany":
      return Outbox.transaction(companies.update(c, (x) => ({ ...x, name: `${x.name}+` })))
    case "softDeleteCompany":
      return Outbox.transaction(companies.softDelete(c))
    case "deleteCompany":
      return Effect.gen(function*() {
        // the owner keeps referential integrity: a Company is deleted only when no User references it
        if ((yield* referencingUsers(c)).length === 0) yield* Outbox.transaction(companies.delete(c))
      })
    case "createUser":
    case "moveUser":
      return Effect.gen(function*() {
        const company = yield* companies.get(c)
        if (company === null || company.state !== "live") return
        if (step.op === "createUser") {
          yield* Outbox.transaction(
            users.create({ id: u, companyId: c, email: `${u}@test`, name: u, active: step.millis > 10 })
          )
        } else {
          yield* Outbox.transaction(users.update(u, (x) => ({ ...x, companyId: c })))
        }
      })
    case "renameUser":
      return Outbox.transaction(users.update(u, (x) => ({ ...x, name: `${x.name}+` })))
    case "toggleUser":
      return Outbox.transaction(users.update(u, (x) => ({ ...x, active: !x.active })))
    case "softDeleteUser":
      return Outbox.transaction(users.softDelete(u))
    case "deleteUser":
      return Outbox.transaction(users.delete(u))
    case "relay":
      return relay
    case "advance":
      return tick(step.millis)
    case "fullSync":
      return step.user % 2 === 0 ? companies.fullSync({ batchSize: 2 }) : users.fullSync({ batchSize: 2 })
    case "crash":
      return MemoryBroker.MemoryBroker.use((broker) => broker.dropSubscriptions(queueName))
  }
}

/** R5 at this moment: every copy that is not a tombstone references a Company copy that is not one either. */
const referencesHold = Effect.gen(function*() {
  const copies = yield* CopyRepository
  const problems: Array<string> = []
  for (const user of yield* copies.list("User")) {
    const company = companyOf(user.payload)
    if (user.state === "deleted" || company === undefined) continue
    const copy = yield* copies.get("Company", company)
    if (copy === null || copy.state === "deleted") problems.push(`User:${user.id} v${user.version} -> ${company}`)
  }
  return problems
})

const converges = (seed: number, kit: ChecklistStores) =>
  Effect.gen(function*() {
    const steps = historyOf(seed)
    const applied: Array<string> = []
    const violations: Array<string> = []
    const check = (where: string) =>
      Effect.gen(function*() {
        for (const p of yield* referencesHold) violations.push(`${where}: ${p}`)
      }).pipe(Effect.orDie)
    const record = (event: SyncConsumer.SyncEvent<unknown>) =>
      Effect.gen(function*() {
        applied.push(event.envelope.messageId)
        if (event.previous !== null && event.previous.version >= event.envelope.version && !event.envelope.forceSync) {
          violations.push(`R4: ${event.envelope.entity}:${event.envelope.entityId} v${event.previous.version} -> v${event.envelope.version}`)
        }
        yield* check(`apply ${event.envelope.entity}:${event.envelope.entityId} v${event.envelope.version}`)
      })
    const subscriptions = [
      SyncConsumer.subscribe(Company, { handler: record }),
      SyncConsumer.subscribe(User, { handler: record })
    ]
    const run = Effect.gen(function*() {
      for (const step of steps) {
        yield* ownerStep(step).pipe(Effect.catchTags({ EntityExists: () => Effect.void, EntityNotFound: () => Effect.void }))
        yield* tick(1)
        yield* check(`after ${step.op}`)
      }
      // quiescence: everything relayed, the queue empty, nothing parked
      const consumer = yield* SyncConsumer.SyncConsumer
      let rounds = 0
      while (true) {
        yield* relay
        yield* tick("50 millis")
        if ((yield* isQuiet) && (yield* consumer.waiting).length === 0 && (yield* relay) === 0) break
        if (++rounds > 5_000) return yield* Effect.die(new Error("the system did not become quiet"))
      }
      yield* check("at the end")

      const source = yield* SourceRepository
      const copies = yield* CopyRepository
      for (const entity of ["Company", "User"]) {
        const owned = yield* source.page(entity, { afterId: null, limit: 1000 })
        const copied = yield* copies.list(entity)
        assert.deepStrictEqual(
          copied.map((c) => [c.id, c.version, c.state, c.payload]),
          owned.map((o) => [o.id, o.version, o.state, o.payload]),
          `${entity} copies differ from the owner's rows`
        )
      }
      assert.deepStrictEqual(violations, [], "R4/R5 violations")
      assert.strictEqual(new Set(applied).size, applied.length, "an event was applied twice")
      assert.deepStrictEqual(yield* consumer.deadLetters, [], "nothing may be dead-lettered")
    })
    yield* run.pipe(
      Effect.provide(systemLayer({
        stores: kit.stores(),
        subscriptions,
        faults: { seed: Math.imul(seed, 0x9e3779b1), reorder: 0.3, duplicate: 0.2, delay: { probability: 0.3, max: "2 seconds" } },
        dependencyRetry: Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")]).pipe(
          Schedule.upTo({ duration: "1 hour" })
        ),
        inProcessRetries: 2
      })),
      Effect.provideService(Metric.MetricRegistry, new Map()),
      Effect.provideService(Pump, kit.pump)
    )
  }).pipe(
    Effect.tapDefect((defect) =>
      Effect.sync(() =>
        console.error(`convergence failed for seed ${seed} (replay: CONVERGENCE_SEED=${seed} CONVERGENCE_RUNS=1)`, defect))
    )
  )

/** The convergence property on the given stores, `runs` seeded runs (CONVERGENCE_RUNS overrides). */
export const convergence = (name: string, kit: ChecklistStores, defaultRuns: number) => {
  const runs = Number(process.env["CONVERGENCE_RUNS"] ?? defaultRuns)
  describe(name, () => {
    it.effect(
      `copies converge to the owner's state under reordering, duplicates, delays and crashes (${runs} runs from seed ${SEED})`,
      () => Effect.forEach(Array.from({ length: runs }, (_, i) => SEED + i), (seed) => converges(seed, kit), { discard: true }),
      600_000
    )
  })
}
