/**
 * How the consumer reads a delivery: its body decoded within the limits (R6), its producer checked (R11)
 * and its event routed to the subscription of its entity, which decodes the payload. What fails is a
 * `Rejection`, dead-lettered for that delivery alone — a defect met on the way too.
 *
 * @since 0.1.0
 */
import { Effect, Result } from "effect"
import type { Delivery } from "../Broker.ts"
import * as Envelope from "../Envelope.ts"
import { Defect, type ForgedProducer, MalformedMessage } from "../Errors.ts"
import type * as Metrics from "../Metrics.ts"
import type { Prepared, Preparing, Subscription } from "../Subscription.ts"
import { selfKey } from "./Decision.ts"
import type { Authenticate } from "./ProducerAuthentication.ts"

/** A delivery decoded, authenticated and routed. */
export interface Item<R> {
  /** The entity's key (`refKey`). */
  readonly key: string
  readonly delivery: Delivery
  readonly envelope: Envelope.Envelope
  readonly prepared: Prepared<R>
}

/** Why a delivery is dead-lettered as soon as it is read (R6, R11). */
export type Rejection = MalformedMessage | ForgedProducer | Defect

/** The outcome a rejection is counted as (R10). */
export const outcomeOf = (rejection: Rejection): Metrics.Outcome =>
  rejection._tag === "ForgedProducer"
    ? "forged"
    : rejection._tag === "Defect"
    ? "defect"
    : rejection.reason === "UnsupportedContractVersion"
    ? "unsupportedVersion"
    : "malformed"

/** A defect met while handling one delivery: dead-lettered for it alone (R6). */
export const defectOf = (delivery: Delivery, defect: unknown, entity?: string): Defect =>
  new Defect({
    messageId: Envelope.bounded(delivery.messageId),
    ...(entity === undefined ? {} : { entity: Envelope.bounded(entity) }),
    detail: Envelope.bounded(defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect), 500)
  })

/** The reading of deliveries for one consumer. */
export interface DeliveryDecoder<R> {
  /** The event decoded for its subscription (synchronously when it can be, see `Preparing`). */
  readonly route: (envelope: Envelope.Envelope) => Preparing<R>
  /**
   * A delivery read, or why it is rejected; defects are caught for the delivery alone. A `Result` when that
   * was synchronous (see `Preparing`), else an effect that gives it.
   */
  readonly decode: (
    delivery: Delivery,
    now: number
  ) => Result.Result<Item<R>, Rejection> | Effect.Effect<Result.Result<Item<R>, Rejection>>
}

/** The decoder of `consumer`, routing by entity to `routes` (its subscriptions by contract name). */
export const make = <R>(options: {
  readonly consumer: string
  readonly routes: ReadonlyMap<string, Subscription<R>>
  readonly limits: Envelope.Limits
  readonly authenticate: Authenticate
}): DeliveryDecoder<R> => {
  const { authenticate, consumer, limits, routes } = options

  const route = (envelope: Envelope.Envelope): Preparing<R> => {
    const subscription = routes.get(envelope.entity)
    if (subscription !== undefined) return subscription.prepare(envelope)
    return Result.fail(
      new MalformedMessage({
        reason: "UnknownEntity",
        detail: `consumer "${consumer}" does not subscribe to ${Envelope.bounded(envelope.entity)} (it knows ${
          [...routes.keys()].join(", ")
        })`,
        messageId: envelope.messageId,
        entity: Envelope.bounded(envelope.entity)
      })
    )
  }

  /** A delivery decoded, authenticated and routed; a `Result` when that was synchronous (see `Preparing`). */
  const decodeDelivery = (
    delivery: Delivery,
    now: number
  ): Result.Result<Item<R>, Rejection> | Effect.Effect<Item<R>, Rejection> => {
    const decoded = Envelope.decodeResult(delivery.body, limits)
    if (Result.isFailure(decoded)) return Result.fail(decoded.failure)
    const envelope = decoded.success
    const forged = authenticate(delivery, envelope, now)
    if (forged !== undefined) return Result.fail(forged)
    const preparing = route(envelope)
    const key = selfKey(envelope)
    if (!Result.isResult(preparing)) return Effect.map(preparing, (prepared) => ({ key, delivery, envelope, prepared }))
    return Result.isSuccess(preparing)
      ? Result.succeed({ key, delivery, envelope, prepared: preparing.success })
      : Result.fail(preparing.failure)
  }

  const decode = (
    delivery: Delivery,
    now: number
  ): Result.Result<Item<R>, Rejection> | Effect.Effect<Result.Result<Item<R>, Rejection>> => {
    let decoding: Result.Result<Item<R>, Rejection> | Effect.Effect<Item<R>, Rejection>
    try {
      decoding = decodeDelivery(delivery, now)
    } catch (defect) {
      return Result.fail(defectOf(delivery, defect))
    }
    return Result.isResult(decoding) ? decoding : Effect.result(decoding).pipe(
      Effect.catchDefect((defect) => Effect.succeed(Result.fail(defectOf(delivery, defect))))
    )
  }

  return { route, decode }
}
