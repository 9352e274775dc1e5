/**
 * `entity-sync dead list` and `entity-sync dead replay`: a consumer service's dead letters, in its inbox
 * and in the broker's dead-letter queue of its queue (see `DeadLetters`), listed page by page or replayed
 * by filter or id — with a dry run, and a canary that replays a few first and stops when any of them is
 * dead-lettered again. A replay goes in steps of `stepSize` dead letters, each one statement (inbox) or
 * one move (broker), so an interrupted replay leaves every step done or not done; running it again
 * replays what is left.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, type Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Broker, maxDeadLetterPage } from "../Broker.ts"
import * as DeadLetters from "../DeadLetters.ts"
import { type DeadRow, type DeadRowCursor, type DeadRowFilter, Inbox, maxPageSize, type Page } from "../Inbox.ts"
import { decodeRows } from "../postgres/Columns.ts"
import { broker, Database, database, onBroker, onDatabase } from "./Connect.ts"
import { CanaryFailed, UsageError } from "./Errors.ts"
import * as Inputs from "./Inputs.ts"
import { json, line, progress, shown, table, time } from "./Output.ts"

/** How many dead letters one replay step moves. */
export const stepSize = 100

/** The most dead letters a dry run prints (it counts them all). */
export const maxPrinted = 1_000

/** Which dead letters of which consumer a command takes. */
export interface Selection {
  readonly consumer: string
  readonly queue: string
  readonly filter: DeadLetters.Filter
  /** Only these message ids (replay only). */
  readonly ids?: ReadonlyArray<string>
}

const filterFlags = {
  consumer: Flag.String("consumer").pipe(Flag.withDescription("the consumer service (its inbox rows' consumer)")),
  queue: Flag.String("queue").pipe(Flag.optional, Flag.withDescription("its queue (default <consumer>.sync)")),
  reason: Flag.String("reason").pipe(
    Flag.atLeast(0),
    Flag.withDescription("only this cause: DependencyMissing, NotJson, DeliveryLimit… (repeat or comma-separate)")
  ),
  entity: Flag.String("entity").pipe(Flag.atLeast(0), Flag.withDescription("only this entity (repeatable)")),
  since: Flag.String("since").pipe(
    Flag.optional,
    Flag.withDescription("only dead-lettered at or after: ISO-8601 or an age (2h, 7d)")
  ),
  until: Flag.String("until").pipe(
    Flag.optional,
    Flag.withDescription("only dead-lettered before: ISO-8601 or an age (2h, 7d)")
  ),
  json: Flag.Boolean("json").pipe(Flag.withDefault(false), Flag.withDescription("print JSON"))
} as const

/** The decoded filter flags. */
const selection = (
  flags: {
    readonly consumer: string
    readonly queue: Option.Option<string>
    readonly reason: ReadonlyArray<string>
    readonly entity: ReadonlyArray<string>
    readonly since: Option.Option<string>
    readonly until: Option.Option<string>
  },
  ids: ReadonlyArray<string> = []
): Effect.Effect<Selection, UsageError> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const consumer = yield* Inputs.decode("consumer", Inputs.Name, flags.consumer, "a service name")
    const queue = (yield* Inputs.decodeOption("queue", Inputs.Name, flags.queue, "a queue name")) ??
      DeadLetters.queueOf({ service: consumer })
    const reasons = yield* Inputs.decode("reason", Inputs.ListOf(Inputs.Name), flags.reason, "cause tags")
    const entities = yield* Inputs.decode("entity", Inputs.ListOf(Inputs.Name), flags.entity, "entity names")
    const from = yield* Inputs.decodeOption("since", Inputs.Instant(now), flags.since, Inputs.instantForm)
    const to = yield* Inputs.decodeOption("until", Inputs.Instant(now), flags.until, Inputs.instantForm)
    const messageIds = yield* Inputs.decode("id", Inputs.ListOf(Inputs.Id), ids, "message ids")
    if (from !== undefined && to !== undefined && from >= to) {
      return yield* new UsageError({ message: `--since (${time(from)}) must be before --until (${time(to)})` })
    }
    return {
      consumer,
      queue,
      filter: {
        ...(reasons.length > 0 ? { reasons } : {}),
        ...(entities.length > 0 ? { entities } : {}),
        ...(from !== undefined ? { from } : {}),
        ...(to !== undefined ? { to } : {})
      },
      ...(messageIds.length > 0 ? { ids: messageIds } : {})
    }
  })

const header = ["STORE", "DEAD-LETTERED", "ERROR", "ENTITY", "ID", "VERSION", "ATTEMPTS", "MESSAGE ID", "REASON"]

