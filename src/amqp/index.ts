/**
 * `entity-sync/amqp`: the `Broker` on RabbitMQ through amqplib (an optional peer dependency needed only
 * by this entry point), its settings, and the permissions each service's login needs.
 *
 * @since 0.2.0
 */
export * as Permissions from "./Permissions.ts"
export * as RabbitBroker from "./RabbitBroker.ts"
export * as RabbitConfig from "./RabbitConfig.ts"
