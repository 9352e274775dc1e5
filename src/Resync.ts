/**
 * Resync requests: a consumer asks an entity's owner to republish the current state of that entity (or
 * of some ids) by publishing a small message on the bus — never by calling the owner. The owner's
 * responder answers each request with a full sync through its outbox (snapshot events, R8: they repair,
 * never regress) and then acks it; a request it cannot act on is dead-lettered with a readable reason (R6).
 *
 * Wire: a JSON body `{ specVersion: 1, requestId, owner, entity, ids?, requester, requestedAt }` published
 * with routing key `<owner>.resync.<Entity>` and type `resync.<Entity>`. The owner reads the durable queue
 * `<owner>.resync`, bound to `<owner>.resync.*`; `request` declares it too (idempotent), so a request
 * waits in the queue while the owner is down. Requests are at-least-once: a duplicate only repeats a full
 * sync, which consumers apply idempotently.
 *
 * ```ts
 * // consumer
 * yield* Resync.request({ contract: Company, requester: "directory", ids: ["c-1"] })
 * // owner
 * Resync.layer({ owner: "accounts", targets: [{ contract: Company, fullSync: companies.fullSync }] })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer, Metric, Schedule, Schema, Stream } from "effect"
import type { SqlError } from "effect/sql"
import { Broker, type Delivery, type QueueSpec } from "./Broker.ts"
import type * as Contract from "./Contract.ts"
import { makeMessageId } from "./Envelope.ts"
import type { BrokerUnavailable, PublishRejected } from "./Errors.ts"

const NonEmpty = Schema.String.check(Schema.isMinLength(1))

/** The most ids one request may name. */
export const maxIds = 10_000

/** The default largest accepted request body: 1 MiB. */
export const defaultMaxBytes = 1024 * 1024

/** A resync request as it is on the wire. */
export const ResyncRequest = Schema.Struct({
  specVersion: Schema.Literal(1),
  /** A unique id (UUIDv7), also the message id. */
  requestId: NonEmpty,
  /** The service addressed: the entity's owner. */
  owner: NonEmpty,
  entity: NonEmpty,
  /** Only these ids; every entity of the contract when absent. */
  ids: Schema.optionalKey(Schema.Array(NonEmpty).check(Schema.isMaxLength(maxIds))),
  /** The service asking, for logs and operators. */
  requester: NonEmpty,
  requestedAt: Schema.String.check(
    Schema.makeFilter((s: string) => !Number.isNaN(Date.parse(s)) || "an ISO-8601 timestamp")
  )
})
export type ResyncRequest = typeof ResyncRequest.Type

/** The routing key of a request to `owner` about `entity`: `<owner>.resync.<Entity>`. */
export const routingKey = (owner: string, entity: string): string => `${owner}.resync.${entity}`

/** The queue an owner reads its requests from: `<owner>.resync`, bound to `<owner>.resync.*`. */
export const queueOf = (owner: string): QueueSpec => ({ name: `${owner}.resync`, bindings: [`${owner}.resync.*`] })

/** Requests handled by owners, by `owner`, `entity` and `outcome` (`served`, `rejected`, `failed`). */
export const requests = Metric.counter("entity_sync_resync_requests_total", {
  description: "resync requests handled by owners, by outcome",
  incremental: true
})

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

/**
 * Asks the owner of `contract` for a full sync of it (or of `ids`): declares the owner's queue, publishes
 * the request with a broker confirm and returns it.
 */
export const request = (options: {
  readonly contract: Pick<Contract.Any, "name" | "owner">
  readonly requester: string
  readonly ids?: ReadonlyArray<string>
}): Effect.Effect<ResyncRequest, BrokerUnavailable | PublishRejected, Broker> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const { name: entity, owner } = options.contract
    const now = yield* Clock.currentTimeMillis
    const resync: ResyncRequest = {
      specVersion: 1,
      requestId: yield* makeMessageId,
      owner,
      entity,
      ...(options.ids !== undefined ? { ids: options.ids } : {}),
      requester: options.requester,
      requestedAt: new Date(now).toISOString()
    }
    yield* broker.declare(queueOf(owner))
    yield* broker.publish([{
      messageId: resync.requestId,
      routingKey: routingKey(owner, entity),
      type: `resync.${entity}`,
      body: encoder.encode(JSON.stringify(resync)),
      headers: {}
    }])
    return resync
  })

/** An entity the responder can resync: its contract and the full sync of its owner's repository. */
export interface Target<Owner extends string, R> {
  readonly contract: Contract.OwnedBy<Owner>
  /** E.g. `Producer` repository's `fullSync`; returns how many snapshot events were queued. */
  readonly fullSync: (options: { readonly ids?: ReadonlyArray<string> }) => Effect.Effect<number, SqlError.SqlError, R>
}

/** Settings of an owner's responder. */
export interface ResponderOptions<Owner extends string, R> {
  /** The owning service; it reads `<owner>.resync`. */
  readonly owner: Owner
  /** The entities it answers for (R1: only contracts it owns; another owner's contract does not compile). */
  readonly targets: ReadonlyArray<Target<NoInfer<Owner>, R>>
  /** Largest accepted request body in bytes (default 1 MiB). */
  readonly maxBytes?: number
}

