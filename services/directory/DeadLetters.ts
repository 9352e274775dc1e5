/**
 * What the directory gave up on, in one list for operators, and how to replay it:
 *
 * * the consumer's dead letters (the inbox): events whose dependency never arrived (`DependencyMissing`)
 *   or that a handler rejected — with their attempts and first/last seen;
 * * the broker's dead letters of the consumer's queue: messages that could not be read at all
 *   (not JSON, wrong schema, unknown entity, too large…), each with its reason.
 *
 * Replaying puts an event back: an inbox one becomes due now (applied if its dependency has arrived since),
 * a broker one goes back to the queue.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { SqlError } from "effect/sql"
import { Broker } from "../../src/Broker.ts"
import * as Envelope from "../../src/Envelope.ts"
import type { BrokerUnavailable } from "../../src/Errors.ts"
import { SyncConsumer } from "../../src/SyncConsumer.ts"

/** One dead letter. Times are ISO-8601. */
export type DeadLetterRow = {
  readonly messageId: string
  /** Where it is kept: the consumer's inbox, or the broker's dead-letter queue. */
  readonly store: "inbox" | "broker"
  /** The error, e.g. `DependencyMissing`, or `Malformed` for what the broker holds. */
  readonly error: string
  readonly reason: string
  /** The entity, id and version of the event, when the message could be read. */
  readonly entity: string | null
  readonly id: string | null
  readonly version: number | null
  readonly attempts: number
  readonly firstSeenAt: string
  readonly lastSeenAt: string
}

const iso = (millis: number) => new Date(millis).toISOString()

/** Every dead letter of the consumer and of its queue, oldest first. */
export const list = (
  queue: string
): Effect.Effect<ReadonlyArray<DeadLetterRow>, SqlError.SqlError | BrokerUnavailable, SyncConsumer | Broker> =>
  Effect.gen(function*() {
    const consumer = yield* SyncConsumer
    const broker = yield* Broker
    const inbox = (yield* consumer.deadLetters).map((dead): DeadLetterRow => ({
      messageId: dead.messageId,
      store: "inbox",
      error: dead.error,
      reason: dead.reason,
      entity: dead.envelope.entity,
      id: dead.envelope.entityId,
      version: dead.envelope.version,
      attempts: dead.attempts,
      firstSeenAt: iso(dead.firstSeenAt),
      lastSeenAt: iso(dead.lastSeenAt)
    }))
    const fromBroker: Array<DeadLetterRow> = []
    for (const dead of (yield* broker.deadLetters(queue)).items) {
      const envelope = yield* Effect.option(Envelope.decode(dead.body))
      fromBroker.push({
        messageId: dead.messageId,
        store: "broker",
        error: "Malformed",
        reason: dead.reason,
        entity: envelope._tag === "Some" ? envelope.value.entity : null,
        id: envelope._tag === "Some" ? envelope.value.entityId : null,
        version: envelope._tag === "Some" ? envelope.value.version : null,
        attempts: 1,
        firstSeenAt: iso(dead.deadLetteredAt),
        lastSeenAt: iso(dead.deadLetteredAt)
      })
    }
    return [...inbox, ...fromBroker].sort((a, b) => a.lastSeenAt.localeCompare(b.lastSeenAt))
  })

/** Replays a dead letter; tells from which store, or null when there is no such dead letter. */
export const replay = (
  queue: string,
  messageId: string
): Effect.Effect<"inbox" | "broker" | null, SqlError.SqlError | BrokerUnavailable, SyncConsumer | Broker> =>
  Effect.gen(function*() {
    const consumer = yield* SyncConsumer
    if (yield* consumer.replay(messageId)) return "inbox"
    const broker = yield* Broker
    if (yield* broker.replayDeadLetter(queue, messageId)) return "broker"
    return null
  })
