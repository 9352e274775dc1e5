/**
 * The directory service's operations, over its copies and its consumer: companies and employees as
 * synced, resync requests to the owner (on the bus), and the dead letters with their replay.
 *
 * @since 0.1.0
 */
import { Context, Effect } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import type { Broker } from "../../src/Broker.ts"
import type { CopyRepository } from "../../src/CopyRepository.ts"
import type { BrokerUnavailable, PublishRejected } from "../../src/Errors.ts"
import * as Resync from "../../src/Resync.ts"
import { SyncConsumer } from "../../src/SyncConsumer.ts"
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
    BrokerUnavailable | PublishRejected
  >
  readonly deadLetters: Effect.Effect<ReadonlyArray<DeadLetters.DeadLetterRow>, SqlError.SqlError | BrokerUnavailable>
  /** Replays a dead letter; from which store, or null when there is none with this id. */
  readonly replay: (messageId: string) => Effect.Effect<"inbox" | "broker" | null, SqlError.SqlError | BrokerUnavailable>
  /** The consumer's state: deliveries in flight, events waiting for a dependency, dead letters in the inbox. */
  readonly status: Effect.Effect<
    { readonly inFlight: number; readonly waiting: number; readonly deadLetters: number },
    SqlError.SqlError
  >
}>()("services/directory/Directory") {}

/** Makes the directory's operations for the consumer `service` (its queue is `<service>.sync`). */
export const make = (
  service: string
): Effect.Effect<Directory["Service"], never, CopyRepository | SqlClient.SqlClient | SyncConsumer | Broker> =>
  Effect.gen(function*() {
    const context = yield* Effect.context<CopyRepository | SqlClient.SqlClient | SyncConsumer | Broker>()
    const consumer = yield* SyncConsumer
    const queue = `${service}.sync`
    const run = <A, E>(effect: Effect.Effect<A, E, CopyRepository | SqlClient.SqlClient | SyncConsumer | Broker>) =>
      Effect.provideContext(effect, context)
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
      deadLetters: run(DeadLetters.list(queue)),
      replay: (messageId) => run(DeadLetters.replay(queue, messageId)),
      status: Effect.gen(function*() {
        const waiting = yield* consumer.waiting
        const dead = yield* consumer.deadLetters
        return { inFlight: yield* consumer.inFlight, waiting: waiting.length, deadLetters: dead.length }
      })
    })
  })
