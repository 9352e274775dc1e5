/**
 * The dead letters of a consumer service as an operator sees them: one listing of what its inbox gave up
 * on (`Inbox` dead rows: `DependencyMissing`, a handler's rejection…) and of what the broker holds in the
 * dead-letter store of its queue `<service>.sync` (messages that could not be read, forged ones, the
 * delivery limit…), each with its real cause, and one bulk replay over both by reason, entity and time
 * window — an incident is one call, not a loop.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Result, Schema } from "effect"
import type { SqlError } from "effect/sql"
import {
  boundReason,
  Broker,
  type DeadLetter,
  deliveryLimitReason,
  entityOfRoutingKey,
  maxDeadLetterPage,
  rejectedReason
} from "./Broker.ts"
import * as Envelope from "./Envelope.ts"
import type { BrokerUnavailable } from "./Errors.ts"
import { type DeadRow, type DeadRowCursor, type DeadRowFilter, Inbox, pageSize } from "./Inbox.ts"

/** Where a dead letter is kept. */
export type Store = "inbox" | "broker"

/** One dead letter, from either store. Times are epoch milliseconds; every string is bounded. */
export interface DeadLetterEntry {
  readonly store: Store
  readonly messageId: string
  /**
   * The cause as a tag: the inbox's error tag (`DependencyMissing`, …), or for a broker dead letter the tag
   * its reason starts with (`NotJson`, `InvalidPayload`, `ForgedProducer`, `Defect`, …) or the broker's own
   * cause (`DeliveryLimit`, `Rejected`, `Expired`, `QueueLengthLimit`); `Unknown` when there is none.
   */
  readonly error: string
  /** The readable reason (at most `maxReasonBytes` UTF-8 bytes). */
  readonly reason: string
  /** The event's entity, id and version, as far as the message can be read. */
  readonly entity: string | null
  readonly entityId: string | null
  readonly version: number | null
  /** Inbox: the attempts made; broker: how many times the message had been delivered (0 when unknown). */
  readonly attempts: number
  /** When the consumer first saw it (inbox), or when it was dead-lettered (broker). */
  readonly firstSeenAt: number
  /** When it was dead-lettered. */
  readonly deadLetteredAt: number
  /** Broker: the publisher the broker vouched for, if any. */
  readonly publisher: string | null
  /** Broker: the original body size when the dead letter keeps only a prefix of it. */
  readonly truncatedFrom: number | null
}

/** Which dead letters a listing or a bulk replay takes; every given condition must hold. */
export interface Filter {
  /**
   * Only these causes: an inbox row's error tag; a broker dead letter's `error` tag or its whole reason
   * (e.g. `NotJson`, `DependencyMissing`, `DeliveryLimit`, `delivery limit reached`).
   */
  readonly reasons?: ReadonlyArray<string>
  /** Only events of these entities. */
  readonly entities?: ReadonlyArray<string>
  /** Only dead letters dead-lettered at or after this time (epoch milliseconds). */
  readonly from?: number
  /** Only dead letters dead-lettered before this time (epoch milliseconds). */
  readonly to?: number
}

/** The consumer service whose dead letters are meant. */
export interface Target {
  /** The consumer service's name (its inbox rows' consumer). */
  readonly service: string
  /** Its queue (default `<service>.sync`). */
  readonly queue?: string
}

/** One page of the listing. */
export interface Listing {
  /** Oldest first within each store, the two stores merged by time. */
  readonly items: ReadonlyArray<DeadLetterEntry>
  /** The cursor of the next page (pass it as `after`); null when this page is the last. */
  readonly next: string | null
  /** How many dead letters each store holds in all (filter aside). */
  readonly totals: { readonly inbox: number; readonly broker: number }
  /** Broker dead letters past the window one page read may reach (`maxDeadLetterPage`); not listed. */
  readonly brokerUnlisted: number
}

/** What a bulk replay moved back, per store. */
export interface Replayed {
  /** Inbox rows made due now, attempts reset. */
  readonly inbox: number
  /** Broker dead letters moved back to the queue. */
  readonly broker: number
  /** Broker dead letters past the window one replay reads (`maxDeadLetterPage`): call again for them. */
  readonly brokerUnread: number
}

