/**
 * Faults the demo scenario injects, to show what the runtime does about them. They act on the services
 * from outside, the way a broken component or an operator mistake would — through the services'
 * databases and the broker, never through their code:
 *
 * * `withhold` writes as the owner (in the owner's database, through the library, on the owner's tables —
 *   `companies` and `users` of the accounts service) and takes the resulting events away from the owner's
 *   relay, as a misbehaving relay would; `deliver` then publishes any of them, in any order, any number of
 *   times — or never (lost on the bus).
 * * `driftCopy` overwrites a consumer's copy in place, at the same version (a copy that drifted).
 * * `poison` publishes bodies no consumer can apply under an owner's routing key, as a buggy or outdated
 *   producer would.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Context, Effect, Layer, type Redacted, type Schema, type Scope } from "effect"
import type { SqlError } from "effect/sql"
import { Broker, CopyRepository, Envelope, type Errors, Outbox, type SourceRepository } from "entity-sync"
import { PostgresSync } from "entity-sync/postgres"
import { ownerTables } from "../accounts/AccountsTables.ts"

/** An entity a withheld write touches. */
export interface Ref {
  readonly entity: string
  readonly id: string
}

/** The fault injector. */
export class Faults extends Context.Service<Faults, {
  /**
   * Runs `write` as the owner in one outbox transaction and, in the same transaction, takes the events it
   * raised for `refs` away from the owner's relay (claimed and marked published). Returns them in commit
   * order; they reach consumers only through `deliver`.
   */
  readonly withhold: <A, E>(
    refs: ReadonlyArray<Ref>,
    write: Effect.Effect<A, E, Outbox.OutboxTransaction | SourceRepository.SourceRepository>
  ) => Effect.Effect<ReadonlyArray<Envelope.Envelope>, E | SqlError.SqlError>
  /** Publishes events to the bus in this order (repeats allowed), as the owner's relay would. */
  readonly deliver: (
    events: ReadonlyArray<Envelope.Envelope>
  ) => Effect.Effect<void, Errors.BrokerUnavailable | Errors.PublishRejected>
  /** Publishes `body` as message `messageId` under the routing key of `event` (its producer, entity, action). */
  readonly poison: (
    event: Pick<Envelope.Envelope, "producer" | "entity" | "action">,
    messageId: string,
    body: string
  ) => Effect.Effect<void, Errors.BrokerUnavailable | Errors.PublishRejected>
  /** Overwrites the consumer's copy of an entity in place, keeping its version. */
  readonly driftCopy: (entity: string, id: string, payload: Schema.Json) => Effect.Effect<void, SqlError.SqlError>
}>()("services/scenario/Faults") {}

/** Where the faults act: the owner's and the consumer's databases (and the broker, from the context). */
export interface FaultsOptions {
  readonly ownerDatabase: Redacted.Redacted
  readonly consumerDatabase: Redacted.Redacted
  /** The library's table prefix in both (default `sync_`). */
  readonly prefix?: string
}

/** The stores on a service's database; the owner's with the accounts' owner tables (created by the service). */
const stores = (url: Redacted.Redacted, options: PostgresSync.Options) =>
  Layer.build(
    PostgresSync.layer(options).pipe(
      Layer.provide(PgClient.layer({ url, maxConnections: 3 }))
    )
  )

/** Makes the fault injector in the current scope (it holds a small pool on each database). */
export const make = (
  options: FaultsOptions
): Effect.Effect<Faults["Service"], PostgresSync.LayerError, Broker.Broker | Scope.Scope> =>
  Effect.gen(function*() {
    const broker = yield* Broker.Broker
    const prefix = options.prefix !== undefined ? { prefix: options.prefix } : {}
    const owner = yield* stores(options.ownerDatabase, { ...prefix, ownerTables })
    const consumer = yield* stores(options.consumerDatabase, prefix)
    const outbox = Context.get(owner, Outbox.Outbox)
    const copies = Context.get(consumer, CopyRepository.CopyRepository)
    const touches = (refs: ReadonlyArray<Ref>) => (envelope: Envelope.Envelope) =>
      refs.some((ref) => ref.entity === envelope.entity && ref.id === envelope.entityId)

    return Faults.of({
      withhold: (refs, write) =>
        outbox.transaction(Effect.gen(function*() {
          yield* write
          const claimed = yield* outbox.claim(1_000)
          const ours = claimed.filter((row) => touches(refs)(row.envelope))
          const others = claimed.filter((row) => !touches(refs)(row.envelope))
          yield* outbox.markPublished(ours.map((row) => row.seq))
          if (others.length > 0) {
            // not ours: back to the owner's relay, due now
            const now = yield* Clock.currentTimeMillis
            yield* outbox.markFailed(others.map((row) => row.seq), {
              error: "released by the fault injector",
              nextAttemptAt: now
            })
          }
          return ours.map((row) => row.envelope)
        })).pipe(Effect.provideContext(owner)),
      deliver: (events) =>
        broker.publish(events.map((envelope): Broker.OutgoingMessage => ({
          messageId: envelope.messageId,
          routingKey: Envelope.routingKey(envelope),
          type: Envelope.messageType(envelope),
          contentType: Envelope.contentType,
          body: Envelope.encode(envelope),
          headers: envelope.traceparent !== undefined ? { traceparent: envelope.traceparent } : {}
        }))),
      poison: (event, messageId, body) =>
        broker.publish([{
          messageId,
          routingKey: Envelope.routingKey(event),
          type: Envelope.messageType(event),
          contentType: Envelope.contentType,
          body: new TextEncoder().encode(body),
          headers: {}
        }]),
      driftCopy: (entity, id, payload) =>
        Effect.gen(function*() {
          const copy = yield* copies.get(entity, id)
          if (copy === null) return yield* Effect.die(new Error(`no copy of ${entity}:${id} to drift`))
          yield* copies.upsert({ ...copy, payload }, "newerOrEqual")
        })
    })
  })

/** The fault injector as a layer. */
export const layer = (options: FaultsOptions): Layer.Layer<Faults, PostgresSync.LayerError, Broker.Broker> =>
  Layer.effect(Faults, make(options))
