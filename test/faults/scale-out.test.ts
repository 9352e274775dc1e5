/**
 * Scale-out, proven in separate processes: two relay processes on one outbox and three consumer processes
 * of one consumer service, on the real PostgreSQL and RabbitMQ, while a writer commits 20 000 events over
 * 500 items. Mid-run one relay and one consumer are killed with SIGKILL (no finalizer runs: their leases
 * and open transactions die with them, their unacked deliveries go back to the queue) and started again.
 * At the end nothing is lost, nothing was applied twice, and the copies equal the owner's rows.
 */
import { describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Schema, type Scope } from "effect"
import { appliesTable } from "./contract.ts"
import { quiet, setup } from "./fixture.ts"
import { type ConsumerProcess, startProcess } from "./process.ts"
import type { Names } from "./stack.ts"
import { awaitQuiescence, judge } from "./verify.ts"
import { writeStream } from "./writer.ts"

const decodeCount = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ n: Schema.Int })))
const Outcomes = Schema.fromJsonString(Schema.Struct({ duplicate: Schema.Int, stale: Schema.Int }))
const decodeOutcomes = Schema.decodeUnknownOption(Outcomes)

const events = 20_000
const entities = 500

describe("faults: scale-out in separate processes", () => {
  it.live(
    "2 relays and 3 consumers, one of each killed with SIGKILL: nothing lost, nothing applied twice",
    () =>
      Effect.gen(function*() {
        const fixture = yield* setup("scale-out")
        const { names, url } = fixture
        const applies = fixture.sql`SELECT count(*)::int AS n FROM ${fixture.sql(appliesTable)}`.pipe(
          Effect.flatMap(decodeCount),
          Effect.map((rows) => rows[0]?.n ?? 0)
        )
        // the last outcome counts each consumer incarnation printed (a killed one's last ≤ 500 ms are lost)
        const outcomes = new Map<number, { readonly duplicate: number; readonly stale: number }>()
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
            })
          })
        const relays = yield* Effect.all([start("relay", names), start("relay", names)], { concurrency: 2 })
        const consumers = yield* Effect.all(
          [start("consumer", names), start("consumer", names), start("consumer", names)],
          { concurrency: 3 }
        )
        const began = yield* Clock.currentTimeMillis
        const writer = yield* writeStream({ events, ratePerSecond: 500, entities }).pipe(
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
        const sum = (kind: "duplicate" | "stale") => [...outcomes.values()].reduce((total, o) => total + o[kind], 0)
        console.log(
          `[faults] scale-out figures: events ${t.events} over ${t.owned} entities, kills ${kills} ` +
            `(1 relay, 1 consumer), converged ${t.settleSeconds.toFixed(1)} s after the stream ` +
            `(stream ${written.seconds.toFixed(1)} s), redeliveries dropped as duplicates ≥ ${sum("duplicate")}, ` +
            `stale ${sum("stale")}, applies ${t.applies}, applied twice ${t.duplicates}`
        )
        yield* judge("scale-out: 2 relays + 3 consumers, SIGKILL", t, { injected: kills }, written, names, {
          consumerInProcess: false
        })
      }).pipe(quiet),
    400_000
  )
})
