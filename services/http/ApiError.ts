/**
 * The HTTP errors of the demo services and how they are answered: always JSON
 * `{ error, message, details?, … }` with the matching status — 400 malformed request, 401 missing or wrong
 * admin token, 403 admin routes disabled, 404 unknown route or entity, 409 conflict, 413 body too large
 * (with `limitBytes`), 422 invalid body (at most `maxIssues` schema issues in `details`, and
 * `omittedIssues`), 503 database or broker unavailable, 500 anything unexpected.
 *
 * A 503 or 500 never carries the broker's or the database's own error text: the detail goes to the log
 * under an error id, and the response names the problem and carries that `errorId`, so an operator can
 * find the log line.
 *
 * @since 0.1.0
 */
import { Cause, Effect, Schema } from "effect"
import { HttpServerError, HttpServerResponse } from "effect/http"
import type { SqlError } from "effect/sql"
import type { Errors } from "entity-sync"

/** The error codes, as the `error` field of a response. */
export const ErrorCode = Schema.Literals([
  "BadRequest",
  "Unauthorized",
  "Forbidden",
  "NotFound",
  "Conflict",
  "PayloadTooLarge",
  "UnprocessableEntity",
  "ServiceUnavailable",
  "InternalError"
])
export type ErrorCode = typeof ErrorCode.Type

const statusOf: Record<ErrorCode, number> = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  Conflict: 409,
  PayloadTooLarge: 413,
  UnprocessableEntity: 422,
  ServiceUnavailable: 503,
  InternalError: 500
}

/** An error a handler answers with; `status` follows from `error`. */
export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  error: ErrorCode,
  message: Schema.String,
  details: Schema.optionalKey(Schema.Json),
  /** More top-level fields of the response (e.g. `errorId`, `limitBytes`, `omittedIssues`). */
  extra: Schema.optionalKey(Schema.Record(Schema.String, Schema.Json))
}) {
  /** The HTTP status of the response. */
  get status(): number {
    return statusOf[this.error]
  }
}

const make = (error: ErrorCode) => (message: string, details?: Schema.Json): ApiError =>
  new ApiError({ error, message, ...(details !== undefined ? { details } : {}) })

/** The same error with more top-level fields in its response. */
export const withExtra = (error: ApiError, extra: { readonly [key: string]: Schema.Json }): ApiError =>
  new ApiError({
    error: error.error,
    message: error.message,
    ...(error.details !== undefined ? { details: error.details } : {}),
    extra: { ...error.extra, ...extra }
  })

/** A new error id: what a response carries and the log line of its detail is annotated with. */
export const newErrorId = (): string => crypto.randomUUID()

/**
 * Logs `detail` at error level under a new error id and answers `error` carrying that `errorId` (the
 * detail itself stays in the log).
 */
export const logged = (what: string, detail: unknown, error: ApiError): Effect.Effect<never, ApiError> =>
  Effect.suspend(() => {
    const errorId = newErrorId()
    return Effect.andThen(
      Effect.logError(`${what} (error id ${errorId})`, detail).pipe(Effect.annotateLogs("errorId", errorId)),
      Effect.fail(withExtra(error, { errorId }))
    )
  })

/** 401: an admin route without the right `Authorization: Bearer` token. */
export const unauthorized = make("Unauthorized")
/** 403: the route is disabled (e.g. admin routes without `ADMIN_TOKEN`). */
export const forbidden = make("Forbidden")
/** 413: the request body is larger than the service accepts. */
export const payloadTooLarge = make("PayloadTooLarge")
/** 400: the request cannot be read (e.g. malformed JSON). */
export const badRequest = make("BadRequest")
/** 404: no such route or entity. */
export const notFound = make("NotFound")
/** 409: the request conflicts with the current state. */
export const conflict = make("Conflict")
/** 422: the request was read but is invalid; `details` holds the issues. */
export const unprocessable = make("UnprocessableEntity")
/** 503: a dependency (database, broker) is unavailable; retrying later may succeed. */
export const unavailable = make("ServiceUnavailable")

/** A database error as a 503 with an error id (its detail is logged, not sent). */
export const fromSqlError = (error: SqlError.SqlError): Effect.Effect<never, ApiError> =>
  logged("request failed: database error", error, unavailable("the database is unavailable; try again later"))

/** A broker error as a 503 with an error id (its detail is logged, not sent). */
export const fromBrokerError = (
  error: Errors.BrokerUnavailable | Errors.PublishRejected
): Effect.Effect<never, ApiError> =>
  logged(
    "request failed: broker error",
    error,
    unavailable(
      error._tag === "PublishRejected"
        ? "the message broker did not route the message; try again later"
        : "the message broker is unavailable; try again later"
    )
  )

/** The JSON response of an error. */
export const toResponse = (error: ApiError): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(
    {
      ...error.extra,
      error: error.error,
      message: error.message,
      ...(error.details !== undefined ? { details: error.details } : {})
    },
    { status: error.status }
  )

/** A JSON success response. */
export const json = (body: Schema.Json, status = 200): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(body, { status })

/** Runs a route handler and answers its `ApiError` as JSON. */
export const respond = <R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiError, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchTag(handler, "ApiError", (error) => Effect.succeed(toResponse(error)))

/**
 * The outermost layer of a service's HTTP app: an unknown route is a JSON 404, an unreadable request a
 * JSON 400, and any other failure or defect a JSON 500 (logged with its cause). Interruptions (the
 * client went away, shutdown) stay interruptions.
 */
export const catchAll = <E, R>(
  app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  app.pipe(
    Effect.catchCause((cause) => {
      if (Cause.hasInterruptsOnly(cause)) return Effect.interrupt
      const error = Cause.findErrorOption(cause)
      if (error._tag === "Some" && HttpServerError.isHttpServerError(error.value)) {
        const reason = error.value.reason
        if (reason._tag === "RouteNotFound") return Effect.succeed(toResponse(notFound("no such route")))
        if (reason._tag === "RequestParseError") {
          return Effect.succeed(toResponse(badRequest(`the request could not be read: ${reason.message}`)))
        }
      }
      const errorId = newErrorId()
      return Effect.as(
        Effect.logError(`request failed unexpectedly (error id ${errorId})`, cause).pipe(
          Effect.annotateLogs("errorId", errorId)
        ),
        toResponse(
          new ApiError({
            error: "InternalError",
            message: `an unexpected error occurred; the service's log has the detail under error id ${errorId}`,
            extra: { errorId }
          })
        )
      )
    })
  )
