/**
 * The directory service's HTTP API (default port 3002): the copies it keeps, read-only, and its
 * operator controls. Errors are JSON `{ error, message, details? }`.
 *
 * | route | answer |
 * |---|---|
 * | `GET /companies`, `GET /companies/:id` | company copies with `version`, `syncedAt`, `deletedAt` · 404 |
 * | `GET /employees`, `GET /employees?companyId=`, `GET /employees/:id` | employees (User copies), same fields · 404 |
 * | `POST /admin/resync {entity, ids?}` | 202 `{requestId, owner, entity, ids?}`: a resync request published to the owner |
 * | `GET /admin/dead-letters?limit=&after=&reason=&entity=&from=&to=` | 200 one page of dead letters (inbox and broker, oldest first): cause (`error`), reason, entity, id, attempts, first/last seen; headers `X-Next-Cursor` (pass as `after`), `X-Total-Inbox`, `X-Total-Broker`, `X-Broker-Unlisted` |
 * | `POST /admin/dead-letters/:messageId/replay` | 202 `{messageId, store}` · 404 |
 * | `POST /admin/dead-letters/replay {reasons?, entities?, from?, to?}` | 202 `{inbox, broker, brokerUnread}`: every matching dead letter replayed |
 *
 * `/admin/*` routes need `Authorization: Bearer <ADMIN_TOKEN>` (see `HttpApp`).
 * | `GET /health`, `GET /metrics` | service status (JSON), Prometheus metrics (text) |
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import type { SqlError } from "effect/sql"
import type { DeadLetters, Errors } from "entity-sync"
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

/** An ISO-8601 time, as epoch milliseconds. */
const Time = Schema.String.check(
  Schema.isMaxLength(64),
  Schema.makeFilter((text: string) => !Number.isNaN(Date.parse(text)) || "an ISO-8601 time, e.g. 2026-12-01T10:00:00Z")
)

/** A reason tag or an entity name in a filter. */
const Word = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(200))

/** `GET /admin/dead-letters` query: page size (1–1000, default 100), cursor, filters (comma-separated lists). */
export const DeadLettersQuery = Schema.Struct({
  limit: Schema.optionalKey(Schema.String.check(Schema.isPattern(/^\d{1,4}$/))),
  after: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(8192))),
  reason: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(2000))),
  entity: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(2000))),
  from: Schema.optionalKey(Time),
  to: Schema.optionalKey(Time)
})

/** `POST /admin/dead-letters/replay` body: which dead letters to replay (at least one condition). */
export const ReplayBody = Schema.Struct({
  reasons: Schema.optionalKey(Schema.Array(Word).check(Schema.isMaxLength(50))),
  entities: Schema.optionalKey(Schema.Array(Word).check(Schema.isMaxLength(50))),
  from: Schema.optionalKey(Time),
  to: Schema.optionalKey(Time)
})

const list = (text: string | undefined) =>
  text === undefined ? undefined : text.split(",").map((word) => word.trim()).filter((word) => word !== "").slice(0, 50)

/** The library's filter of a query or body. */
const filterOf = (fields: {
  readonly reasons?: ReadonlyArray<string> | undefined
  readonly entities?: ReadonlyArray<string> | undefined
  readonly from?: string | undefined
  readonly to?: string | undefined
}): DeadLetters.Filter => ({
  ...(fields.reasons !== undefined ? { reasons: fields.reasons } : {}),
  ...(fields.entities !== undefined ? { entities: fields.entities } : {}),
  ...(fields.from !== undefined ? { from: Date.parse(fields.from) } : {}),
  ...(fields.to !== undefined ? { to: Date.parse(fields.to) } : {})
})

const failed = (
  error: SqlError.SqlError | Errors.BrokerUnavailable | Errors.PublishRejected | DeadLetters.InvalidCursor
): Effect.Effect<never, ApiError.ApiError> =>
  error._tag === "SqlError"
    ? ApiError.fromSqlError(error)
    : error._tag === "InvalidCursor"
    ? Effect.fail(ApiError.unprocessable(error.message))
    : ApiError.fromBrokerError(error)

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
    ApiError.respond(Effect.gen(function*() {
      const query = yield* Decode.query(DeadLettersQuery)
      const page = yield* directory.deadLetters({
        ...(query.limit !== undefined ? { limit: Number(query.limit) } : {}),
        ...(query.after !== undefined ? { after: query.after } : {}),
        filter: filterOf({ reasons: list(query.reason), entities: list(query.entity), from: query.from, to: query.to })
      }).pipe(Effect.catch(failed))
      return HttpServerResponse.setHeaders(ApiError.json(page.rows), {
        "x-total-inbox": String(page.totals.inbox),
        "x-total-broker": String(page.totals.broker),
        "x-broker-unlisted": String(page.brokerUnlisted),
        ...(page.next !== null ? { "x-next-cursor": page.next } : {})
      })
    }))
  ),
  HttpRouter.route(
    "POST",
    "/admin/dead-letters/replay",
    ApiError.respond(Effect.gen(function*() {
      const body = yield* Decode.body(ReplayBody)
      if (
        body.reasons === undefined && body.entities === undefined && body.from === undefined && body.to === undefined
      ) {
        return yield* ApiError.unprocessable("give at least one of reasons, entities, from, to")
      }
      const replayed = yield* directory.replayMatching(filterOf(body)).pipe(Effect.catch(failed))
      return ApiError.json({ ...replayed }, 202)
    }))
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
