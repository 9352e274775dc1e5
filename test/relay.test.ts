/**
 * The relay's pipelined drain on the memory stores and broker (TestClock): batches in flight together
 * reach the queue in outbox order, and after a broker failure the relay stops claiming, so the failed rows
 * are retried first (once due, which is when `Relay.run` drains again) and the order still holds. Signed
 * messages verify (R11). While the database is unreachable the relay probes with backoff, logs once per
 * change, reports since when it fails, loses nothing and resumes by itself (R12).
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Fiber, Layer, Logger, Result, Stream } from "effect"
import { SqlError } from "effect/sql"
import { TestClock } from "effect/testing"
import { Broker } from "../src/Broker.ts"
import type * as Envelope from "../src/Envelope.ts"
import * as MemoryBroker from "../src/memory/MemoryBroker.ts"
import * as MemoryDatabase from "../src/memory/MemoryDatabase.ts"
import * as MemoryOutbox from "../src/memory/Outbox.ts"
import * as Outbox from "../src/Outbox.ts"
import * as Relay from "../src/Relay.ts"
import * as Signature from "../src/Signature.ts"
import { Transactor } from "../src/Transactor.ts"

const queue = { name: "relay-test.sync", bindings: ["accounts.#"] }

const envelope = (i: number): Envelope.Envelope => ({
  contractVersion: 1,
  messageId: `m-${String(i).padStart(4, "0")}`,
  entity: "Company",
  entityId: `c-${i % 7}`,
  action: "updated",
  version: i + 1,
  occurredAt: "2026-11-22T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload: { id: `c-${i % 7}`, name: `name ${i}` }
})

/** Appends `n` events, one transaction each. */
const append = (n: number) =>
  Effect.forEach(
    Array.from({ length: n }, (_, i) => i),
    (i) => Outbox.transaction(Outbox.OutboxTransaction.use((tx) => tx.append([envelope(i)]))),
    { discard: true }
  )

/** The first `n` deliveries of the queue, in delivery order (prefetch 1, all acked). */
const deliveries = (n: number) =>
  Effect.flatMap(Broker, (broker) =>
    broker.subscribe(queue, { prefetch: 1 }).pipe(
      Stream.take(n),
      Stream.mapEffect((d) => Effect.as(d.ack, d)),
      Stream.runCollect
    ))

/** The message ids in the queue, in delivery order (prefetch 1, all acked). */
const received = (n: number) => Effect.map(deliveries(n), (ds) => ds.map((d) => d.messageId))

const system = Layer.mergeAll(
  MemoryOutbox.layer().pipe(Layer.provide(MemoryDatabase.layer)),
  MemoryBroker.layer()
)

const ids = (n: number) => Array.from({ length: n }, (_, i) => envelope(i).messageId)

