/**
 * The scale-out proof, in separate processes: two relay processes on one outbox and three consumer processes
 * of one consumer service, on the real PostgreSQL and RabbitMQ, while a writer commits 20 000 events over
 * 500 entities with dependencies: 100 groups and 400 items that belong to them (`Item.groupId`), items
 * often created in a group before the group itself (in the same transaction, a few later, or seconds
 * later) and moved between groups, groups hard-deleted once empty. Mid-run one relay and one consumer are
 * killed with SIGKILL (no finalizer runs: their leases and open transactions die with them, their unacked
 * deliveries go back to the queue) and started again. At the end nothing is lost, nothing was applied
 * twice, the copies of both entities equal the owner's rows (tombstones included), nothing was given up
 * on, and no copy referenced a missing group in any sample taken during the run (R5); the events that
 * waited, were parked, and which processes applied the parked ones are printed.
 *
 * With ordered lanes (`lanes`), the relays publish each entity's events in version order and the consumers
 * read the lanes; the consumer holding the most lanes is the one killed. In addition, each entity's applies
 * went up in version, every event's handler ran exactly once except hard deletes superseded by their
 * entity's re-creation (a delete waits for the copies that reference its entity, and those may reference
 * the re-created entity: the events after it are not held behind it), several entities and processes
 * applied at once, and the survivors took the killed consumer's lanes over (how fast, polled with
 * `rabbitmqctl`, is printed).
 */
import { assert } from "@effect/vitest"
import { Clock, Effect, Fiber, Schema, type Scope } from "effect"
import { appliesTable, Group, Item } from "./contract.ts"
import { setup } from "./fixture.ts"
import { type ConsumerProcess, startProcess } from "./process.ts"
import { activeConsumers } from "./rabbit.ts"
import { consumerQueues, type Names } from "./stack.ts"
import {
  awaitQuiescence,
  danglingCopies,
  danglingOwned,
  judge,
  orderFigures,
  parkFigures,
  recordParks
} from "./verify.ts"
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

