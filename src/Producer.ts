/**
 * The owner side: typed repositories for the contracts a service owns. A write bumps the entity's version
 * (R4) and appends its event to the outbox in the caller's transaction (R2). Only the owner can produce
 * events for a contract (R1): asking for a repository of another service's contract does not compile, and
 * `make` takes the service's name as one string literal type (a `string`, a union, `any` or `never` does not
 * compile). A service whose name comes from configuration still writes it as a literal in code and checks
 * the configured one against it at start-up (`checkConfigured`). `repository` checks the owner again at run
 * time and throws `NotTheOwner` when the repository is made.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Option, Result, Schema, Tracer } from "effect"
import type { SqlError } from "effect/sql"
import type * as Contract from "./Contract.ts"
import type { CopyState } from "./CopyRepository.ts"
import * as Envelope from "./Envelope.ts"
import { type EntityExists, EntityNotFound } from "./Errors.ts"
import { whileOpen } from "./internal/OutboxTransaction.ts"
import { sameJson } from "./internal/SameJson.ts"
import { Outbox, OutboxTransaction } from "./Outbox.ts"
import { type NewSourceRow, SourceRepository, type SourceRow } from "./SourceRepository.ts"
import * as Tracing from "./Tracing.ts"

/** An entity as the owner holds it. A deleted entity (tombstone) has no payload. */
export interface Entity<A> {
  readonly id: string
  readonly version: number
  readonly state: CopyState
  readonly payload: A | null
  readonly updatedAt: number
  readonly deletedAt: number | null
}

/** A change about to be published; `before` / `after` are null where the entity did not exist. */
export interface Change<A> {
  readonly action: Envelope.Action
  readonly before: A | null
  readonly after: A | null
}

/** Options of a repository. */
export interface RepositoryOptions<A> {
  /** Publishes a change only when this holds (default: always). The write happens either way. */
  readonly handleWhen?: (change: Change<A>) => boolean
}

/** Options of one write. */
export interface WriteOptions {
  /** Writes without raising an event (the version is still bumped). */
  readonly dismissSendEvent?: boolean
}

/**
 * Request context carried by the events written under it, as CloudEvents extension attributes (e.g.
 * `{ correlationid: "…", tenant: "…" }`). A key must be 1–20 lower-case letters and digits and not an
 * attribute of the wire format (`Envelope.isContextKey`); other keys are kept in the outbox but not sent.
 */
export const RequestContext = Context.Reference<Readonly<Record<string, string>> | undefined>(
  "entity-sync/RequestContext",
  { defaultValue: () => undefined }
)

type Tx = OutboxTransaction | SourceRepository