const rowOf = (entry: DeadLetters.DeadLetterEntry): ReadonlyArray<string> => [
  entry.store,
  time(entry.deadLetteredAt),
  entry.error,
  entry.entity ?? "-",
  entry.entityId ?? "-",
  entry.version === null ? "-" : String(entry.version),
  String(entry.attempts),
  entry.messageId,
  entry.reason
]

// ---------------------------------------------------------------------------------------------------
// dead list

/** `entity-sync dead list --consumer <service> [filters] [--after <cursor>] [--limit n] [--json]`. */
export const list = Command.make(
  "list",
  {
    ...filterFlags,
    after: Flag.String("after").pipe(Flag.optional, Flag.withDescription("the cursor a previous page printed")),
    limit: Flag.String("limit").pipe(
      Flag.optional,
      Flag.withDescription(`page size, 1 to ${maxPageSize} (default 100)`)
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const selected = yield* selection(flags)
      const after = yield* Inputs.decodeOption("after", Inputs.Cursor, flags.after, "a cursor printed by dead list")
      const limit = (yield* Inputs.decodeOption(
        "limit",
        Inputs.Count(1, maxPageSize),
        flags.limit,
        `a page size from 1 to ${maxPageSize}`
      )) ?? 100
      yield* listPage(selected, limit, after, flags.json).pipe(Effect.provide([database, broker]))
    })
).pipe(Command.withDescription("List a consumer's dead letters (inbox and broker), oldest first, a page at a time"))

const listPage = (selected: Selection, limit: number, after: string | undefined, asJson: boolean) =>
  Effect.gen(function*() {
    const listing = yield* DeadLetters.list({ service: selected.consumer, queue: selected.queue }, {
      limit,
      filter: selected.filter,
      ...(after !== undefined ? { after } : {})
    }).pipe(
      Effect.catchTag(
        "InvalidCursor",
        () => Effect.fail(new UsageError({ message: "--after: not a cursor that dead list printed" }))
      ),
      Effect.catchTag("SqlError", (error) => onDatabase("list the dead letters", Effect.fail(error))),
      Effect.catchTag("BrokerUnavailable", (error) => onBroker("list the dead letters", Effect.fail(error)))
    )
    if (asJson) return yield* json(listing)
    yield* line(
      listing.items.length === 0 ? "no dead letters match" : table(header, listing.items.map(rowOf))
    )
    yield* line("")
    yield* line(
      `dead letters of ${
        shown(selected.consumer, 255)
      }: inbox ${listing.totals.inbox}, broker ${listing.totals.broker}` +
        (listing.brokerUnlisted > 0
          ? ` (${listing.brokerUnlisted} broker dead letters past the first ${maxDeadLetterPage} are not listed)`
          : "")
    )
    if (listing.next !== null) yield* line(`next page: --after ${listing.next}`)
  })

// ---------------------------------------------------------------------------------------------------
// dead replay

/** A dead letter a replay takes. */
interface Target {
  readonly store: DeadLetters.Store
  readonly entry: DeadLetters.DeadLetterEntry
}

/** Every dead letter matching the selection: the inbox's paged through, the broker's first window. */
const collect = (selected: Selection) =>
  Effect.gen(function*() {
    const inbox = yield* Inbox
    const brokerService = yield* Broker
    const filter: DeadRowFilter = {
      ...(selected.filter.reasons !== undefined ? { errors: selected.filter.reasons } : {}),
      ...(selected.filter.entities !== undefined ? { entities: selected.filter.entities } : {}),
      ...(selected.filter.from !== undefined ? { from: selected.filter.from } : {}),
      ...(selected.filter.to !== undefined ? { to: selected.filter.to } : {}),
      ...(selected.ids !== undefined ? { messageIds: selected.ids } : {})
    }
    const targets: Array<Target> = []
    let after: Parameters<Inbox["Service"]["deadLetterPage"]>[1] = { limit: maxPageSize, filter }
    for (;;) {
      const page: Page<DeadRow, DeadRowCursor> = yield* onDatabase(
        "read the dead letters",
        inbox.deadLetterPage(selected.consumer, after)
      )
      for (const row of page.items) targets.push({ store: "inbox", entry: DeadLetters.fromInbox(row) })
      if (page.next === null || page.items.length === 0) break
      after = { limit: maxPageSize, filter, after: page.next }
    }
    const window = yield* onBroker(
      "read the dead letters",
      brokerService.deadLetters(selected.queue, { limit: maxDeadLetterPage })
    )
    const ids = selected.ids === undefined ? undefined : new Set(selected.ids)
    for (const dead of window.items) {
      const entry = DeadLetters.fromBroker(dead)
      if (!DeadLetters.matchesBroker(selected.filter)(entry)) continue
      if (ids !== undefined && !ids.has(dead.messageId)) continue
      targets.push({ store: "broker", entry: { ...entry, messageId: dead.messageId } })
    }
    targets.sort((a, b) => a.entry.deadLetteredAt - b.entry.deadLetteredAt)
    return { targets, brokerUnread: Math.max(0, window.total - maxDeadLetterPage) }
  })

