/**
 * `entity-sync resync`: asks an owner for a full sync of an entity (or of some ids) on behalf of a
 * consumer, by publishing a resync request (`Resync.request`) with a broker confirm — signed when
 * `SYNC_SIGNING_KEY` is set, as the consumer would. The owner is `--owner`, or found in the consumer's
 * parked and dead events of that entity.
 *
 * @since 0.2.0
 */
import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { decodeRows } from "../postgres/Columns.ts"
import * as Resync from "../Resync.ts"
import * as Signature from "../Signature.ts"
import { broker, brokerTimeout, Database, database, onBroker, onDatabase } from "./Connect.ts"
import { OperationFailed, UsageError } from "./Errors.ts"
import * as Inputs from "./Inputs.ts"
import { line, shown } from "./Output.ts"

const ProducerRow = Schema.Struct({ producer: Schema.String })

/** The owner of `entity` as the consumer's parked or dead events name it; undefined when none does. */
const ownerOf = (consumer: string, entity: string) =>
  Effect.gen(function*() {
    const { sql, tables } = yield* Database
    const rows = yield* onDatabase(
      "find the owner",
      sql`(SELECT envelope ->> 'producer' AS producer FROM ${sql(tables.waiting)}
          WHERE consumer = ${consumer} AND envelope ->> 'entity' = ${entity} LIMIT 1)
        UNION ALL
        (SELECT envelope ->> 'producer' FROM ${sql(tables.dead)}
          WHERE consumer = ${consumer} AND envelope ->> 'entity' = ${entity} LIMIT 1)`.pipe(
        Effect.flatMap(decodeRows(ProducerRow, "inbox"))
      )
    )
    return rows.map((row) => row.producer).find((producer) => Schema.is(Inputs.Name)(producer))
  })

/** `entity-sync resync --consumer <service> --entity <Entity> [--ids a,b] [--owner <service>] [--reset]`. */
export const command = Command.make(
  "resync",
  {
    consumer: Flag.String("consumer").pipe(Flag.withDescription("the consumer service asking (the requester)")),
    entity: Flag.String("entity").pipe(Flag.withDescription("the entity to resync")),
    ids: Flag.String("ids").pipe(
      Flag.atLeast(0),
      Flag.withDescription(`only these ids (comma-separated or repeated, at most ${Resync.maxIds})`)
    ),
    owner: Flag.String("owner").pipe(
      Flag.optional,
      Flag.withDescription("the owner service (default: found in the consumer's parked or dead events)")
    ),
    reset: Flag.Boolean("reset").pipe(
      Flag.withDefault(false),
      Flag.withDescription("replace copies whatever their versions (repairs copies ahead of the owner)")
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const consumer = yield* Inputs.decode("consumer", Inputs.Name, flags.consumer, "a service name")
      const entity = yield* Inputs.decode("entity", Inputs.Name, flags.entity, "an entity name")
      const ids = yield* Inputs.decode("ids", Inputs.ListOf(Inputs.Id), flags.ids, "entity ids")
      if (ids.length > Resync.maxIds) {
        return yield* new UsageError({ message: `--ids: at most ${Resync.maxIds} ids, got ${ids.length}` })
      }
      const givenOwner = yield* Inputs.decodeOption("owner", Inputs.Name, flags.owner, "a service name")
      yield* ask({ consumer, entity, ids, givenOwner, reset: flags.reset }).pipe(Effect.provide([database, broker]))
    })
).pipe(Command.withDescription("Ask an entity's owner for a full sync of it (or of some ids) for a consumer"))

const ask = (request: {
  readonly consumer: string
  readonly entity: string
  readonly ids: ReadonlyArray<string>
  readonly givenOwner: string | undefined
  readonly reset: boolean
}) =>
  Effect.gen(function*() {
    const { consumer, entity, ids } = request
    const owner = request.givenOwner ?? (yield* ownerOf(consumer, entity))
    if (owner === undefined) {
      return yield* new UsageError({
        message: `--owner: cannot tell which service owns ${shown(entity, 255)} from ${shown(consumer, 255)}'s ` +
          "inbox: pass --owner <service>"
      })
    }
    const signing = yield* Signature.signingKeyConfig.pipe(
      Effect.mapError((error) => new OperationFailed({ message: `SYNC_SIGNING_KEY: ${shown(error.message, 300)}` }))
    )
    const noQueue = new OperationFailed({
      message: `no queue takes resync requests for ${shown(owner, 255)} (${shown(Resync.queueOf(owner).name, 300)}): ` +
        `the owner's resync responder declares it when it starts; is ${shown(owner, 255)} running with one, ` +
        "and is --owner right?"
    })
    const sent = yield* Resync.request({
      contract: { name: entity, owner },
      requester: consumer,
      ...(ids.length > 0 ? { ids } : {}),
      ...(request.reset ? { reset: true } : {}),
      ...(Option.isSome(signing) ? { signing: signing.value } : {})
    }).pipe(
      Effect.catchTag("PublishRejected", () => Effect.fail(noQueue)),
      Effect.catchTag("BrokerUnavailable", (error) => onBroker("publish the resync request", Effect.fail(error))),
      Effect.timeoutOrElse({
        duration: brokerTimeout,
        orElse: () => onBroker("publish the resync request", Effect.never)
      })
    )
    yield* line(
      `asked ${shown(owner, 255)} for a ${request.reset ? "reset " : ""}resync of ${shown(entity, 255)} ` +
        `(${ids.length === 0 ? "every entity" : `${ids.length} ids`}) for ${shown(consumer, 255)}: ` +
        `request ${sent.requestId}`
    )
  })
