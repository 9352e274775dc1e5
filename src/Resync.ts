/**
 * Resync requests: a consumer asks an entity's owner to republish the current state of that entity (or of
 * some ids) by publishing a small message on the bus — never by calling the owner. The owner's responder
 * answers each request with a full sync through its outbox (snapshot events, R8: they repair, never
 * regress); a request it cannot act on is dead-lettered with a readable reason (R6).
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
import {
  Cause,
  Clock,
  Config,
  Duration,
  Effect,
  Exit,
  Layer,
  Metric,
  Option,
  Pull,
  Queue,
  Result,
  Schedule,
  Schema,
  Stream
} from "effect"
import type { SqlError } from "effect/sql"
import { boundReason, Broker, type Delivery, type QueueSpec } from "./Broker.ts"
import type * as Contract from "./Contract.ts"
import { makeMessageId, maxIdLength, maxNameLength } from "./Envelope.ts"
import type { BrokerUnavailable, PublishRejected } from "./Errors.ts"
import * as Outage from "./Outage.ts"
import * as Signature from "./Signature.ts"
import * as SyncConfig from "./SyncConfig.ts"
import { Transactor } from "./Transactor.ts"

const NonEmpty = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(maxNameLength))
const EntityId = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(maxIdLength))

/** The most ids one request may name. */
export const maxIds = 10_000

/** The default largest accepted request body: 1 MiB. */
export const defaultMaxBytes = 1024 * 1024

/**
 * A resync request as it is on the wire: a JSON body published with routing key `<owner>.resync.<Entity>`
 * and type `resync.<Entity>`, with the signature headers of `Signature` when the requester signs.
 * Requests are at-least-once: a duplicate only repeats a full sync, which consumers apply idempotently.
 */
export const ResyncRequest = Schema.Struct({
  specVersion: Schema.Literal(1),
  /** A unique id (UUIDv7), also the message id. */
  requestId: NonEmpty,
  /** The service addressed: the entity's owner. */
  owner: NonEmpty,
  entity: NonEmpty,
  /** Only these ids; every entity of the contract when absent. */
  ids: Schema.optionalKey(Schema.Array(EntityId).check(Schema.isMaxLength(maxIds))),
  /** The service asking; the responder authenticates the request as coming from it. */
  requester: NonEmpty,
  /**
   * Repair copies that are ahead of the owner: the snapshots replace copies whatever their versions
   * (`fullSync({ reset: true })`). Requests with and without it are answered apart.
   */
  reset: Schema.optionalKey(Schema.Boolean),
  requestedAt: Schema.String.check(
    Schema.makeFilter((s: string) => !Number.isNaN(Date.parse(s)) || "an ISO-8601 timestamp")
  )
})
export type ResyncRequest = typeof ResyncRequest.Type

/** The routing key of a request to `owner` about `entity`: `<owner>.resync.<Entity>`. */
export const routingKey = (owner: string, entity: string): string => `${owner}.resync.${entity}`

/** The queue an owner reads its requests from: `<owner>.resync`, bound to `<owner>.resync.*`. */
export const queueOf = (owner: string): QueueSpec => ({ name: `${owner}.resync`, bindings: [`${owner}.resync.*`] })

/**
 * Requests handled by owners, by `owner`, `entity` and `outcome`: `served` (a full sync ran for it),
 * `coalesced` (covered by another request's sync), `dropped` (beyond the rate), `rejected` (unreadable),
 * `forged` (not authenticated), `failed` (the sync failed while the database answered; requeued).
 */
export const requests = Metric.counter("entity_sync_resync_requests_total", {
  description: "resync requests handled by owners, by outcome",
  incremental: true
})

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

/**
 * Asks the owner of `contract` for a full sync of it (or of `ids`): publishes the request with a broker
 * confirm and returns it. The owner's queue `<owner>.resync` is declared by the owner's responder (or an
 * administrator), so a request waits in it while the owner is down; `request` does not declare it — a
 * requester needs no permission on another service's queue — and fails with `PublishRejected` while no
 * owner has declared it.
 */
