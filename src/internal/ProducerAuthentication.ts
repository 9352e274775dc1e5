/**
 * R11 at the consumer: whether an event comes from the owner of its contract, by the owner's signature or
 * by the broker vouching for the login that published it.
 *
 * @since 0.1.0
 */
import { Result } from "effect"
import type { Delivery } from "../Broker.ts"
import * as Envelope from "../Envelope.ts"
import { ForgedProducer } from "../Errors.ts"
import * as Signature from "../Signature.ts"

/** Checks one delivered event: `ForgedProducer` when it does not come from its owner, undefined when it does. */
export type Authenticate = (delivery: Delivery, envelope: Envelope.Envelope, now: number) => ForgedProducer | undefined

/**
 * The check for a consumer: an event must carry a valid signature of its contract's owner when the owner
 * has verifying keys; otherwise, when the broker vouches for publishers, it must come from a login allowed
 * for that owner (`producers`, or the owner's own service name). A broker that cannot vouch (in memory)
 * leaves it to signatures. An event of an entity no subscription owns passes: routing dead-letters it.
 */
export const make = (options: {
  /** The owner of each subscribed entity. */
  readonly owners: ReadonlyMap<string, string>
  readonly producers: Readonly<Record<string, ReadonlyArray<string>>> | undefined
  readonly verifyingKeys: Signature.VerifyingKeys
  readonly brokerVouches: boolean
}): Authenticate => {
  const { brokerVouches, owners, verifyingKeys } = options
  // the broker logins allowed for each subscribed owner (its own service name unless configured)
  const producers = new Map(
    [...new Set(owners.values())].map((owner) => [owner, new Set(options.producers?.[owner] ?? [owner])])
  )
  return (delivery, envelope, now) => {
    const owner = owners.get(envelope.entity)
    if (owner === undefined) return undefined
    if (verifyingKeys[owner] !== undefined) {
      const verified = Signature.verify(verifyingKeys, owner, delivery.body, delivery.headers, now)
      return Result.isSuccess(verified) ? undefined : Signature.forgedProducer(verified.failure, { ...envelope, owner })
    }
    if (!brokerVouches) return undefined
    const publisher = delivery.publisher
    const allowed = producers.get(owner) ?? new Set<string>()
    if (publisher !== undefined && allowed.has(publisher)) return undefined
    const logins = [...allowed].map((login) => `"${login}"`).join(", ")
    return new ForgedProducer({
      messageId: envelope.messageId,
      entity: envelope.entity,
      owner,
      ...(publisher === undefined ? {} : { publisher: Envelope.bounded(publisher) }),
      detail: publisher === undefined
        ? `the broker vouches for no publisher (no user-id); ${owner}'s events may come only from ${logins}`
        : `published by broker login "${Envelope.bounded(publisher)}"; ${owner}'s events may come only from ${logins}`
    })
  }
}
