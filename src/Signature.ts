/**
 * Signed messages (R11) for brokers that cannot vouch for publishers (the in-memory broker) and for
 * deployments that opt in: the publisher signs the exact bytes of a message body with an Ed25519 key
 * and sends the signature and the key's id in two headers; the receiver holds only public keys, by
 * owner service and key id, each valid in a window of time so keys can be rotated with an overlap.
 *
 * The body carries everything that matters (message id, producer, entity, version, payload…), so the
 * body alone is signed. Header values come from the wire and are untrusted: their lengths are checked
 * before anything is decoded, and every detail quotes them cut to `maxQuotedLength` characters.
 *
 * ```ts
 * const { signing, verifying } = Signature.generateKeyPair("accounts-2026-11")
 * const headers = Signature.sign(signing, body)
 * Signature.verify({ accounts: [verifying] }, "accounts", body, headers, Date.now()) // Result.succeed("accounts-2026-11")
 * ```
 *
 * @since 0.1.0
 */
import { Config, ConfigProvider, Effect, Option, Redacted, Result, Schema } from "effect"
import * as NodeCrypto from "node:crypto"
import { ForgedProducer } from "./Errors.ts"

/** The header that carries the base64 Ed25519 signature of the body. */
export const signatureHeader = "x-sync-signature"

/** The header that carries the id of the key that signed the body. */
export const keyIdHeader = "x-sync-key-id"

/** The longest key id accepted, in characters. */
export const maxKeyIdLength = 200

/** The longest signature header accepted, in characters (an Ed25519 signature is 88 in base64). */
export const maxSignatureLength = 100

/** How many characters of an untrusted value a detail quotes at most. */
export const maxQuotedLength = 200

const signatureBytes = 64

/** The key a publisher signs with: its id and its Ed25519 private key (PKCS#8 PEM or a `KeyObject`). */
export interface SigningKey {
  readonly keyId: string
  readonly privateKey: string | NodeCrypto.KeyObject
}

/** A public key a receiver accepts, valid from `notBefore` until `notAfter` (epoch milliseconds, both optional). */
export interface VerifyingKey {
  readonly keyId: string
  /** The Ed25519 public key, SPKI PEM. */
  readonly publicKey: string
  readonly notBefore?: number
  readonly notAfter?: number
}

/** The public keys a receiver accepts, by the owner service whose messages they sign (several for rotation). */
export type VerifyingKeys = Readonly<Record<string, ReadonlyArray<VerifyingKey>>>

/** Why a signature was not accepted. */
export const RejectionReason = Schema.Literals([
  "Unsigned",
  "MalformedSignature",
  "UnknownKey",
  "KeyOfAnotherOwner",
  "KeyNotValidNow",
  "BadSignature"
])
export type RejectionReason = typeof RejectionReason.Type

/** A message whose signature is missing or not valid for its owner; the receiver treats it as forged. */
export class SignatureRejected extends Schema.TaggedError<SignatureRejected>()("SignatureRejected", {
  reason: RejectionReason,
  /** The key id the message named, cut to `maxQuotedLength`; absent when it named none. */
  keyId: Schema.optionalKey(Schema.String),
  detail: Schema.String
}) {
  override get message() {
    return `${this.reason}: ${this.detail}`
  }
}

/** `value` cut to `max` characters, ending with "…" when it was longer (for quoting untrusted strings). */
export const quote = (value: string, max: number = maxQuotedLength): string =>
  value.length <= max ? value : `${value.slice(0, max - 1)}…`

const privateKeys = new WeakMap<SigningKey, NodeCrypto.KeyObject>()
const publicKeys = new WeakMap<VerifyingKey, NodeCrypto.KeyObject>()

const ed25519 = (key: NodeCrypto.KeyObject, what: string): NodeCrypto.KeyObject => {
  if (key.asymmetricKeyType !== "ed25519") {
    throw new Error(`${what} is a ${key.asymmetricKeyType ?? key.type} key; an Ed25519 key is needed`)
  }
  return key
}

const privateKeyOf = (key: SigningKey): NodeCrypto.KeyObject => {
  const cached = privateKeys.get(key)
  if (cached !== undefined) return cached
  const made = ed25519(
    typeof key.privateKey === "string" ? NodeCrypto.createPrivateKey(key.privateKey) : key.privateKey,
    `the signing key "${key.keyId}"`
  )
  privateKeys.set(key, made)
  return made
}

