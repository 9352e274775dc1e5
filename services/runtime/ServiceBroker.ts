/**
 * The broker a demo service talks to: RabbitMQ when `AMQP_URL` is set (with every `RabbitBroker` setting
 * read from the environment: `SYNC_EXCHANGE`, `SYNC_DEAD_EXCHANGE`, `AMQP_PREFETCH`, …), otherwise the
 * in-memory broker — which only connects services running in the same process (the demo).
 *
 * @since 0.1.0
 */
import { Config, Effect, Layer, Option } from "effect"
import type { Broker } from "../../src/Broker.ts"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import * as MemoryBroker from "../../src/memory/MemoryBroker.ts"

/** RabbitMQ from the environment when `AMQP_URL` is set; otherwise an in-memory broker (with a warning). */
export const layerConfig: Layer.Layer<Broker, Config.ConfigError> = Layer.unwrap(
  Effect.gen(function*() {
    const url = yield* Config.option(Config.Redacted("AMQP_URL"))
    if (Option.isSome(url)) return RabbitBroker.layerConfig
    yield* Effect.logWarning(
      "AMQP_URL is not set: using an in-memory broker, which reaches only services in this process"
    )
    return MemoryBroker.layer()
  })
)
