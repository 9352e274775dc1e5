/**
 * The accounts service's HTTP API (default port 3001). Bodies are decoded with Schema (unknown fields
 * rejected); errors are JSON `{ error, message, details? }`.
 *
 * | route | answer |
 * |---|---|
 * | `POST /companies {id?, name}` | 201 the company · 409 the id exists · 422 invalid body |
 * | `PATCH /companies/:id {name}` | 200 the company · 404 |
 * | `DELETE /companies/:id` | 200 `{entity, id, version, state, deletedAt}` · 404 · 409 while users reference it |
 * | `POST /users {id?, companyId, email, name, active?}` | 201 the user · 404 unknown company · 409 the id or the e-mail exists · 422 |
 * | `PATCH /users/:id {companyId?, email?, name?, active?}` | 200 the user · 404 (user or company) · 409 the e-mail belongs to another user · 422 |
 * | `DELETE /users/:id` (hard), `?soft=true` (soft) | 200 `{entity, id, version, state, deletedAt}` · 404 |
 * | `GET /companies`, `GET /users` | 200 live and soft-deleted rows with `version`, `updatedAt`, `deletedAt` |
 * | `POST /admin/full-sync {entity, ids?}` | 202 `{entity, queued}`: snapshot events queued in the outbox |
 * | `GET /health`, `GET /metrics` | service status (JSON), Prometheus metrics (text) |
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { HttpRouter } from "effect/http"
import type { SqlError } from "effect/sql"
import type { Errors } from "entity-sync"
import { Email, EntityId, Name } from "../contracts/index.ts"
import * as ApiError from "../http/ApiError.ts"
import * as Decode from "../http/Decode.ts"
import type { Route } from "../http/HttpApp.ts"
import type { Accounts, CompanyInUse, EmailInUse, UnknownCompany } from "./Accounts.ts"

/** `POST /companies` body. */
export const CreateCompany = Schema.Struct({ id: Schema.optionalKey(EntityId), name: Name })

/** `PATCH /companies/:id` body. */
export const RenameCompany = Schema.Struct({ name: Name })

/** `POST /users` body; `active` defaults to true. */
export const CreateUser = Schema.Struct({
  id: Schema.optionalKey(EntityId),
  companyId: EntityId,
  email: Email,
  name: Name,
  active: Schema.optionalKey(Schema.Boolean)
})

/** `PATCH /users/:id` body: the fields to change. */
export const UpdateUser = Schema.Struct({
  companyId: Schema.optionalKey(EntityId),
  email: Schema.optionalKey(Email),
  name: Schema.optionalKey(Name),
  active: Schema.optionalKey(Schema.Boolean)
})

/** `DELETE /users/:id` query. */
export const DeleteUserQuery = Schema.Struct({ soft: Schema.optionalKey(Schema.Literals(["true", "false"])) })

/** `POST /admin/full-sync` body. */
export const FullSyncRequest = Schema.Struct({
  entity: Schema.Literals(["Company", "User"]),
  ids: Schema.optionalKey(Schema.Array(EntityId))
})

const newId = (prefix: string) => `${prefix}-${crypto.randomUUID()}`

/** The domain's errors as HTTP errors. */
const failed = (
  error: Errors.EntityExists | Errors.EntityNotFound | UnknownCompany | CompanyInUse | EmailInUse | SqlError.SqlError
): Effect.Effect<never, ApiError.ApiError> => {
  switch (error._tag) {
    case "EmailInUse":
      return Effect.fail(ApiError.conflict(error.message, { email: error.email }))
    case "EntityExists":
    case "CompanyInUse":
      return Effect.fail(
        ApiError.conflict(error.message, error._tag === "CompanyInUse" ? { userIds: [...error.userIds] } : undefined)
      )
    case "EntityNotFound":
    case "UnknownCompany":
      return Effect.fail(ApiError.notFound(error.message))
    case "SqlError":
      return ApiError.fromSqlError(error)
  }
}

/** The routes of the accounts API over the domain (health and metrics are added by the service). */
export const routes = (accounts: Accounts["Service"]): ReadonlyArray<Route> => [
  HttpRouter.route(
    "POST",
    "/companies",
    ApiError.respond(Effect.gen(function*() {
      const body = yield* Decode.body(CreateCompany)
      const company = yield* accounts.createCompany({ id: body.id ?? newId("c"), name: body.name }).pipe(
        Effect.catch(failed)
      )
      return ApiError.json(company, 201)
    }))
  ),
  HttpRouter.route(
    "PATCH",
    "/companies/:id",
    ApiError.respond(Effect.gen(function*() {
      const id = yield* Decode.param("id")
      const body = yield* Decode.body(RenameCompany)
      return ApiError.json(yield* accounts.renameCompany(id, body.name).pipe(Effect.catch(failed)))
    }))
  ),
  HttpRouter.route(
    "DELETE",
    "/companies/:id",
    ApiError.respond(Effect.gen(function*() {
      const id = yield* Decode.param("id")
      return ApiError.json(yield* accounts.deleteCompany(id).pipe(Effect.catch(failed)))
    }))
  ),
  HttpRouter.route(
    "GET",
    "/companies",
    ApiError.respond(Effect.map(accounts.companies.pipe(Effect.catch(failed)), ApiError.json))
  ),
  HttpRouter.route(
    "POST",
    "/users",
    ApiError.respond(Effect.gen(function*() {
      const body = yield* Decode.body(CreateUser)
      const user = yield* accounts.createUser({
        id: body.id ?? newId("u"),
        companyId: body.companyId,
        email: body.email,
        name: body.name,
        active: body.active ?? true
      }).pipe(Effect.catch(failed))
      return ApiError.json(user, 201)
    }))
  ),
  HttpRouter.route(
    "PATCH",
    "/users/:id",
    ApiError.respond(Effect.gen(function*() {
      const id = yield* Decode.param("id")
      const patch = yield* Decode.body(UpdateUser)
      return ApiError.json(yield* accounts.updateUser(id, patch).pipe(Effect.catch(failed)))
    }))
  ),
  HttpRouter.route(
    "DELETE",
    "/users/:id",
    ApiError.respond(Effect.gen(function*() {
      const id = yield* Decode.param("id")
      const query = yield* Decode.query(DeleteUserQuery)
      return ApiError.json(yield* accounts.deleteUser(id, { soft: query.soft === "true" }).pipe(Effect.catch(failed)))
    }))
  ),
  HttpRouter.route(
    "GET",
    "/users",
    ApiError.respond(Effect.map(accounts.users.pipe(Effect.catch(failed)), ApiError.json))
  ),
  HttpRouter.route(
    "POST",
    "/admin/full-sync",
    ApiError.respond(Effect.gen(function*() {
      const body = yield* Decode.body(FullSyncRequest)
      const queued = yield* accounts.fullSync(body.entity, body.ids).pipe(Effect.catch(failed))
      return ApiError.json({ entity: body.entity, queued }, 202)
    }))
  )
]