/** A listing cursor that this module did not make (or that was altered). */
export class InvalidCursor extends Schema.TaggedError<InvalidCursor>()("InvalidCursor", {
  message: Schema.String
}) {}

/** The queue of a target. */
export const queueOf = (target: Target): string => target.queue ?? `${target.service}.sync`

/** The longest message id, entity name or entity id an entry shows. */
const maxShown = 255

const brokerCauses: ReadonlyMap<string, string> = new Map([
  [deliveryLimitReason, "DeliveryLimit"],
  [rejectedReason, "Rejected"],
  ["message expired", "Expired"],
  ["queue length limit reached", "QueueLengthLimit"]
])

const leadingTag = /^([A-Z][A-Za-z0-9]{0,63})(?=$|[\s:(])/

/** The cause tag of a broker dead letter's reason (see `DeadLetterEntry.error`). */
export const causeOf = (reason: string): string => brokerCauses.get(reason) ?? leadingTag.exec(reason)?.[1] ?? "Unknown"

const decoder = new TextDecoder("utf-8", { fatal: false })

/** A string field of a parsed object, bounded; null when absent or not a non-empty string. */
const stringField = (json: object, name: string): string | null => {
  const value: unknown = Reflect.get(json, name)
  return typeof value === "string" && value.length > 0 ? Envelope.bounded(value, maxShown) : null
}

/**
 * What a broker dead letter's body tells about its event, read defensively: a broker dead letter may be
 * anything a client published, so it is an envelope when it is one, otherwise whatever fields can be read,
 * bounded, otherwise the routing key's entity.
 */
export const describeBody = (
  body: Uint8Array,
  routingKey: string
): { readonly entity: string | null; readonly entityId: string | null; readonly version: number | null } => {
  const fromRoutingKey = () => {
    const entity = entityOfRoutingKey(routingKey)
    return {
      entity: entity === undefined || entity === "" ? null : Envelope.bounded(entity, maxShown),
      entityId: null,
      version: null
    }
  }
  const decoded = Envelope.decodeResult(body)
  if (Result.isSuccess(decoded)) {
    const envelope = decoded.success
    return {
      entity: Envelope.bounded(envelope.entity, maxShown),
      entityId: Envelope.bounded(envelope.entityId, maxShown),
      version: envelope.version
    }
  }
  if (body.byteLength > Envelope.defaultMaxBytes) return fromRoutingKey()
  let json: unknown
  try {
    json = JSON.parse(decoder.decode(body))
  } catch {
    return fromRoutingKey()
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) return fromRoutingKey()
  const version: unknown = Reflect.get(json, "version")
  const entity = stringField(json, "entity")
  return {
    entity: entity ?? fromRoutingKey().entity,
    entityId: stringField(json, "entityId"),
    version: typeof version === "number" && Number.isSafeInteger(version) ? version : null
  }
}

/** A broker dead letter as an entry. */
export const fromBroker = (dead: DeadLetter): DeadLetterEntry => {
  const reason = boundReason(dead.reason)
  return {
    store: "broker",
    messageId: Envelope.bounded(dead.messageId, maxShown),
    error: causeOf(reason),
    reason,
    ...describeBody(dead.body, dead.routingKey),
    attempts: dead.deliveryCount,
    firstSeenAt: dead.deadLetteredAt,
    deadLetteredAt: dead.deadLetteredAt,
    publisher: dead.publisher === undefined ? null : Envelope.bounded(dead.publisher, maxShown),
    truncatedFrom: dead.truncatedFrom ?? null
  }
}

/** An inbox dead row as an entry. */
export const fromInbox = (dead: DeadRow): DeadLetterEntry => ({
  store: "inbox",
  messageId: dead.messageId,
  error: dead.error,
  reason: boundReason(dead.reason),
  entity: dead.envelope.entity,
  entityId: dead.envelope.entityId,
  version: dead.envelope.version,
  attempts: dead.attempts,
  firstSeenAt: dead.firstSeenAt,
  deadLetteredAt: dead.lastSeenAt,
  publisher: null,
  truncatedFrom: null
})

/** The inbox's part of a filter. */
const inboxFilter = (filter: Filter | undefined): DeadRowFilter => ({
  ...(filter?.reasons !== undefined ? { errors: filter.reasons } : {}),
  ...(filter?.entities !== undefined ? { entities: filter.entities } : {}),
  ...(filter?.from !== undefined ? { from: filter.from } : {}),
  ...(filter?.to !== undefined ? { to: filter.to } : {})
})

/** Whether a broker dead letter (as an entry) matches a filter. */
export const matchesBroker = (filter: Filter | undefined) => (entry: DeadLetterEntry): boolean =>
  filter === undefined ||
  ((filter.reasons === undefined || filter.reasons.includes(entry.error) || filter.reasons.includes(entry.reason)) &&
    (filter.entities === undefined || (entry.entity !== null && filter.entities.includes(entry.entity))) &&
    (filter.from === undefined || entry.deadLetteredAt >= filter.from) &&
    (filter.to === undefined || entry.deadLetteredAt < filter.to))

// ---------------------------------------------------------------------------------------------------
// The cursor: where each store's part of the listing stands

const Cursor = Schema.Struct({
  /** The inbox's keyset cursor; null: from the start; "end": the inbox part is done. */
  inbox: Schema.Union([
    Schema.Null,
    Schema.Literal("end"),
    Schema.Struct({ firstSeenAt: Schema.Int, messageId: Schema.String.check(Schema.isMaxLength(4096)) })
  ]),
  /** How many broker dead letters (from the oldest, filter aside) earlier pages went past. */
  broker: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: maxDeadLetterPage }))
})
type Cursor = typeof Cursor.Type

