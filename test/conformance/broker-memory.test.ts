/**
 * Runs the broker conformance suite on the memory broker, on the TestClock (the memory broker never needs
 * real time). A forced disconnect fails every subscription and the next publish, like a dropped
 * connection. The memory broker's state lives in its layer, so "a new client" re-exposes the same broker.
 * A failing dead-letter move is injected with `deadLetterMovesFail`.
 */
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Broker } from "../../src/Broker.ts"
import * as MemoryBroker from "../../src/memory/MemoryBroker.ts"
import { brokerConformance } from "./broker.ts"

brokerConformance("memory broker", () => MemoryBroker.layer(), {
  forceDisconnect: MemoryBroker.MemoryBroker.use((memory) =>
    Effect.andThen(memory.dropSubscriptions(), memory.publishFails(1))
  ),
  newClient: Layer.effect(Broker, Broker),
  pause: Effect.yieldNow,
  deliveryLimit: 20,
  elapse: TestClock.adjust("1 millis"),
  failDeadLetterMoves: () => MemoryBroker.MemoryBroker.use((memory) => memory.deadLetterMovesFail(1))
})
