/**
 * The HTTP errors of the demo services and how they are answered: always JSON
 * `{ error, message, details? }` with the matching status — 400 malformed request, 404 unknown route or
 * entity, 409 conflict, 422 invalid body (the schema issues in `details`), 503 database or broker
 * unavailable, 500 anything unexpected (logged, never leaked).
 *
 * @since 0.1.0
 */
import { Cause, Effect, Schema } from "effect"
import { HttpServerError, HttpServerResponse } from "effect/http"
import type { SqlError } from "effect/sql"
import type { BrokerUnavailable, PublishRejected } from "../../src/Errors.ts"

/** The error codes, as the `error` field of a response. */
export const ErrorCode = Schema.Literals([
  "BadRequest",
  "NotFound",
  "Conflict",
  "UnprocessableEntity",
  "ServiceUnavailable",
  "InternalError"
])
export type ErrorCode = typeof ErrorCode.Type

const statusOf: Record<ErrorCode, number> = {
  BadRequest: 400,
  NotFound: 404,
  Conflict: 409,
  UnprocessableEntity: 422,
  ServiceUnavailable: 503,
  InternalError: 500
}

/** An error a handler answers with; `status` follows from `error`. */
export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  error: ErrorCode,
  message: Schema.String,
  details: Schema.optionalKey(Schema.Json)
}) {
  /** The HTTP status of the response. */
  get status(): number {
    return statusOf[this.error]
  }
}

const make = (error: ErrorCode) => (message: string, details?: Schema.Json): ApiError =>
  new ApiError({ error, message, ...(details !== undefined ? { details } : {}) })

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

/** A database error as a 503 (its detail is logged, not sent). */
export const fromSqlError = (error: SqlError.SqlError): Effect.Effect<never, ApiError> =>
  Effect.andThen(
    Effect.logError("request failed: database error", error),
    Effect.fail(unavailable("the database is unavailable; try again later"))
  )

/** A broker error as a 503. */
export const fromBrokerError = (error: BrokerUnavailable | PublishRejected): Effect.Effect<never, ApiError> =>
  Effect.andThen(
    Effect.logError("request failed: broker error", error),
    Effect.fail(unavailable(`the message broker did not take the message: ${error.message}`))
  )

/** The JSON response of an error. */
export const toResponse = (error: ApiError): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(
    { error: error.error, message: error.message, ...(error.details !== undefined ? { details: error.details } : {}) },
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
      return Effect.as(
        Effect.logError("request failed unexpectedly", cause),
        toResponse(
          new ApiError({ error: "InternalError", message: "an unexpected error occurred; see the service's log" })
        )
      )
    })
  )