const publicKeyOf = (key: VerifyingKey): NodeCrypto.KeyObject => {
  const cached = publicKeys.get(key)
  if (cached !== undefined) return cached
  const made = ed25519(NodeCrypto.createPublicKey(key.publicKey), `the verifying key "${key.keyId}"`)
  publicKeys.set(key, made)
  return made
}

/**
 * The signature headers of `body` signed with `key`. The parsed private key is cached per `SigningKey`
 * value, so signing many messages with one key parses it once. Throws when the key is not Ed25519.
 */
export const sign = (key: SigningKey, body: Uint8Array): Readonly<Record<string, string>> => ({
  [signatureHeader]: NodeCrypto.sign(null, body, privateKeyOf(key)).toString("base64"),
  [keyIdHeader]: key.keyId
})

const base64 = /^[A-Za-z0-9+/]+={0,2}$/

const reject = (reason: RejectionReason, detail: string, keyId?: string) =>
  Result.fail(new SignatureRejected({ reason, detail, ...(keyId !== undefined ? { keyId: quote(keyId) } : {}) }))

const inWindow = (key: VerifyingKey, now: number) =>
  (key.notBefore === undefined || now >= key.notBefore) && (key.notAfter === undefined || now < key.notAfter)

const describeWindow = (key: VerifyingKey) =>
  `${key.notBefore !== undefined ? new Date(key.notBefore).toISOString() : "always"} until ${
    key.notAfter !== undefined ? new Date(key.notAfter).toISOString() : "ever"
  }`

/**
 * Checks that `body` carries a valid signature by a key of `owner` that is valid at `now` (epoch
 * milliseconds); succeeds with the key id. Fails when the signature is missing or malformed, names an
 * unknown key or a key of another owner or a key outside its window, or does not match the body.
 */
export const verify = (
  keys: VerifyingKeys,
  owner: string,
  body: Uint8Array,
  headers: Readonly<Record<string, string>>,
  now: number
): Result.Result<string, SignatureRejected> => {
  const signature = headers[signatureHeader]
  const keyId = headers[keyIdHeader]
  if (signature === undefined && keyId === undefined) {
    return reject("Unsigned", `the message carries no ${signatureHeader} header`)
  }
  if (keyId === undefined || keyId.length === 0) {
    return reject("MalformedSignature", `the message carries no ${keyIdHeader} header`)
  }
  if (keyId.length > maxKeyIdLength) {
    return reject(
      "MalformedSignature",
      `the key id is ${keyId.length} characters long; at most ${maxKeyIdLength} are accepted`,
      keyId
    )
  }
  if (signature === undefined || signature.length === 0) {
    return reject("Unsigned", `the message names key "${keyId}" but carries no ${signatureHeader} header`, keyId)
  }
  if (signature.length > maxSignatureLength || !base64.test(signature)) {
    return reject(
      "MalformedSignature",
      signature.length > maxSignatureLength
        ? `the signature is ${signature.length} characters long; an Ed25519 signature is 88 in base64`
        : `the signature "${quote(signature)}" is not base64`,
      keyId
    )
  }
  const bytes = Buffer.from(signature, "base64")
  if (bytes.byteLength !== signatureBytes) {
    return reject(
      "MalformedSignature",
      `the signature is ${bytes.byteLength} bytes; an Ed25519 signature is ${signatureBytes}`,
      keyId
    )
  }
  // `owner` may come from the message: only the map's own keys count (never `constructor`, `__proto__`…)
  const ownKeys = Object.hasOwn(keys, owner) ? keys[owner] ?? [] : []
  const candidates = ownKeys.filter((key) => key.keyId === keyId)
  if (candidates.length === 0) {
    const holder = Object.keys(keys).find((other) => other !== owner && keys[other]!.some((k) => k.keyId === keyId))
    return holder !== undefined
      ? reject("KeyOfAnotherOwner", `key "${keyId}" belongs to "${holder}", not to "${owner}"`, keyId)
      : reject("UnknownKey", `key "${keyId}" is not a key of "${owner}"`, keyId)
  }
  const valid = candidates.find((key) => inWindow(key, now))
  if (valid === undefined) {
    return reject(
      "KeyNotValidNow",
      `key "${keyId}" of "${owner}" is valid ${candidates.map(describeWindow).join(", ")}; now is ${
        new Date(now).toISOString()
      }`,
      keyId
    )
  }
  if (!NodeCrypto.verify(null, body, publicKeyOf(valid), bytes)) {
    return reject("BadSignature", `the signature by key "${keyId}" does not match the body`, keyId)
  }
  return Result.succeed(keyId)
}

