/**
 * Subscriptions: the contracts a consumer reads, how their payloads are decoded and checked (R1 at the
 * consumer: only the owner's events are accepted), and the handler a consumer may run in the apply
 * transaction, whose error channel is limited to the sync errors and `SqlError` by the compiler. A
 * subscription whose handler keeps the data in the consumer's own table may keep a ledger only
 * (`keepPayload: false`): copies without payloads, under the same sync rules.
 *
 * @since 0.1.0
 */
import { Effect, Result, Schema, SchemaAST } from "effect"
import type { SqlError } from "effect/sql"
import type * as Contract from "./Contract.ts"
import type { CopyRow, LedgerRow } from "./CopyRepository.ts"
import { bounded } from "./Envelope.ts"
import type * as Envelope from "./Envelope.ts"
import { type EntityRef, MalformedMessage, type SyncError } from "./Errors.ts"

/**
 * An event handed to a subscription's handler, inside the apply transaction. `Previous` is `LedgerRow` for
 * a ledger-only subscription (`LedgerEvent`): its previous copy keeps no payload.
 */
export interface SyncEvent<A, Previous extends CopyRow = CopyRow> {
  readonly envelope: Envelope.Envelope
  /** The decoded payload; null for a hard delete. */
  readonly payload: A | null
  /**
   * The copy before this event, if any: its version and state, and its payload unless the subscription
   * keeps a ledger only (then there is no stored previous payload: the handler's own table has it).
   */
  readonly previous: Previous | null
}

/** The event a ledger-only subscription's handler gets: the previous copy is a `LedgerRow`, no payload. */
export type LedgerEvent<A> = SyncEvent<A, LedgerRow>

/** What a handler may fail with: the runtime's sync errors and `SqlError` — anything else must be handled. */
export type HandlerError = SyncError | SqlError.SqlError

/** An event decoded for its subscription: what it references, and its handler (none without one). */
export interface Prepared<R> {
  /**
   * The payload as the contract's schema shapes it (decoded, then encoded again): what the copy keeps,
   * without anything the schema does not know (R6). Null for a hard delete, and always for a ledger-only
   * subscription.
   */
  readonly payload: Schema.Json | null
  /**
   * For a ledger-only subscription's copy, which keeps no payload: the ids its dependency fields hold, by
   * field (`CopyRow.references`). Absent when the payload is kept, or for a hard delete.
   */
  readonly ledgerReferences?: Readonly<Record<string, string>>
  readonly references: ReadonlyArray<EntityRef>
  readonly handle: ((previous: CopyRow | null) => Effect.Effect<void, HandlerError, R>) | undefined
}

/**
 * An event decoded for its subscription: a `Result` when the payload schema decodes synchronously (any
 * schema without asynchronous transformations), an Effect otherwise.
 */
export type Preparing<R> =
  | Result.Result<Prepared<R>, MalformedMessage>
  | Effect.Effect<Prepared<R>, MalformedMessage>

/** A contract a consumer subscribes to, with an optional handler run in the apply transaction. */
export interface Subscription<R> {
  readonly contract: Contract.Any
  /** Whether its copies keep their payloads (`SubscribeOptions.keepPayload`); false: a ledger only. */
  readonly keepPayload: boolean
  readonly prepare: (envelope: Envelope.Envelope) => Preparing<R>
}

/** Options of `subscribe`. */
export interface SubscribeOptions<A, R> {
  /**
   * Whether the copies keep each entity's payload (default true). `false` keeps a ledger only — entity,
   * id, version, state, times and the ids its dependency fields hold, a null payload — for a subscription
   * whose handler stores the data in the consumer's own table. Every sync rule holds as with payloads:
   * dedupe (R3), the version guard and stale events (R4), waiting for dependencies (which needs only that
   * the referenced copy exists and is not a tombstone) and a hard delete waiting while copies reference the
   * entity (R5), soft deletes (R7), snapshots and resets (R8). What reads a copy's payload
   * (`CopyRepository.get`/`list`, the handler's `previous`) finds null: read the handler's table instead.
   * Switching an existing subscription to `false` drops each payload at the entity's next event; switching
   * back leaves copies without payloads until their next event or a full sync (a snapshot at an equal
   * version is applied, R8). Written as the literal `false`, the handler's `previous` is typed `LedgerRow`
   * (see `LedgerOptions`).
   */
  readonly keepPayload?: boolean
  /**
   * Run in the apply transaction for every event that changes the copy (never for a duplicate or a stale
   * one); its error channel is limited to `HandlerError` by the compiler.
   */
  readonly handler?: (event: SyncEvent<A>) => Effect.Effect<void, HandlerError, R>
}

