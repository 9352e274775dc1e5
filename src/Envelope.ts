/**
 * The wire format (DESIGN §3, specVersion 1): the envelope every entity event travels in, its decoding
 * from untrusted bytes (R6) and its encoding.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Result, Schema } from "effect"
import { MalformedMessage } from "./Errors.ts"

/** What happened to the entity. */
export const Action = Schema.Literals(["created", "updated", "deleted", "softDeleted", "snapshot"])
export type Action = typeof Action.Type

const NonEmpty = Schema.String.check(Schema.isMinLength(1))

const IsoTimestamp = Schema.String.check(
  Schema.makeFilter((s: string) => !Number.isNaN(Date.parse(s)) || "an ISO-8601 timestamp")
)

/** The envelope schema, as it is on the wire. */
export const Envelope = Schema.Struct({
  specVersion: Schema.Literal(1),
  messageId: NonEmpty,
  entity: NonEmpty,
  entityId: NonEmpty,
  action: Action,
  version: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  occurredAt: IsoTimestamp,
  producer: NonEmpty,
  forceSync: Schema.Boolean,
  payload: Schema.Json,
  traceparent: Schema.optionalKey(Schema.String),
  context: Schema.optionalKey(Schema.Record(Schema.String, Schema.String))
}).check(
  Schema.makeFilter((e) =>
    (e.action === "deleted") === (e.payload === null) ||
    "payload must be null for \"deleted\" and only for \"deleted\""
  )
)
export type Envelope = typeof Envelope.Type

/** The default largest accepted message body: 256 KiB. */
export const defaultMaxBytes = 256 * 1024

/** The AMQP routing key of an envelope: `<producer>.<Entity>.<action>`. */
export const routingKey = (e: Pick<Envelope, "producer" | "entity" | "action">): string =>
  `${e.producer}.${e.entity}.${e.action}`

/** The AMQP `type` property of an envelope: `<Entity>.<action>`. */
export const messageType = (e: Pick<Envelope, "entity" | "action">): string => `${e.entity}.${e.action}`

const decoder = new TextDecoder("utf-8", { fatal: true })
const encoder = new TextEncoder()
const decodeEnvelope = Schema.decodeUnknownResult(Envelope, { errors: "all" })

const messageIdOf = (json: unknown): { messageId?: string; entity?: string } => {
  if (typeof json !== "object" || json === null) return {}
  const messageId = Reflect.get(json, "messageId")
  const entity = Reflect.get(json, "entity")
  return {
    ...(typeof messageId === "string" ? { messageId } : {}),
    ...(typeof entity === "string" ? { entity } : {})
  }
}

const actions: ReadonlySet<unknown> = new Set(Action.literals)
const isAction = (u: unknown): u is Action => actions.has(u)
const isNonEmpty = (u: unknown): u is string => typeof u === "string" && u.length > 0
const isStringRecord = (u: unknown): u is Record<string, string> =>
  typeof u === "object" && u !== null && !Array.isArray(u) && Object.values(u).every((v) => typeof v === "string")

/**
 * The envelope in a value parsed from JSON, when every field is as the `Envelope` schema requires, with the
 * schema's output (only the envelope's fields); undefined otherwise — decode it with the schema to learn
 * what is wrong. The checks are the schema's, written out: the hot paths (relay, consumer) use it.
 */
export const fromParsedJson = (json: unknown): Envelope | undefined => {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return undefined
  const e: Record<string, unknown> = { ...json }
  const { action, payload, traceparent, context, version, occurredAt } = e
  if (
    e.specVersion !== 1 || !isNonEmpty(e.messageId) || !isNonEmpty(e.entity) || !isNonEmpty(e.entityId) ||
    !isNonEmpty(e.producer) || typeof e.forceSync !== "boolean" || !isAction(action) ||
    typeof version !== "number" || !Number.isSafeInteger(version) || version < 1 ||
    typeof occurredAt !== "string" || Number.isNaN(Date.parse(occurredAt)) ||
    payload === undefined || (action === "deleted") !== (payload === null) ||
    (traceparent !== undefined && typeof traceparent !== "string") ||
    (context !== undefined && !isStringRecord(context))
  ) return undefined
  return {
    specVersion: 1,
    messageId: e.messageId,
    entity: e.entity,
    entityId: e.entityId,
    action,
    version,
    occurredAt,
    producer: e.producer,
    forceSync: e.forceSync,
    payload: payload as Schema.Json, // from JSON.parse
    ...(traceparent === undefined ? {} : { traceparent }),
    ...(context === undefined ? {} : { context })
  }
}