/** The owner's typed repository of one contract. Writes need the outbox transaction. */
export interface EntityRepository<A> {
  /**
   * Creates the entity (version 1, or the tombstone's version + 1); fails with `EntityExists` if it is live
   * or soft-deleted.
   */
  readonly create: (
    payload: A,
    options?: WriteOptions
  ) => Effect.Effect<Entity<A>, EntityExists | SqlError.SqlError, Tx>
  /**
   * Creates several entities with one write of their rows and one append of their events (in `payloads`
   * order), like `create` for each. All or nothing: if one of them is live or soft-deleted, or two payloads
   * have the same id, it fails with `EntityExists` for the first such payload and writes nothing.
   */
  readonly createMany: (
    payloads: ReadonlyArray<A>,
    options?: WriteOptions
  ) => Effect.Effect<ReadonlyArray<Entity<A>>, EntityExists | SqlError.SqlError, Tx>
  /**
   * Writes the new state of several entities without reading them first (an upsert, as a handler that
   * holds the whole new state writes): one write of their rows and one append of their events, in
   * `payloads` order. An entity that does not exist, or was deleted, is created (version 1, or the
   * tombstone's version + 1); a live one whose state differs is updated (version + 1); an equal one is left
   * as it is and raises no event. All or nothing: if one of them is soft-deleted, or two payloads have the
   * same id, it fails with `EntityExists` for the first such payload and writes nothing. With `handleWhen`,
   * the rows are read (locked) first, so that each change has its `before`. Returns the entities in
   * `payloads` order.
   */
  readonly saveMany: (
    payloads: ReadonlyArray<A>,
    options?: WriteOptions
  ) => Effect.Effect<ReadonlyArray<Entity<A>>, EntityExists | SqlError.SqlError, Tx>
  /** Replaces the live entity with `f(current)`; a no-op change writes nothing and raises no event. */
  readonly update: (
    id: string,
    f: (current: A) => A,
    options?: WriteOptions
  ) => Effect.Effect<Entity<A>, EntityNotFound | SqlError.SqlError, Tx>
  /**
   * Replaces each live entity of `ids` with `f(current)`, like `update` for each, with one locked read of
   * their rows, one write and one append of their events (in `ids` order; an id given twice is updated
   * once). All or nothing: if one of them is not live, it fails with `EntityNotFound` for the first such id
   * and writes nothing. No-op changes write nothing and raise no event. Returns the entities in `ids` order.
   */
  readonly updateMany: (
    ids: ReadonlyArray<string>,
    f: (current: A) => A,
    options?: WriteOptions
  ) => Effect.Effect<ReadonlyArray<Entity<A>>, EntityNotFound | SqlError.SqlError, Tx>
  /** Hard-deletes the entity, leaving a tombstone with its version. */
  readonly delete: (
    id: string,
    options?: WriteOptions
  ) => Effect.Effect<Entity<A>, EntityNotFound | SqlError.SqlError, Tx>
  /** Soft-deletes the live entity (R7): the row stays with `deletedAt`. */
  readonly softDelete: (
    id: string,
    options?: WriteOptions
  ) => Effect.Effect<Entity<A>, EntityNotFound | SqlError.SqlError, Tx>
  /**
   * The lower-level form, for an owner table written by the owner's own SQL: locks and reads the entity's
   * row, runs `statement` (which changes that row in the same transaction, and leaves its version column
   * alone), reads the row again, bumps the version and appends the event the change amounts to — `updated`,
   * `softDeleted` (the soft-delete column was set) or `deleted` (the row is gone; a tombstone keeps its
   * version). A statement that changed nothing writes nothing and raises no event. The entity must exist
   * and be live (`EntityNotFound` otherwise, before the statement runs); creating or restoring an entity
   * goes through `create`. Returns the entity as written.
   *
   * ```ts
   * users.track(id, sql`UPDATE users SET email = ${email} WHERE id = ${id}`)
   * ```
   */
  readonly track: <X, E, R>(
    id: string,
    statement: Effect.Effect<X, E, R>,
    options?: WriteOptions
  ) => Effect.Effect<Entity<A>, E | EntityNotFound | SqlError.SqlError, Tx | R>
  /** The entity, tombstones included; null if it never existed. */
  readonly get: (id: string) => Effect.Effect<Entity<A> | null, SqlError.SqlError, SourceRepository>
  /**
   * Full sync (R8): republishes the current state of every entity (or of `ids`) as force-sync events, in
   * keyset-paginated batches of `batchSize` (default 100), each batch in its own outbox transaction.
   * Returns the number of events queued.
   */
  readonly fullSync: (options?: {
    readonly ids?: ReadonlyArray<string>
    readonly batchSize?: number
    /**
     * Repair copies that are ahead of the owner (e.g. after a forged or mistaken event): the snapshots
     * replace the copies whatever their versions. Default false: a full sync never regresses a copy (R8).
     */
    readonly reset?: boolean
  }) => Effect.Effect<number, SqlError.SqlError, Outbox | SourceRepository>
}

/** A producing service: the only source of events for the contracts it owns. */
export interface Producer<Service extends string> {
  readonly service: Service
  /**
   * The repository of a contract owned by this service (R1: a contract of another owner does not compile;
   * one whose owner differs at run time throws `NotTheOwner` here, before any write).
   */
  readonly repository: <Name extends string, A, I extends Schema.Json>(
    contract: Contract.Contract<Name, Service, A, I>,
    options?: RepositoryOptions<A>
  ) => EntityRepository<A>
}