/**
 * Options of a ledger-only subscription (`keepPayload: false`, see `SubscribeOptions.keepPayload`): the
 * handler's `previous` is a `LedgerRow` — there is no stored previous payload.
 */
export interface LedgerOptions<A, R> {
  readonly keepPayload: false
  /** As `SubscribeOptions.handler`, with the previous copy as a ledger row. */
  readonly handler?: (event: LedgerEvent<A>) => Effect.Effect<void, HandlerError, R>
}

/** Whether a copy keeps no payload: a tombstone, or a ledger row. */
const isLedgerRow = (row: CopyRow): row is LedgerRow => row.payload === null

/** A copy as a ledger-only subscription's handler sees it: without its payload. */
const ledgerRowOf = (row: CopyRow | null): LedgerRow | null =>
  row === null || isLedgerRow(row) ? row : { ...row, payload: null }

/** Runs a `Preparing` as an Effect. */
export const prepared = <R>(preparing: Preparing<R>): Effect.Effect<Prepared<R>, MalformedMessage> =>
  Result.isResult(preparing) ? Effect.fromResult(preparing) : preparing

/**
 * Subscribes to a contract: its events keep a copy (CopyRepository) and run `handler`, if given, in the
 * same transaction — in a batch, after the batch's copies are written, in event order. The handler's error
 * channel is limited to `HandlerError` by the compiler. With `keepPayload: false` the copies are a ledger
 * without payloads, and the handler's previous copy a `LedgerRow` (see `SubscribeOptions.keepPayload`).
 */
