/**
 * The routes every demo service has for operators: `GET /health` (JSON, 503 when a check fails) and
 * `GET /metrics` (the service's Effect metrics in the Prometheus text format).
 *
 * @since 0.1.0
 */
import { Effect, Metric, type Schema } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import * as ApiError from "./ApiError.ts"
import type { Route } from "./HttpApp.ts"

/** What a service reports about itself: whether it can serve, and details for people. */
export type Health = {
  readonly ok: boolean
  readonly details: { readonly [key: string]: Schema.Json }
}

/**
 * `GET /health`: 200 `{ status: "ok", service, ...details }`, or 503 `{ status: "unavailable", … }` when
 * `check` says so, fails or takes more than 5 seconds (the detail of a failure goes to the log under the
 * `errorId` of the answer).
 */
export const health = <E>(service: string, check: Effect.Effect<Health, E>): Route =>
  HttpRouter.route(
    "GET",
    "/health",
    check.pipe(
      Effect.timeout("5 seconds"),
      Effect.map(({ details, ok }) =>
        ApiError.json({ status: ok ? "ok" : "unavailable", service, ...details }, ok ? 200 : 503)
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
  )

/**
 * `GET /metrics`: the metrics of `registry` (the service's own, so that two services in one process
 * report separately) in the Prometheus text format.
 */
export const metrics = (registry: Metric.MetricRegistry): Route =>
  HttpRouter.route(
    "GET",
    "/metrics",
    PrometheusMetrics.format().pipe(
      Effect.provideService(Metric.MetricRegistry, registry),
      Effect.map((text) => HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" }))
    )
  )
