/**
 * Reading the parts of a request into typed values with Schema: a body larger than the service accepts is
 * a 413 (checked from `Content-Length` before reading, and counted while reading: a body is never buffered
 * past the limit), a body that is not JSON a 400, a body (or query) that does not match its schema a 422
 * whose `details` list at most `maxIssues` issues with their paths (`omittedIssues` says how many more).
 * Unknown fields are issues too, so a misspelt field is reported rather than ignored.
 *
 * @since 0.1.0
 */
import { Context, Effect, Schema, SchemaIssue, Stream } from "effect"
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

/** The most issues a 422 lists. */
export const maxIssues = 20

/** The longest issue message or path a 422 shows, in characters. */
const maxIssueText = 300

/** The request body size a service accepts when nothing else is configured: 64 KiB. */
export const defaultMaxBodyBytes = 64 * 1024

/** The largest request body the current service accepts, in bytes (`HttpApp.make` sets it). */
export const MaxBodyBytes = Context.Reference<number>("services/http/MaxBodyBytes", {
  defaultValue: () => defaultMaxBodyBytes
})

const cut = (text: string) => (text.length <= maxIssueText ? text : `${text.slice(0, maxIssueText)}…`)

const decodeWith = <A>(schema: Schema.Decoder<A>, what: string) => {
  const decode = Schema.decodeUnknownEffect(schema, { errors: "all", onExcessProperty: "error" })
  return (input: unknown): Effect.Effect<A, ApiError.ApiError> =>
    decode(input).pipe(
      Effect.mapError((error) => {
        const issues = issuesOf(error)
        const listed = issues.slice(0, maxIssues).map((issue) => ({
          path: cut(issue.path),
          message: cut(issue.message)
        }))
        const omitted = issues.length - listed.length
        const invalid = ApiError.unprocessable(
          omitted > 0
            ? `the ${what} is invalid: ${issues.length} issues, the first ${listed.length} listed`
            : `the ${what} is invalid`,
          listed
        )
        return omitted > 0 ? ApiError.withExtra(invalid, { omittedIssues: omitted }) : invalid
      })
    )
}

const tooLarge = (limit: number) =>
  ApiError.withExtra(
    ApiError.payloadTooLarge(`the request body is larger than the ${limit} bytes this service accepts`),
    { limitBytes: limit }
  )

/**
 * The request's body as text, at most `MaxBodyBytes`: 413 when `Content-Length` says more, or as soon as
 * more arrives (the rest is not read).
 */
export const text: Effect.Effect<string, ApiError.ApiError, HttpServerRequest.HttpServerRequest> = Effect.gen(
  function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const limit = yield* MaxBodyBytes
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > limit) return yield* tooLarge(limit)
    const chunks: Array<Uint8Array> = []
    let size = 0
    yield* request.stream.pipe(
      Stream.mapError(() => ApiError.badRequest("the request body could not be read")),
      Stream.runForEach((chunk) => {
        size += chunk.byteLength
        if (size > limit) return Effect.fail(tooLarge(limit))
        chunks.push(chunk)
        return Effect.void
      })
    )
    return Buffer.concat(chunks, size).toString("utf8")
  }
)

/**
 * The request's JSON body, decoded with `schema`: 413 when it is too large, 400 when it is not JSON, 422 when
 * it does not match.
 */
export const body = <A>(
  schema: Schema.Decoder<A>
): Effect.Effect<A, ApiError.ApiError, HttpServerRequest.HttpServerRequest> => {
  const decode = decodeWith(schema, "request body")
  return Effect.gen(function*() {
    const raw = yield* text
    if (raw.trim() === "") return yield* ApiError.badRequest("a JSON request body is required")
    const json = yield* Effect.try({
      try: (): unknown => JSON.parse(raw),
      catch: (cause) =>
        ApiError.badRequest(`malformed JSON: ${cut(cause instanceof Error ? cause.message : String(cause))}`)
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
    return value === undefined
      ? Effect.fail(ApiError.notFound(`missing path parameter ${name}`))
      : Effect.succeed(value)
  })