/** The `ForgedProducer` error of a message whose signature was rejected, for consumers that dead-letter it. */
export const forgedProducer = (
  rejected: SignatureRejected,
  message: { readonly messageId: string; readonly entity: string; readonly owner: string }
): ForgedProducer =>
  new ForgedProducer({
    messageId: quote(message.messageId),
    entity: quote(message.entity),
    owner: message.owner,
    ...(rejected.keyId !== undefined ? { publisher: `key ${rejected.keyId}` } : {}),
    detail: rejected.message
  })

/** A new Ed25519 key pair as PEM strings: the signing key and the matching verifying key (no window). */
export const generateKeyPair = (keyId: string): { readonly signing: SigningKey; readonly verifying: VerifyingKey } => {
  const pair = NodeCrypto.generateKeyPairSync("ed25519", {
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" }
  })
  return { signing: { keyId, privateKey: pair.privateKey }, verifying: { keyId, publicKey: pair.publicKey } }
}

const configError = (message: string) => new Config.ConfigError(new ConfigProvider.SourceError({ message }))

const parses = (parse: () => unknown): string | undefined => {
  try {
    parse()
    return undefined
  } catch (cause) {
    return cause instanceof Error ? cause.message : String(cause)
  }
}

/**
 * The relay's signing key, when signing is on: `SYNC_SIGNING_KEY` (the Ed25519 private key, PKCS#8 PEM)
 * and `SYNC_SIGNING_KEY_ID` (its id, as consumers know it). Both unset: `None`; one without the other, or
 * a key that is not an Ed25519 private key: a `ConfigError`.
 */
export const signingKeyConfig: Config.Config<Option.Option<SigningKey>> = Config.all({
  pem: Config.option(Config.Redacted("SYNC_SIGNING_KEY")),
  keyId: Config.option(Config.String("SYNC_SIGNING_KEY_ID"))
}).pipe(
  Config.mapEffect(({ keyId, pem }): Effect.Effect<Option.Option<SigningKey>, Config.ConfigError> => {
    if (Option.isNone(pem) && Option.isNone(keyId)) return Effect.succeed(Option.none())
    if (Option.isNone(pem)) return Effect.fail(configError("SYNC_SIGNING_KEY_ID is set but SYNC_SIGNING_KEY is not"))
    if (Option.isNone(keyId) || keyId.value.length === 0 || keyId.value.length > maxKeyIdLength) {
      return Effect.fail(configError(`SYNC_SIGNING_KEY needs SYNC_SIGNING_KEY_ID (1 to ${maxKeyIdLength} characters)`))
    }
    const key: SigningKey = { keyId: keyId.value, privateKey: Redacted.value(pem.value) }
    const problem = parses(() => privateKeyOf(key))
    return problem === undefined
      ? Effect.succeed(Option.some(key))
      : Effect.fail(configError(`SYNC_SIGNING_KEY is not an Ed25519 private key (PKCS#8 PEM): ${problem}`))
  })
)

const KeyId = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(maxKeyIdLength))

/** One verifying key as `SYNC_VERIFYING_KEYS` holds it; the public key must be an Ed25519 SPKI PEM. */
export const VerifyingKeySchema = Schema.Struct({
  keyId: KeyId,
  publicKey: Schema.String.check(
    Schema.makeFilter((pem: string) => {
      const problem = parses(() => ed25519(NodeCrypto.createPublicKey(pem), "the key"))
      return problem === undefined || `an Ed25519 public key (SPKI PEM): ${problem}`
    })
  ),
  notBefore: Schema.optionalKey(Schema.Number),
  notAfter: Schema.optionalKey(Schema.Number)
})

/** The verifying keys by owner service, as `SYNC_VERIFYING_KEYS` holds them. */
export const VerifyingKeysSchema = Schema.Record(Schema.String, Schema.Array(VerifyingKeySchema))

/**
 * A receiver's verifying keys: `SYNC_VERIFYING_KEYS`, JSON
 * `{ "<owner>": [{ "keyId": "…", "publicKey": "<SPKI PEM>", "notBefore"?: <epoch ms>, "notAfter"?: <epoch ms> }] }`
 * (default: no keys, so no signed message is accepted).
 */
export const verifyingKeysConfig: Config.Config<VerifyingKeys> = Config.schema(
  Schema.fromJsonString(VerifyingKeysSchema),
  "SYNC_VERIFYING_KEYS"
).pipe(Config.withDefault({}))
