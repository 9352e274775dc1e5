/**
 * The broker a demo service talks to: RabbitMQ when `AMQP_URL` is set (with every `RabbitBroker` setting
 * read from the environment: `SYNC_EXCHANGE`, `SYNC_DEAD_EXCHANGE`, `AMQP_PREFETCH`, …), otherwise the
 * in-memory broker — which only connects services running in the same process (the demo).
 *
 * @since 0.1.0
 */
import amqp from "amqplib"
import { Config, Effect, Layer, Option, Redacted, Schema } from "effect"
import type { Broker } from "entity-sync"
import { RabbitBroker } from "entity-sync/amqp"
import { MemoryBroker } from "entity-sync/memory"

/** RabbitMQ from the environment when `AMQP_URL` is set; otherwise an in-memory broker (with a warning). */
export const layerConfig: Layer.Layer<Broker.Broker, Config.ConfigError> = Layer.unwrap(
  Effect.gen(function*() {
    const url = yield* Config.option(Config.Redacted("AMQP_URL"))
    if (Option.isSome(url)) return RabbitBroker.layerConfig
    yield* Effect.logWarning(
      "AMQP_URL is not set: using an in-memory broker, which reaches only services in this process"
    )
    return MemoryBroker.layer()
  })
)

/** Why a broker probe failed: what an operator is told (`summary`) and the library's own text (for the log). */
export class BrokerProbeFailed extends Schema.TaggedError<BrokerProbeFailed>()("BrokerProbeFailed", {
  summary: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `${this.summary}: ${this.detail}`
  }
}

const describeBrokerFailure = (detail: string): string =>
  /ACCESS[-_]REFUSED/.test(detail)
    ? "the broker refused the login (check the user and password in AMQP_URL)"
    : /NOT[-_]ALLOWED|vhost/i.test(detail)
    ? "the broker refused access to the virtual host (check AMQP_URL's virtual host and the user's permissions)"
    : "the broker cannot be reached (check the host and port in AMQP_URL, and that it runs)"

/**
 * Opens a connection to the RabbitMQ server at `url` and closes it (at most 5 seconds): whether the
 * service could start on it now.
 */
export const probe = (url: Redacted.Redacted): Effect.Effect<void, BrokerProbeFailed> =>
  Effect.tryPromise({
    try: async () => {
      const connection = await amqp.connect(Redacted.value(url), { timeout: 5_000 })
      connection.on("error", () => undefined)
      await connection.close()
    },
    catch: (cause) => {
      const detail = cause instanceof Error ? cause.message : String(cause)
      return new BrokerProbeFailed({ summary: describeBrokerFailure(detail), detail })
    }
  })