/** Runs the proof, with `lanes` ordered lanes if given. */
export const scaleOut = (lanes?: number) =>
  Effect.gen(function*() {
    const label = lanes === undefined ? "scale-out" : `scale-out with ${lanes} lanes`
    const fixture = yield* setup(lanes === undefined ? "scale-out" : "scale-out-lanes", lanes)
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
    // with lanes: the lanes whose active consumer each consumer process holds, by `consumer-<pid>`
    const lanesHeld = activeConsumers(consumerQueues(names), names.connectionPrefix)
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
    // with lanes, the consumer holding the most lanes is killed
    const lanesBefore = lanes === undefined ? new Map<string, ReadonlyArray<string>>() : yield* lanesHeld
    const victim = lanes === undefined
      ? consumers[0]
      : consumers.reduce((a, b) => lanesOf(lanesBefore, b).length > lanesOf(lanesBefore, a).length ? b : a)
    let kills = 0
    let takeover: { readonly lanes: number; readonly millis: number } | undefined
    if (relay0 !== undefined && victim !== undefined) {
      yield* Effect.all([relay0.kill, victim.kill], { concurrency: 2 })
      kills += 2
      const killedAt = yield* Clock.currentTimeMillis
      if (lanes !== undefined) {
        // the surviving consumers take the killed one's lanes over
        while (true) {
          const held = yield* lanesHeld
          const total = [...held.values()].reduce((n, queues) => n + queues.length, 0)
          if (total === lanes && lanesOf(held, victim).length === 0) break
          if ((yield* Clock.currentTimeMillis) - killedAt > 30_000) {
            return yield* Effect.die(new Error(`lanes not taken over: ${JSON.stringify([...held])}`))
          }
          yield* Effect.sleep("20 millis")
        }
        takeover = {
          lanes: lanesOf(lanesBefore, victim).length,
          millis: (yield* Clock.currentTimeMillis) - killedAt
        }
      }
      yield* Effect.all([start("relay", names), start("consumer", names)], { concurrency: 2 })
      console.log(
        `[faults] ${label}: killed a relay and a consumer ${((killedAt - began) / 1000).toFixed(1)} s in, ` +
          `restarted them in ${(((yield* Clock.currentTimeMillis) - killedAt) / 1000).toFixed(1)} s`
      )
    }
    const written = yield* Fiber.join(writer)
    const t = yield* awaitQuiescence(fixture.sql, names, { timeoutSeconds: 180, stallSeconds: 60 })
    yield* Fiber.interrupt(sampler)
    const sum = (kind: keyof OutcomeCounts) => [...outcomes.values()].reduce((total, o) => total + o[kind], 0)
    const parks = yield* parkFigures(fixture.sql, names)
    if (parks.waiting > 0) {
      const stuck = yield* fixture.sql`SELECT envelope ->> 'entity' AS entity, envelope ->> 'entityId' AS id,
          envelope ->> 'version' AS version, envelope ->> 'action' AS action, waiting_for, attempts,
          envelope -> 'payload' ->> 'groupId' AS group_id,
          (next_attempt_at - (extract(epoch FROM now()) * 1000)::bigint)::text AS due_in_ms
        FROM ${fixture.sql(`${names.consumerPrefix}waiting`)} ORDER BY 1, 2, 3::int LIMIT 20`
      console.log(`[faults] ${label}: still waiting (first 20): ${JSON.stringify(stuck)}`)
    }
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
      `[faults] ${label} figures: events ${t.events} over ${t.owned} entities (${
        byEntity.map((e) => `${e.entity} ${e.owned} owned / ${e.copied} copied, ${e.tombstones} tombstones`).join(
          "; "
        )
      }), kills ${kills} (1 relay, 1 consumer), converged ${t.settleSeconds.toFixed(1)} s after the stream ` +
        `(stream ${written.seconds.toFixed(1)} s), redeliveries dropped as duplicates ≥ ${sum("duplicate")}, ` +
        `stale ${sum("stale")}, applies ${t.applies}, applied twice ${t.duplicates}`
    )
    if (g !== undefined) {
      console.log(
        `[faults] ${label} dependencies: ${g.groupsCreated} groups created (${g.createdLate} in a later ` +
          `transaction than their first item), ${g.itemsBeforeGroup} items created in or moved to a group ` +
          `before it existed, ${g.moves} moves, ${g.groupsSoftDeleted} groups soft-deleted, ` +
          `${g.groupsHardDeleted} hard-deleted once empty`
      )
    }
    console.log(
      `[faults] ${label} waiting (R5): ${sum("waiting")} events waited in process, ${sum("parked")} parks ` +
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
    yield* judge(`${label}: 2 relays + 3 consumers, SIGKILL`, t, { injected: kills }, written, names, {
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
    if (lanes !== undefined) {
      const order = yield* orderFigures(fixture.sql, names)
      const lanesAfter = yield* lanesHeld
      console.log(
        `[faults] ${label} order: ${lanes} lanes; per consumer before the kill ${
          JSON.stringify([...lanesBefore].map(([name, queues]) => [name, queues.length]))
        }, after ${JSON.stringify([...lanesAfter].map(([name, queues]) => [name, queues.length]))}; the killed ` +
          `consumer's ${takeover?.lanes ?? 0} lanes taken over in ${takeover?.millis ?? "?"} ms; applies going ` +
          `backwards in an entity ${order.backwards}; events handled ${t.applies} of ${t.events}: not handled ${order.unhandled}, ` +
          `of which hard deletes superseded by their entity's re-creation ${order.supersededDeletes} (stale ${
            sum("stale")
          }); up to ${order.entitiesAtOnce} entities by ${order.processesAtOnce} processes applied in one 10 ms`
      )
      // every event's handler ran once, each entity's in strictly increasing versions; the only events not
      // handled are hard deletes that waited for copies referencing their entity's re-creation
      assert.strictEqual(order.backwards, 0, "an entity's handler saw a version after a higher one")
      assert.strictEqual(order.unhandled, order.supersededDeletes, "events not handled (stale or skipped)")
      assert.strictEqual(t.applies, t.events - order.unhandled)
      assert.isAbove(order.entitiesAtOnce, 1, "one entity at a time")
      assert.isAbove(order.processesAtOnce, 1, "one process at a time")
      assert.isAbove(takeover?.lanes ?? 0, 0, "the killed consumer held no lane")
      assert.isDefined(takeover, "lanes were not taken over")
      assert.strictEqual([...lanesAfter.values()].reduce((n, queues) => n + queues.length, 0), lanes)
    }
  })

const lanesOf = (held: ReadonlyMap<string, ReadonlyArray<string>>, p: ConsumerProcess) =>
  held.get(`consumer-${p.pid}`) ?? []
