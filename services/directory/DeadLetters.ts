/**
 * What the directory gave up on, for operators, over the library's `DeadLetters` (one paged listing of
 * the inbox's and the broker's dead letters, each with its real cause, and bulk replay by reason, entity
 * and time window), as the rows and bodies of its HTTP API:
 *
 * * the consumer's dead letters (the inbox): events whose dependency never arrived (`DependencyMissing`)
 *   or that a handler rejected — with their attempts and first/last seen;
 * * the broker's dead letters of the consumer's queue: messages that could not be read or were refused
 *   (`NotJson`, `InvalidPayload`, `ForgedProducer`, `DeliveryLimit`, …), with the broker's delivery count.
 *
 * Replaying puts an event back: an inbox one becomes due now (applied if its dependency has arrived since),
 * a broker one goes back to the queue.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { SqlError } from "effect/sql"
import { Broker, DeadLetters, type Errors, type Inbox, SyncConsumer } from "entity-sync"

/** One dead letter. Times are ISO-8601. */
export type DeadLetterRow = {
  readonly messageId: string
  /** Where it is kept: the consumer's inbox, or the broker's dead-letter queue. */
  readonly store: "inbox" | "broker"
  /** The cause, e.g. `DependencyMissing`, `NotJson`, `ForgedProducer`, `DeliveryLimit`. */
  readonly error: string
  readonly reason: string
  /** The entity, id and version of the event, as far as the message could be read. */
  readonly entity: string | null
  readonly id: string | null
  readonly version: number | null
  /** Inbox: attempts made; broker: deliveries before it was dead-lettered (0 when unknown). */
  readonly attempts: number
  readonly firstSeenAt: string
  readonly lastSeenAt: string
  /** When it was dead-lettered. */
  readonly deadLetteredAt: string
  /** Broker: the publisher the broker vouched for. */
  readonly publisher: string | null
  /** Broker: the original size of a body of which only a prefix was kept. */
  readonly truncatedFrom: number | null
}

/** One page of dead letters, with the cursor of the next and the totals of each store. */
export interface DeadLetterPage {
  readonly rows: ReadonlyArray<DeadLetterRow>
  readonly next: string | null
  readonly totals: { readonly inbox: number; readonly broker: number }
  readonly brokerUnlisted: number
}

const iso = (millis: number) => new Date(millis).toISOString()

const toRow = (entry: DeadLetters.DeadLetterEntry): DeadLetterRow => ({
  messageId: entry.messageId,
  store: entry.store,
  error: entry.error,
  reason: entry.reason,
  entity: entry.entity,
  id: entry.entityId,
  version: entry.version,
  attempts: entry.attempts,
  firstSeenAt: iso(entry.firstSeenAt),
  lastSeenAt: iso(entry.deadLetteredAt),
  deadLetteredAt: iso(entry.deadLetteredAt),
  publisher: entry.publisher,
  truncatedFrom: entry.truncatedFrom
})

/** One page of the consumer's dead letters (inbox and broker), oldest first. */
export const list = (
  service: string,
  options: { readonly limit?: number; readonly after?: string; readonly filter?: DeadLetters.Filter }
): Effect.Effect<
  DeadLetterPage,
  SqlError.SqlError | Errors.BrokerUnavailable | DeadLetters.InvalidCursor,
  Inbox.Inbox | Broker.Broker
> =>
  Effect.map(DeadLetters.list({ service }, options), (listing) => ({
    rows: listing.items.map(toRow),
    next: listing.next,
    totals: listing.totals,
    brokerUnlisted: listing.brokerUnlisted
  }))

/** Replays every dead letter matching `filter` in both stores; the counts per store. */
export const replayMatching = (
  service: string,
  filter: DeadLetters.Filter
): Effect.Effect<
  DeadLetters.Replayed,
  SqlError.SqlError | Errors.BrokerUnavailable,
  Inbox.Inbox | Broker.Broker | SyncConsumer.SyncConsumer
> =>
  DeadLetters.replay({ service }, filter).pipe(
    Effect.tap((replayed) =>
      replayed.inbox > 0 ? SyncConsumer.SyncConsumer.use((consumer) => consumer.lookAtParked) : Effect.void
    )
  )

/** Replays a dead letter; tells from which store, or null when there is no such dead letter. */
export const replay = (
  service: string,
  messageId: string
): Effect.Effect<
  "inbox" | "broker" | null,
  SqlError.SqlError | Errors.BrokerUnavailable,
  SyncConsumer.SyncConsumer | Broker.Broker
> =>
  Effect.gen(function*() {
    const consumer = yield* SyncConsumer.SyncConsumer
    if (yield* consumer.replay(messageId)) return "inbox"
    const broker = yield* Broker.Broker
    if (yield* broker.replayDeadLetter(DeadLetters.queueOf({ service }), messageId)) return "broker"
    return null
  })
