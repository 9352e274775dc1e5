/**
 * How the RabbitMQ adapter reads an AMQP message (internal: not exported by the package): the properties
 * it uses, decoded and never trusted; the headers it adds when it moves a message; the publisher RabbitMQ
 * vouches for (R11); the application's own headers, without the bookkeeping ones.
 *
 * @since 0.1.0
 */
import type { Message } from "amqplib"
import { reasonHeader, truncatedFromHeader } from "../Broker.ts"

/** The header that keeps a message's original routing key when the adapter moves it between queues. */
export const routingKeyHeader = "x-sync-routing-key"

/** The header with the epoch milliseconds at which the adapter dead-lettered a message. */
export const deadLetteredAtHeader = "x-sync-dead-lettered-at"

/**
 * The header with the original publisher of a message the adapter moved (released, dead-lettered,
 * replayed): the `user-id` RabbitMQ vouched for when it was first published, empty when it had none.
 * Trusted only on a message whose own `user-id` is the adapter's login.
 */
export const publishedByHeader = "x-sync-published-by"

/** The header with how many times a message had been delivered when the adapter dead-lettered it. */
export const deliveryCountHeader = "x-sync-delivery-count"

/** A message's headers as amqplib decodes them. */
export type RawHeaders = Readonly<Record<string, unknown>>

/** The properties of a message the adapter reads; one of an unexpected type is left out. */
export interface Properties {
  readonly messageId: string | undefined
  readonly type: string | undefined
  readonly contentType: string | undefined
  /** The `user-id` property, which RabbitMQ checked against the publishing connection's login. */
  readonly userId: string | undefined
  readonly headers: RawHeaders
}

const stringOf = (value: unknown): string | undefined => typeof value === "string" ? value : undefined

/** The properties of a message from the broker. */
export const propertiesOf = (message: Message): Properties => {
  const { contentType, headers, messageId, type, userId } = message.properties
  return {
    messageId: stringOf(messageId),
    type: stringOf(type),
    contentType: stringOf(contentType),
    userId: stringOf(userId),
    headers: typeof headers === "object" && headers !== null ? headers : {}
  }
}

/** A string header; undefined when absent or of another type. */
export const stringHeader = (headers: RawHeaders, name: string): string | undefined => {
  const value = headers[name]
  return typeof value === "string" ? value : undefined
}

/** A non-negative integer header (a string, as this adapter writes them, or a number); undefined otherwise. */
export const countHeader = (headers: RawHeaders, name: string): number | undefined => {
  const value = headers[name]
  const n = typeof value === "number" ? value : typeof value === "string" ? Number(value) : Number.NaN
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

/**
 * The publisher RabbitMQ vouches for: the `user-id`; for a message the adapter's own login moved, the
 * original publisher it recorded in `publishedByHeader` (empty: nobody vouched for it).
 *
 * Every message the adapter publishes — events, dead-letter copies, released copies, replays — carries the
 * `user-id` property set to the adapter's login, which RabbitMQ checks against the connection (R11). When
 * the adapter moves a message it keeps the original publisher in `publishedByHeader`, which is believed
 * only on a message whose `user-id` is the adapter's own login. RabbitMQ's own dead-lettering keeps the
 * `user-id` property, so its dead letters keep their publisher too.
 */
export const publisherOf = (properties: Properties, login: string): string | undefined => {
  if (properties.userId !== login) return properties.userId
  const original = stringHeader(properties.headers, publishedByHeader)
  if (original === undefined) return properties.userId
  return original === "" ? undefined : original
}

/** The longest routing key the adapter keeps from a header (AMQP's own limit for routing keys). */
const maxRoutingKeyLength = 255

/**
 * The routing key a message was first published with: the one the adapter's own login recorded in
 * `routingKeyHeader` when it moved the message, else the delivery's own. Anyone else's header is ignored.
 */
export const originalRoutingKey = (properties: Properties, login: string, routingKey: string): string => {
  const recorded = properties.userId === login ? stringHeader(properties.headers, routingKeyHeader) : undefined
  return recorded === undefined || recorded.length > maxRoutingKeyLength ? routingKey : recorded
}

const isBrokerPrefixed = (name: string) => name.startsWith("x-first-death-") || name.startsWith("x-last-death-")
const brokerHeaders = new Set([
  "x-death",
  "x-delivery-count",
  "CC", // sender-selected distribution: never copied, so a moved message goes to exactly one queue
  "BCC",
  routingKeyHeader,
  deadLetteredAtHeader,
  reasonHeader,
  publishedByHeader,
  deliveryCountHeader,
  truncatedFromHeader
])

/**
 * The application's headers of a message: string (and stringified number / boolean) values, without the
 * bookkeeping headers of RabbitMQ and of this adapter.
 */
export const applicationHeaders = (headers: RawHeaders): Record<string, string> => {
  const result: Record<string, string> = {}
  // (`for…in` with an own-property check: `Object.entries` makes an array per header of every message)
  for (const name in headers) {
    if (!Object.hasOwn(headers, name) || brokerHeaders.has(name) || isBrokerPrefixed(name)) continue
    const value = headers[name]
    if (typeof value === "string") result[name] = value
    else if (typeof value === "number" || typeof value === "boolean") result[name] = String(value)
  }
  return result
}
