/**
 * Poison messages for the fault-injection suite: one builder per kind of bad input, each published
 * straight to the test's exchange under a routing key the consumer's queue is bound to, with the reason
 * the consumer must dead-letter it with.
 */
import type { Effect } from "effect"
import * as Envelope from "../../src/Envelope.ts"
import { owner } from "./contract.ts"
import { withChannel } from "./rabbit.ts"
import type { Names } from "./stack.ts"

/** A kind of bad input and the `MalformedMessage` reason it must be dead-lettered with. */
export interface PoisonKind {
  readonly kind: string
  readonly reason: string
  readonly body: (messageId: string) => string
}

const event = (messageId: string, fields: Record<string, unknown>) =>
  JSON.stringify({
    ...Envelope.toCloudEvent({
      messageId,
      entity: "Item",
      entityId: "poison",
      action: "created",
      version: 1,
      contractVersion: 1,
      occurredAt: new Date().toISOString(),
      producer: owner,
      forceSync: false,
      payload: { id: "poison", name: "poison", n: 0, tags: [] }
    }),
    ...fields
  })

/** Every kind of poison message the test sends. */
export const kinds: ReadonlyArray<PoisonKind> = [
  { kind: "bad JSON", reason: "NotJson", body: (id) => `{"specversion":"1.0","id":"${id}",` },
  {
    kind: "bad envelope schema",
    reason: "InvalidEnvelope",
    body: (id) => JSON.stringify({ specversion: "1.0", id, type: "entitysync.Item.created", entityversion: "one" })
  },
  {
    kind: "retired wire format 1",
    reason: "InvalidEnvelope",
    body: (id) => JSON.stringify({ specVersion: 1, messageId: id, entity: "Item", entityId: "poison", version: 1 })
  },
  {
    kind: "oversized",
    reason: "TooLarge",
    body: (id) => event(id, { data: { id: "poison", name: "x".repeat(300 * 1024), n: 0, tags: [] } })
  },
  { kind: "unknown entity", reason: "UnknownEntity", body: (id) => event(id, { type: "entitysync.Ghost.created" }) },
  {
    kind: "bad payload schema",
    reason: "InvalidPayload",
    body: (id) => event(id, { data: { id: "poison", name: 7, n: "zero" } })
  },
  {
    kind: "newer contract version",
    reason: "UnsupportedContractVersion",
    body: (id) => event(id, { contractversion: 99 })
  },
  { kind: "wrong producer", reason: "InvalidEnvelope", body: (id) => event(id, { source: "intruder" }) }
]

/** A poison message that was published. */
export interface Published {
  readonly messageId: string
  readonly kind: PoisonKind
}

/** Publishes a burst of every kind, `perKind` times each, interleaved; confirmed by the broker. */
export const publishBurst = (names: Names, burst: number, perKind: number): Effect.Effect<ReadonlyArray<Published>> =>
  withChannel(async (channel) => {
    const published: Array<Published> = []
    for (let i = 0; i < perKind; i++) {
      for (const kind of kinds) {
        const messageId = `poison-${burst}-${i}-${kind.reason}-${published.length}`
        channel.publish(names.exchange, `${owner}.Item.created`, Buffer.from(kind.body(messageId)), {
          persistent: true,
          messageId,
          type: "entitysync.Item.created",
          contentType: "application/json",
          userId: "guest"
        })
        published.push({ messageId, kind })
      }
    }
    await channel.waitForConfirms()
    return published
  })
