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

/** The longest message id, entity name and producer name accepted, in characters (R6). */
export const maxNameLength = 255

/** The longest entity id accepted, in characters (R6). */
export const maxIdLength = 1024

const NonEmpty = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(maxNameLength))
const EntityId = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(maxIdLength))

const IsoTimestamp = Schema.String.check(
  Schema.makeFilter((s: string) => !Number.isNaN(Date.parse(s)) || "an ISO-8601 timestamp")
)

/** The envelope schema, as it is on the wire. */
export const Envelope = Schema.Struct({
  specVersion: Schema.Literal(1),
  messageId: NonEmpty,
  entity: NonEmpty,
  entityId: EntityId,
  action: Action,
  version: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  occurredAt: IsoTimestamp,
  producer: NonEmpty,
  forceSync: Schema.Boolean,
  /**
   * A repair of a copy that is ahead of its owner: this snapshot replaces the copy whatever its version
   * (only with `forceSync`; consumers apply it only from the authenticated owner, R11).
   */
  reset: Schema.optionalKey(Schema.Boolean),
  payload: Schema.Json,
  traceparent: Schema.optionalKey(Schema.String),
  context: Schema.optionalKey(Schema.Record(Schema.String, Schema.String))
}).check(
  Schema.makeFilter((e) =>
    (e.action === "deleted") === (e.payload === null) ||
    "payload must be null for \"deleted\" and only for \"deleted\""
  ),
  Schema.makeFilter((e) => e.reset !== true || e.forceSync || "reset is only allowed with forceSync")
)
export type Envelope = typeof Envelope.Type

/** The default largest accepted message body: 256 KiB. */
export const defaultMaxBytes = 256 * 1024

/** The default deepest nesting of arrays and objects accepted in a message body (R6). */
export const defaultMaxDepth = 32

/** The default most object keys accepted in a message body, counted over all its objects (R6). */
export const defaultMaxKeys = 10_000

/** The limits a message body is decoded under (R6). */
export interface Limits {
  /** Largest body in bytes (default `defaultMaxBytes`). */
  readonly maxBytes?: number
  /** Deepest nesting of arrays and objects (default `defaultMaxDepth`). */
  readonly maxDepth?: number
  /** Most object keys over the whole body (default `defaultMaxKeys`). */
  readonly maxKeys?: number
}

/** A string from a message cut to `max` characters for a log line, an error or a reason. */
export const bounded = (s: string, max = 200): string => s.length <= max ? s : `${s.slice(0, max)}…`

/**
 * Where a parsed JSON value breaks the depth or key limit; undefined when it keeps to both. Walks the
 * value without recursion, so no nesting can overflow the stack.
 */
export const exceedsLimits = (json: unknown, maxDepth: number, maxKeys: number): string | undefined => {
  const stack: Array<unknown> = [json]
  const depths: Array<number> = [0]
  let keys = 0
  while (stack.length > 0) {
    const value = stack.pop()
    const depth = depths.pop()!
    if (typeof value !== "object" || value === null) continue
    if (depth >= maxDepth) return `it nests deeper than ${maxDepth} levels`
    if (Array.isArray(value)) {
      for (const item of value) {
        if (typeof item === "object" && item !== null) {
          stack.push(item)
          depths.push(depth + 1)
        }
      }
      continue
    }
    for (const key in value) {
      if (++keys > maxKeys) return `it has more than ${maxKeys} object keys`
      const item: unknown = Reflect.get(value, key)
      if (typeof item === "object" && item !== null) {
        stack.push(item)
        depths.push(depth + 1)
      }
    }
  }
  return undefined
}

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
    ...(typeof messageId === "string" ? { messageId: bounded(messageId) } : {}),
    ...(typeof entity === "string" ? { entity: bounded(entity) } : {})
  }
}

const actions: ReadonlySet<unknown> = new Set(Action.literals)
const isAction = (u: unknown): u is Action => actions.has(u)
const isNonEmpty = (u: unknown): u is string => typeof u === "string" && u.length > 0 && u.length <= maxNameLength
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
  const { action, payload, traceparent, context, version, occurredAt, reset } = e
  if (
    e.specVersion !== 1 || !isNonEmpty(e.messageId) || !isNonEmpty(e.entity) ||
    typeof e.entityId !== "string" || e.entityId.length === 0 || e.entityId.length > maxIdLength ||
    !isNonEmpty(e.producer) || typeof e.forceSync !== "boolean" || !isAction(action) ||
    typeof version !== "number" || !Number.isSafeInteger(version) || version < 1 ||
    typeof occurredAt !== "string" || Number.isNaN(Date.parse(occurredAt)) ||
    payload === undefined || (action === "deleted") !== (payload === null) ||
    (traceparent !== undefined && typeof traceparent !== "string") ||
    (reset !== undefined && (typeof reset !== "boolean" || (reset && e.forceSync !== true))) ||
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
    ...(reset === undefined ? {} : { reset }),
    payload: payload as Schema.Json, // from JSON.parse
    ...(traceparent === undefined ? {} : { traceparent }),
    ...(context === undefined ? {} : { context })
  }
}

/**
 * Decodes an untrusted message body, synchronously. Every way it can be wrong ends in a `MalformedMessage`
 * with a reason a person can act on: too large, not UTF-8 JSON, too deep or too many keys, unsupported spec
 * version, or not an envelope.
 */
export const decodeResult = (
  body: Uint8Array | string,
  options?: Limits
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
        detail: `the body is not UTF-8 JSON: ${bounded(cause instanceof Error ? cause.message : String(cause))}`
      })
    )
  }
  const excess = exceedsLimits(json, options?.maxDepth ?? defaultMaxDepth, options?.maxKeys ?? defaultMaxKeys)
  if (excess !== undefined) {
    return Result.fail(
      new MalformedMessage({ reason: "TooComplex", detail: `the body is refused: ${excess}`, ...messageIdOf(json) })
    )
  }
  const specVersion = typeof json === "object" && json !== null ? Reflect.get(json, "specVersion") : undefined
  if (specVersion !== undefined && specVersion !== 1) {
    return Result.fail(
      new MalformedMessage({
        reason: "UnsupportedSpecVersion",
        detail: `specVersion ${
          bounded(JSON.stringify(specVersion))
        } is not supported; this consumer reads specVersion 1`,
        ...messageIdOf(json)
      })
    )
  }
  const checked = fromParsedJson(json)
  if (checked !== undefined) return Result.succeed(checked)
  return Result.mapError(decodeEnvelope(json), (error) =>
    new MalformedMessage({
      reason: "InvalidEnvelope",
      detail: bounded(error.message.replace(/\n\s*/g, " "), 1000),
      ...messageIdOf(json)
    }))
}

/** `decodeResult` as an Effect. */
export const decode = (
  body: Uint8Array | string,
  options?: Limits
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
