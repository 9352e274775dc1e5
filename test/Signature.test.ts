/**
 * `Signature`: Ed25519 signatures of message bodies, keys by owner and id with validity windows for
 * rotation, untrusted header values bounded, and the config readers.
 */
import { assert, describe, it } from "@effect/vitest"
import { type Config, ConfigProvider, Effect, Option, Result } from "effect"
import * as Signature from "../src/Signature.ts"

const encoder = new TextEncoder()
const body = encoder.encode(JSON.stringify({ messageId: "m-1", producer: "accounts", entity: "Company", version: 3 }))

const accounts = Signature.generateKeyPair("accounts-1")
const billing = Signature.generateKeyPair("billing-1")
const keys: Signature.VerifyingKeys = { accounts: [accounts.verifying], billing: [billing.verifying] }
const now = Date.parse("2026-11-22T00:00:00.000Z")

const rejection = (result: Result.Result<string, Signature.SignatureRejected>) => {
  if (Result.isSuccess(result)) return assert.fail(`accepted with key ${result.success}`)
  return result.failure
}

describe("Signature", () => {
  it("a signed body verifies with the owner's key and names the key", () => {
    const headers = Signature.sign(accounts.signing, body)
    assert.strictEqual(headers[Signature.keyIdHeader], "accounts-1")
    assert.lengthOf(headers[Signature.signatureHeader]!, 88)
    assert.deepStrictEqual(Signature.verify(keys, "accounts", body, headers, now), Result.succeed("accounts-1"))
  })

  it("a tampered body is rejected", () => {
    const headers = Signature.sign(accounts.signing, body)
    const tampered = encoder.encode(
      JSON.stringify({ messageId: "m-1", producer: "accounts", entity: "Company", version: 9 })
    )
    const error = rejection(Signature.verify(keys, "accounts", tampered, headers, now))
    assert.strictEqual(error.reason, "BadSignature")
    assert.strictEqual(error.keyId, "accounts-1")
    assert.match(error.message, /^BadSignature: the signature by key "accounts-1" does not match the body/)
  })

  it("an unsigned body is rejected", () => {
    assert.strictEqual(rejection(Signature.verify(keys, "accounts", body, {}, now)).reason, "Unsigned")
    const onlyKeyId = { [Signature.keyIdHeader]: "accounts-1" }
    assert.strictEqual(rejection(Signature.verify(keys, "accounts", body, onlyKeyId, now)).reason, "Unsigned")
  })

  it("an unknown key id, or a key of another owner, is rejected", () => {
    const unknown = Signature.generateKeyPair("accounts-9")
    const byUnknown = rejection(Signature.verify(keys, "accounts", body, Signature.sign(unknown.signing, body), now))
    assert.strictEqual(byUnknown.reason, "UnknownKey")
    assert.match(byUnknown.detail, /key "accounts-9" is not a key of "accounts"/)
    // billing signs a body claiming to be from accounts: its signature is valid, but not by an accounts key
    const byBilling = rejection(Signature.verify(keys, "accounts", body, Signature.sign(billing.signing, body), now))
    assert.strictEqual(byBilling.reason, "KeyOfAnotherOwner")
    assert.match(byBilling.detail, /key "billing-1" belongs to "billing", not to "accounts"/)
    // a key id of accounts with a signature made by another key
    const spoofed = { ...Signature.sign(billing.signing, body), [Signature.keyIdHeader]: "accounts-1" }
    assert.strictEqual(rejection(Signature.verify(keys, "accounts", body, spoofed, now)).reason, "BadSignature")
  })

  it("an owner name that is a property of every object is just an owner without keys", () => {
    const headers = Signature.sign(accounts.signing, body)
    for (const owner of ["constructor", "__proto__", "toString"]) {
      assert.strictEqual(rejection(Signature.verify(keys, owner, body, headers, now)).reason, "KeyOfAnotherOwner")
    }
  })

  it("rotation: the old key is accepted in its window, the new one from its start, both during the overlap", () => {
    const old = Signature.generateKeyPair("accounts-2026-10")
    const next = Signature.generateKeyPair("accounts-2026-11")
    const day = 24 * 60 * 60 * 1000
    const rotation: Signature.VerifyingKeys = {
      accounts: [
        { ...old.verifying, notAfter: now + day },
        { ...next.verifying, notBefore: now - day }
      ]
    }
    const byOld = Signature.sign(old.signing, body)
    const byNew = Signature.sign(next.signing, body)
    // before the overlap: only the old key
    assert.isTrue(Result.isSuccess(Signature.verify(rotation, "accounts", body, byOld, now - 2 * day)))
    assert.strictEqual(
      rejection(Signature.verify(rotation, "accounts", body, byNew, now - 2 * day)).reason,
      "KeyNotValidNow"
    )
    // during the overlap: both
    assert.deepStrictEqual(Signature.verify(rotation, "accounts", body, byOld, now), Result.succeed("accounts-2026-10"))
    assert.deepStrictEqual(Signature.verify(rotation, "accounts", body, byNew, now), Result.succeed("accounts-2026-11"))
    // from notAfter: only the new key
    const expired = rejection(Signature.verify(rotation, "accounts", body, byOld, now + day))
    assert.strictEqual(expired.reason, "KeyNotValidNow")
    assert.match(expired.detail, /key "accounts-2026-10" of "accounts" is valid always until 2026-11-23T00:00:00\.000Z/)
    assert.isTrue(Result.isSuccess(Signature.verify(rotation, "accounts", body, byNew, now + day)))
  })

  it("oversized or malformed header values are rejected before decoding, and quoted at most 200 characters", () => {
    const valid = Signature.sign(accounts.signing, body)
    const longKey = "k".repeat(100_000)
    const byLongKey = rejection(
      Signature.verify(keys, "accounts", body, { ...valid, [Signature.keyIdHeader]: longKey }, now)
    )
    assert.strictEqual(byLongKey.reason, "MalformedSignature")
    assert.match(byLongKey.detail, /100000 characters long; at most 200/)
    assert.isAtMost(byLongKey.keyId!.length, Signature.maxQuotedLength)
    assert.isAtMost(byLongKey.message.length, 300)

    const longSignature = "A".repeat(1_000_000)
    const byLongSignature = rejection(
      Signature.verify(keys, "accounts", body, { ...valid, [Signature.signatureHeader]: longSignature }, now)
    )
    assert.strictEqual(byLongSignature.reason, "MalformedSignature")
    assert.isAtMost(byLongSignature.message.length, 300)

    const notBase64 = rejection(
      Signature.verify(keys, "accounts", body, { ...valid, [Signature.signatureHeader]: "not base64 at all!" }, now)
    )
    assert.strictEqual(notBase64.reason, "MalformedSignature")
    const short = rejection(
      Signature.verify(keys, "accounts", body, { ...valid, [Signature.signatureHeader]: "AAAA" }, now)
    )
    assert.match(short.detail, /the signature is 3 bytes; an Ed25519 signature is 64/)
  })

  it("a rejection becomes a bounded ForgedProducer", () => {
    const error = rejection(Signature.verify(keys, "accounts", body, {}, now))
    const forged = Signature.forgedProducer(error, {
      messageId: "m".repeat(5000),
      entity: "Company",
      owner: "accounts"
    })
    assert.strictEqual(forged._tag, "ForgedProducer")
    assert.isAtMost(forged.messageId.length, Signature.maxQuotedLength)
    assert.match(forged.detail, /^Unsigned: /)
  })

  it.effect("config: the signing key and the verifying keys are read from the environment", () =>
    Effect.gen(function*() {
      const read = <A>(config: Config.Config<A>, env: Record<string, string>) =>
        config.parse(ConfigProvider.fromEnv({ env }))
      assert.isTrue(Option.isNone(yield* read(Signature.signingKeyConfig, {})))
      const key = yield* read(Signature.signingKeyConfig, {
        SYNC_SIGNING_KEY: String(accounts.signing.privateKey),
        SYNC_SIGNING_KEY_ID: "accounts-1"
      })
      assert.isTrue(Option.isSome(key))
      const signed = Signature.sign(Option.getOrThrow(key), body)
      assert.isTrue(Result.isSuccess(Signature.verify(keys, "accounts", body, signed, now)))
      const missingId = yield* Effect.flip(read(Signature.signingKeyConfig, {
        SYNC_SIGNING_KEY: String(accounts.signing.privateKey)
      }))
      assert.match(missingId.message, /SYNC_SIGNING_KEY needs SYNC_SIGNING_KEY_ID/)
      const notAKey = yield* Effect.flip(read(Signature.signingKeyConfig, {
        SYNC_SIGNING_KEY: "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----",
        SYNC_SIGNING_KEY_ID: "k"
      }))
      assert.match(notAKey.message, /not an Ed25519 private key/)

      assert.deepStrictEqual(yield* read(Signature.verifyingKeysConfig, {}), {})
      const verifying = yield* read(Signature.verifyingKeysConfig, {
        SYNC_VERIFYING_KEYS: JSON.stringify({ accounts: [{ ...accounts.verifying, notAfter: now + 1000 }] })
      })
      assert.isTrue(Result.isSuccess(Signature.verify(verifying, "accounts", body, signed, now)))
      assert.isTrue(Result.isFailure(Signature.verify(verifying, "accounts", body, signed, now + 1000)))
      const badPem = yield* Effect.flip(read(Signature.verifyingKeysConfig, {
        SYNC_VERIFYING_KEYS: JSON.stringify({ accounts: [{ keyId: "a", publicKey: "nope" }] })
      }))
      assert.match(badPem.message, /Ed25519 public key/)
    }))
})
