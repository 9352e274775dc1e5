/**
 * The accounts service's domain: it owns Companies and Users (R1), kept in its own tables `companies` and
 * `users` (see `AccountsTables`). Every write changes those rows and appends its event in one outbox
 * transaction (R2). Referential rules are kept at the owner, by queries and constraints on its tables: a
 * User needs a live Company (not soft-deleted; the foreign key on `users.company_id` backs this up), a
 * Company cannot be deleted while users (live or soft-deleted) reference it (the same foreign key), and an
 * e-mail address belongs to one user (a unique constraint). The checks lock the Company's row
 * (`FOR SHARE` / `FOR UPDATE`), so a concurrent user write and company delete cannot both pass; a violated
 * constraint is answered with the same error as the check.
 *
 * Writes to one entity are serialized by the library (`Producer` reads the entity's row with a row lock),
 * so each event's version is the one after the version the previous write committed (R4 at the owner).
 *
 * Users are published only when they are active after the change, were active before it, or are deleted
 * (`publishUserChange`): inactive users stay private, and a deactivation is still seen by consumers.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Option, Schema } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { type Errors, Outbox, Producer, type SourceRepository } from "entity-sync"
import { Company, User } from "../contracts/index.ts"
import { userCompanyConstraint, userEmailConstraint } from "./AccountsTables.ts"

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

/** A user write gave an e-mail address another user (live or soft-deleted) already has. */
export class EmailInUse extends Schema.TaggedError<EmailInUse>()("EmailInUse", {
  email: Schema.String
}) {
  override get message() {
    return `The e-mail address ${this.email} belongs to another user`
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
  readonly createUser: (
    input: User
  ) => Effect.Effect<UserRow, Errors.EntityExists | UnknownCompany | EmailInUse | SqlError.SqlError>
  readonly updateUser: (
    id: string,
    patch: Partial<Omit<User, "id">>
  ) => Effect.Effect<UserRow, Errors.EntityNotFound | UnknownCompany | EmailInUse | SqlError.SqlError>
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

/** What a listed row takes from the entity: its id, version and times (epoch milliseconds). */
type Stamped = Pick<Producer.Entity<unknown>, "id" | "version" | "updatedAt" | "deletedAt">

const companyRow = (entity: Stamped, payload: Company): CompanyRow => ({
  id: entity.id,
  name: payload.name,
  version: entity.version,
  updatedAt: new Date(entity.updatedAt).toISOString(),
  deletedAt: iso(entity.deletedAt)
})

const userRow = (entity: Stamped, payload: User): UserRow => ({
  id: entity.id,
  companyId: payload.companyId,
  email: payload.email,
  name: payload.name,
  active: payload.active,
  version: entity.version,
  updatedAt: new Date(entity.updatedAt).toISOString(),
  deletedAt: iso(entity.deletedAt)
})

/** The version and times (epoch milliseconds) the listings select. */
const Listed = {
  version: Schema.Number,
  updatedAt: Schema.Number,
  deletedAt: Schema.NullOr(Schema.Number)
}

/** A row of `companies` as the listing selects it. */
const CompanyRecord = Schema.Struct({ id: Schema.String, name: Schema.String, ...Listed })

/** A row of `users` as the listing selects it. */
const UserRecord = Schema.Struct({
  id: Schema.String,
  companyId: Schema.String,
  email: Schema.String,
  name: Schema.String,
  active: Schema.Boolean,
  ...Listed
})

const decodeCompanies = Schema.decodeUnknownEffect(Schema.Array(CompanyRecord))
const decodeUsers = Schema.decodeUnknownEffect(Schema.Array(UserRecord))
const decodeLive = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ live: Schema.Boolean })))
const decodeIds = Schema.decodeUnknownEffect(Schema.Array(Schema.Struct({ id: Schema.String })))

/** What PostgreSQL says about a violated constraint (the fields of the driver's error). */
const Violation = Schema.Struct({ code: Schema.String, constraint: Schema.String })
const decodeViolation = Schema.decodeUnknownOption(Violation)

/** The name of the constraint a statement violated, if that is why it failed (null otherwise). */
export const violatedConstraint = (error: SqlError.SqlError): string | null => {
  const reason = error.reason
  if (reason._tag === "UniqueViolation") return reason.constraint
  if (reason._tag !== "ConstraintError") return null
  const fields = decodeViolation(reason.cause)
  return Option.isSome(fields) ? fields.value.constraint : null
}

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

/** Makes the accounts domain on the service's stores and its tables (`AccountsTables.migrations` applied). */
export const make: Effect.Effect<
  Accounts["Service"],
  never,
  Outbox.Outbox | SourceRepository.SourceRepository | SqlClient.SqlClient