/**
 * Replays one step's dead letters: one statement for the inbox's, one move for the broker's, then counts
 * them with `done`. Not interruptible: an interrupt waits for the step and its count.
 */
const replayStep = (
  selected: Selection,
  step: ReadonlyArray<Target>,
  done: (moved: { readonly inbox: number; readonly broker: number }) => void
) =>
  Effect.gen(function*() {
    const inbox = yield* Inbox
    const brokerService = yield* Broker
    const now = yield* Clock.currentTimeMillis
    const inboxIds = step.filter((t) => t.store === "inbox").map((t) => t.entry.messageId)
    const brokerIds = step.filter((t) => t.store === "broker").map((t) => t.entry.messageId)
    const fromInbox = inboxIds.length === 0 ? 0 : yield* onDatabase(
      "replay the dead letters",
      inbox.replayMany(selected.consumer, { messageIds: inboxIds }, now)
    )
    const fromBroker = brokerIds.length === 0 ? 0 : yield* onBroker(
      "replay the dead letters",
      brokerService.replayDeadLetters(selected.queue, { messageIds: brokerIds })
    )
    done({ inbox: fromInbox, broker: fromBroker })
  }).pipe(Effect.uninterruptible)

const MessageIdRow = Schema.Struct({ messageId: Schema.String, place: Schema.Literals(["waiting", "dead", "inbox"]) })

/** Where the canaries are now: parked, dead again, or recorded (seen) by the consumer. */
const whereAre = (selected: Selection, ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const { sql, tables } = yield* Database
    const rows = yield* onDatabase(
      "follow the canaries",
      sql`SELECT message_id AS "messageId", 'waiting' AS place FROM ${sql(tables.waiting)}
          WHERE consumer = ${selected.consumer} AND message_id = ANY(${ids})
        UNION ALL
        SELECT message_id, 'dead' FROM ${sql(tables.dead)}
          WHERE consumer = ${selected.consumer} AND message_id = ANY(${ids})
        UNION ALL
        SELECT message_id, 'inbox' FROM ${sql(tables.inbox)}
          WHERE consumer = ${selected.consumer} AND message_id = ANY(${ids})`.pipe(
        Effect.flatMap(decodeRows(MessageIdRow, "inbox"))
      )
    )
    const at = (place: string) => new Set(rows.filter((row) => row.place === place).map((row) => row.messageId))
    return { waiting: at("waiting"), dead: at("dead"), recorded: at("inbox") }
  })

/**
 * Waits until every canary is applied (no longer parked; for a broker dead letter: recorded by the
 * consumer) or dead-lettered again, for at most `timeout`; fails with `CanaryFailed` when any is dead again
 * or some did not settle.
 */
const awaitCanaries = (selected: Selection, canaries: ReadonlyArray<Target>, timeout: number) =>
  Effect.gen(function*() {
    const brokerService = yield* Broker
    const ids = canaries.map((t) => t.entry.messageId)
    const deadline = (yield* Clock.currentTimeMillis) + timeout
    for (;;) {
      const places = yield* whereAre(selected, ids)
      const brokerDead = canaries.some((t) => t.store === "broker")
        ? new Set(
          (yield* onBroker(
            "read the dead letters",
            brokerService.deadLetters(selected.queue, { limit: maxDeadLetterPage })
          ))
            .items.map((dead) => dead.messageId)
        )
        : new Set<string>()
      const deadAgain = canaries.filter((t) => places.dead.has(t.entry.messageId) || brokerDead.has(t.entry.messageId))
      const pending = canaries.filter((t) =>
        !deadAgain.includes(t) &&
        (places.waiting.has(t.entry.messageId) || (t.store === "broker" && !places.recorded.has(t.entry.messageId)))
      )
      const listed = (targets: ReadonlyArray<Target>) =>
        targets.slice(0, 10).map((t) => shown(t.entry.messageId, 100)).join(", ") + (targets.length > 10 ? ", …" : "")
      if (deadAgain.length > 0) {
        return yield* new CanaryFailed({
          message: `canary: ${deadAgain.length} of ${canaries.length} replayed dead letters were dead-lettered again ` +
            `(${listed(deadAgain)}); nothing else was replayed. See \`entity-sync dead list --consumer ` +
            `${shown(selected.consumer, 255)}\` for their reasons, fix the cause, then replay again`
        })
      }
      if (pending.length === 0) return
      if ((yield* Clock.currentTimeMillis) >= deadline) {
        return yield* new CanaryFailed({
          message: `canary: ${pending.length} of ${canaries.length} replayed dead letters were neither applied nor ` +
            `dead-lettered again within ${Duration.format(Duration.millis(timeout))} (${listed(pending)}); nothing ` +
            `else was replayed. Is the consumer running? Raise --canary-timeout or replay again`
        })
      }
      yield* Effect.sleep("250 millis")
    }
  })