const CursorJson = Schema.fromJsonString(Cursor)
const decodeCursorJson = Schema.decodeUnknownResult(CursorJson)
const encodeCursorJson = Schema.encodeSync(CursorJson)

/** The longest cursor accepted, in characters. */
const maxCursorLength = 8192

/** A cursor as the opaque string given to callers (base64url of its JSON). */
const encodeCursor = (cursor: Cursor): string => Buffer.from(encodeCursorJson(cursor), "utf8").toString("base64url")

/** A cursor string back, or `InvalidCursor`. */
export const decodeCursor = (text: string): Result.Result<Cursor, InvalidCursor> => {
  const invalid = () => Result.fail(new InvalidCursor({ message: "the cursor is not one a dead-letter listing gave" }))
  if (text.length > maxCursorLength || !/^[A-Za-z0-9_-]*$/.test(text)) return invalid()
  const decoded = decodeCursorJson(Buffer.from(text, "base64url").toString("utf8"))
  return Result.isSuccess(decoded) ? Result.succeed(decoded.success) : invalid()
}

// ---------------------------------------------------------------------------------------------------
// Listing and replay

/**
 * One page of a consumer service's dead letters, inbox and broker together: at most `limit` (default 100,
 * at most 1000), after the cursor of the previous page (`Listing.next`). Each store keeps its own order and
 * position in the cursor, so a page never repeats or skips a dead letter of the inbox; the broker's
 * position counts messages of its dead-letter queue, so replays between two pages may shift it.
 *
 * No store is read whole: the inbox side is keyset-paged, the broker side reads at most one page of the
 * dead-letter queue (`Broker.deadLetters(queue, { limit })`, never more than `maxDeadLetterPage` messages).
 * Broker dead letters beyond that window are counted (`brokerUnlisted`) but cannot be listed until earlier
 * ones are replayed or removed.
 */