> = Effect.gen(function*() {
  const context = yield* Effect.context<Outbox.Outbox | SourceRepository.SourceRepository | SqlClient.SqlClient>()
  const sql = yield* SqlClient.SqlClient
  const run = <A, E>(
    effect: Effect.Effect<A, E, Outbox.Outbox | SourceRepository.SourceRepository | SqlClient.SqlClient>
  ) => Effect.provideContext(effect, context)

  // inside the write transaction: the company stays live until the transaction ends
  const requireCompany = (companyId: string) =>
    sql`SELECT deleted_at IS NULL AS live FROM companies WHERE id = ${companyId} FOR SHARE`.pipe(
      Effect.flatMap((rows) => Effect.orDie(decodeLive(rows))),
      Effect.flatMap((rows) => rows[0]?.live === true ? Effect.void : Effect.fail(new UnknownCompany({ companyId })))
    )

  /** The first users (live or soft-deleted) of a company, by id. */
  const usersOf = (companyId: string) =>
    sql`SELECT id FROM users WHERE company_id = ${companyId} ORDER BY id COLLATE "C" LIMIT 10`.pipe(
      Effect.flatMap((rows) => Effect.orDie(decodeIds(rows))),
      Effect.map((rows) => rows.map((row) => row.id))
    )

  /** A user write that broke a constraint of `users`, as the error its check answers. */
  const userViolation = (input: { readonly companyId?: string | undefined; readonly email?: string | undefined }) =>
  (
    error: SqlError.SqlError
  ): Effect.Effect<never, UnknownCompany | EmailInUse | SqlError.SqlError> => {
    const constraint = violatedConstraint(error)
    return constraint === userCompanyConstraint && input.companyId !== undefined
      ? Effect.fail(new UnknownCompany({ companyId: input.companyId }))
      : constraint === userEmailConstraint && input.email !== undefined
      ? Effect.fail(new EmailInUse({ email: input.email }))
      : Effect.fail(error)
  }

  const companyWritten = (written: Producer.Entity<Company>) =>
    Effect.map(payloadOf(written), (payload) => companyRow(written, payload))
  const userWritten = (written: Producer.Entity<User>) =>
    Effect.map(payloadOf(written), (payload) => userRow(written, payload))
  // the times of a listed row, in epoch milliseconds
  const listedTimes = sql.literal(
    `(extract(epoch FROM updated_at) * 1000)::float8 AS "updatedAt", ` +
      `(extract(epoch FROM deleted_at) * 1000)::float8 AS "deletedAt"`
  )

  return Accounts.of({
    createCompany: (input) =>
      run(Outbox.transaction(companies.create({ id: input.id, name: input.name }))).pipe(
        Effect.flatMap(companyWritten)
      ),
    renameCompany: (id, name) =>
      run(Outbox.transaction(companies.update(id, (company) => ({ ...company, name })))).pipe(
        Effect.flatMap(companyWritten)
      ),
    deleteCompany: (id) =>
      run(Outbox.transaction(Effect.gen(function*() {
        yield* sql`SELECT 1 FROM companies WHERE id = ${id} FOR UPDATE`
        const referencing = yield* usersOf(id)
        if (referencing.length > 0) return yield* new CompanyInUse({ companyId: id, userIds: referencing })
        return removal("Company", yield* companies.delete(id))
      }))).pipe(
        Effect.catchTag("SqlError", (error) =>
          violatedConstraint(error) === userCompanyConstraint
            ? Effect.flatMap(run(usersOf(id)), (userIds) => Effect.fail(new CompanyInUse({ companyId: id, userIds })))
            : Effect.fail(error))
      ),
    createUser: (input) =>
      run(Outbox.transaction(Effect.gen(function*() {
        yield* requireCompany(input.companyId)
        return yield* users.create(input)
      }))).pipe(Effect.catchTag("SqlError", userViolation(input)), Effect.flatMap(userWritten)),
    updateUser: (id, patch) =>
      run(Outbox.transaction(Effect.gen(function*() {
        if (patch.companyId !== undefined) yield* requireCompany(patch.companyId)
        return yield* users.update(id, (user) => ({ ...user, ...patch }))
      }))).pipe(Effect.catchTag("SqlError", userViolation(patch)), Effect.flatMap(userWritten)),
    deleteUser: (id, options) =>
      run(Outbox.transaction(options.soft ? users.softDelete(id) : users.delete(id))).pipe(
        Effect.map((written) => removal("User", written))
      ),
    companies: sql`SELECT id, name, version, ${listedTimes}
      FROM companies ORDER BY id COLLATE "C"`.pipe(
      Effect.flatMap((rows) => Effect.orDie(decodeCompanies(rows))),
      Effect.map((rows) => rows.map((row) => companyRow(row, row)))
    ),
    users: sql`SELECT id, company_id AS "companyId", email, name, active, version, ${listedTimes}
      FROM users ORDER BY id COLLATE "C"`.pipe(
      Effect.flatMap((rows) => Effect.orDie(decodeUsers(rows))),
      Effect.map((rows) => rows.map((row) => userRow(row, row)))
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
