/**
 * The accounts service's domain: it owns Companies and Users (R1). Every write runs in one outbox
 * transaction with its event (R2). Referential rules are kept at the owner: a User needs a live Company,
 * and a Company cannot be deleted while users (live or soft-deleted) reference it — both checks lock the
 * Company's row (`FOR SHARE` / `FOR UPDATE`), so a concurrent user write and company delete cannot both pass.
 *
 * Writes to one entity are serialized by the library (`Producer` reads the entity's row with a row lock),
 * so each event's version is the one after the version the previous write committed (R4 at the owner).
 *
 * Users are published only when they are active after the change, were active before it, or are deleted
 * (`publishUserChange`): inactive users stay private, and a deactivation is still seen by consumers.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Schema } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { type Errors, Outbox, Producer, SourceRepository } from "entity-sync"
import { Company, User } from "../contracts/index.ts"
import { ServiceDatabase } from "../runtime/ServiceDatabase.ts"

/** The producer of the accounts service. */
export const producer = Producer.make("accounts")

/**
 * The User `handleWhen`: publish when the user is active after the change, was active before it, or is
 * hard-deleted.
 */
export const publishUserChange = ({ action, after, before }: Producer.Change<User>): boolean =>
  after?.active === true || before?.active === true || action === "deleted"

/** The owner's repository of Companies. */
export const companies = producer.repository(Company)

/** The owner's repository of Users, publishing per `publishUserChange`. */
export const users = producer.repository(User, { handleWhen: publishUserChange })

/** A user write named a company that does not exist (or is deleted). */
export class UnknownCompany extends Schema.TaggedError<UnknownCompany>()("UnknownCompany", {
  companyId: Schema.String
}) {
  override get message() {
    return `Company ${this.companyId} does not exist`
  }
}

/** A company cannot be deleted while users reference it. */
export class CompanyInUse extends Schema.TaggedError<CompanyInUse>()("CompanyInUse", {
  companyId: Schema.String,
  userIds: Schema.Array(Schema.String)
}) {
  override get message() {
    return `Company ${this.companyId} is referenced by users (${this.userIds.join(", ")}); move or delete them first`
  }
}

/** A company as the owner lists it. Times are ISO-8601. */
export type CompanyRow = {
  readonly id: string
  readonly name: string
  readonly version: number
  readonly updatedAt: string
  readonly deletedAt: string | null
}

/** A user as the owner lists it. Times are ISO-8601. */
export type UserRow = {
  readonly id: string
  readonly companyId: string
  readonly email: string
  readonly name: string
  readonly active: boolean
  readonly version: number
  readonly updatedAt: string
  readonly deletedAt: string | null
}

/** The result of a delete: the entity's new version and state. */
export type Removal = {
  readonly entity: "Company" | "User"
  readonly id: string
  readonly version: number
  readonly state: "deleted" | "softDeleted"
  readonly deletedAt: string | null
}

/** The contracts the owner can full-sync. */
export type EntityName = "Company" | "User"

/** The accounts domain. */
export class Accounts extends Context.Service<Accounts, {
  readonly createCompany: (input: { readonly id: string; readonly name: string }) => Effect.Effect<
    CompanyRow,
    Errors.EntityExists | SqlError.SqlError
  >
  readonly renameCompany: (
    id: string,
    name: string
  ) => Effect.Effect<CompanyRow, Errors.EntityNotFound | SqlError.SqlError>
  readonly deleteCompany: (
    id: string
  ) => Effect.Effect<Removal, Errors.EntityNotFound | CompanyInUse | SqlError.SqlError>
  readonly createUser: (input: User) => Effect.Effect<UserRow, Errors.EntityExists | UnknownCompany | SqlError.SqlError>
  readonly updateUser: (
    id: string,
    patch: Partial<Omit<User, "id">>
  ) => Effect.Effect<UserRow, Errors.EntityNotFound | UnknownCompany | SqlError.SqlError>
  readonly deleteUser: (id: string, options: { readonly soft: boolean }) => Effect.Effect<
    Removal,
    Errors.EntityNotFound | SqlError.SqlError
  >
  /** Live and soft-deleted companies, by id. */
  readonly companies: Effect.Effect<ReadonlyArray<CompanyRow>, SqlError.SqlError>
  /** Live and soft-deleted users, by id. */
  readonly users: Effect.Effect<ReadonlyArray<UserRow>, SqlError.SqlError>
  /** Queues snapshot events of every entity of a contract (or of `ids`); returns how many. */
  readonly fullSync: (entity: EntityName, ids?: ReadonlyArray<string>) => Effect.Effect<number, SqlError.SqlError>
  /** Outbox events not published yet, and the age of the oldest in milliseconds. */
  readonly outbox: Effect.Effect<
    { readonly pending: number; readonly oldestAgeMillis: number | null },
    SqlError.SqlError
  >
}>()("services/accounts/Accounts") {}

const iso = (millis: number | null) => millis === null ? null : new Date(millis).toISOString()

const companyRow = (entity: Producer.Entity<Company>, payload: Company): CompanyRow => ({
  id: entity.id,
  name: payload.name,
  version: entity.version,
  updatedAt: new Date(entity.updatedAt).toISOString(),
  deletedAt: iso(entity.deletedAt)
})

const userRow = (entity: Producer.Entity<User>, payload: User): UserRow => ({
  id: entity.id,
  companyId: payload.companyId,
  email: payload.email,
  name: payload.name,
  active: payload.active,
  version: entity.version,
  updatedAt: new Date(entity.updatedAt).toISOString(),
  deletedAt: iso(entity.deletedAt)
})