/**
 * Decodes an untrusted message body, synchronously. Every way it can be wrong ends in a `MalformedMessage`
 * with a reason a person can act on: too large, not UTF-8 JSON, unsupported spec version, or not an envelope.
 */
export const decodeResult = (
  body: Uint8Array | string,
  options?: { readonly maxBytes?: number }
): Result.Result<Envelope, MalformedMessage> => {
  const maxBytes = options?.maxBytes ?? defaultMaxBytes
  const size = typeof body === "string" ? encoder.encode(body).byteLength : body.byteLength
  if (size > maxBytes) {
    return Result.fail(
      new MalformedMessage({ reason: "TooLarge", detail: `the body is ${size} bytes; the limit is ${maxBytes}` })
    )
  }
  let json: unknown
  try {
    json = JSON.parse(typeof body === "string" ? body : decoder.decode(body))
  } catch (cause) {
    return Result.fail(
      new MalformedMessage({
        reason: "NotJson",
        detail: `the body is not UTF-8 JSON: ${cause instanceof Error ? cause.message : String(cause)}`
      })
    )
  }
  const specVersion = typeof json === "object" && json !== null ? Reflect.get(json, "specVersion") : undefined
  if (specVersion !== undefined && specVersion !== 1) {
    return Result.fail(
      new MalformedMessage({
        reason: "UnsupportedSpecVersion",
        detail: `specVersion ${JSON.stringify(specVersion)} is not supported; this consumer reads specVersion 1`,
        ...messageIdOf(json)
      })
    )
  }
  const checked = fromParsedJson(json)
  if (checked !== undefined) return Result.succeed(checked)
  return Result.mapError(decodeEnvelope(json), (error) =>
    new MalformedMessage({ reason: "InvalidEnvelope", detail: error.message.replace(/\n\s*/g, " "), ...messageIdOf(json) }))
}

/** `decodeResult` as an Effect. */
export const decode = (
  body: Uint8Array | string,
  options?: { readonly maxBytes?: number }
): Effect.Effect<Envelope, MalformedMessage> => Effect.suspend(() => Effect.fromResult(decodeResult(body, options)))

/** Encodes an envelope as the UTF-8 JSON body of a message. */
export const encode = (envelope: Envelope): Uint8Array => encoder.encode(JSON.stringify(envelope))

const hexOfByte = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"))

// Random bytes are drawn from the system generator in blocks of 4 KiB and used 10 per id.
const randomPool = new Uint8Array(4096)
let randomOffset = randomPool.length
const randomByte = (): number => {
  if (randomOffset === randomPool.length) {
    crypto.getRandomValues(randomPool)
    randomOffset = 0
  }
  return randomPool[randomOffset++]!
}

const randomHex = (bytes: number): string => {
  let out = ""
  for (let i = 0; i < bytes; i++) out += hexOfByte[randomByte()]!
  return out
}

/** A UUIDv7 for a time in epoch milliseconds: random below the millisecond. */
export const messageIdAt = (millis: number): string => {
  let time = ""
  for (let i = 5, t = millis; i >= 0; i--, t = Math.floor(t / 256)) time = hexOfByte[t % 256]! + time
  const version = hexOfByte[(randomByte() & 0x0f) | 0x70]! + randomHex(1)
  const variant = hexOfByte[(randomByte() & 0x3f) | 0x80]! + randomHex(1)
  return `${time.slice(0, 8)}-${time.slice(8)}-${version}-${variant}-${randomHex(6)}`
}

/** A new UUIDv7 message id: time-ordered (on the Effect `Clock`), random below the millisecond. */
export const makeMessageId: Effect.Effect<string> = Effect.map(Clock.currentTimeMillis, messageIdAt)
