/**
 * What became of an event the consumer settled, and how every such outcome is counted and logged (R10).
 *
 * @since 0.1.0
 */
import { Clock, Effect, Exit, type Tracer } from "effect"
import * as Envelope from "../Envelope.ts"
import type { DependencyMissing, MalformedMessage, StaleMessage } from "../Errors.ts"
import * as Metrics from "../Metrics.ts"
import * as Tracing from "../Tracing.ts"

/** What became of an event. */
export type Verdict =
  /** `wokeParked`: the apply made parked events due (see `Inbox.wake`). */
  | { readonly _tag: "applied"; readonly wokeParked: boolean }
  /** Its dependencies are missing and it waits for them in process (nothing was written for it). */
  | { readonly _tag: "missing"; readonly error: DependencyMissing }
  | { readonly _tag: "duplicate" }
  | { readonly _tag: "stale"; readonly error: StaleMessage }
  | { readonly _tag: "parked"; readonly error: DependencyMissing }
  | { readonly _tag: "deadLettered"; readonly error: DependencyMissing | MalformedMessage }

/** Applied, without waking parked events. */
export const applied: Verdict = { _tag: "applied", wokeParked: false }

/** Applied, and parked events became due. */
export const appliedWoke: Verdict = { _tag: "applied", wokeParked: true }

/** A duplicate: the inbox had seen its message. */
export const duplicate: Verdict = { _tag: "duplicate" }

/** What the verdicts of one call to `record` mean for the consumer's waiters. */
export interface Recorded {
  /** Some event was applied: events waiting in process may go on. */
  readonly applied: boolean
  /** Events were parked or parked events became due: the parked-event worker should look. */
  readonly parkedChanged: boolean
}

/**
 * Counts and logs the verdicts on settled events of `consumer` (R10), each counter updated once per call,
 * with the apply latency of every applied event; `woken` counts applied events also as woken (they had
 * waited for a dependency).
 */
export const record = (
  consumer: string,
  envelopes: ReadonlyArray<Envelope.Envelope>,
  verdicts: ReadonlyArray<Verdict>,
  woken: boolean
): Effect.Effect<Recorded> =>
  Effect.gen(function*() {
    const counts = new Map<string, { entity: string; outcome: Metrics.Outcome; n: number }>()
    const tally = (entity: string, outcome: Metrics.Outcome) => {
      const key = `${outcome}:${entity}`
      const entry = counts.get(key)
      if (entry === undefined) counts.set(key, { entity, outcome, n: 1 })
      else entry.n++
    }
    const now = yield* Clock.currentTimeMillis
    const latencies = new Map<string, Array<number>>()
    let anyApplied = false
    let anyParkedChange = false
    for (let i = 0; i < envelopes.length; i++) {
      const envelope = envelopes[i]!
      const verdict = verdicts[i]!
      switch (verdict._tag) {
        case "missing":
          break
        case "applied": {
          anyApplied = true
          if (verdict.wokeParked) anyParkedChange = true
          tally(envelope.entity, "applied")
          if (woken) tally(envelope.entity, "woken")
          const latency = Math.max(0, now - Date.parse(envelope.occurredAt))
          const ofEntity = latencies.get(envelope.entity)
          if (ofEntity === undefined) latencies.set(envelope.entity, [latency])
          else ofEntity.push(latency)
          break
        }
        case "duplicate":
          tally(envelope.entity, "duplicate")
          break
        case "parked":
          anyParkedChange = true
          tally(envelope.entity, "parked")
          yield* Effect.logDebug(verdict.error.message)
          break
        case "stale":
          tally(envelope.entity, "stale")
          yield* Effect.logDebug(verdict.error.message)
          break
        case "deadLettered":
          tally(envelope.entity, "deadLettered")
          yield* Effect.logWarning(`dead-lettered: ${verdict.error.message}`)
          break
      }
    }
    for (const { entity, n, outcome } of counts.values()) yield* Metrics.countOutcome(consumer, entity, outcome, n)
    for (const [entity, millis] of latencies) yield* Metrics.recordApplyLatencies(entity, millis)
    return { applied: anyApplied, parkedChanged: anyParkedChange }
  })

/** The outcome a verdict is traced as (`Tracing.attributes.outcome`). */
const outcomeOf = (verdict: Verdict): string => verdict._tag === "missing" ? "waiting" : verdict._tag

/** The longest reason a span event carries. */
const maxTracedReason = 500

/**
 * Notes a verdict on the event's span (R10): its outcome, and a span event when it waits, is parked, is
 * dead-lettered, was woken (`woken`: it had waited) or made parked events due. Reasons are bounded.
 */
export const annotate = (span: Tracer.Span, verdict: Verdict, woken: boolean, now: bigint): void => {
  span.attribute(Tracing.attributes.outcome, outcomeOf(verdict))
  switch (verdict._tag) {
    case "applied":
      if (woken) span.event(Tracing.events.woken, now)
      if (verdict.wokeParked) span.event(Tracing.events.wokeParked, now)
      return
    case "missing":
      span.event(Tracing.events.waiting, now, {
        [Tracing.attributes.reason]: Envelope.bounded(verdict.error.message, maxTracedReason)
      })
      return
    case "parked":
    case "deadLettered":
      span.event(verdict._tag === "parked" ? Tracing.events.parked : Tracing.events.deadLettered, now, {
        [Tracing.attributes.reason]: Envelope.bounded(verdict.error.message, maxTracedReason)
      })
      return
    case "duplicate":
    case "stale":
      return
  }
}

/** Spans ended here: an event's span is ended once, whichever path settles it first. */
const ended = new WeakSet<Tracer.Span>()

/**
 * Ends the event's span (when there is one and it is not ended yet) with its verdict (see `annotate`); `verdict` undefined: with
 * `outcome` only (e.g. dead-lettered for a defect, requeued after a database error).
 */
export const endSpan = (
  span: Tracer.Span | undefined,
  verdict: Verdict | { readonly outcome: string; readonly reason?: string },
  woken: boolean
): Effect.Effect<void> =>
  span === undefined ? Effect.void : Effect.map(Clock.currentTimeNanos, (now) => {
    if (ended.has(span)) return
    ended.add(span)
    if ("_tag" in verdict) annotate(span, verdict, woken, now)
    else {
      span.attribute(Tracing.attributes.outcome, verdict.outcome)
      if (verdict.reason !== undefined) {
        span.event(Tracing.events.deadLettered, now, {
          [Tracing.attributes.reason]: Envelope.bounded(verdict.reason, maxTracedReason)
        })
      }
    }
    span.end(now, Exit.void)
  })