export const request = (options: {
  readonly contract: Pick<Contract.Any, "name" | "owner">
  readonly requester: string
  readonly ids?: ReadonlyArray<string>
  /** Ask for snapshots that replace copies whatever their versions (see `ResyncRequest.reset`). */
  readonly reset?: boolean
  /** Signs the request with this key of the requester (for owners that authenticate by signature). */
  readonly signing?: Signature.SigningKey
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
      ...(options.reset === true ? { reset: true } : {}),
      requestedAt: new Date(now).toISOString()
    }
    const body = encoder.encode(JSON.stringify(resync))
    yield* broker.publish([{
      messageId: resync.requestId,
      routingKey: routingKey(owner, entity),
      type: `resync.${entity}`,
      body,
      headers: options.signing !== undefined ? Signature.sign(options.signing, body) : {}
    }])
    return resync
  })

/** An entity the responder can resync: its contract and the full sync of its owner's repository. */
export interface Target<Owner extends string, R> {
  readonly contract: Contract.OwnedBy<Owner>
  /** E.g. `Producer` repository's `fullSync`; returns how many snapshot events were queued. */
  readonly fullSync: (
    options: { readonly ids?: ReadonlyArray<string>; readonly reset?: boolean }
  ) => Effect.Effect<number, SqlError.SqlError, R>
}

/** Settings of an owner's responder. */
export interface ResponderOptions<Owner extends string, R> {
  /** The owning service; it reads `<owner>.resync`. */
  readonly owner: Owner
  /** The entities it answers for (R1: only contracts it owns; another owner's contract does not compile). */
  readonly targets: ReadonlyArray<Target<NoInfer<Owner>, R>>
  /** Largest accepted request body in bytes (default 1 MiB). */
  readonly maxBytes?: number
  /**
   * The broker logins allowed to publish requests for each requester, when the broker vouches for
   * publishers (default: a requester's only login is its own name).
   */
  readonly requesters?: Readonly<Record<string, ReadonlyArray<string>>>
  /** The public keys of requesters that sign their requests, by requester (default none). */
  readonly verifyingKeys?: Signature.VerifyingKeys
  /** How long a sync covers later requests of its requester and entity (default 1 minute). */
  readonly window?: Duration.Input
  /**
   * At most `syncs` syncs per requester and entity in any `per` (default 10 per hour); requests beyond it
   * are acked and counted as `dropped`.
   */
  readonly rate?: { readonly syncs: number; readonly per: Duration.Input }
  /** Requests taken from the broker at once and merged (default 32). */
  readonly prefetch?: number
  /** During a database outage, how long received requests are held before they are given back (default 1 minute). */
  readonly holdLimit?: Duration.Input
}

/** The default of `ResponderOptions.window`. */
export const defaultWindow: Duration.Input = "1 minute"

/** The default of `ResponderOptions.rate`: 10 syncs per requester and entity per hour. */
export const defaultRate = { syncs: 10, per: "1 hour" } as const satisfies ResponderOptions<string, never>["rate"]

/** The default of `ResponderOptions.prefetch`. */
export const defaultPrefetch = 32

/** Why a request was refused, as the dead-letter reason reads it. */
const rejection = (reason: string, detail: string) => boundReason(`${reason}: ${detail}`)

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
 * R11: who published a request, as far as anyone vouches for it, by the same rules as events: a requester
 * with verifying keys must sign (`key <id>`); otherwise, when the broker vouches for publishers, the login
 * must be one allowed for the requester (`login <name>`); a broker that cannot vouch, for a requester
 * without keys, leaves it to the broker's own access control (`unauthenticated`). Fails with the detail of
 * a `ForgedProducer` dead letter otherwise.
 */
export const authenticate = (
  request: ResyncRequest,
  delivery: Pick<Delivery, "publisher" | "body" | "headers">,
  options: {
    readonly vouchesForPublishers: boolean
    readonly requesters?: Readonly<Record<string, ReadonlyArray<string>>> | undefined
    readonly verifyingKeys?: Signature.VerifyingKeys | undefined
    readonly now: number
  }
): Result.Result<string, string> => {
  const requester = request.requester
  const keys = options.verifyingKeys ?? {}
  if (Object.hasOwn(keys, requester)) {
    const verified = Signature.verify(keys, requester, delivery.body, delivery.headers, options.now)
    return Result.isSuccess(verified)
      ? Result.succeed(`key ${verified.success}`)
      : Result.fail(`the request of "${requester}": ${verified.failure.message}`)
  }
  if (!options.vouchesForPublishers) return Result.succeed("unauthenticated")
  const configured = options.requesters !== undefined && Object.hasOwn(options.requesters, requester)
    ? options.requesters[requester]
    : undefined
  const logins = configured ?? [requester]
  const publisher = delivery.publisher
  if (publisher !== undefined && logins.includes(publisher)) return Result.succeed(`login ${publisher}`)
  return Result.fail(
    publisher === undefined
      ? `the broker vouches for no publisher of this request of "${requester}"`
      : `published by broker login "${Signature.quote(publisher)}", which may not ask for "${requester}" (allowed: ${
        logins.map((login) => `"${Signature.quote(login)}"`).join(", ")
      })`
  )
}