describe("Relay", () => {
  it.effect("a pipelined drain publishes in outbox order with many batches in flight", () =>
    Effect.gen(function*() {
      yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
      yield* append(250)
      assert.strictEqual(yield* Relay.drain({ producer: "accounts", batchSize: 10, batchesInFlight: 6 }), 250)
      assert.deepStrictEqual(yield* received(250), ids(250))
      const outbox = yield* Outbox.Outbox
      assert.strictEqual((yield* outbox.pending).count, 0)
    }).pipe(Effect.provide(system)))

  it.effect("after a broker failure it stops claiming; the failed rows go first once due, in order", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
      yield* append(50)
      yield* memory.publishFails(1)
      const options = { producer: "accounts", batchSize: 10, batchesInFlight: 4 }
      assert.strictEqual(yield* Relay.drain(options), 10) // the first batch failed: nothing more was claimed
      yield* TestClock.adjust("100 millis") // `Relay.run` waits this long before draining again
      assert.strictEqual(yield* Relay.drain(options), 50)
      assert.deepStrictEqual(yield* received(50), ids(50))
    }).pipe(Effect.provide(system)))

  it.effect("a drain claims after the last row it took, and from the start again every second", () =>
    Effect.gen(function*() {
      yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
      yield* append(50)
      const outbox = yield* Outbox.Outbox
      const claims: Array<Outbox.ClaimOptions | undefined> = []
      const watched = Outbox.Outbox.of({
        ...outbox,
        claim: (limit, options) =>
          Effect.gen(function*() {
            claims.push(options)
            // a published row below the drain's position is due again (an operator's replay)
            if (claims.length === 3) {
              assert.strictEqual((yield* outbox.republish({ from: 0, to: 1, limit: 1 })).count, 1)
            }
            if (claims.length === 5) yield* TestClock.adjust("1 second")
            return yield* outbox.claim(limit, options)
          })
      })
      const drained = yield* Relay.drain({ producer: "accounts", batchSize: 5, batchesInFlight: 2 }).pipe(
        Effect.provideService(Outbox.Outbox, watched)
      )
      // the sixth claim, a second later, starts from the start again and takes the replayed row
      const from = claims.map((options) =>
        options === undefined ? "start" : options.orderedByEntity === true ? "ordered" : options.afterSeq
      )
      assert.deepStrictEqual(from, ["start", 5, 10, 15, 20, "start", 29, 34, 39, 44, 49])
      assert.strictEqual(drained, 51)
      assert.deepStrictEqual(yield* received(51), [...ids(25), "m-0000", ...ids(50).slice(25)])
    }).pipe(Effect.provide(system)))

  it.effect("with a signing key, every published message carries a signature of its body that verifies", () =>
    Effect.gen(function*() {
      const { signing, verifying } = Signature.generateKeyPair("accounts-1")
      yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
      yield* append(30)
      assert.strictEqual(yield* Relay.drain({ producer: "accounts", batchSize: 10, signing }), 30)
      const got = yield* deliveries(30)
      const now = Date.now()
      for (const delivery of got) {
        const verified = Signature.verify({ accounts: [verifying] }, "accounts", delivery.body, delivery.headers, now)
        assert.deepStrictEqual(verified, Result.succeed("accounts-1"))
      }
      // the signature covers the body: another message's body does not verify with these headers
      const swapped = Signature.verify({ accounts: [verifying] }, "accounts", got[1]!.body, got[0]!.headers, now)
      assert.isTrue(Result.isFailure(swapped))
      // without a key, no signature headers: only the entity key (for ordered lanes)
      const unsigned = Relay.toMessage({
        seq: 1,
        envelope: envelope(1),
        createdAt: 0,
        attempts: 0,
        nextAttemptAt: 0,
        lastError: null,
        publishedAt: null
      })
      assert.deepStrictEqual(unsigned.headers, { "x-entity-key": "Company:c-1" })
    }).pipe(Effect.provide(system)))

  describe("R12: an unreachable database", () => {
    const lost = new SqlError.SqlError({
      reason: new SqlError.ConnectionError({ message: "connection refused", cause: undefined })
    })

    /** The memory stores, with switches that make the outbox's statements and the probe fail. */
    const faultyDatabase = (faults: { down: boolean; marksFail: boolean; probes: number; claims: number }) => {
      const guard = <A>(effect: Effect.Effect<A, SqlError.SqlError>) =>
        Effect.suspend(() => (faults.down ? Effect.fail(lost) : effect))
      const transactor = Layer.effect(
        Transactor,
        Effect.map(Effect.service(Transactor), (memory) =>
          Transactor.of({
            ...memory,
            probe: Effect.suspend(() => {
              faults.probes++
              return faults.down ? Effect.fail(lost) : Effect.void
            })
          }))
      ).pipe(Layer.provide(MemoryDatabase.layer))
      const outbox = Layer.effect(
        Outbox.Outbox,
        Effect.map(MemoryOutbox.make(), (memory) =>
          Outbox.Outbox.of({
            ...memory,
            claim: (limit) =>
              Effect.suspend(() => {
                faults.claims++
                return guard(memory.claim(limit))
              }),
            markPublished: (seqs) =>
              Effect.suspend(() => (faults.marksFail ? Effect.fail(lost) : guard(memory.markPublished(seqs)))),
            markFailed: (seqs, failure) => guard(memory.markFailed(seqs, failure)),
            awaitAppended: guard(memory.awaitAppended),
            pending: guard(memory.pending)
          }))
      ).pipe(Layer.provide(Layer.merge(MemoryDatabase.layer, transactor)))
      return Layer.mergeAll(outbox, transactor)
    }

    const capturedWarnings = (warnings: Array<string>) =>
      Logger.layer([
        Logger.make((options) => {
          if (options.logLevel !== "Warn" && options.logLevel !== "Info") return
          const message = Array.isArray(options.message) ? options.message[0] : options.message
          warnings.push(`${options.logLevel}: ${String(message)}`)
        })
      ])

    it.effect("it probes with backoff instead of spinning, logs once, tells since when, and resumes by itself", () => {
      const faults = { down: false, marksFail: false, probes: 0, claims: 0 }
      const logs: Array<string> = []
      return Effect.gen(function*() {
        yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
        const tracker = yield* Relay.makeStatusTracker("accounts")
        yield* append(20)
        faults.down = true
        yield* TestClock.adjust("5 seconds")
        const startedAt = 5_000
        const relay = yield* Effect.forkChild(Relay.run({ producer: "accounts", batchSize: 10 }, tracker))
        yield* TestClock.adjust("3 minutes")
        // one claim failed, then only probes: 100 ms doubling to 10 s over 3 minutes
        assert.strictEqual(faults.claims, 1)
        assert.isAtLeast(faults.probes, 10)
        assert.isAtMost(faults.probes, 30)
        const failing = yield* tracker.status
        assert.deepInclude(failing.database, { ok: false, since: startedAt })
        assert.match(failing.database.error!, /connection refused/)
        assert.isTrue(failing.broker.ok)
        assert.deepStrictEqual(logs, ["Warn: relay: the database is failing; backing off until it answers"])

        faults.down = false
        yield* TestClock.adjust("10 seconds")
        assert.deepStrictEqual(yield* received(20), ids(20))
        const recovered = yield* tracker.status
        assert.isTrue(recovered.database.ok)
        assert.isAbove(recovered.database.since, startedAt)
        assert.deepStrictEqual(logs, [
          "Warn: relay: the database is failing; backing off until it answers",
          "Info: relay: the database answers again"
        ])
        yield* Fiber.interrupt(relay)
      }).pipe(Effect.provide(Layer.mergeAll(faultyDatabase(faults), MemoryBroker.layer(), capturedWarnings(logs))))
    })

    it.effect("rows published but not marked are published again once it answers: nothing is lost", () => {
      const faults = { down: false, marksFail: false, probes: 0, claims: 0 }
      return Effect.gen(function*() {
        yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
        yield* append(20)
        faults.marksFail = true
        const relay = yield* Effect.forkChild(Relay.run({ producer: "accounts", batchSize: 10 }))
        yield* TestClock.adjust("2 seconds")
        faults.marksFail = false
        // the claims' leases end (30 s) and the rows are published again
        yield* TestClock.adjust("1 minute")
        const got = yield* received(40)
        assert.deepStrictEqual([...new Set(got)].sort(), ids(20))
        const outbox = yield* Outbox.Outbox
        assert.strictEqual((yield* outbox.pending).count, 0)
        yield* Fiber.interrupt(relay)
      }).pipe(Effect.provide(Layer.mergeAll(faultyDatabase(faults), MemoryBroker.layer())))
    })
  })

  it.effect("the relay layer provides its status", () =>
    Effect.gen(function*() {
      const relay = yield* Relay.Relay
      const status = yield* relay.status
      assert.isTrue(status.database.ok)
      assert.isTrue(status.broker.ok)
    }).pipe(Effect.provide(Relay.layer({ producer: "accounts" }).pipe(Layer.provideMerge(system)))))

  it.effect("Relay.layerConfig signs with SYNC_SIGNING_KEY and SYNC_SIGNING_KEY_ID", () => {
    const { signing, verifying } = Signature.generateKeyPair("accounts-env")
    const env = ConfigProvider.layer(ConfigProvider.fromEnv({
      env: { SYNC_SIGNING_KEY: String(signing.privateKey), SYNC_SIGNING_KEY_ID: "accounts-env" }
    }))
    return Effect.gen(function*() {
      yield* Effect.flatMap(Broker, (broker) => broker.declare(queue))
      yield* append(3)
      yield* Layer.build(Relay.layerConfig({ producer: "accounts" }))
      yield* TestClock.adjust("1 second")
      for (const delivery of yield* deliveries(3)) {
        const verified = Signature.verify({ accounts: [verifying] }, "accounts", delivery.body, delivery.headers, 0)
        assert.deepStrictEqual(verified, Result.succeed("accounts-env"))
      }
    }).pipe(Effect.provide(Layer.merge(system, env)))
  })
})
