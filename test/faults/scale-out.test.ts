/**
 * Scale-out, proven in separate processes: two relay processes on one outbox and three consumer processes
 * of one consumer service, on the real PostgreSQL and RabbitMQ, while a writer commits 20 000 events over
 * 500 entities with dependencies: 100 groups and 400 items that belong to them (`Item.groupId`), items
 * often created in a group before the group itself (in the same transaction, a few later, or seconds
 * later) and moved between groups, groups hard-deleted once empty. Mid-run one relay and one consumer are
 * killed with SIGKILL (no finalizer runs: their leases and open transactions die with them, their unacked
 * deliveries go back to the queue) and started again. At the end nothing is lost, nothing was applied
 * twice, the copies of both entities equal the owner's rows (tombstones included), nothing was given up
 * on, and no copy referenced a missing group in any sample taken during the run (R5); the events that
 * waited, were parked, and which processes applied the parked ones are printed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Schema, type Scope } from "effect"
import { appliesTable, Group, Item } from "./contract.ts"
import { quiet, setup } from "./fixture.ts"
import { type ConsumerProcess, startProcess } from "./process.ts"
import type { Names } from "./stack.ts"
import { awaitQuiescence, danglingCopies, danglingOwned, judge, parkFigures, recordParks } from "./verify.ts"
import { writeStream } from "./writer.ts"

const decodeCount = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ n: Schema.Int })))
const OutcomeCounts = Schema.Struct({
  duplicate: Schema.Int,
  stale: Schema.Int,
  waiting: Schema.Int,
  parked: Schema.Int,
  woken: Schema.Int,
  deadLettered: Schema.Int
})
type OutcomeCounts = typeof OutcomeCounts.Type
const decodeOutcomes = Schema.decodeUnknownOption(Schema.fromJsonString(OutcomeCounts))
const decodeByEntity = Schema.decodeUnknownEffect(
  Schema.Array(Schema.Struct({ entity: Schema.String, owned: Schema.Int, copied: Schema.Int, tombstones: Schema.Int }))
)

const events = 20_000
/** Groups and items together. */
const entities = 500
const groups = 100

