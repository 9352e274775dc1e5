/**
 * Forged events for the forgery suite: entity events that claim the owner as producer, published by
 * another service's login through every path RabbitMQ offers it, with what RabbitMQ must do with each
 * (confirm, or refuse and close the channel) and whether it reaches the consumer's queue.
 */
import { deadQueueOf, publishedByHeader, routingKeyHeader } from "../../src/amqp/RabbitBroker.ts"
import { reasonHeader } from "../../src/Broker.ts"
import * as Envelope from "../../src/Envelope.ts"
import { owner } from "./contract.ts"
import type { RawPublish } from "./vhost.ts"

/** The highest version a forged event claims: a copy holding it would ignore every later real event. */
export const forgedVersion = Number.MAX_SAFE_INTEGER

/** The body of a forged event about an `Item`: an update to `forgedVersion`, or a delete. */
export const forgedBody = (messageId: string, entityId: string, action: "updated" | "deleted"): string =>
  new TextDecoder().decode(Envelope.encode({
    messageId,
    entity: "Item",
    entityId,
    action,
    version: forgedVersion,
    contractVersion: 1,
    occurredAt: new Date().toISOString(),
    producer: owner,
    forceSync: false,
    payload: action === "deleted" ? null : { id: entityId, name: "forged", n: -1, tags: ["forged"] }
  }))

/** What RabbitMQ must do with an attempt. */
export type Expected =
  /** Confirmed and routed to the consumer's queue (or its dead queue): the consumer must reject it. */
  | "reaches"
  /** Confirmed, but no queue of the consumer is bound to it. */
  | "confirmedElsewhere"
  /** Refused: the channel is closed with this AMQP error. */
  | "ACCESS_REFUSED"
  | "PRECONDITION_FAILED"

/** One forgery attempt. */
export interface Attempt {
  readonly name: string
  readonly messageId: string
  readonly expected: Expected
  readonly publish: RawPublish
}

/** Where the test's objects are. */
export interface Targets {
  /** The consumer's queue. */
  readonly queue: string
  readonly intruderLogin: string
  readonly intruderService: string
  readonly ownerLogin: string
  /** An entity the owner created, and the message id of one of its real events. */
  readonly entityId: string
  readonly realMessageId: string
  /** A second entity the owner created. */
  readonly otherEntityId: string
}

const base = (messageId: string, type: string, userId: string | undefined, headers: Record<string, string> = {}) => ({
  persistent: true,
  messageId,
  type,
  contentType: "application/json",
  ...(userId === undefined ? {} : { userId }),
  headers
})

/** Every attempt of the intruder, run `n` (to make its message ids unique). */
export const attempts = (t: Targets, run: string): ReadonlyArray<Attempt> => {
  const id = (name: string) => `forged-${run}-${name}`
  const vouched = { [publishedByHeader]: t.ownerLogin, [routingKeyHeader]: `${owner}.Item.updated` }
  const attempt = (
    name: string,
    expected: Expected,
    exchange: string,
    routingKey: string,
    action: "updated" | "deleted",
    userId: string | undefined,
    options: { readonly entityId?: string; readonly messageId?: string; readonly headers?: Record<string, string> } = {}
  ): Attempt => {
    const messageId = options.messageId ?? id(name)
    return {
      name,
      messageId,
      expected,
      publish: {
        exchange,
        routingKey,
        body: forgedBody(messageId, options.entityId ?? t.entityId, action),
        options: base(messageId, `entitysync.Item.${action}`, userId, options.headers)
      }
    }
  }
  const ownKey = `${t.intruderService}.Item.updated`
  return [
    // the replay exchange routes by queue name to any queue: RabbitMQ lets it through, the consumer must not
    attempt("replay-update", "reaches", "sync.replay", t.queue, "updated", t.intruderLogin, { headers: vouched }),
    attempt("replay-delete", "reaches", "sync.replay", t.queue, "deleted", t.intruderLogin, { headers: vouched }),
    attempt("replay-no-user-id", "reaches", "sync.replay", t.queue, "updated", undefined, {
      entityId: t.otherEntityId,
      headers: vouched
    }),
    attempt("replay-real-message-id", "reaches", "sync.replay", t.queue, "updated", t.intruderLogin, {
      messageId: t.realMessageId
    }),
    // the dead-letter exchange routes to the consumer's dead queue; an operator replays it later
    attempt("dead-update", "reaches", "sync.dead", t.queue, "updated", t.intruderLogin, {
      headers: { ...vouched, [reasonHeader]: "Defect (injected): replay me" }
    }),
    attempt("dead-delete", "reaches", "sync.dead", t.queue, "deleted", undefined, { entityId: t.otherEntityId }),
    // its own events and resync requests are allowed, and reach no queue of the consumer
    attempt("events-own-key", "confirmedElsewhere", "sync.events", ownKey, "updated", t.intruderLogin),
    attempt(
      "events-resync-key",
      "confirmedElsewhere",
      "sync.events",
      `${owner}.resync.Item`,
      "updated",
      t.intruderLogin
    ),
    // the owner's routing keys: refused by its topic permission
    attempt("events-owner-key", "ACCESS_REFUSED", "sync.events", `${owner}.Item.updated`, "updated", t.intruderLogin),
    attempt("events-owner-delete", "ACCESS_REFUSED", "sync.events", `${owner}.Item.deleted`, "deleted", undefined),
    // the default exchange: not granted
    attempt("default-exchange", "ACCESS_REFUSED", "", t.queue, "updated", t.intruderLogin),
    attempt("default-exchange-dead", "ACCESS_REFUSED", "", deadQueueOf(t.queue), "updated", t.intruderLogin),
    // the owner's user-id: RabbitMQ checks it against the connection's login
    attempt("replay-as-owner", "PRECONDITION_FAILED", "sync.replay", t.queue, "updated", t.ownerLogin),
    attempt("events-as-owner", "PRECONDITION_FAILED", "sync.events", ownKey, "deleted", t.ownerLogin),
    attempt("dead-as-owner", "PRECONDITION_FAILED", "sync.dead", t.queue, "updated", t.ownerLogin)
  ]
}
