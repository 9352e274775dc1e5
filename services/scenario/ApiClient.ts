/**
 * A small JSON client for the scenario: calls a service's HTTP API through the current `HttpClient` (over
 * the network, or in process) and returns the status with the body, parsed when it is JSON.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { HttpClient, type HttpClientError, HttpClientRequest } from "effect/http"

/** A response: its status and its body (JSON, or the text when it is not JSON). */
export interface Reply {
  readonly status: number
  readonly body: unknown
}

/** What to send: a JSON value, or raw text (e.g. malformed JSON). */
export type Body = { readonly json: unknown } | { readonly text: string }

/** Calls `method url` with an optional body and headers (e.g. `authorization`). */
export const call = (
  method: "GET" | "POST" | "PATCH" | "DELETE",
  url: string,
  body?: Body,
  headers?: Readonly<Record<string, string>>
): Effect.Effect<Reply, HttpClientError.HttpClientError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const base = HttpClientRequest.make(method)(url, headers !== undefined ? { headers } : undefined)
    const request = body === undefined
      ? base
      : "json" in body
      ? HttpClientRequest.bodyJsonUnsafe(base, body.json)
      : HttpClientRequest.bodyText(base, body.text, "application/json")
    const response = yield* client.execute(request)
    const text = yield* response.text
    const parsed = yield* Effect.option(Effect.try((): unknown => JSON.parse(text)))
    return { status: response.status, body: parsed._tag === "Some" ? parsed.value : text }
  })

/** The headers of an admin request: `Authorization: Bearer <token>` (none without a token). */
export const adminHeaders = (token: string | undefined): Readonly<Record<string, string>> | undefined =>
  token === undefined ? undefined : { authorization: `Bearer ${token}` }

/** Decodes a reply's body with `schema`, or dies naming the call (the API broke its contract). */
export const decodeBody = <A>(schema: Schema.Decoder<A>, what: string) => (reply: Reply): Effect.Effect<A> =>
  Schema.decodeUnknownEffect(schema)(reply.body).pipe(
    Effect.mapError((error) =>
      new Error(`${what}: unexpected response ${reply.status} ${JSON.stringify(reply.body)}: ${error.message}`)
    ),
    Effect.orDie
  )