const removal = (entity: "Company" | "User", written: Producer.Entity<unknown>): Removal => ({
  entity,
  id: written.id,
  version: written.version,
  state: written.state === "softDeleted" ? "softDeleted" : "deleted",
  deletedAt: iso(written.deletedAt)
})

/** The payload of a live entity just written (a write of a live entity always has one). */
const payloadOf = <A>(entity: Producer.Entity<A>): Effect.Effect<A> =>
  entity.payload === null
    ? Effect.die(new Error(`${entity.id} v${entity.version} has no payload`))
    : Effect.succeed(entity.payload)

/** Makes the accounts domain on the service's stores and database. */
export const make: Effect.Effect<
  Accounts["Service"],
  never,
  Outbox.Outbox | SourceRepository.SourceRepository | SqlClient.SqlClient | ServiceDatabase
> = Effect.gen(function*() {
  const context = yield* Effect.context<Outbox.Outbox | SourceRepository.SourceRepository | SqlClient.SqlClient>()
  const sql = yield* SqlClient.SqlClient
  const { tables } = yield* ServiceDatabase
  const source = sql(tables.source)
  const run = <A, E>(
    effect: Effect.Effect<A, E, Outbox.Outbox | SourceRepository.SourceRepository | SqlClient.SqlClient>
  ) => Effect.provideContext(effect, context)

  const companyState = (id: string, lock: "FOR SHARE" | "FOR UPDATE") =>
    Effect.map(
      sql<{ readonly state: string }>`SELECT state FROM ${source}
        WHERE entity = ${Company.name} AND id = ${id} ${sql.literal(lock)}`,
      (rows) => rows[0]?.state ?? null
    )

  // inside the write transaction: the company stays live until the transaction ends
  const requireCompany = (companyId: string) =>
    Effect.flatMap(
      companyState(companyId, "FOR SHARE"),
      (state) => state === "live" ? Effect.void : Effect.fail(new UnknownCompany({ companyId }))
    )

  const decodeCompany = Schema.decodeUnknownEffect(Company.payload)
  const decodeUser = Schema.decodeUnknownEffect(User.payload)

  const listed = <A, R>(
    entity: string,
    toRow: (row: SourceRepository.SourceRow, payload: unknown) => Effect.Effect<A, never, R>
  ) =>
    Effect.gen(function*() {
      const store = yield* SourceRepository.SourceRepository
      const rows: Array<A> = []
      let afterId: string | null = null
      while (true) {
        const page: ReadonlyArray<SourceRepository.SourceRow> = yield* store.page(entity, { afterId, limit: 500 })
        for (const row of page) {
          if (row.state !== "deleted" && row.payload !== null) rows.push(yield* toRow(row, row.payload))
        }
        const last = page.at(-1)
        if (last === undefined || page.length < 500) return rows
        afterId = last.id
      }
    })

  const entityOf = <A>(row: SourceRepository.SourceRow, payload: A): Producer.Entity<A> => ({ ...row, payload })

  return Accounts.of({
    createCompany: (input) =>
      run(Outbox.transaction(companies.create({ id: input.id, name: input.name }))).pipe(
        Effect.flatMap((written) => Effect.map(payloadOf(written), (payload) => companyRow(written, payload)))
      ),
    renameCompany: (id, name) =>
      run(Outbox.transaction(companies.update(id, (company) => ({ ...company, name })))).pipe(
        Effect.flatMap((written) => Effect.map(payloadOf(written), (payload) => companyRow(written, payload)))
      ),
    deleteCompany: (id) =>
      run(Outbox.transaction(Effect.gen(function*() {
        yield* companyState(id, "FOR UPDATE")
        const referencing = yield* sql<{ readonly id: string }>`SELECT id FROM ${source}
          WHERE entity = ${User.name} AND state <> 'deleted' AND payload ->> 'companyId' = ${id}
          ORDER BY id LIMIT 10`
        if (referencing.length > 0) {
          return yield* new CompanyInUse({ companyId: id, userIds: referencing.map((r) => r.id) })
        }
        return removal("Company", yield* companies.delete(id))
      }))),
    createUser: (input) =>
      run(Outbox.transaction(Effect.gen(function*() {
        yield* requireCompany(input.companyId)
        return yield* users.create(input)
      }))).pipe(Effect.flatMap((written) => Effect.map(payloadOf(written), (payload) => userRow(written, payload)))),
    updateUser: (id, patch) =>
      run(Outbox.transaction(Effect.gen(function*() {
        if (patch.companyId !== undefined) yield* requireCompany(patch.companyId)
        return yield* users.update(id, (user) => ({ ...user, ...patch }))
      }))).pipe(Effect.flatMap((written) => Effect.map(payloadOf(written), (payload) => userRow(written, payload)))),
    deleteUser: (id, options) =>
      run(Outbox.transaction(options.soft ? users.softDelete(id) : users.delete(id))).pipe(
        Effect.map((written) => removal("User", written))
      ),
    companies: run(
      listed(
        "Company",
        (row, payload) =>
          Effect.map(Effect.orDie(decodeCompany(payload)), (company) => companyRow(entityOf(row, company), company))
      )
    ),
    users: run(
      listed(
        "User",
        (row, payload) => Effect.map(Effect.orDie(decodeUser(payload)), (user) => userRow(entityOf(row, user), user))
      )
    ),
    fullSync: (entity, ids) =>
      run((entity === "Company" ? companies : users).fullSync(ids !== undefined ? { ids } : {})),
    outbox: run(Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const { count, oldestCreatedAt } = yield* outbox.pending
      const now = yield* Clock.currentTimeMillis
      return { pending: count, oldestAgeMillis: oldestCreatedAt === null ? null : Math.max(0, now - oldestCreatedAt) }
    }))
  })
})
