/**
 * R10: the `GET /metrics` endpoint of a service — the metrics of its `Metric.MetricRegistry` in the
 * Prometheus text exposition format (version 0.0.4), for Prometheus to scrape. Give each service in a
 * process a registry of its own (`new Map()` provided as `Metric.MetricRegistry` where it starts) and its
 * endpoint that registry, so that two services in one process report separately.
 *
 * @since 0.2.0
 */
import { Effect, type Layer, Metric } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"

/** The content type of the text exposition format. */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

/** The path the endpoint is served at by default. */
export const defaultPath = "/metrics"

/** Options of the endpoint. */
export interface EndpointOptions {
  /** The registry to report (default: the registry of the context the request is handled in). */
  readonly registry?: Metric.MetricRegistry
  /** The path (default `/metrics`). */
  readonly path?: HttpRouter.PathInput
}

/** The metrics of `registry` (default: the current one) in the Prometheus text format. */
export const format = (registry?: Metric.MetricRegistry): Effect.Effect<string> =>
  registry === undefined
    ? PrometheusMetrics.format()
    : Effect.provideService(PrometheusMetrics.format(), Metric.MetricRegistry, registry)

/** The response to a scrape: `format(registry)` as `text/plain; version=0.0.4`. */
export const response = (registry?: Metric.MetricRegistry): Effect.Effect<HttpServerResponse.HttpServerResponse> =>
  Effect.map(format(registry), (text) => HttpServerResponse.text(text, { contentType }))

/** The route `GET /metrics` (or `options.path`), for routers assembled by hand. */
export const route = (options: EndpointOptions = {}): HttpRouter.Route<never, never> =>
  HttpRouter.route("GET", options.path ?? defaultPath, response(options.registry))

/** Adds `GET /metrics` (or `options.path`) to the `HttpRouter` of the application. */
export const layer = (options: EndpointOptions = {}): Layer.Layer<never, never, HttpRouter.HttpRouter> =>
  HttpRouter.add("GET", options.path ?? defaultPath, response(options.registry))
