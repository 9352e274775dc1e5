/**
 * `entity-sync prune`: applies the retention windows now, as the relay and the consumer do every interval:
 * deletes outbox rows published longer ago than `SYNC_OUTBOX_RETENTION` (default 7 days) and inbox dedupe
 * records received longer ago than `SYNC_INBOX_RETENTION` (default 7 days). Each is one statement.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { Inbox } from "../Inbox.ts"
import { Outbox } from "../Outbox.ts"
import * as SyncConfig from "../SyncConfig.ts"
import { database, onDatabase } from "./Connect.ts"
import { OperationFailed } from "./Errors.ts"
import * as Inputs from "./Inputs.ts"
import { line, time } from "./Output.ts"

const retentionOf = (variable: string, setting: Effect.Effect<Duration.Duration, unknown>) =>
  setting.pipe(
    Effect.map(Duration.toMillis),
    Effect.mapError(() =>
      new OperationFailed({
        message: `${variable} is not a duration: set it as for the services, e.g. ${variable}="7 days"`
      })
    )
  )

/** `entity-sync prune [--outbox-retention <duration>] [--inbox-retention <duration>]`. */
export const command = Command.make(
  "prune",
  {
    outboxRetention: Flag.String("outbox-retention").pipe(
      Flag.optional,
      Flag.withDescription("keep published outbox rows this long (default SYNC_OUTBOX_RETENTION, 7 days)")
    ),
    inboxRetention: Flag.String("inbox-retention").pipe(
      Flag.optional,
      Flag.withDescription("keep inbox dedupe records this long (default SYNC_INBOX_RETENTION, 7 days)")
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const outboxRetention = (yield* Inputs.decodeOption(
        "outbox-retention",
        Inputs.Millis,
        flags.outboxRetention,
        Inputs.durationForm
      )) ?? (yield* retentionOf("SYNC_OUTBOX_RETENTION", Effect.map(SyncConfig.relay, (s) => s.retention)))
      const inboxRetention = (yield* Inputs.decodeOption(
        "inbox-retention",
        Inputs.Millis,
        flags.inboxRetention,
        Inputs.durationForm
      )) ?? (yield* retentionOf("SYNC_INBOX_RETENTION", Effect.map(SyncConfig.consumer, (s) => s.retention)))
      yield* prune(outboxRetention, inboxRetention).pipe(Effect.provide(database))
    })
).pipe(Command.withDescription("Apply the retention windows now: old published outbox rows and inbox dedupe records"))

const prune = (outboxRetention: number, inboxRetention: number) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const outbox = yield* Outbox
    const inbox = yield* Inbox
    const outboxBefore = now - outboxRetention
    const pruned = yield* onDatabase("prune the outbox", outbox.prune(outboxBefore))
    yield* line(`outbox: deleted ${pruned} rows published before ${time(outboxBefore)}`)
    const inboxBefore = now - inboxRetention
    const forgotten = yield* onDatabase("prune the inbox", inbox.prune(inboxBefore))
    yield* line(`inbox: deleted ${forgotten} dedupe records received before ${time(inboxBefore)}`)
  })