/** What the events of one write carry from the fiber: the traceparent and the request context. */
interface EventContext {
  /** The W3C `traceparent` of the span (local or external) the write runs in, if any. */
  readonly traceparent: string | undefined
  readonly context: Readonly<Record<string, string>> | undefined
}

/** The event context in `services`, read once per write. */
const eventContextOf = (services: Context.Context<never>): EventContext => {
  const span = Context.getOption(services, Tracer.ParentSpan)
  return {
    traceparent: Option.isSome(span)
      ? `00-${span.value.traceId}-${span.value.spanId}-${span.value.sampled ? "01" : "00"}`
      : undefined,
    context: Context.get(services, RequestContext)
  }
}

/** The event context of the current fiber. */
const eventContext: Effect.Effect<EventContext> = Effect.contextWith((services: Context.Context<never>) =>
  Effect.succeed(eventContextOf(services))
)

/**
 * Notes on the write's span (when spans are recorded) which events it appended: the message id, action and
 * version of a single event, the count of several.
 */
const annotateEvents = (events: ReadonlyArray<Envelope.Envelope>): Effect.Effect<void> =>
  Effect.withFiber((fiber) => {
    if (!Tracing.isTracing(fiber)) return Effect.void
    const only = events.length === 1 ? events[0] : undefined
    return only === undefined
      ? Effect.annotateCurrentSpan(Tracing.attributes.batchMessageCount, events.length)
      : Effect.annotateCurrentSpan({
        [Tracing.attributes.messageId]: only.messageId,
        [Tracing.attributes.action]: only.action,
        [Tracing.attributes.version]: only.version
      })
  })

/** The key of `ServiceNameError`'s brand: no value has this type, so no argument satisfies the error. */
declare const serviceNameError: unique symbol

/**
 * The parameter type `make` shows when its argument is not one string literal (R1): it reads as the reason,
 * and no value can be given for it.
 */
export interface ServiceNameError<Reason extends string> {
  readonly [serviceNameError]: Reason
}

type IsUnion<T, U = T> = T extends unknown ? ([U] extends [T] ? false : true) : never

// `any` takes both branches of a conditional type; a literal one, `never` none. (Not `0 extends 1 & T`: with
// T constrained to string, `1 & T` is reduced to never before T is known.)
type IsAny<T> = [T extends typeof serviceNameError ? 1 : 0] extends [0] ? false : true

/**
 * Nothing (`unknown`) when `Service` is one string literal type; otherwise a `ServiceNameError` saying why,
 * which `make`'s parameter then requires (R1: a contract's owner is checked against a literal, so a widened
 * name would own every contract).
 */
export type ServiceName<Service extends string> = IsAny<Service> extends true ? ServiceNameError<
    "R1: the service name is typed `any`; write it as a string literal such as \"accounts\""
  >
  : {} extends Record<Service, unknown> ? ServiceNameError<
      "R1: the service name must be one string literal such as \"accounts\", not `string` or a template; a name read from configuration is written as a literal and checked with Producer.checkConfigured"
    >
  : IsUnion<Service> extends true ? ServiceNameError<
      "R1: the service name must be one string literal, not a union: make one producer per service"
    >
  : unknown

/**
 * No further argument when `Service` is a literal; one that cannot be given when it is `any` or `never` (a
 * value of those types fits any parameter type, so the first parameter alone cannot refuse it).
 */
export type NotAnyOrNever<Service extends string> = IsAny<Service> extends true
  ? [R1_the_service_name_must_be_a_string_literal_not_any: never]
  : [Service] extends [never] ? [R1_the_service_name_must_be_a_string_literal_not_never: never]
  : []

/**
 * Makes the producer of a service (R1). `service` must be one string literal type: `make("accounts")`. A
 * `string` (read from configuration or the environment), a union (`flag ? "a" : "b"`), an explicit
 * `make<string>(…)`, `any` or `never` does not compile. A service whose name is configured declares it as
 * a literal here and checks the configured one at start-up:
 *
 * ```ts
 * export const producer = Producer.make("accounts")
 * // at start-up, before serving:
 * yield* Producer.checkConfigured(producer, config.serviceName)   // fails with ConfiguredServiceMismatch
 * ```
 */