describe("faults: scale-out in separate processes", () => {
  it.live(
    "2 relays and 3 consumers, one of each killed with SIGKILL: nothing lost, nothing applied twice",
    () =>
      Effect.gen(function*() {
        const fixture = yield* setup("scale-out")
        const { names, url } = fixture
        yield* recordParks(fixture.sql, names)
        const applies = fixture.sql`SELECT count(*)::int AS n FROM ${fixture.sql(appliesTable)}`.pipe(
          Effect.flatMap(decodeCount),
          Effect.map((rows) => rows[0]?.n ?? 0)
        )
        // the last outcome counts each consumer incarnation printed (a killed one's last ≤ 500 ms are lost)
        const outcomes = new Map<number, OutcomeCounts>()
        const pids = new Map<number, number | undefined>()
        let incarnations = 0
        const start = (role: "relay" | "consumer", n: Names): Effect.Effect<ConsumerProcess, unknown, Scope.Scope> =>
          Effect.suspend(() => {
            const incarnation = incarnations++
            return startProcess("test/faults/scale-process.ts", url, n, role, {
              env: { FAULTS_ROLE: role },
              onLine: (line) => {
                if (!line.startsWith("outcomes ")) return
                const counts = decodeOutcomes(line.slice("outcomes ".length))
                if (counts._tag === "Some") outcomes.set(incarnation, counts.value)
              }
            }).pipe(Effect.tap((p) => Effect.sync(() => role === "consumer" && pids.set(incarnation, p.pid))))
          })
        const relays = yield* Effect.all([start("relay", names), start("relay", names)], { concurrency: 2 })
        const consumers = yield* Effect.all(
          [start("consumer", names), start("consumer", names), start("consumer", names)],
          { concurrency: 3 }
        )
        const began = yield* Clock.currentTimeMillis
        // R5 at any moment: copies referencing a missing group, sampled (one statement each) until the end
        const dangling = { samples: 0, max: 0 }
        const sampler = yield* danglingCopies(fixture.sql, names).pipe(
          Effect.tap((n) =>
            Effect.sync(() => {
              dangling.samples++
              dangling.max = Math.max(dangling.max, n)
            })
          ),
          Effect.andThen(Effect.sleep("100 millis")),
          Effect.forever,
          Effect.forkChild
        )
        const writer = yield* writeStream({ events, ratePerSecond: 500, entities, groups }).pipe(
          Effect.provide(fixture.writer),
          Effect.forkChild
        )
        // mid-run: once a third of the stream is applied, kill one relay and one consumer, then start them again
        while ((yield* applies) < events / 3 && writer.pollUnsafe() === undefined) yield* Effect.sleep("200 millis")
        const [relay0] = relays
        const [consumer0] = consumers
        let kills = 0
        if (relay0 !== undefined && consumer0 !== undefined) {
          yield* Effect.all([relay0.kill, consumer0.kill], { concurrency: 2 })
          kills += 2
          const killedAt = yield* Clock.currentTimeMillis
          yield* Effect.all([start("relay", names), start("consumer", names)], { concurrency: 2 })
          console.log(
            `[faults] scale-out: killed a relay and a consumer ${((killedAt - began) / 1000).toFixed(1)} s in, ` +
              `restarted them in ${(((yield* Clock.currentTimeMillis) - killedAt) / 1000).toFixed(1)} s`
          )
        }
        const written = yield* Fiber.join(writer)
        const t = yield* awaitQuiescence(fixture.sql, names, { timeoutSeconds: 180, stallSeconds: 60 })
        yield* Fiber.interrupt(sampler)
        const sum = (kind: keyof OutcomeCounts) => [...outcomes.values()].reduce((total, o) => total + o[kind], 0)
        const parks = yield* parkFigures(fixture.sql, names)
        const ownedDangling = yield* danglingOwned(fixture.sql, names)
        const ownerTable = (name: string) => fixture.sql(`${names.ownerPrefix}${name}`)
        const consumerTable = (name: string) => fixture.sql(`${names.consumerPrefix}${name}`)
        const byEntity = yield* fixture.sql`SELECT e.entity,
            (SELECT count(*) FROM ${ownerTable("source")} s WHERE s.entity = e.entity)::int AS owned,
            (SELECT count(*) FROM ${consumerTable("copies")} c WHERE c.entity = e.entity)::int AS copied,
            (SELECT count(*) FROM ${consumerTable("copies")} c WHERE c.entity = e.entity AND c.state = 'deleted')::int
              AS tombstones
          FROM (VALUES (${Group.name}), (${Item.name})) AS e(entity)`.pipe(Effect.flatMap(decodeByEntity))
        const applyingProcesses = new Set(parks.appliedBy.map((row) => row.pid))
        const g = written.groups
        console.log(
          `[faults] scale-out figures: events ${t.events} over ${t.owned} entities (${
            byEntity.map((e) => `${e.entity} ${e.owned} owned / ${e.copied} copied, ${e.tombstones} tombstones`).join(
              "; "
            )
          }), kills ${kills} (1 relay, 1 consumer), converged ${t.settleSeconds.toFixed(1)} s after the stream ` +
            `(stream ${written.seconds.toFixed(1)} s), redeliveries dropped as duplicates ≥ ${sum("duplicate")}, ` +
            `stale ${sum("stale")}, applies ${t.applies}, applied twice ${t.duplicates}`
        )
        if (g !== undefined) {
          console.log(
            `[faults] scale-out dependencies: ${g.groupsCreated} groups created (${g.createdLate} in a later ` +
              `transaction than their first item), ${g.itemsBeforeGroup} items created in or moved to a group ` +
              `before it existed, ${g.moves} moves, ${g.groupsSoftDeleted} groups soft-deleted, ` +
              `${g.groupsHardDeleted} hard-deleted once empty`
          )
        }
        console.log(
          `[faults] scale-out waiting (R5): ${sum("waiting")} events waited in process, ${sum("parked")} parks ` +
            `(metrics; ${parks.parkedEvents} events parked ${parks.parks} times in the inbox), ` +
            `${sum("woken")} applied after waiting, ${sum("deadLettered")} dead-lettered (${t.dead} dead rows), ` +
            `${parks.waiting} still waiting; parked events applied by another process than the one that parked ` +
            `them ${parks.appliedElsewhere} (parker unknown ${parks.parkerUnknown}), by ${applyingProcesses.size} processes: ${
              parks.appliedBy.map((row) => `pid ${row.pid ?? "?"} ${row.entity ?? "?"} ${row.n}`).join(", ")
            }; per consumer incarnation: ${
              [...outcomes.entries()].map(([i, o]) =>
                `#${i} pid ${pids.get(i) ?? "?"} waiting ${o.waiting} parked ${o.parked} woken ${o.woken}`
              ).join(", ")
            }; copies referencing a missing group: at most ${dangling.max} in ${dangling.samples} samples ` +
            `(${t.danglingSeen} at quiescence polls), owner rows ${ownedDangling}`
        )
        yield* judge("scale-out: 2 relays + 3 consumers, SIGKILL", t, { injected: kills }, written, names, {
          consumerInProcess: false
        })
        for (const e of byEntity) assert.isAbove(e.owned, 0, `no ${e.entity} written`)
        assert.strictEqual(dangling.max, 0, "a copy referenced a missing group during the run")
        assert.strictEqual(ownedDangling, 0, "an owner row references a missing group")
        assert.strictEqual(t.dead, 0, "events given up on")
        assert.strictEqual(parks.waiting, 0, "events still parked")
        assert.isAbove(sum("waiting"), 0, "no event waited for its dependency")
        assert.isAbove(parks.parkedEvents, 0, "no event was parked")
        assert.isAbove(applyingProcesses.size, 0, "no parked event was applied")
      }).pipe(quiet),
    400_000
  )
})
