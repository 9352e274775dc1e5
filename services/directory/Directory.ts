/**
 * The directory service's operations, over its copies and its consumer: companies and employees as
 * synced, resync requests to the owner (on the bus), and the dead letters with their replay.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Result } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import {
  Broker,
  type CopyRepository,
  type DeadLetters as LibraryDeadLetters,
  type Errors,
  Inbox,
  Resync,
  SyncConsumer
} from "entity-sync"
import { Company, User } from "../contracts/index.ts"
import * as CompanyCopies from "./CompanyCopies.ts"
import * as DeadLetters from "./DeadLetters.ts"
import * as Employees from "./Employees.ts"

/** The contracts the directory can ask its owner to resync. */
export type EntityName = "Company" | "User"

/** The directory's operations. */
export class Directory extends Context.Service<Directory, {
  readonly companies: Effect.Effect<ReadonlyArray<CompanyCopies.CompanyCopy>, SqlError.SqlError>
  readonly company: (id: string) => Effect.Effect<CompanyCopies.CompanyCopy | null, SqlError.SqlError>
  readonly employees: (companyId?: string) => Effect.Effect<ReadonlyArray<Employees.EmployeeRow>, SqlError.SqlError>
  readonly employee: (id: string) => Effect.Effect<Employees.EmployeeRow | null, SqlError.SqlError>
  /** Publishes a resync request to the entity's owner; returns it. */
  readonly resync: (entity: EntityName, ids?: ReadonlyArray<string>) => Effect.Effect<
    Resync.ResyncRequest,
    Errors.BrokerUnavailable | Errors.PublishRejected
  >
  /** One page of dead letters (inbox and broker), oldest first. */
  readonly deadLetters: (options: {
    readonly limit?: number
    readonly after?: string
    readonly filter?: LibraryDeadLetters.Filter
  }) => Effect.Effect<
    DeadLetters.DeadLetterPage,
    SqlError.SqlError | Errors.BrokerUnavailable | LibraryDeadLetters.InvalidCursor
  >
  /** Replays a dead letter; from which store, or null when there is none with this id. */
  readonly replay: (
    messageId: string
  ) => Effect.Effect<"inbox" | "broker" | null, SqlError.SqlError | Errors.BrokerUnavailable>
  /** Replays every dead letter matching the filter, in both stores; the counts per store. */
  readonly replayMatching: (
    filter: LibraryDeadLetters.Filter
  ) => Effect.Effect<LibraryDeadLetters.Replayed, SqlError.SqlError | Errors.BrokerUnavailable>
  /**
   * The consumer's state for `/health`: deliveries in flight and the oldest of them, events waiting for a
   * dependency and dead letters (counted by the database), the broker's dead-letter depth, and the
   * dependency that fails, if any, with since when. Never fails; each check gives up after 3 seconds.
   */
  readonly status: Effect.Effect<DirectoryStatus>
}>()("services/directory/Directory") {}

/** A dependency that does not answer: which, since when (ISO-8601), and what is wrong (never driver text). */
export interface Failing {
  readonly dependency: "database" | "broker"
  readonly since: string
  readonly problem: string
}

/** What `/health` reports about the directory's consumer. */
export interface DirectoryStatus {
  readonly consumer: {
    readonly inFlight: number
    readonly waiting: number
    readonly deadLetters: number
    readonly oldestUnsettledAt: string | null
    readonly oldestWaitingSince: string | null
    readonly oldestDeadAt: string | null
  }
  readonly broker: { readonly deadLetters: number | null }
  /** The dependency that fails, if any. */
  readonly failing: Failing | null
}

const isoOrNull = (millis: number | null) => (millis === null ? null : new Date(millis).toISOString())

/** How long one health check waits for a dependency. */
const checkTimeout = Duration.seconds(3)

/** Makes the directory's operations for the consumer `service` (its queue is `<service>.sync`). */
export const make = (
  service: string
): Effect.Effect<
  Directory["Service"],
  never,
  CopyRepository.CopyRepository | SqlClient.SqlClient | SyncConsumer.SyncConsumer | Broker.Broker | Inbox.Inbox
> =>
  Effect.gen(function*() {
    type Needs =
      | CopyRepository.CopyRepository
      | SqlClient.SqlClient
      | SyncConsumer.SyncConsumer
      | Broker.Broker
      | Inbox.Inbox
    const context = yield* Effect.context<Needs>()
    const consumer = yield* SyncConsumer.SyncConsumer
    const inbox = yield* Inbox.Inbox
    const broker = yield* Broker.Broker
    const queue = `${service}.sync`
    const run = <A, E>(effect: Effect.Effect<A, E, Needs>) => Effect.provideContext(effect, context)
    // since when each dependency has failed the health checks (reset when it answers again)
    const failingSince: { database: number | null; broker: number | null } = { database: null, broker: null }
    const check = <A, E>(dependency: "database" | "broker", effect: Effect.Effect<A, E>) =>
      Effect.gen(function*() {
        const result = yield* effect.pipe(Effect.timeoutOption(checkTimeout), Effect.result)
        const now = yield* Clock.currentTimeMillis
        if (Result.isSuccess(result) && result.success._tag === "Some") {
          failingSince[dependency] = null
          return result.success.value
        }
        if (Result.isFailure(result)) yield* Effect.logWarning(`health check: the ${dependency} failed`, result.failure)
        failingSince[dependency] ??= now
        return null
      })
    return Directory.of({
      companies: run(CompanyCopies.list),
      company: (id) => run(CompanyCopies.get(id)),
      employees: (companyId) => run(Employees.list(companyId)),
      employee: (id) => run(Employees.get(id)),
      resync: (entity, ids) =>
        run(Resync.request({
          contract: entity === "Company" ? Company : User,
          requester: service,
          ...(ids !== undefined ? { ids } : {})
        })),
      deadLetters: (options) => run(DeadLetters.list(service, options)),
      replay: (messageId) => run(DeadLetters.replay(service, messageId)),
      replayMatching: (filter) => run(DeadLetters.replayMatching(service, filter)),
      status: Effect.gen(function*() {
        const state = yield* consumer.status
        const stats = yield* check("database", inbox.stats(service))
        const depth = yield* check("broker", broker.deadLetters(queue, { limit: 0 }))
        const paused = state.paused
        const failing: Failing | null = paused !== null
          ? {
            dependency: paused.dependency,
            since: new Date(paused.since).toISOString(),
            problem: `the ${paused.dependency} does not answer; consumption is paused`
          }
          : failingSince.database !== null
          ? {
            dependency: "database",
            since: new Date(failingSince.database).toISOString(),
            problem: "the database does not answer"
          }
          : failingSince.broker !== null
          ? {
            dependency: "broker",
            since: new Date(failingSince.broker).toISOString(),
            problem: "the broker does not answer"
          }
          : null
        return {
          consumer: {
            inFlight: state.inFlight,
            waiting: stats?.waiting ?? 0,
            deadLetters: stats?.dead ?? 0,
            oldestUnsettledAt: isoOrNull(state.oldestUnsettledAt),
            oldestWaitingSince: isoOrNull(stats?.oldestWaitingSince ?? null),
            oldestDeadAt: isoOrNull(stats?.oldestDeadAt ?? null)
          },
          broker: { deadLetters: depth?.total ?? null },
          failing
        }
      })
    })
  })
