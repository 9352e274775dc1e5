/**
 * The admin CLI's inputs, decoded with Schema: times (ISO-8601 or an age such as `15m`), durations, names,
 * lists of ids, page sizes and cursors. A value that does not decode is a `UsageError` naming the flag and
 * the form it expects.
 *
 * @since 0.2.0
 */
import { Effect, Option, Schema, SchemaGetter } from "effect"
import { maxIdLength, maxNameLength } from "../Envelope.ts"
import { UsageError } from "./Errors.ts"

const units: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const ageForm = /^(\d{1,9})(ms|s|m|h|d)$/
const isoForm = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/

/** Milliseconds of an age such as `90s`, `15m`, `2h`, `7d`; undefined when it is not one. */
const millisOf = (text: string): number | undefined => {
  const match = ageForm.exec(text)
  const unit = match?.[2] === undefined ? undefined : units[match[2]]
  return match?.[1] === undefined || unit === undefined ? undefined : Number(match[1]) * unit
}

/** Epoch milliseconds of an ISO-8601 time, or of `now` minus an age; undefined when it is neither. */
const instantOf = (text: string, now: number): number | undefined => {
  const ago = millisOf(text)
  if (ago !== undefined) return now - ago
  if (!isoForm.test(text)) return undefined
  const parsed = Date.parse(text)
  return Number.isNaN(parsed) ? undefined : parsed
}

/** The form a time flag takes, for messages. */
export const instantForm = "an ISO-8601 time (2026-05-01T12:00:00Z, 2026-05-01) or an age before now (90s, 15m, 2h, 7d)"

/** A time: ISO-8601, or an age before `now`; decodes to epoch milliseconds. */
export const Instant = (now: number) =>
  Schema.String.check(Schema.makeFilter((s: string) => instantOf(s.trim(), now) !== undefined || instantForm)).pipe(
    Schema.decodeTo(Schema.Number, {
      decode: SchemaGetter.transform((s: string) => instantOf(s.trim(), now) ?? Number.NaN),
      encode: SchemaGetter.transform((n: number) => new Date(n).toISOString())
    })
  )

/** The form a duration flag takes, for messages. */
export const durationForm = "a duration such as 500ms, 90s, 15m, 2h or 7d"

/** A duration such as `90s`; decodes to milliseconds. */
export const Millis = Schema.String.check(
  Schema.makeFilter((s: string) => millisOf(s.trim()) !== undefined || durationForm)
)
  .pipe(Schema.decodeTo(Schema.Number, {
    decode: SchemaGetter.transform((s: string) => millisOf(s.trim()) ?? Number.NaN),
    encode: SchemaGetter.transform((n: number) => `${n}ms`)
  }))

// oxlint-disable-next-line no-control-regex -- names with control characters are refused
const noControls = Schema.makeFilter((s: string) => !/[\u0000-\u001f\u007f]/.test(s) || "no control characters")

/** A service, entity or producer name: 1 to 255 characters, no control characters. */
export const Name = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(maxNameLength), noControls)

/** An entity id or message id: 1 to 1024 characters, no control characters. */
export const Id = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(maxIdLength), noControls)

/** A list given as repeated flags and/or comma-separated values, each decoded by `item`. */
export const ListOf = <S extends Schema.Codec<string, string>>(item: S) =>
  Schema.Array(Schema.String).pipe(
    Schema.decodeTo(Schema.Array(item), {
      decode: SchemaGetter.transform((values: ReadonlyArray<string>) =>
        values.flatMap((value) => value.split(",")).map((value) => value.trim()).filter((value) => value !== "")
      ),
      encode: SchemaGetter.transform((values: ReadonlyArray<string>) => values)
    })
  )

/** A count from `min` to `max`, given as digits. */
export const Count = (min: number, max: number) =>
  Schema.String.check(Schema.isPattern(/^\d{1,9}$/)).pipe(
    Schema.decodeTo(Schema.Int.check(Schema.isBetween({ minimum: min, maximum: max })), {
      decode: SchemaGetter.transform((s: string) => Number(s)),
      encode: SchemaGetter.transform((n: number) => String(n))
    })
  )

/** A listing cursor as `dead list` printed it: base64url, at most 8192 characters. */
export const Cursor = Schema.String.check(Schema.isMaxLength(8192), Schema.isPattern(/^[A-Za-z0-9_-]+$/))

/** Decodes a flag's value with `schema`; a failure is a `UsageError` naming the flag and the expected form. */
export const decode = <A>(
  flag: string,
  schema: Schema.Codec<A, string> | Schema.Codec<A, ReadonlyArray<string>>,
  value: unknown,
  expected: string
): Effect.Effect<A, UsageError> =>
  Schema.decodeUnknownEffect(schema)(value).pipe(
    Effect.mapError(() =>
      new UsageError({
        message: `--${flag}: expected ${expected}, got ${
          JSON.stringify(Array.isArray(value) ? value.join(",") : value).slice(0, 200)
        }`
      })
    )
  )

/** Decodes an optional flag (`Option.none()` stays absent). */
export const decodeOption = <A>(
  flag: string,
  schema: Schema.Codec<A, string>,
  value: Option.Option<string>,
  expected: string
): Effect.Effect<A | undefined, UsageError> =>
  Option.match(value, {
    onNone: () => Effect.succeed(undefined),
    onSome: (text) => decode(flag, schema, text, expected)
  })
