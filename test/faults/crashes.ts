/**
 * Broker wrappers that crash a relay or a consumer at the worst moment, once armed: a relay whose publish
 * is confirmed by the broker and then interrupted before the rows are marked published, a consumer whose
 * ack is interrupted after the apply committed, and a consumer interrupted as a delivery arrives, before
 * it is applied. Each incarnation signals its death on a `Deferred`.
 */
import { Deferred, Effect, Layer, Ref, Stream } from "effect"
import { Broker, type Delivery } from "../../src/Broker.ts"
import type { BrokerUnavailable } from "../../src/Errors.ts"
import type { BrokerWrapper } from "./stack.ts"

/** A crash point that fires on its first use once `arm` has run. */
export interface CrashPoint {
  readonly arm: Effect.Effect<void>
  readonly died: Deferred.Deferred<void>
  /** Interrupts the caller (after signalling `died`) if armed, else does nothing. */
  readonly fire: Effect.Effect<void>
}

/** Makes an unarmed crash point. */
export const makeCrashPoint: Effect.Effect<CrashPoint> = Effect.gen(function*() {
  const armed = yield* Ref.make(false)
  const died = yield* Deferred.make<void>()
  return {
    arm: Ref.set(armed, true),
    died,
    fire: Effect.flatMap(
      Ref.get(armed),
      (isArmed) => isArmed ? Effect.andThen(Deferred.succeed(died, undefined), Effect.interrupt) : Effect.void
    )
  }
})

/** The relay's broker: every publish is confirmed, then the crash point fires (before mark-published). */
export const dyingAfterPublish = (crash: CrashPoint): BrokerWrapper =>
  Layer.effect(
    Broker,
    Effect.gen(function*() {
      const broker = yield* Broker
      return Broker.of({ ...broker, publish: (batch) => Effect.andThen(broker.publish(batch), crash.fire) })
    })
  )

/** A consumer's broker whose deliveries pass through `f`. */
const withDeliveries = (
  f: (deliveries: Stream.Stream<Delivery, BrokerUnavailable>) => Stream.Stream<Delivery, BrokerUnavailable>
): BrokerWrapper =>
  Layer.effect(
    Broker,
    Effect.map(Broker, (broker) =>
      Broker.of({ ...broker, subscribe: (queue, options) => f(broker.subscribe(queue, options)) }))
  )

/** The consumer's broker: an ack (the apply has committed) fires the crash point instead of acking. */
export const dyingAtAck = (crash: CrashPoint): BrokerWrapper =>
  withDeliveries(Stream.map((delivery) => ({ ...delivery, ack: Effect.andThen(crash.fire, delivery.ack) })))

/** The consumer's broker: a delivery that arrives fires the crash point before the consumer sees it. */
export const dyingAtReceive = (crash: CrashPoint): BrokerWrapper =>
  withDeliveries(Stream.mapEffect((delivery) => Effect.as(crash.fire, delivery)))
