/**
 * Reading the parts of a request into typed values with Schema: a body that is not JSON is a 400, a
 * body (or query) that does not match its schema a 422 whose `details` list every issue with its path.
 * Unknown fields are issues too, so a misspelt field is reported rather than ignored.
 *
 * @since 0.1.0
 */
import { Effect, Schema, SchemaIssue } from "effect"
import { HttpRouter, HttpServerRequest } from "effect/http"
import * as ApiError from "./ApiError.ts"

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** One schema issue of a request: where (`path`, dotted; empty for the whole value) and what. */
export interface Issue {
  readonly path: string
  readonly message: string
}

/** The issues of a failed decoding, each with its path. */
export const issuesOf = (error: Schema.SchemaError): ReadonlyArray<Issue> =>
  formatter(error.issue).issues.map((issue) => ({
    path: (issue.path ?? []).map((segment) => String(typeof segment === "object" ? segment.key : segment)).join("."),
    message: issue.message
  }))

const decodeWith = <A>(schema: Schema.Decoder<A>, what: string) => {
  const decode = Schema.decodeUnknownEffect(schema, { errors: "all", onExcessProperty: "error" })
  return (input: unknown): Effect.Effect<A, ApiError.ApiError> =>
    decode(input).pipe(
      Effect.mapError((error) =>
        ApiError.unprocessable(
          `the ${what} is invalid`,
          issuesOf(error).map((issue) => ({ path: issue.path, message: issue.message }))
        )
      )
    )
}

/** The request's JSON body, decoded with `schema`: 400 when it is not JSON, 422 when it does not match. */
export const body = <A>(
  schema: Schema.Decoder<A>
): Effect.Effect<A, ApiError.ApiError, HttpServerRequest.HttpServerRequest> => {
  const decode = decodeWith(schema, "request body")
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const text = yield* request.text.pipe(
      Effect.mapError(() => ApiError.badRequest("the request body could not be read"))
    )
    if (text.trim() === "") return yield* ApiError.badRequest("a JSON request body is required")
    const json = yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: (cause) => ApiError.badRequest(`malformed JSON: ${cause instanceof Error ? cause.message : String(cause)}`)
    })
    return yield* decode(json)
  })
}

/** The query parameters, decoded with `schema` (a struct of optional string fields): 422 when they do not match. */
export const query = <A>(
  schema: Schema.Decoder<A>
): Effect.Effect<A, ApiError.ApiError, HttpServerRequest.ParsedSearchParams> => {
  const decode = decodeWith(schema, "query")
  return Effect.flatMap(HttpServerRequest.ParsedSearchParams, decode)
}

/** A path parameter of the matched route (e.g. `id` of `/users/:id`). */
export const param = (name: string): Effect.Effect<string, ApiError.ApiError, HttpRouter.RouteContext> =>
  Effect.flatMap(HttpRouter.params, (params) => {
    const value = params[name]
    return value === undefined ? Effect.fail(ApiError.notFound(`missing path parameter ${name}`)) : Effect.succeed(value)
  })