/** What the responder remembers about one requester and entity, to coalesce and rate-limit. */
interface KeyState {
  /** When the last whole-entity sync for it completed. */
  wholeAt: number | undefined
  /** The ids of the last sync of some ids, and when it completed. */
  idsServed: { readonly at: number; readonly ids: ReadonlySet<string> } | undefined
  /** When its recent syncs started, oldest first; at most the rate's `syncs`, none older than its `per`. */
  readonly syncs: Array<number>
  /** When the last warning about dropped requests was logged, and how many were dropped since. */
  warnedAt: number | undefined
  droppedSinceWarning: number
}

/** What to do with the requests of one requester and entity taken together. */
type Plan =
  | { readonly _tag: "Covered" }
  | { readonly _tag: "Dropped" }
  | { readonly _tag: "Sync"; readonly ids: ReadonlyArray<string> | undefined }

interface Accepted {
  readonly delivery: Delivery
  readonly request: ResyncRequest
}

/**
 * Serves resync requests until interrupted; a sync runs the target's full sync and its requests are acked
 * once the snapshot events are committed to the outbox; an invalid request is dead-lettered with its
 * reason. When the subscription fails (broker unavailable) or ends, it subscribes again a second later.
 *
 * Only authenticated requests are served (R11; see `authenticate`): the broker vouches that the request
 * was published by a login allowed for its `requester` (`ResponderOptions.requesters`; by default the
 * requester's own name), or the request carries a valid signature by a key of the requester
 * (`ResponderOptions.verifyingKeys`). Anything else is dead-lettered as `ForgedProducer: …`.
 *
 * Requests of one requester about one entity are coalesced and rate-limited: the requests taken from the
 * queue together are merged (a whole-entity request covers the others; id lists are united up to
 * `maxIds`, beyond which the whole entity is synced), a request within `window` after a sync that covers it
 * is acked without another one, and beyond `rate` syncs the requests are acked and counted as dropped (with
 * one warning per window). What the responder holds in memory is bounded by its prefetch and by the
 * authenticated requesters.
 *
 * A sync that fails while the database answers is requeued. When the owner's database does not answer
 * (`SqlError`, and `Transactor.probe` fails), the requests in hand are given back with `Delivery.release`
 * (no delivery attempt is spent) and the responder probes with backoff until the database answers, giving
 * back what it received meanwhile every `holdLimit` (R12). Without a `Transactor` in its context the
 * responder cannot tell an outage from a failing statement: every `SqlError` then counts as an outage.
 */
