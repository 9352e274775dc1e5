/**
 * Subscriptions: the contracts a consumer reads, how their payloads are decoded and checked (R1 at the
 * consumer: only the owner's events are accepted), and the handler a consumer may run in the apply
 * transaction, whose error channel is limited to the sync errors and `SqlError` by the compiler.
 *
 * @since 0.1.0
 */
import { Effect, Result, Schema } from "effect"
import type { SqlError } from "effect/sql"
import type * as Contract from "./Contract.ts"
import type { CopyRow } from "./CopyRepository.ts"
import { bounded } from "./Envelope.ts"
import type * as Envelope from "./Envelope.ts"
import { type EntityRef, MalformedMessage, type SyncError } from "./Errors.ts"

/** An event handed to a subscription's handler, inside the apply transaction. */
export interface SyncEvent<A> {
  readonly envelope: Envelope.Envelope
  /** The decoded payload; null for a hard delete. */
  readonly payload: A | null
  /** The copy before this event, if any. */
  readonly previous: CopyRow | null
}

/** What a handler may fail with: the runtime's sync errors and `SqlError` — anything else must be handled. */
export type HandlerError = SyncError | SqlError.SqlError

/** An event decoded for its subscription: what it references, and its handler (none without one). */
export interface Prepared<R> {
  /**
   * The payload as the contract's schema shapes it (decoded, then encoded again): what the copy keeps,
   * without anything the schema does not know (R6). Null for a hard delete.
   */
  readonly payload: Schema.Json | null
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
  readonly prepare: (envelope: Envelope.Envelope) => Preparing<R>
}

/** Runs a `Preparing` as an Effect. */
export const prepared = <R>(preparing: Preparing<R>): Effect.Effect<Prepared<R>, MalformedMessage> =>
  Result.isResult(preparing) ? Effect.fromResult(preparing) : preparing

/**
 * Subscribes to a contract: its events keep a copy (CopyRepository) and run `handler`, if given, in the
 * same transaction — in a batch, after the batch's copies are written, in event order. The handler's error
 * channel is limited to `HandlerError` by the compiler.
 */
export const subscribe = <Name extends string, Owner extends string, A, I extends Schema.Json, R = never>(
  contract: Contract.Contract<Name, Owner, A, I>,
  options?: { readonly handler?: (event: SyncEvent<A>) => Effect.Effect<void, HandlerError, R> }
): Subscription<R> => {
  // Decoded synchronously when the schema allows it (any schema without asynchronous transformations).
  const decodeNow = Schema.decodeUnknownResult(contract.payload, { errors: "all" })
  const decodeLater = Schema.decodeUnknownEffect(contract.payload, { errors: "all" })
  const encodeNow = Schema.encodeResult(contract.payload)
  const encodeLater = Schema.encodeEffect(contract.payload)
  const malformed = (envelope: Envelope.Envelope, reason: MalformedMessage["reason"], detail: string) =>
    new MalformedMessage({
      reason,
      detail: bounded(detail, 1000),
      messageId: envelope.messageId,
      entity: envelope.entity
    })
  const handler = options?.handler
  const invalid = (envelope: Envelope.Envelope) => (error: Schema.SchemaError) =>
    malformed(envelope, "InvalidPayload", error.message.replace(/\n\s*/g, " "))
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
    return Result.succeed({
      payload: shaped,
      references: payload === null ? [] : contract.referencesOf(payload),
      handle: handler === undefined ? undefined : (previous) => handler({ envelope, payload, previous })
    })
  }
  // The payload decoded and encoded again, asynchronously: for schemas with asynchronous transformations.
  const prepareLater = (envelope: Envelope.Envelope, raw: Schema.Json) =>
    decodeLater(raw).pipe(
      Effect.flatMap((payload) => Effect.map(encodeLater(payload), (shaped) => ({ payload, shaped }))),
      Effect.mapError(invalid(envelope)),
      Effect.flatMap(({ payload, shaped }) => Effect.fromResult(withPayload(envelope, payload, shaped)))
    )
  return {
    contract,
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
      if (envelope.payload === null) return withPayload(envelope, null, null)
      let decoded: Result.Result<A, Schema.SchemaError>
      let shaped: Result.Result<Schema.Json, Schema.SchemaError>
      try {
        decoded = decodeNow(envelope.payload)
        if (Result.isFailure(decoded)) return Result.fail(invalid(envelope)(decoded.failure))
        shaped = encodeNow(decoded.success)
      } catch {
        return prepareLater(envelope, envelope.payload)
      }
      return Result.isSuccess(shaped)
        ? withPayload(envelope, decoded.success, shaped.success)
        : Result.fail(invalid(envelope)(shaped.failure))
    }
  }
}
