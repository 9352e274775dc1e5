/**
 * `entity-sync outbox replay`: republishes a range of a producer's outbox rows that the retention window
 * kept (R9), by marking them due again (`Outbox.republish`) in steps of `stepSize` rows, each step one
 * statement; the running relay publishes them again with their message ids. Safe by R3/R4: consumers that
 * still hold a message's dedupe record drop it, copies at that version or newer are left alone.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Outbox } from "../Outbox.ts"
import { decodeRows, Int8 } from "../postgres/Columns.ts"
import * as SyncConfig from "../SyncConfig.ts"
import { Database, database, onDatabase } from "./Connect.ts"
import { UsageError } from "./Errors.ts"
import * as Inputs from "./Inputs.ts"
import { line, progress, shown, time } from "./Output.ts"

/** How many rows one step marks due again. */
export const stepSize = 500

const CountRow = Schema.Struct({ count: Int8 })

/** How many published rows a replay of the range would take (for the progress bar). */
const countRange = (range: {
  readonly from: number
  readonly to: number
  readonly producer: string
  readonly entity: string | undefined
}) =>
  Effect.gen(function*() {
    const { sql, tables } = yield* Database
    const rows = yield* onDatabase(
      "count the outbox rows",
      sql`SELECT count(*) AS count FROM ${sql(tables.outbox)}
        WHERE published_at IS NOT NULL AND created_at >= ${range.from}::bigint AND created_at < ${range.to}::bigint
          AND envelope ->> 'producer' = ${range.producer}
          ${range.entity === undefined ? sql.literal("") : sql`AND envelope ->> 'entity' = ${range.entity}`}`.pipe(
        Effect.flatMap(decodeRows(CountRow, "outbox"))
      )
    )
    return rows[0]?.count ?? 0
  })

/** `entity-sync outbox replay --producer <service> --since <time> [--until <time>] [--entity <Entity>]`. */
export const replay = Command.make(
  "replay",
  {
    producer: Flag.String("producer").pipe(Flag.withDescription("the owner service whose events are replayed")),
    since: Flag.String("since").pipe(Flag.withDescription("rows committed at or after: ISO-8601 or an age (2h, 7d)")),
    until: Flag.String("until").pipe(
      Flag.optional,
      Flag.withDescription("rows committed before: ISO-8601 or an age (default now)")
    ),
    entity: Flag.String("entity").pipe(Flag.optional, Flag.withDescription("only this entity"))
  },
  (flags) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const producer = yield* Inputs.decode("producer", Inputs.Name, flags.producer, "a service name")
      const from = yield* Inputs.decode("since", Inputs.Instant(now), flags.since, Inputs.instantForm)
      const to = (yield* Inputs.decodeOption("until", Inputs.Instant(now), flags.until, Inputs.instantForm)) ?? now + 1
      const entity = yield* Inputs.decodeOption("entity", Inputs.Name, flags.entity, "an entity name")
      if (from >= to) {
        return yield* new UsageError({ message: `--since (${time(from)}) must be before --until (${time(to)})` })
      }
      yield* republishRange({ now, from, to, producer, entity }).pipe(Effect.provide(database))
    })
).pipe(Command.withDescription(
  "Republish a producer's outbox rows of a time range that retention kept (R9); safe to repeat"
))

const republishRange = (range: {
  readonly now: number
  readonly from: number
  readonly to: number
  readonly producer: string
  readonly entity: string | undefined
}) =>
  Effect.gen(function*() {
    const { entity, from, now, producer, to } = range
    const settings = yield* SyncConfig.relay.pipe(Effect.orElseSucceed(() => undefined))
    const retention = Duration.toMillis(
      settings?.retention ?? Duration.fromInputUnsafe(SyncConfig.relayDefaults.retention)
    )
    if (from < now - retention) {
      yield* line(
        `note: --since is older than the outbox retention (${Duration.format(Duration.millis(retention))}, ` +
          "SYNC_OUTBOX_RETENTION): rows before it may have been pruned already"
      )
    }
    const outbox = yield* Outbox
    const total = yield* countRange({ from, to, producer, entity })
    const what = `${shown(producer, 255)}'s ${entity === undefined ? "" : `${shown(entity, 255)} `}events ` +
      `from ${time(from)} to ${time(to)}`
    const bar = progress("republishing", total)
    let done = 0
    const report = Effect.suspend(() =>
      line(
        `marked ${done} published outbox rows (${what}) due again; the relay publishes them` +
          (done === 0 ? " (none matched: published rows stay only for the retention window)" : "")
      )
    )
    yield* Effect.gen(function*() {
      let afterSeq: number | undefined
      for (;;) {
        const step = yield* onDatabase(
          "republish the outbox rows",
          outbox.republish({
            from,
            to,
            producer,
            limit: stepSize,
            ...(entity === undefined ? {} : { entity }),
            ...(afterSeq === undefined ? {} : { afterSeq })
          })
        ).pipe(Effect.tap((step) => Effect.sync(() => void (done += step.count))), Effect.uninterruptible)
        yield* bar.step(Math.min(done, Math.max(total, done)))
        if (step.lastSeq === null || step.count < stepSize) break
        afterSeq = step.lastSeq
      }
    }).pipe(Effect.ensuring(bar.end), Effect.onInterrupt(() => report))
    yield* report
  })

/** `entity-sync outbox replay`. */
export const command = Command.make("outbox").pipe(
  Command.withDescription("The outbox of an owner service"),
  Command.withSubcommands([replay])
)
