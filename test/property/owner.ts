/**
 * The owner's side of the convergence property: a model of the accounts service's entities, kept in step
 * with its writes, from which only valid writes are generated — hot entities (many versions of few ids),
 * Companies created late with their Users, deleted (after moving their Users away) and re-created, soft
 * deletes, and "orphan" Companies written without an event, whose Users wait in vain until the owner
 * publishes them.
 */
import { Effect } from "effect"
import type { SqlError } from "effect/sql"
import type { EntityExists, EntityNotFound } from "../../src/Errors.ts"
import * as Outbox from "../../src/Outbox.ts"
import * as Producer from "../../src/Producer.ts"
import type { SourceRepository } from "../../src/SourceRepository.ts"
import { Company, User, UserV2 } from "../fixtures.ts"

const accounts = Producer.make("accounts")
/** The owner's Company repository. */
export const companies = accounts.repository(Company)
/** The owner's User repository. */
export const users = accounts.repository(User)
/** The User repository of an instance of the owner already upgraded to version 2 (mixed-version runs). */
export const usersV2 = accounts.repository(UserV2)

/** The state of an entity at the owner; `absent` when it never existed. */
export type OwnerState = "absent" | "live" | "softDeleted" | "deleted"

/** An orphan Company: written without an event, so its Users' events wait for it until it is published. */
export interface Orphan {
  readonly company: string
  readonly users: ReadonlyArray<string>
  /** Whether the owner has published it (a full sync of it). */
  published: boolean
}

/** What the owner holds, as the generator believes it (it is checked against the owner at the end). */
export interface OwnerModel {
  readonly companies: Map<string, OwnerState>
  readonly users: Map<string, { state: OwnerState; companyId: string }>
  readonly orphans: Array<Orphan>
  /** The Company created most recently: new Users prefer it (dependency chains on late Companies). */
  lastCompany: string | undefined
  /** Names are made unique with this counter, so that every update changes the payload. */
  counter: number
  /** Events the owner's writes raised so far. */
  events: number
}

/** The Company and User ids of normal histories; the first ones are hot. */
export const companyIds = ["c-0", "c-1", "c-2", "c-3", "c-4"]
export const userIds = ["u-0", "u-1", "u-2", "u-3", "u-4", "u-5", "u-6", "u-7"]
const hotCompanies = 2
const hotUsers = 3
/** At most this many orphan Companies per run. */
export const maxOrphans = 3

/** An empty model. */
export const makeModel = (): OwnerModel => ({
  companies: new Map(companyIds.map((id) => [id, "absent"])),
  users: new Map(userIds.map((id) => [id, { state: "absent", companyId: "" }])),
  orphans: [],
  lastCompany: undefined,
  counter: 0,
  events: 0
})

/** Whether a Company id is an orphan's. */
export const isOrphanCompany = (id: string): boolean => id.startsWith("c-x")

/** A write of the owner, or several in a row. */
export type OwnerWrite = Effect.Effect<
  void,
  EntityExists | EntityNotFound | SqlError.SqlError,
  Outbox.Outbox | SourceRepository
>

/** A candidate operation: its weight in the current state, its name, and the write it does. */
export interface Candidate {
  readonly name: string
  readonly weight: number
  readonly write: () => OwnerWrite
}

/** Picks one element, the first `hot` of them with probability 0.65 when they are among the choices. */
const pickHot = (random: () => number, ids: ReadonlyArray<string>, hot: ReadonlyArray<string>): string => {
  const hotOnes = ids.filter((id) => hot.includes(id))
  const from = hotOnes.length > 0 && random() < 0.65 ? hotOnes : ids
  return from[Math.floor(random() * from.length)]!
}

const pick = <A>(random: () => number, items: ReadonlyArray<A>): A => items[Math.floor(random() * items.length)]!