export const serve = <const Owner extends string, R>(
  options: ResponderOptions<Owner, R>
): Effect.Effect<never, never, Broker | R> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    const transactor = yield* Effect.serviceOption(Transactor)
    const owner = options.owner
    const targets = new Map(options.targets.map((t) => [t.contract.name, t]))
    const entities = [...targets.keys()]
    const window = Duration.toMillis(Duration.fromInputUnsafe(options.window ?? defaultWindow))
    const rate = options.rate ?? defaultRate
    const maxSyncs = Math.max(1, Math.floor(rate.syncs))
    const ratePeriod = Duration.toMillis(Duration.fromInputUnsafe(rate.per))
    const prefetch = Math.max(1, Math.floor(options.prefetch ?? defaultPrefetch))
    const holdLimit = Duration.toMillis(Duration.fromInputUnsafe(options.holdLimit ?? "1 minute"))
    const states = new Map<string, KeyState>()
    let forgottenAt = 0

    const count = (entity: string, outcome: string, n = 1) =>
      n === 0 ? Effect.void : Metric.update(Metric.withAttributes(requests, { owner, entity, outcome }), n)

    /** Settles deliveries; a broker that became unavailable redelivers them, which costs nothing but a repeat. */
    const settle = (
      deliveries: ReadonlyArray<Delivery>,
      how: (delivery: Delivery) => Effect.Effect<void, BrokerUnavailable>
    ) =>
      Effect.forEach(deliveries, (delivery) =>
        how(delivery).pipe(
          Effect.catchTag("BrokerUnavailable", (error) =>
            Effect.logWarning(
              `resync: could not settle request ${Signature.quote(delivery.messageId)}; the broker will redeliver it`,
              error
            ))
        ), { discard: true })

    const stateOf = (key: string): KeyState => {
      const found = states.get(key)
      if (found !== undefined) return found
      const made: KeyState = {
        wholeAt: undefined,
        idsServed: undefined,
        syncs: [],
        warnedAt: undefined,
        droppedSinceWarning: 0
      }
      states.set(key, made)
      return made
    }

    /** Forgets the requesters and entities nothing is remembered about any more (at most once per window). */
    const forget = (now: number) => {
      if (now - forgottenAt < window) return
      forgottenAt = now
      for (const [key, state] of states) {
        while (state.syncs.length > 0 && now - state.syncs[0]! >= ratePeriod) state.syncs.shift()
        const recent = (state.wholeAt !== undefined && now - state.wholeAt < window) ||
          (state.idsServed !== undefined && now - state.idsServed.at < window)
        if (state.syncs.length === 0 && !recent && state.droppedSinceWarning === 0) states.delete(key)
      }
    }

    const plan = (state: KeyState, group: ReadonlyArray<Accepted>, now: number): Plan => {
      if (state.wholeAt !== undefined && now - state.wholeAt < window) return { _tag: "Covered" }
      let ids: Set<string> | undefined = new Set()
      for (const { request } of group) {
        if (request.ids === undefined) {
          ids = undefined
          break
        }
        for (const id of request.ids) ids.add(id)
        if (ids.size > maxIds) {
          ids = undefined
          break
        }
      }
      const served = state.idsServed
      if (
        ids !== undefined && served !== undefined && now - served.at < window &&
        [...ids].every((id) => served.ids.has(id))
      ) {
        return { _tag: "Covered" }
      }
      while (state.syncs.length > 0 && now - state.syncs[0]! >= ratePeriod) state.syncs.shift()
      if (state.syncs.length >= maxSyncs) return { _tag: "Dropped" }
      return { _tag: "Sync", ids: ids === undefined ? undefined : [...ids] }
    }

    // R12: since when the database has not answered (undefined while it does), and failures in a row
    let outageSince: number | undefined
    let failuresInRow = 0
    const probeSchedule = SyncConfig.backoff({ base: "100 millis", maxDelay: "10 seconds" })

    const databaseAnswers: Effect.Effect<boolean> = Option.match(transactor, {
      onNone: () => Effect.succeed(false),
      onSome: Outage.answers
    })

    /**
     * Waits for the database after a sync failed on it (`Outage.awaitDatabase`, at most 10 s between probes;
     * without a `Transactor`, one wait); requests received meanwhile are given back every `holdLimit`.
     */
    const awaitDatabase = (
      received: Queue.Dequeue<Delivery, BrokerUnavailable | Cause.Done>,
      error: SqlError.SqlError
    ) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        if (outageSince === undefined) {
          outageSince = now
          yield* Effect.logWarning(
            `resync: the database of "${owner}" does not answer; requests given back, waiting for it`,
            Signature.quote(error.message, 500)
          )
        }
        const release = Effect.flatMap(
          Queue.clear(received).pipe(Effect.orElseSucceed((): Array<Delivery> => [])),
          (held) => settle(held, (delivery) => delivery.release)
        )
        failuresInRow = yield* Outage.awaitDatabase(transactor, {
          schedule: probeSchedule,
          failures: failuresInRow,
          hold: { limit: holdLimit, release }
        })
      })

    /** Runs one sync for a group; gives the error when the database did not answer (nothing was settled then). */
    const sync = (group: ReadonlyArray<Accepted>, state: KeyState, ids: ReadonlyArray<string> | undefined) =>
      Effect.gen(function*() {
        const { entity, requester } = group[0]!.request
        const target = targets.get(entity)!
        const startedAt = yield* Clock.currentTimeMillis
        const deliveries = group.map((a) => a.delivery)
        const reset = group[0]!.request.reset === true ? { reset: true } : {}
        const exit = yield* Effect.exit(target.fullSync(ids !== undefined ? { ids, ...reset } : reset))
        if (Exit.isSuccess(exit)) {
          const now = yield* Clock.currentTimeMillis
          state.syncs.push(startedAt)
          if (ids === undefined) state.wholeAt = now
          else state.idsServed = { at: now, ids: new Set(ids) }
          failuresInRow = 0
          if (outageSince !== undefined) {
            yield* Effect.logInfo(`resync: the database of "${owner}" answers again after ${now - outageSince} ms`)
            outageSince = undefined
          }
          yield* settle(deliveries, (delivery) => delivery.ack)
          yield* count(entity, "served")
          yield* count(entity, "coalesced", group.length - 1)
          yield* Effect.logInfo(
            `resync: queued ${exit.value} snapshot event(s) of ${entity} for ${requester}`,
            { requests: group.length, ids: ids?.length ?? "all" }
          )
          return undefined
        }
        if (Cause.hasInterrupts(exit.cause)) return yield* Effect.interrupt
        const error = Cause.findErrorOption(exit.cause)
        if (Option.isNone(error)) {
          const detail = Cause.squash(exit.cause)
          const reason = rejection(
            "Defect",
            `the full sync of ${entity} failed: ${detail instanceof Error ? detail.message : String(detail)}`
          )
          yield* count(entity, "failed", group.length)
          yield* Effect.logError(`resync: ${reason}`, exit.cause)
          yield* settle(deliveries, (delivery) => delivery.deadLetter(reason))
          return undefined
        }
        if (!(yield* databaseAnswers)) return error.value
        // the database answers: this sync itself fails; the broker counts the attempt
        yield* count(entity, "failed", group.length)
        yield* Effect.logError(`resync: full sync of ${entity} failed; requests requeued`, error.value)
        yield* Effect.sleep("1 second")
        yield* settle(deliveries, (delivery) => delivery.nack({ requeue: true }))
        return undefined
      })

    /** Answers the requests of one requester about one entity taken together. */
    const answerGroup = (group: ReadonlyArray<Accepted>, key: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const state = stateOf(key)
        const { entity, requester } = group[0]!.request
        const decided = plan(state, group, now)
        switch (decided._tag) {
          case "Covered": {
            yield* settle(group.map((a) => a.delivery), (delivery) => delivery.ack)
            yield* count(entity, "coalesced", group.length)
            return undefined
          }
          case "Dropped": {
            yield* settle(group.map((a) => a.delivery), (delivery) => delivery.ack)
            yield* count(entity, "dropped", group.length)
            state.droppedSinceWarning += group.length
            if (state.warnedAt === undefined || now - state.warnedAt >= window) {
              yield* Effect.logWarning(
                `resync: dropped ${state.droppedSinceWarning} request(s) of ${requester} for ${entity}: more than ${maxSyncs} sync(s) in ${
                  Duration.format(Duration.millis(ratePeriod))
                }`
              )
              state.warnedAt = now
              state.droppedSinceWarning = 0
            }
            return undefined
          }
          case "Sync":
            return yield* sync(group, state, decided.ids)
        }
      })

    /** Answers the requests taken from the queue together (see the module comment). */
    const answerBatch = (
      batch: ReadonlyArray<Delivery>,
      received: Queue.Dequeue<Delivery, BrokerUnavailable | Cause.Done>
    ) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        forget(now)
        const groups = new Map<string, Array<Accepted>>()
        for (const delivery of batch) {
          const decoded = yield* Effect.result(decodeRequest(delivery.body, {
            owner,
            entities,
            ...(options.maxBytes !== undefined ? { maxBytes: options.maxBytes } : {})
          }))
          if (Result.isFailure(decoded)) {
            yield* count("unknown", "rejected")
            yield* Effect.logWarning(
              `resync: request ${Signature.quote(delivery.messageId)} dead-lettered: ${decoded.failure}`
            )
            yield* settle([delivery], (d) => d.deadLetter(decoded.failure))
            continue
          }
          const request = decoded.success
          const publisher = authenticate(request, delivery, {
            vouchesForPublishers: broker.vouchesForPublishers,
            requesters: options.requesters,
            verifyingKeys: options.verifyingKeys,
            now
          })
          if (Result.isFailure(publisher)) {
            const reason = rejection("ForgedProducer", publisher.failure)
            yield* count(request.entity, "forged")
            yield* Effect.logWarning(`resync: request ${Signature.quote(delivery.messageId)} dead-lettered: ${reason}`)
            yield* settle([delivery], (d) => d.deadLetter(reason))
            continue
          }
          const key = JSON.stringify([request.requester, request.entity, request.reset === true])
          const group = groups.get(key)
          if (group === undefined) groups.set(key, [{ delivery, request }])
          else group.push({ delivery, request })
        }
        const pending = [...groups]
        for (let i = 0; i < pending.length; i++) {
          const [key, group] = pending[i]!
          const error = yield* answerGroup(group, key)
          if (error === undefined) continue
          // R12: the database does not answer; give back what is in hand, then wait for it
          yield* settle(pending.slice(i).flatMap(([, g]) => g.map((a) => a.delivery)), (delivery) => delivery.release)
          return yield* awaitDatabase(received, error)
        }
      })

    const consume = Effect.scoped(Effect.gen(function*() {
      const received = yield* Stream.toQueue(broker.subscribe(queueOf(owner), { prefetch }), { capacity: "unbounded" })
      return yield* Effect.forever(Effect.flatMap(Queue.takeAll(received), (batch) => answerBatch(batch, received)))
    })).pipe(Pull.catchDone(() => Effect.void))

    return yield* consume.pipe(
      Effect.catchCause((cause) => Effect.logWarning(`resync: the responder of "${owner}" stopped; restarting`, cause)),
      Effect.andThen(Effect.sleep("1 second")),
      Effect.forever
    )
  })