/**
 * `entity-sync dead replay --consumer <service> [filters | --id <message id>…] [--dry-run] [--canary n]`.
 */
export const replay = Command.make(
  "replay",
  {
    ...filterFlags,
    id: Flag.String("id").pipe(Flag.atLeast(0), Flag.withDescription("only this message (repeatable)")),
    dryRun: Flag.Boolean("dry-run").pipe(
      Flag.withDefault(false),
      Flag.withDescription("print what would be replayed; change nothing")
    ),
    canary: Flag.String("canary").pipe(
      Flag.optional,
      Flag.withDescription("replay this many first; stop (exit 3) if any is dead-lettered again")
    ),
    canaryTimeout: Flag.String("canary-timeout").pipe(
      Flag.optional,
      Flag.withDescription("how long to wait for the canaries (default 2m)")
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const selected = yield* selection(flags, flags.id)
      const canary = yield* Inputs.decodeOption(
        "canary",
        Inputs.Count(1, 10_000),
        flags.canary,
        "a count from 1 to 10000"
      )
      const canaryTimeout = (yield* Inputs.decodeOption(
        "canary-timeout",
        Inputs.Millis,
        flags.canaryTimeout,
        Inputs.durationForm
      )) ?? 120_000
      yield* replayAll(selected, { dryRun: flags.dryRun, json: flags.json, canary, canaryTimeout }).pipe(
        Effect.provide([database, broker])
      )
    })
).pipe(Command.withDescription(
  "Replay a consumer's dead letters by filter or id, in steps; --dry-run changes nothing, --canary replays a few first"
))

const replayAll = (
  selected: Selection,
  flags: {
    readonly dryRun: boolean
    readonly json: boolean
    readonly canary: number | undefined
    readonly canaryTimeout: number
  }
) =>
  Effect.gen(function*() {
    const { canary, canaryTimeout } = flags
    const { brokerUnread, targets } = yield* collect(selected)
    const counts = (ts: ReadonlyArray<Target>) =>
      `inbox ${ts.filter((t) => t.store === "inbox").length}, broker ${ts.filter((t) => t.store === "broker").length}`
    const unread = brokerUnread > 0
      ? ` (${brokerUnread} broker dead letters past the first ${maxDeadLetterPage} were not read: run again after)`
      : ""

    if (flags.dryRun) {
      if (flags.json) {
        return yield* json({
          dryRun: true,
          total: targets.length,
          items: targets.slice(0, maxPrinted).map((t) => t.entry),
          brokerUnread
        })
      }
      if (targets.length > 0) yield* line(table(header, targets.slice(0, maxPrinted).map((t) => rowOf(t.entry))))
      if (targets.length > maxPrinted) yield* line(`… and ${targets.length - maxPrinted} more`)
      return yield* line(
        `dry run: would replay ${targets.length} dead letters of ${shown(selected.consumer, 255)} ` +
          `(${counts(targets)})${unread}; nothing was changed`
      )
    }

    const done = { inbox: 0, broker: 0 }
    const add = (moved: { readonly inbox: number; readonly broker: number }) => {
      done.inbox += moved.inbox
      done.broker += moved.broker
    }
    let rest: ReadonlyArray<Target> = targets
    if (canary !== undefined && targets.length > 0) {
      const canaries = targets.slice(0, canary)
      rest = targets.slice(canary)
      yield* line(`canary: replaying ${canaries.length} dead letters first (${counts(canaries)})`)
      yield* replayStep(selected, canaries, add)
      yield* awaitCanaries(selected, canaries, canaryTimeout)
      yield* line(`canary: all ${canaries.length} applied; replaying the other ${rest.length}`)
    }
    const bar = progress("replaying", targets.length)
    const report = Effect.suspend(() =>
      line(
        `replayed ${done.inbox + done.broker} dead letters of ${shown(selected.consumer, 255)} ` +
          `(inbox ${done.inbox}, broker ${done.broker})${unread}`
      )
    )
    yield* Effect.gen(function*() {
      for (let i = 0; i < rest.length; i += stepSize) {
        yield* replayStep(selected, rest.slice(i, i + stepSize), add)
        yield* bar.step(targets.length - rest.length + Math.min(rest.length, i + stepSize))
      }
    }).pipe(Effect.ensuring(bar.end), Effect.onInterrupt(() => report))
    yield* report
    if (flags.json) yield* json({ replayed: done, brokerUnread })
  })

/** `entity-sync dead list|replay`. */
export const command = Command.make("dead").pipe(
  Command.withDescription("A consumer's dead letters, in its inbox and in the broker"),
  Command.withSubcommands([list, replay])
)