export const make = <const Service extends string>(
  service: Service & ServiceName<Service>,
  ..._literal: NotAnyOrNever<Service>
): Producer<Service> => ({
  service,
  repository: (contract, options) => {
    if (contract.owner !== service) {
      throw new NotTheOwner({ contract: contract.name, owner: contract.owner, service })
    }
    return makeRepository(service, contract, options ?? {})
  }
})

/**
 * A defect (R1): a repository was asked for a contract that another service owns — reached only where the
 * types were bypassed (a cast, or a producer typed with a wider name). Thrown when the repository is made.
 */
export class NotTheOwner extends Schema.TaggedError<NotTheOwner>()("NotTheOwner", {
  contract: Schema.String,
  owner: Schema.String,
  service: Schema.String
}) {
  override get message() {
    return `R1: service "${this.service}" cannot produce events of ${this.contract}, which "${this.owner}" owns`
  }
}

/** The service name a deployment configured is not the one its code declares with `Producer.make`. */
export class ConfiguredServiceMismatch extends Schema.TaggedError<ConfiguredServiceMismatch>()(
  "ConfiguredServiceMismatch",
  { declared: Schema.String, configured: Schema.String }
) {
  override get message() {
    return `the configured service name "${this.configured}" is not "${this.declared}", the service this code ` +
      `produces for (R1); run it with "${this.declared}" or deploy the code of "${this.configured}"`
  }
}

/**
 * Checks at start-up that the service name read from configuration is the literal the code declares, so
 * a deployment cannot run one service's code under another's name. Fails with `ConfiguredServiceMismatch`.
 */
export const checkConfigured = <Service extends string>(
  producer: Producer<Service>,
  configured: string
): Effect.Effect<Service, ConfiguredServiceMismatch> =>
  configured === producer.service
    ? Effect.succeed(producer.service)
    : Effect.fail(new ConfiguredServiceMismatch({ declared: producer.service, configured }))