/** An owner's responder running for the lifetime of the layer. */
export const layer = <const Owner extends string, R>(
  options: ResponderOptions<Owner, R>
): Layer.Layer<never, never, Broker | R> =>
  Layer.effectDiscard(Effect.gen(function*() {
    // The queue exists once the layer is built, so requests sent from then on wait for the owner.
    const broker = yield* Broker
    yield* broker.declare(queueOf(options.owner)).pipe(
      Effect.retry({ schedule: Schedule.spaced("1 second"), times: 3 }),
      Effect.catchTag("BrokerUnavailable", (error) =>
        Effect.logWarning(
          `resync: cannot declare ${queueOf(options.owner).name} yet; the responder keeps trying`,
          error
        ))
    )
    yield* Effect.forkScoped(serve(options))
  }))

/** The settings of a responder that come from the environment (see `responderConfig`). */
export type ResponderSettings = Required<
  Pick<ResponderOptions<string, never>, "requesters" | "verifyingKeys" | "window" | "rate">
>

/**
 * A responder's settings from the environment, to spread into `ResponderOptions`:
 *
 * * `SYNC_RESYNC_REQUESTER_LOGINS` (default none): the broker logins allowed to ask for each requester, as
 *   JSON `{ "<requester>": ["<login>", …] }`; a requester missing here may ask only from its own name;
 * * `SYNC_VERIFYING_KEYS` (see `Signature.verifyingKeysConfig`): the public keys of requesters that sign;
 * * `SYNC_RESYNC_WINDOW` (default `1 minute`): how long a sync covers later requests;
 * * `SYNC_RESYNC_MAX_SYNCS_PER_HOUR` (default 10): syncs per requester and entity per hour.
 */
export const responderConfig: Config.Config<ResponderSettings> = Config.all({
  requesters: Config.schema(
    Schema.fromJsonString(Schema.Record(NonEmpty, Schema.Array(NonEmpty))),
    "SYNC_RESYNC_REQUESTER_LOGINS"
  ).pipe(Config.withDefault({})),
  verifyingKeys: Signature.verifyingKeysConfig,
  window: Config.Duration("SYNC_RESYNC_WINDOW").pipe(Config.withDefault(Duration.fromInputUnsafe(defaultWindow))),
  syncsPerHour: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), "SYNC_RESYNC_MAX_SYNCS_PER_HOUR")
    .pipe(
      Config.withDefault(defaultRate.syncs)
    )
}).pipe(Config.map(({ syncsPerHour, ...settings }) => ({ ...settings, rate: { syncs: syncsPerHour, per: "1 hour" } })))
