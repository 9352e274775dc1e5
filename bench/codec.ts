/**
 * What the wire codec costs per event, without PostgreSQL or RabbitMQ: the relay's part (an outbox row's
 * envelope read from its JSON and encoded as a CloudEvents body) and the consumer's (a body decoded and
 * checked), on the benchmark's `Item` events:
 *
 *     node --conditions=entity-sync-source --import tsx bench/codec.ts [--events=100000] [--rounds=5]
 *
 * Each figure is the median of `--rounds` loops over `--events` distinct events, after one loop that is
 * not timed (so that the code is compiled first), in microseconds per event.
 */
import { Result } from "effect"
import { Envelope } from "entity-sync"
import { argument } from "./config.ts"
import { Item, itemOf, owner } from "./contract.ts"

const events = Number(argument("events") ?? "100000")
const rounds = Number(argument("rounds") ?? "5")
if (!(Number.isSafeInteger(events) && events > 0 && Number.isSafeInteger(rounds) && rounds > 0)) {
  throw new Error("--events and --rounds must be positive integers")
}

const envelopes: Array<Envelope.Envelope> = Array.from({ length: events }, (_, i) => ({
  messageId: Envelope.messageIdAt(1_767_225_600_000 + i),
  entity: Item.name,
  entityId: `item-${i}`,
  action: "updated",
  version: 2,
  contractVersion: 1,
  occurredAt: new Date(1_767_225_600_000 + i).toISOString(),
  producer: owner,
  forceSync: false,
  payload: itemOf("item", i, 1),
  traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
}))
// an outbox row's envelope as the database driver hands it over: JSON text, parsed on reading
const stored = envelopes.map((envelope) => JSON.stringify(envelope))
// bodies as the consumer receives them from amqplib: Node buffers
const bodies = envelopes.map((envelope) => Buffer.from(JSON.stringify(Envelope.toCloudEvent(envelope))))
const parsed: ReadonlyArray<unknown> = bodies.map((body) => JSON.parse(body.toString("utf8")))

/** The median over `rounds` of the microseconds per event of `f` applied to each index. */
const measure = (f: (i: number) => unknown): number => {
  const perEvent: Array<number> = []
  for (let round = 0; round <= rounds; round++) {
    const start = process.hrtime.bigint()
    for (let i = 0; i < events; i++) {
      if (f(i) === undefined) throw new Error(`event ${i} did not go through`)
    }
    if (round > 0) perEvent.push(Number(process.hrtime.bigint() - start) / 1_000 / events)
  }
  perEvent.sort((a, b) => a - b)
  return perEvent[Math.floor(perEvent.length / 2)]!
}

const figures: ReadonlyArray<readonly [string, (i: number) => unknown]> = [
  ["relay: read a stored envelope", (i) => Envelope.fromStoredJson(JSON.parse(stored[i]!))],
  ["relay: encode its body", (i) => Envelope.encode(envelopes[i]!)],
  ["consumer: decode a body", (i) => Result.getOrUndefined(Envelope.decodeResult(bodies[i]!))],
  ["consumer: of which, check it parsed", (i) => Envelope.fromCloudEvent(parsed[i])]
]
console.log(`${events.toLocaleString("en-US")} events of ${bodies[0]!.byteLength} bytes, median of ${rounds} rounds`)
for (const [name, f] of figures) console.log(`${name.padEnd(34)} ${measure(f).toFixed(2).padStart(6)} µs/event`)