export function subscribe<Name extends string, Owner extends string, A, I extends Schema.Json, R = never>(
  contract: Contract.Contract<Name, Owner, A, I>,
  options: LedgerOptions<A, R>
): Subscription<R>
export function subscribe<Name extends string, Owner extends string, A, I extends Schema.Json, R = never>(
  contract: Contract.Contract<Name, Owner, A, I>,
  options?: SubscribeOptions<A, R>
): Subscription<R>
export function subscribe<Name extends string, Owner extends string, A, I extends Schema.Json, R = never>(
  contract: Contract.Contract<Name, Owner, A, I>,
  options?: LedgerOptions<A, R> | SubscribeOptions<A, R>
): Subscription<R> {
  // Decoded synchronously when the schema allows it (any schema without asynchronous transformations), from
  // the current contract version or upcast from an earlier one. A payload is decoded up to its first issue,
  // Effect's fast path; only an invalid one is decoded again for all its issues, to report them together.
  const decoders = new Map(
    [{ version: contract.version, upcast: contract.payload }, ...contract.earlier].map(({ upcast, version }) => {
      const firstIssue = Schema.decodeUnknownResult(upcast)
      const allIssues = Schema.decodeUnknownResult(upcast, { errors: "all" })
      return [version, {
        now: (payload: unknown) => {
          const decoded = firstIssue(payload)
          return Result.isSuccess(decoded) ? decoded : allIssues(payload)
        },
        later: Schema.decodeUnknownEffect(upcast, { errors: "all" })
      }]
    })
  )
  const encodeNow = Schema.encodeResult(contract.payload)
  // A payload schema without transformations (no encoding anywhere in it) encodes a value it decoded to an
  // equal value: the decoded payload of the current version is its own JSON shape, and is not encoded again
  // (the guard rests on that check: without encodings the schema's type is its encoded type, which is JSON).
  const encodesToItself = SchemaAST.toType(contract.payload.ast) === contract.payload.ast
  const isOwnShape = (version: number, _payload: A): _payload is A & Schema.Json =>
    encodesToItself && version === contract.version
  const encodeLater = Schema.encodeEffect(contract.payload)
  const malformed = (envelope: Envelope.Envelope, reason: MalformedMessage["reason"], detail: string) =>
    new MalformedMessage({
      reason,
      detail: bounded(detail, 1000),
      messageId: envelope.messageId,
      entity: envelope.entity
    })
  const keepPayload = options?.keepPayload !== false
  // A ledger-only copy keeps the ids its dependency fields hold in place of the payload (for R5).
  const dependencyFields = contract.dependencies.map((d) => d.field)
  const ledgerReferencesOf = (payload: A): Readonly<Record<string, string>> | undefined => {
    if (dependencyFields.length === 0) return undefined
    const references: Record<string, string> = {}
    for (const field of dependencyFields) {
      const id: unknown = typeof payload === "object" && payload !== null ? Reflect.get(payload, field) : undefined
      if (typeof id === "string") references[field] = id
    }
    return references
  }
  const invalid = (envelope: Envelope.Envelope) => (error: Schema.SchemaError) =>
    malformed(
      envelope,
      "InvalidPayload",
      `${envelope.contractVersion === contract.version ? "" : `(contract version ${envelope.contractVersion}) `}${
        error.message.replace(/\n\s*/g, " ")
      }`
    )
  const withPayload = (
    envelope: Envelope.Envelope,
    payload: A | null,
    shaped: Schema.Json | null
  ): Result.Result<Prepared<R>, MalformedMessage> => {
    if (payload !== null && contract.idOf(payload) !== envelope.entityId) {
      return Result.fail(malformed(
        envelope,
        "InvalidPayload",
        `the payload's ${contract.idField} is "${bounded(contract.idOf(payload))}" but the envelope's entityId is "${
          bounded(envelope.entityId)
        }"`
      ))
    }
    const references = payload === null ? [] : contract.referencesOf(payload)
    if (options?.keepPayload !== false) {
      const handler = options?.handler
      return Result.succeed({
        payload: shaped,
        references,
        handle: handler === undefined ? undefined : (previous) => handler({ envelope, payload, previous })
      })
    }
    const handler = options.handler
    const ledgerReferences = payload === null ? undefined : ledgerReferencesOf(payload)
    return Result.succeed({
      payload: null,
      ...(ledgerReferences === undefined ? {} : { ledgerReferences }),
      references,
      handle: handler === undefined ?
        undefined :
        (previous) => handler({ envelope, payload, previous: ledgerRowOf(previous) })
    })
  }
  // The payload decoded and encoded again, asynchronously: for schemas with asynchronous transformations.
  // A ledger-only copy keeps no payload: nothing to encode.
  const prepareLater = (
    envelope: Envelope.Envelope,
    raw: Schema.Json,
    decodeLater: (raw: unknown) => Effect.Effect<A, Schema.SchemaError>
  ) =>
    decodeLater(raw).pipe(
      Effect.flatMap((payload): Effect.Effect<
        { readonly payload: A; readonly shaped: Schema.Json | null },
        Schema.SchemaError
      > =>
        keepPayload
          ? Effect.map(encodeLater(payload), (shaped) => ({ payload, shaped }))
          : Effect.succeed({ payload, shaped: null })
      ),
      Effect.mapError(invalid(envelope)),
      Effect.flatMap(({ payload, shaped }) => Effect.fromResult(withPayload(envelope, payload, shaped)))
    )
  return {
    contract,
    keepPayload,
    prepare: (envelope) => {
      if (envelope.producer !== contract.owner) {
        return Result.fail(malformed(
          envelope,
          "InvalidEnvelope",
          `${contract.name} is owned by "${contract.owner}", but the message was produced by "${
            bounded(envelope.producer)
          }"`
        ))
      }
      const decoder = decoders.get(envelope.contractVersion)
      if (decoder === undefined) {
        return Result.fail(malformed(
          envelope,
          "UnsupportedContractVersion",
          `${contract.name} version ${envelope.contractVersion} is newer than this consumer knows (version ${contract.version}): upgrade the consumer's contract, then replay this dead letter`
        ))
      }
      if (envelope.payload === null) return withPayload(envelope, null, null)
      let decoded: Result.Result<A, Schema.SchemaError>
      let shaped: Result.Result<Schema.Json, Schema.SchemaError>
      try {
        decoded = decoder.now(envelope.payload)
        if (Result.isFailure(decoded)) return Result.fail(invalid(envelope)(decoded.failure))
        if (!keepPayload) return withPayload(envelope, decoded.success, null)
        const payload = decoded.success
        if (isOwnShape(envelope.contractVersion, payload)) return withPayload(envelope, payload, payload)
        shaped = encodeNow(payload)
      } catch {
        return prepareLater(envelope, envelope.payload, decoder.later)
      }
      return Result.isSuccess(shaped)
        ? withPayload(envelope, decoded.success, shaped.success)
        : Result.fail(invalid(envelope)(shaped.failure))
    }
  }
}
