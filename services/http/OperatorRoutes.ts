/**
 * The routes every demo service has for operators: `GET /health` and its two halves `GET /health/ready` and
 * `GET /health/live`: the library's `Health` checks as JSON, 503 when one fails. (`GET /metrics` is the
 * library's `PrometheusEndpoint.route`.)
 *
 * @since 0.1.0
 */
import { Effect, type Schema } from "effect"
import { HttpRouter } from "effect/http"
import { Health } from "entity-sync"
import * as ApiError from "./ApiError.ts"
import type { Route } from "./HttpApp.ts"

/** Details a service adds to its `/health` for people (counts, the database kind…), never failing. */
export type Details = Effect.Effect<{ readonly [key: string]: Schema.Json }>

/** How long `/health` waits for its checks and details before it answers 503. */
const answerTimeout = "5 seconds"

/**
 * Answers with `body` (200 when `ok`, else 503); 503 naming an error id when it fails or takes more than 5
 * seconds (the detail goes to the log under that id).
 */
const answer = (
  service: string,
  body: Effect.Effect<{ readonly ok: boolean; readonly json: { readonly [key: string]: Schema.Json } }>
) =>
  body.pipe(
    Effect.timeout(answerTimeout),
    Effect.map(({ json, ok }) =>
      ApiError.json({ status: ok ? "ok" : "unavailable", service, ...json }, ok ? 200 : 503)
    ),
    Effect.catchCause((cause) => {
      const errorId = ApiError.newErrorId()
      return Effect.as(
        Effect.logWarning(`health check failed (error id ${errorId})`, cause),
        ApiError.json({
          status: "unavailable",
          service,
          error: `the health check failed; the service's log has the detail under error id ${errorId}`,
          errorId
        }, 503)
      )
    })
  )

/**
 * The health routes of `service`, from its `Health` checks:
 * - `GET /health`: `{ status: "ok" | "unavailable", service, ...details, readiness: { <check>: { ok, since,
 *   cause? } }, liveness: { … } }`, 200 when every check passes, else 503;
 * - `GET /health/ready`: `{ status, service, readiness }`, 503 when the service cannot do its work now (a
 *   load balancer's probe);
 * - `GET /health/live`: `{ status, service, liveness }`, 503 only when it is stuck (an orchestrator's
 *   restart probe: an outage never fails it).
 */
export const health = (service: string, checks: Health.Health["Service"], details: Details): ReadonlyArray<Route> => [
  HttpRouter.route(
    "GET",
    "/health",
    answer(
      service,
      Effect.gen(function*() {
        const [readiness, liveness, extra] = yield* Effect.all([checks.readiness, checks.liveness, details], {
          concurrency: 3
        })
        const json = Health.toJson(readiness, liveness)
        return {
          ok: json.status === "ok",
          json: { ...extra, readiness: json.readiness, liveness: json.liveness }
        }
      })
    )
  ),
  HttpRouter.route(
    "GET",
    "/health/ready",
    answer(
      service,
      Effect.map(checks.readiness, (report) => ({
        ok: report.ok,
        json: { readiness: Health.checksJson(report) }
      }))
    )
  ),
  HttpRouter.route(
    "GET",
    "/health/live",
    answer(
      service,
      Effect.map(checks.liveness, (report) => ({
        ok: report.ok,
        json: { liveness: Health.checksJson(report) }
      }))
    )
  )
]