/** The owner operations possible in the current state, with their weights. */
export const candidates = (
  model: OwnerModel,
  random: () => number,
  mixedVersions = false
): ReadonlyArray<Candidate> => {
  const hotC = companyIds.slice(0, hotCompanies)
  const hotU = userIds.slice(0, hotUsers)
  const companiesIn = (...states: ReadonlyArray<OwnerState>) =>
    companyIds.filter((id) => states.includes(model.companies.get(id)!))
  const usersIn = (...states: ReadonlyArray<OwnerState>) =>
    userIds.filter((id) => states.includes(model.users.get(id)!.state))
  const liveCompanies = companiesIn("live")
  const creatableCompanies = companiesIn("absent", "deleted")
  const liveUsers = usersIn("live")
  const creatableUsers = usersIn("absent", "deleted")
  const name = (prefix: string) => `${prefix}#${++model.counter}`

  const createCompany = (id: string): OwnerWrite =>
    Effect.gen(function*() {
      yield* Outbox.transaction(companies.create({ id, name: name(id) }))
      model.companies.set(id, "live")
      model.lastCompany = id
      model.events++
    })
  const createUser = (id: string, companyId: string): OwnerWrite =>
    Effect.gen(function*() {
      yield* Outbox.transaction(
        users.create({ id, companyId, email: `${id}@test`, name: name(id), active: random() < 0.5 })
      )
      model.users.set(id, { state: "live", companyId })
      model.events++
    })
  const moveUser = (id: string, companyId: string): OwnerWrite =>
    Effect.gen(function*() {
      yield* Outbox.transaction(users.update(id, (u) => ({ ...u, companyId })))
      model.users.set(id, { state: "live", companyId })
      model.events++
    })
  const deleteUser = (id: string): OwnerWrite =>
    Effect.gen(function*() {
      yield* Outbox.transaction(users.delete(id))
      model.users.get(id)!.state = "deleted"
      model.events++
    })
  /** A Company for a new or moved User: the latest one half of the time, else a hot one. */
  const companyFor = (except?: string): string | undefined => {
    const choices = liveCompanies.filter((c) => c !== except)
    if (choices.length === 0) return undefined
    if (model.lastCompany !== undefined && choices.includes(model.lastCompany) && random() < 0.5) {
      return model.lastCompany
    }
    return pickHot(random, choices, hotC)
  }

  const list: Array<Candidate> = []
  if (creatableCompanies.length > 0) {
    list.push({
      name: "create Company",
      weight: 5,
      write: () => createCompany(pickHot(random, creatableCompanies, hotC))
    })
    if (creatableUsers.length > 0) {
      list.push({
        name: "create Company and its Users",
        weight: 4,
        write: () =>
          Effect.gen(function*() {
            const company = pick(random, creatableCompanies)
            yield* createCompany(company)
            const count = 1 + Math.floor(random() * 3)
            const free = [...creatableUsers]
            for (let i = 0; i < count && free.length > 0; i++) {
              const user = free.splice(Math.floor(random() * free.length), 1)[0]!
              yield* createUser(user, company)
            }
          })
      })
    }
  }
  if (liveCompanies.length > 0) {
    list.push({
      name: "rename Company",
      weight: 7,
      write: () =>
        Effect.gen(function*() {
          const id = pickHot(random, liveCompanies, hotC)
          yield* Outbox.transaction(companies.update(id, (c) => ({ ...c, name: name(id) })))
          model.events++
        })
    })
    list.push({
      name: "soft-delete Company",
      weight: 1.5,
      write: () =>
        Effect.gen(function*() {
          const id = pick(random, liveCompanies)
          yield* Outbox.transaction(companies.softDelete(id))
          model.companies.set(id, "softDeleted")
          model.events++
        })
    })
  }
  const deletable = companiesIn("live", "softDeleted")
  if (deletable.length > 0) {
    list.push({
      name: "delete Company (its Users moved away or deleted first)",
      weight: 3.5,
      write: () =>
        Effect.gen(function*() {
          const id = pickHot(random, deletable, hotC)
          for (const user of userIds) {
            const u = model.users.get(user)!
            if (u.companyId !== id || (u.state !== "live" && u.state !== "softDeleted")) continue
            const elsewhere = companyFor(id)
            if (u.state === "live" && elsewhere !== undefined && random() < 0.6) yield* moveUser(user, elsewhere)
            else yield* deleteUser(user)
          }
          yield* Outbox.transaction(companies.delete(id))
          model.companies.set(id, "deleted")
          model.events++
        })
    })
  }
  if (creatableUsers.length > 0 && liveCompanies.length > 0) {
    list.push({
      name: "create User",
      weight: 6,
      write: () => createUser(pickHot(random, creatableUsers, hotU), companyFor()!)
    })
  }
  if (liveUsers.length > 0) {
    list.push({
      name: "rename User",
      weight: 6,
      write: () =>
        Effect.gen(function*() {
          const id = pickHot(random, liveUsers, hotU)
          yield* Outbox.transaction(users.update(id, (u) => ({ ...u, name: name(id) })))
          model.events++
        })
    })
    if (mixedVersions) {
      list.push({
        name: "rename User at version 2 (an upgraded instance)",
        weight: 4,
        write: () =>
          Effect.gen(function*() {
            const id = pickHot(random, liveUsers, hotU)
            const nickname = random() < 0.7 ? `nick#${++model.counter}` : null
            yield* Outbox.transaction(usersV2.update(id, (u) => ({ ...u, name: name(id), nickname })))
            model.events++
          })
      })
    }
    list.push({
      name: "toggle User",
      weight: 4,
      write: () =>
        Effect.gen(function*() {
          yield* Outbox.transaction(
            users.update(pickHot(random, liveUsers, hotU), (u) => ({ ...u, active: !u.active }))
          )
          model.events++
        })
    })
    list.push({
      name: "soft-delete User",
      weight: 1.5,
      write: () =>
        Effect.gen(function*() {
          const id = pick(random, liveUsers)
          yield* Outbox.transaction(users.softDelete(id))
          model.users.get(id)!.state = "softDeleted"
          model.events++
        })
    })
    if (liveCompanies.length > 1) {
      list.push({
        name: "move User",
        weight: 6,
        write: () => {
          const id = pickHot(random, liveUsers, hotU)
          return moveUser(id, companyFor(model.users.get(id)!.companyId)!)
        }
      })
    }
  }
  const deletableUsers = usersIn("live", "softDeleted")
  if (deletableUsers.length > 0) {
    list.push({ name: "delete User", weight: 2.5, write: () => deleteUser(pickHot(random, deletableUsers, hotU)) })
  }
  if (model.orphans.length < maxOrphans) {
    list.push({
      name: "orphan: Company written without an event, Users of it",
      weight: 1.2,
      write: () =>
        Effect.gen(function*() {
          const k = model.orphans.length
          const company = `c-x${k}`
          const orphan: Orphan = {
            company,
            users: [`u-x${k}a`, `u-x${k}b`].slice(0, 1 + Math.floor(random() * 2)),
            published: false
          }
          yield* Outbox.transaction(companies.create({ id: company, name: name(company) }, { dismissSendEvent: true }))
          model.orphans.push(orphan)
          for (const user of orphan.users) {
            yield* Outbox.transaction(
              users.create({ id: user, companyId: company, email: `${user}@test`, name: name(user), active: true })
            )
            model.events++
            if (random() < 0.4) {
              yield* Outbox.transaction(users.update(user, (u) => ({ ...u, name: name(user) })))
              model.events++
            }
          }
        })
    })
  }
  return list
}

/** The owner publishes an orphan Company at last (a full sync of it): its Users can be applied. */
export const publishOrphan = (orphan: Orphan) =>
  Effect.map(companies.fullSync({ ids: [orphan.company] }), (queued) => {
    orphan.published = true
    return queued
  })