/** Why a request was refused, as the dead-letter reason reads it. */
const rejection = (reason: string, detail: string) => `${reason}: ${detail}`

/** Decodes an untrusted request addressed to `owner`; fails with a dead-letter reason. */
export const decodeRequest = (
  body: Uint8Array,
  options: { readonly owner: string; readonly entities: ReadonlyArray<string>; readonly maxBytes?: number }
): Effect.Effect<ResyncRequest, string> =>
  Effect.gen(function*() {
    const maxBytes = options.maxBytes ?? defaultMaxBytes
    if (body.byteLength > maxBytes) {
      return yield* Effect.fail(rejection("TooLarge", `the body is ${body.byteLength} bytes; the limit is ${maxBytes}`))
    }
    const json = yield* Effect.try({
      try: (): unknown => JSON.parse(decoder.decode(body)),
      catch: (cause) =>
        rejection("NotJson", `the body is not UTF-8 JSON: ${cause instanceof Error ? cause.message : String(cause)}`)
    })
    const resync = yield* Schema.decodeUnknownEffect(ResyncRequest, { errors: "all" })(json).pipe(
      Effect.mapError((error) => rejection("InvalidRequest", error.message.replace(/\n\s*/g, " ")))
    )
    if (resync.owner !== options.owner) {
      return yield* Effect.fail(
        rejection("WrongOwner", `the request is addressed to "${resync.owner}"; this is "${options.owner}"`)
      )
    }
    if (!options.entities.includes(resync.entity)) {
      return yield* Effect.fail(
        rejection(
          "UnknownEntity",
          `"${options.owner}" does not resync ${resync.entity} (it resyncs ${options.entities.join(", ")})`
        )
      )
    }
    return resync
  })

/**
 * Serves resync requests until interrupted: each valid request runs the target's full sync and is acked
 * after the snapshot events are committed to the outbox; an invalid one is dead-lettered with its reason;
 * a full sync that fails (database) is retried, then the request is requeued. When the subscription
 * fails (broker unavailable) or ends, it subscribes again a second later.
 */
export const serve = <const Owner extends string, R>(
  options: ResponderOptions<Owner, R>
): Effect.Effect<never, never, Broker | R> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const targets = new Map(options.targets.map((t) => [t.contract.name, t]))
    const entities = [...targets.keys()]
    const count = (entity: string, outcome: "served" | "rejected" | "failed") =>
      Metric.update(Metric.withAttributes(requests, { owner: options.owner, entity, outcome }), 1)

    const answer = (delivery: Delivery) =>
      decodeRequest(delivery.body, {
        owner: options.owner,
        entities,
        ...(options.maxBytes !== undefined ? { maxBytes: options.maxBytes } : {})
      }).pipe(
        Effect.matchEffect({
          onFailure: (reason) =>
            Effect.gen(function*() {
              yield* count("unknown", "rejected")
              yield* Effect.logWarning(`resync: request ${delivery.messageId} dead-lettered: ${reason}`)
              yield* delivery.deadLetter(reason)
            }),
          onSuccess: (resync) =>
            Effect.gen(function*() {
              const target = targets.get(resync.entity)
              if (target === undefined) return yield* delivery.deadLetter(rejection("UnknownEntity", resync.entity))
              const queued = yield* target.fullSync(resync.ids !== undefined ? { ids: resync.ids } : {}).pipe(
                Effect.retry({ schedule: Schedule.exponential("200 millis"), times: 3 }),
                Effect.tapError((error) =>
                  Effect.andThen(
                    count(resync.entity, "failed"),
                    Effect.logError(`resync: full sync of ${resync.entity} failed; request requeued`, error)
                  )
                )
              )
              yield* count(resync.entity, "served")
              yield* Effect.logInfo(
                `resync: queued ${queued} snapshot event(s) of ${resync.entity} for ${resync.requester}`,
                { requestId: resync.requestId, ids: resync.ids?.length ?? "all" }
              )
              yield* delivery.ack
            }).pipe(
              Effect.catchTag("SqlError", () => Effect.andThen(Effect.sleep("1 second"), delivery.nack({ requeue: true })))
            )
        })
      )

    const consume = broker.subscribe(queueOf(options.owner), { prefetch: 1 }).pipe(Stream.runForEach(answer))
    return yield* consume.pipe(
      Effect.catchCause((cause) =>
        Effect.logWarning(`resync: the responder of "${options.owner}" stopped; restarting`, cause)
      ),
      Effect.andThen(Effect.sleep("1 second")),
      Effect.forever
    )
  })

/** An owner's responder running for the lifetime of the layer. */
export const layer = <const Owner extends string, R>(
  options: ResponderOptions<Owner, R>
): Layer.Layer<never, never, Broker | R> => Layer.effectDiscard(Effect.forkScoped(serve(options)))