const makeRepository = <A, I extends Schema.Json>(
  service: string,
  contract: Contract.Contract<string, string, A, I>,
  options: RepositoryOptions<A>
): EntityRepository<A> => {
  const encode = Schema.encodeEffect(contract.payload)
  const decode = Schema.decodeUnknownEffect(contract.payload)
  const encodePayload = (a: A) => Effect.orDie(encode(a))
  // Encoded synchronously when the schema allows it (any schema without asynchronous transformations).
  const encodeAllNow = Schema.encodeResult(Schema.Array(contract.payload))
  const encodeAllLater = Schema.encodeEffect(Schema.Array(contract.payload))
  const encodePayloads = (as: ReadonlyArray<A>): Effect.Effect<ReadonlyArray<I>> => {
    let result: Result.Result<ReadonlyArray<I>, Schema.SchemaError>
    try {
      result = encodeAllNow(as)
    } catch {
      return Effect.orDie(encodeAllLater(as))
    }
    return Result.isSuccess(result) ? Effect.succeed(result.success) : Effect.die(result.failure)
  }
  // A row written before the contract's current version (in the document store, which keeps payloads as
  // they were written) is read through the newest earlier version its payload fits, and reshaped.
  const upcasts = [...contract.earlier].reverse().map((earlier) => Schema.decodeUnknownEffect(earlier.upcast))
  type Stored = { readonly row: SourceRow; readonly payload: A | null }
  const decodeStored = (row: SourceRow): Effect.Effect<Stored> => {
    const stored = row.payload
    if (stored === null) return Effect.succeed({ row, payload: null })
    if (upcasts.length === 0) return Effect.orDie(Effect.map(decode(stored), (payload): Stored => ({ row, payload })))
    const upcast = (i: number, error: Schema.SchemaError): Effect.Effect<Stored, Schema.SchemaError> =>
      i === upcasts.length ? Effect.fail(error) : upcasts[i]!(stored).pipe(
        Effect.flatMap((payload: A) =>
          Effect.map(encode(payload), (encoded): Stored => ({ row: { ...row, payload: encoded }, payload }))
        ),
        Effect.catch(() => upcast(i + 1, error))
      )
    return Effect.orDie(
      decode(stored).pipe(
        Effect.map((payload): Stored => ({ row, payload })),
        Effect.catch((error) => upcast(0, error))
      )
    )
  }
  const handleWhen = options.handleWhen ?? (() => true)

  // R10: each write runs in a producer span (when spans are recorded): its events carry it as traceparent.
  const writeSpan = Tracing.spanNames.write(contract.name)
  const traced = <X, E, R>(
    operation: string,
    id: string | undefined,
    effect: Effect.Effect<X, E, R>
  ): Effect.Effect<X, E, R> =>
    Tracing.span(writeSpan, () => ({
      kind: "producer",
      attributes: {
        [Tracing.attributes.messagingSystem]: Tracing.messagingSystem,
        [Tracing.attributes.operationType]: Tracing.operationTypes.create,
        [Tracing.attributes.operationName]: operation,
        [Tracing.attributes.operation]: operation,
        [Tracing.attributes.entity]: contract.name,
        [Tracing.attributes.producer]: service,
        ...(id === undefined ? {} : { [Tracing.attributes.entityId]: Envelope.bounded(id) })
      }
    }), () => effect)

  const toEntity = (row: SourceRow, payload: A | null): Entity<A> => ({
    id: row.id,
    version: row.version,
    state: row.state,
    payload,
    updatedAt: row.updatedAt,
    deletedAt: row.deletedAt
  })

  const envelopeOf = (
    shared: EventContext,
    messageId: string,
    row: SourceRow,
    action: Envelope.Action,
    forceSync: boolean,
    occurredAt = new Date(row.updatedAt).toISOString()
  ): Envelope.Envelope => ({
    contractVersion: contract.version,
    messageId,
    entity: contract.name,
    entityId: row.id,
    action,
    version: row.version,
    occurredAt,
    producer: service,
    forceSync,
    payload: row.payload,
    ...(shared.traceparent !== undefined ? { traceparent: shared.traceparent } : {}),
    ...(shared.context !== undefined ? { context: shared.context } : {})
  })

  const envelope = (row: SourceRow, action: Envelope.Action, forceSync: boolean) =>
    Effect.map(
      Effect.all({ shared: eventContext, messageId: Envelope.makeMessageId }),
      ({ messageId, shared }) => envelopeOf(shared, messageId, row, action, forceSync)
    )

  const publishes = (change: Change<A>, writeOptions: WriteOptions | undefined) =>
    writeOptions?.dismissSendEvent !== true && handleWhen(change)

  // The entity was read with a row lock; the put re-checks the version it read. Every row write goes
  // through the open OutboxTransaction (R2): a leaked or hand-made one dies before anything is written.
  const write = (
    row: SourceRow,
    previousVersion: number,
    change: Change<A>,
    writeOptions: WriteOptions | undefined
  ): Effect.Effect<Entity<A>, SqlError.SqlError, Tx> =>
    whileOpen(
      `${change.action} ${contract.name}:${row.id}`,
      Effect.gen(function*() {
        const source = yield* SourceRepository
        if (!(yield* source.put(row, previousVersion))) {
          return yield* Effect.die(
            new Error(`${contract.name}:${row.id} was written concurrently although it was read with a row lock`)
          )
        }
        if (publishes(change, writeOptions)) {
          const tx = yield* OutboxTransaction
          const event = yield* envelope(row, change.action, false)
          yield* tx.append([event])
          yield* annotateEvents([event])
        }
        return toEntity(row, change.after)
      })
    )

  // Appends the events of a write of several rows (if any) and gives its entities.
  const appendAll = (
    services: Context.Context<Tx>,
    events: ReadonlyArray<Envelope.Envelope>,
    entities: ReadonlyArray<Entity<A>>
  ): Effect.Effect<ReadonlyArray<Entity<A>>, SqlError.SqlError> =>
    events.length === 0 ?
      Effect.succeed(entities) :
      Context.get(services, OutboxTransaction).append(events).pipe(
        Effect.andThen(annotateEvents(events)),
        Effect.as(entities)
      )

  // The rows of a write of `payloads`, encoded; the services, the clock and the event context are read
  // once, from the write's context.
  const writeAll = <X, E>(
    payloads: ReadonlyArray<A>,
    write: (rows: ReadonlyArray<NewSourceRow>, now: number, services: Context.Context<Tx>) => Effect.Effect<X, E, Tx>
  ): Effect.Effect<X, E, Tx> =>
    Effect.flatMap(
      encodePayloads(payloads),
      (encoded) =>
        Effect.contextWith((services: Context.Context<Tx>) => {
          const now = Context.get(services, Clock.Clock).currentTimeMillisUnsafe()
          const rows = payloads.map((payload, i): NewSourceRow => ({
            entity: contract.name,
            id: contract.idOf(payload),
            payload: encoded[i]!,
            updatedAt: now
          }))
          return write(rows, now, services)
        })
    )

  // No read first: the store's create tells whether an entity exists (a tombstone does not) and gives the
  // versions, and it writes all the rows or none.
  const createAll = (
    payloads: ReadonlyArray<A>,
    writeOptions: WriteOptions | undefined
  ): Effect.Effect<ReadonlyArray<Entity<A>>, EntityExists | SqlError.SqlError, Tx> =>
    payloads.length === 0 ?
      Effect.succeed([]) :
      writeAll(payloads, (rows, now, services) =>
        Effect.flatMap(
          whileOpen(`create ${contract.name}`, Context.get(services, SourceRepository).create(rows)),
          (written) => {
            const shared = eventContextOf(services)
            const occurredAt = new Date(now).toISOString()
            const events: Array<Envelope.Envelope> = []
            const entities = written.map((row, i) => {
              const payload = payloads[i]!
              if (publishes({ action: "created", before: null, after: payload }, writeOptions)) {
                events.push(envelopeOf(shared, Envelope.messageIdAt(now), row, "created", false, occurredAt))
              }
              return toEntity(row, payload)
            })
            return appendAll(services, events, entities)
          }
        ))

  // No read first either, unless `handleWhen` needs each change's `before`: the store's save tells which
  // rows it created, updated or left as they were.
  const saveAll = (
    payloads: ReadonlyArray<A>,
    writeOptions: WriteOptions | undefined
  ): Effect.Effect<ReadonlyArray<Entity<A>>, EntityExists | SqlError.SqlError, Tx> =>
    payloads.length === 0 ? Effect.succeed([]) : writeAll(payloads, (rows, now, services) => {
      const source = Context.get(services, SourceRepository)
      const previous = options.handleWhen === undefined ?
        Effect.succeed(new Map<string, A | null>()) :
        Effect.flatMap(
          source.getMany(contract.name, rows.map((row) => row.id), "forUpdate"),
          (stored) =>
            Effect.map(
              Effect.forEach(stored, (row) =>
                row.state === "live" ? decodeStored(row) : Effect.succeed({ row, payload: null })),
              (decoded) =>
                new Map(decoded.map(({ payload, row }) => [row.id, payload]))
            )
        )
      return Effect.flatMap(
        previous,
        (before) =>
          Effect.flatMap(whileOpen(`save ${contract.name}`, source.save(rows)), (saved) => {
            const shared = eventContextOf(services)
            const occurredAt = new Date(now).toISOString()
            const events: Array<Envelope.Envelope> = []
            const entities = saved.map(({ row, written }, i) => {
              const payload = payloads[i]!
              const change: Change<A> | null = written === null ? null : {
                action: written,
                before: written === "updated" ? before.get(row.id) ?? null : null,
                after: payload
              }
              if (change !== null && publishes(change, writeOptions)) {
                events.push(envelopeOf(shared, Envelope.messageIdAt(now), row, change.action, false, occurredAt))
              }
              return toEntity(row, payload)
            })
            return appendAll(services, events, entities)
          })
      )
    })

  const existing = (id: string) => SourceRepository.use((source) => source.get(contract.name, id, "forUpdate"))

  const live = (id: string, allowSoftDeleted: boolean) =>
    Effect.flatMap(
      existing(id),
      (row) =>
        row === null || row.state === "deleted" || (!allowSoftDeleted && row.state === "softDeleted")
          ? Effect.fail(new EntityNotFound({ entity: contract.name, entityId: id }))
          : decodeStored(row)
    )

  return {
    create: (payload, writeOptions) =>
      traced(
        "create",
        contract.idOf(payload),
        Effect.flatMap(createAll([payload], writeOptions), (created) =>
          created[0] === undefined
            ? Effect.die(new Error(`${contract.name}: a create wrote no row`))
            : Effect.succeed(created[0]))
      ),
    createMany: (payloads, writeOptions) => traced("createMany", undefined, createAll(payloads, writeOptions)),
    saveMany: (payloads, writeOptions) => traced("saveMany", undefined, saveAll(payloads, writeOptions)),
    update: (id, f, writeOptions) =>
      traced(
        "update",
        id,
        Effect.gen(function*() {
          const { payload: before, row } = yield* live(id, false)
          if (before === null) return yield* new EntityNotFound({ entity: contract.name, entityId: id })
          const after = f(before)
          const encoded = yield* encodePayload(after)
          if (sameJson(encoded, row.payload)) return toEntity(row, before)
          const now = yield* Clock.currentTimeMillis
          const next: SourceRow = { ...row, version: row.version + 1, payload: encoded, updatedAt: now }
          return yield* write(next, row.version, { action: "updated", before, after }, writeOptions)
        })
      ),
    updateMany: (ids, f, writeOptions) =>
      traced(
        "updateMany",
        undefined,
        Effect.gen(function*() {
          const unique = Array.from(new Set(ids))
          if (unique.length === 0) return []
          const source = yield* SourceRepository
          const stored = new Map(
            (yield* source.getMany(contract.name, unique, "forUpdate")).map((row) => [row.id, row])
          )
          const now = yield* Clock.currentTimeMillis
          const entities: Array<Entity<A>> = []
          const changed: Array<{ readonly row: SourceRow; readonly change: Change<A> }> = []
          for (const id of unique) {
            const row = stored.get(id)
            const before = row === undefined || row.state !== "live" ? null : (yield* decodeStored(row)).payload
            if (row === undefined || before === null) {
              return yield* new EntityNotFound({ entity: contract.name, entityId: id })
            }
            const after = f(before)
            const encoded = yield* encodePayload(after)
            if (sameJson(encoded, row.payload)) {
              entities.push(toEntity(row, before))
              continue
            }
            const next: SourceRow = { ...row, version: row.version + 1, payload: encoded, updatedAt: now }
            changed.push({ row: next, change: { action: "updated", before, after } })
            entities.push(toEntity(next, after))
          }
          if (changed.length === 0) return entities
          yield* whileOpen(
            `update ${contract.name}`,
            Effect.gen(function*() {
              const written = yield* source.updateMany(changed.map(({ row }) => row))
              if (written !== changed.length) {
                return yield* Effect.die(
                  new Error(`${contract.name}: rows read with a row lock were written concurrently`)
                )
              }
              const shared = yield* eventContext
              const occurredAt = new Date(now).toISOString()
              const events = changed.flatMap(({ change, row }) =>
                publishes(change, writeOptions)
                  ? [envelopeOf(shared, Envelope.messageIdAt(now), row, "updated", false, occurredAt)]
                  : []
              )
              if (events.length > 0) {
                const tx = yield* OutboxTransaction
                yield* tx.append(events)
                yield* annotateEvents(events)
              }
            })
          )
          return entities
        })
      ),
    delete: (id, writeOptions) =>
      traced(
        "delete",
        id,
        Effect.gen(function*() {
          const { payload: before, row } = yield* live(id, true)
          const now = yield* Clock.currentTimeMillis
          const next: SourceRow = {
            ...row,
            version: row.version + 1,
            state: "deleted",
            payload: null,
            updatedAt: now,
            deletedAt: now
          }
          return yield* write(next, row.version, { action: "deleted", before, after: null }, writeOptions)
        })
      ),
    softDelete: (id, writeOptions) =>
      traced(
        "softDelete",
        id,
        Effect.gen(function*() {
          const { payload: before, row } = yield* live(id, false)
          const now = yield* Clock.currentTimeMillis
          const next: SourceRow = {
            ...row,
            // as this contract shapes it: a row written by another version may hold fields it does not know
            payload: before === null ? null : yield* encodePayload(before),
            version: row.version + 1,
            state: "softDeleted",
            updatedAt: now,
            deletedAt: now
          }
          return yield* write(next, row.version, { action: "softDeleted", before, after: before }, writeOptions)
        })
      ),
    track: (id, statement, writeOptions) =>
      traced(
        "track",
        id,
        Effect.gen(function*() {
          const { payload: before, row } = yield* live(id, false)
          yield* statement
          const source = yield* SourceRepository
          const after = yield* source.get(contract.name, id)
          const now = yield* Clock.currentTimeMillis
          const version = row.version + 1
          if (after === null || after.state === "deleted") {
            const next: SourceRow = { ...row, version, state: "deleted", payload: null, updatedAt: now, deletedAt: now }
            return yield* write(next, row.version, { action: "deleted", before, after: null }, writeOptions)
          }
          if (after.version !== row.version || after.state === "live" && row.state !== "live") {
            return yield* Effect.die(
              new Error(
                `${contract.name}:${id}: the tracked statement changed the ${
                  after.version !== row.version ? "version column" : "entity's state back to live"
                }; leave the version to entity-sync and restore entities with create`
              )
            )
          }
          const { payload } = yield* decodeStored(after)
          if (after.state === "softDeleted") {
            const next: SourceRow = { ...after, version, updatedAt: now, deletedAt: after.deletedAt ?? now }
            return yield* write(next, row.version, { action: "softDeleted", before, after: payload }, writeOptions)
          }
          if (sameJson(after.payload, row.payload)) return toEntity(row, before)
          const next: SourceRow = { ...after, version, updatedAt: now }
          return yield* write(next, row.version, { action: "updated", before, after: payload }, writeOptions)
        })
      ),
    get: (id) =>
      Effect.flatMap(
        existing(id),
        (row) =>
          row === null ? Effect.succeed(null) : Effect.map(decodeStored(row), ({ payload }) => toEntity(row, payload))
      ),
    fullSync: (syncOptions) =>
      Effect.gen(function*() {
        const outbox = yield* Outbox
        const batchSize = syncOptions?.batchSize ?? 100
        let afterId: string | null = null
        let queued = 0
        while (true) {
          const page: ReadonlyArray<SourceRow> = yield* outbox.transaction(
            Effect.gen(function*() {
              const source = yield* SourceRepository
              const rows = yield* source.page(contract.name, {
                afterId,
                limit: batchSize,
                ...(syncOptions?.ids !== undefined ? { ids: syncOptions.ids } : {})
              })
              const events: Array<Envelope.Envelope> = []
              for (const stored of rows) {
                const { payload } = yield* decodeStored(stored)
                // as this contract shapes it: a row written by another version may hold fields it does not know
                const row = { ...stored, payload: payload === null ? null : yield* encodePayload(payload) }
                const action = snapshotAction[row.state]
                if (handleWhen({ action, before: payload, after: payload })) {
                  const event = yield* envelope(row, action, true)
                  events.push(syncOptions?.reset === true ? { ...event, reset: true } : event)
                }
              }
              const tx = yield* OutboxTransaction
              yield* tx.append(events)
              yield* annotateEvents(events)
              queued += events.length
              return rows
            }).pipe((page) => traced("fullSync", undefined, page))
          )
          const last = page.at(-1)
          if (last === undefined || page.length < batchSize) return queued
          afterId = last.id
          yield* Effect.logDebug("full sync progress", { entity: contract.name, queued, afterId })
        }
      })
  }
}

const snapshotAction: Record<CopyState, Envelope.Action> = {
  live: "snapshot",
  softDeleted: "softDeleted",
  deleted: "deleted"
}