export const list = (
  target: Target,
  options?: { readonly limit?: number; readonly after?: string; readonly filter?: Filter }
): Effect.Effect<Listing, SqlError.SqlError | BrokerUnavailable | InvalidCursor, Inbox | Broker> =>
  Effect.gen(function*() {
    const inbox = yield* Inbox
    const broker = yield* Broker
    const limit = pageSize(options?.limit)
    const cursor: Cursor = options?.after === undefined
      ? { inbox: null, broker: 0 }
      : yield* Result.match(decodeCursor(options.after), { onFailure: Effect.fail, onSuccess: Effect.succeed })
    const filter = options?.filter

    const stats = yield* inbox.stats(target.service)
    const inboxPage = cursor.inbox === "end"
      ? { items: [], next: null }
      : yield* inbox.deadLetterPage(target.service, {
        limit,
        filter: inboxFilter(filter),
        ...(cursor.inbox !== null ? { after: cursor.inbox } : {})
      })
    const window = Math.min(maxDeadLetterPage, cursor.broker + limit)
    const brokerPage = yield* broker.deadLetters(queueOf(target), { limit: limit === 0 ? 0 : window })
    const read = brokerPage.items.slice(cursor.broker)
    const candidates = read
      .map((dead, i) => ({ position: cursor.broker + i, entry: fromBroker(dead) }))
      .filter(({ entry }) => matchesBroker(filter)(entry))

    // merge the two heads by time, taking at most `limit`
    const items: Array<DeadLetterEntry> = []
    let i = 0
    let b = 0
    while (items.length < limit && (i < inboxPage.items.length || b < candidates.length)) {
      const fromInboxRow = inboxPage.items[i]
      const fromBrokerRow = candidates[b]
      if (
        fromInboxRow !== undefined &&
        (fromBrokerRow === undefined || fromInboxRow.firstSeenAt <= fromBrokerRow.entry.deadLetteredAt)
      ) {
        items.push(fromInbox(fromInboxRow))
        i++
      } else if (fromBrokerRow !== undefined) {
        items.push(fromBrokerRow.entry)
        b++
      }
    }

    const lastInbox = inboxPage.items[i - 1]
    const nextInbox: Cursor["inbox"] = i === inboxPage.items.length
      ? (inboxPage.next ?? (limit === 0 ? cursor.inbox : "end"))
      : lastInbox === undefined
      ? cursor.inbox
      : ({ firstSeenAt: lastInbox.firstSeenAt, messageId: lastInbox.messageId } satisfies DeadRowCursor)
    const nextBroker = b === candidates.length ? cursor.broker + read.length : candidates[b]!.position
    const listable = Math.min(brokerPage.total, maxDeadLetterPage)
    const done = limit === 0 || (nextInbox === "end" && nextBroker >= listable)
    return {
      items,
      next: done ? null : encodeCursor({ inbox: nextInbox, broker: Math.min(nextBroker, maxDeadLetterPage) }),
      totals: { inbox: stats.dead, broker: brokerPage.total },
      brokerUnlisted: Math.max(0, brokerPage.total - maxDeadLetterPage)
    }
  })

/**
 * Replays every dead letter of a consumer service that matches `filter`, in both stores: inbox rows
 * become waiting again, due now with their attempts reset (`Inbox.replayMany`; the consumer's parked-event
 * worker takes them within its poll interval), broker dead letters go back to the queue
 * (`Broker.replayDeadLetters`, for the matching ones of the window one page reads). Returns the counts.
 */
export const replay = (
  target: Target,
  filter: Filter
): Effect.Effect<Replayed, SqlError.SqlError | BrokerUnavailable, Inbox | Broker> =>
  Effect.gen(function*() {
    const inbox = yield* Inbox
    const broker = yield* Broker
    const now = yield* Clock.currentTimeMillis
    const movedFromInbox = yield* inbox.replayMany(target.service, inboxFilter(filter), now)
    const queue = queueOf(target)
    const page = yield* broker.deadLetters(queue, { limit: maxDeadLetterPage })
    const matching = page.items.filter((dead) => matchesBroker(filter)(fromBroker(dead))).map((dead) => dead.messageId)
    const movedFromBroker = matching.length === 0 ? 0 : yield* broker.replayDeadLetters(queue, { messageIds: matching })
    return { inbox: movedFromInbox, broker: movedFromBroker, brokerUnread: Math.max(0, page.total - maxDeadLetterPage) }
  })
