/**
 * The directory service's HTTP API (default port 3002): the copies it keeps, read-only, and its
 * operator controls. Errors are JSON `{ error, message, details? }`.
 *
 * | route | answer |
 * |---|---|
 * | `GET /companies`, `GET /companies/:id` | company copies with `version`, `syncedAt`, `deletedAt` · 404 |
 * | `GET /employees`, `GET /employees?companyId=`, `GET /employees/:id` | employees (User copies), same fields · 404 |
 * | `POST /admin/resync {entity, ids?}` | 202 `{requestId, owner, entity, ids?}`: a resync request published to the owner |
 * | `GET /admin/dead-letters` | 200 dead letters: reason, entity, id, attempts, first/last seen |
 * | `POST /admin/dead-letters/:messageId/replay` | 202 `{messageId, store}` · 404 |
 * | `GET /health`, `GET /metrics` | service status (JSON), Prometheus metrics (text) |
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { HttpRouter } from "effect/http"
import type { SqlError } from "effect/sql"
import type { BrokerUnavailable, PublishRejected } from "../../src/Errors.ts"
import { EntityId } from "../contracts/index.ts"
import * as ApiError from "../http/ApiError.ts"
import * as Decode from "../http/Decode.ts"
import type { Route } from "../http/HttpApp.ts"
import type { Directory } from "./Directory.ts"

/** `GET /employees` query. */
export const EmployeesQuery = Schema.Struct({ companyId: Schema.optionalKey(Schema.String) })

/** `POST /admin/resync` body. */
export const ResyncBody = Schema.Struct({
  entity: Schema.Literals(["Company", "User"]),
  ids: Schema.optionalKey(Schema.Array(EntityId))
})

const failed = (error: SqlError.SqlError | BrokerUnavailable | PublishRejected): Effect.Effect<never, ApiError.ApiError> =>
  error._tag === "SqlError" ? ApiError.fromSqlError(error) : ApiError.fromBrokerError(error)

const found = <A extends object>(what: string, id: string) => (row: A | null) =>
  row === null ? Effect.fail(ApiError.notFound(`${what} ${id} is not in the directory`)) : Effect.succeed(row)

/** The routes of the directory API over its operations (health and metrics are added by the service). */
export const routes = (directory: Directory["Service"]): ReadonlyArray<Route> => [
  HttpRouter.route(
    "GET",
    "/companies",
    ApiError.respond(Effect.map(directory.companies.pipe(Effect.catch(failed)), ApiError.json))
  ),
  HttpRouter.route(
    "GET",
    "/companies/:id",
    ApiError.respond(Effect.gen(function*() {
      const id = yield* Decode.param("id")
      const company = yield* directory.company(id).pipe(Effect.catch(failed), Effect.flatMap(found("Company", id)))
      return ApiError.json(company)
    }))
  ),
  HttpRouter.route(
    "GET",
    "/employees",
    ApiError.respond(Effect.gen(function*() {
      const query = yield* Decode.query(EmployeesQuery)
      return ApiError.json(yield* directory.employees(query.companyId).pipe(Effect.catch(failed)))
    }))
  ),
  HttpRouter.route(
    "GET",
    "/employees/:id",
    ApiError.respond(Effect.gen(function*() {
      const id = yield* Decode.param("id")
      const employee = yield* directory.employee(id).pipe(Effect.catch(failed), Effect.flatMap(found("Employee", id)))
      return ApiError.json(employee)
    }))
  ),
  HttpRouter.route(
    "POST",
    "/admin/resync",
    ApiError.respond(Effect.gen(function*() {
      const body = yield* Decode.body(ResyncBody)
      const request = yield* directory.resync(body.entity, body.ids).pipe(Effect.catch(failed))
      return ApiError.json({
        requestId: request.requestId,
        owner: request.owner,
        entity: request.entity,
        ...(request.ids !== undefined ? { ids: [...request.ids] } : {})
      }, 202)
    }))
  ),
  HttpRouter.route(
    "GET",
    "/admin/dead-letters",
    ApiError.respond(Effect.map(directory.deadLetters.pipe(Effect.catch(failed)), ApiError.json))
  ),
  HttpRouter.route(
    "POST",
    "/admin/dead-letters/:messageId/replay",
    ApiError.respond(Effect.gen(function*() {
      const messageId = yield* Decode.param("messageId")
      const store = yield* directory.replay(messageId).pipe(Effect.catch(failed))
      if (store === null) return yield* ApiError.notFound(`no dead letter with message id ${messageId}`)
      return ApiError.json({ messageId, store }, 202)
    }))
  )
]
