/**
 * A deterministic in-memory broker modelled on a RabbitMQ topic exchange with quorum queues, with seeded
 * fault injection for tests. Time is Effect's `Clock`, so `TestClock` drives it.
 *
 * @since 0.1.0
 */
import { Clock, Context, Deferred, Duration, Effect, Layer, Stream } from "effect"
import {
  boundBody,
  boundHeaders,
  boundReason,
  Broker,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterPage,
  deadLetterPageSize,
  defaultMaxDeadLetterBodyBytes,
  type Delivery,
  deliveryLimitReason,
  entityKeyHeader,
  type Lane,
  laneOfKey,
  matchesBinding,
  matchesFilter,
  type OutgoingMessage,
  type QueueSpec,
  reasonHeader,
  rejectedReason,
  replayLimit,
  type SubscribeOptions
} from "../Broker.ts"
import { BrokerUnavailable, PublishRejected } from "../Errors.ts"
import * as Signal from "../internal/Signal.ts"
import { ensureOutsideTransaction } from "../Outbox.ts"
import * as SeededRandom from "./SeededRandom.ts"

/** Faults to inject; every random choice comes from a PRNG seeded with `seed`, so runs are reproducible. */
export interface Faults {
  readonly seed: number
  /** Probability that a delivery takes a random ready message among the first 8 instead of the head. */
  readonly reorder?: number
  /** Probability that a routed message is enqueued twice in a queue (same `messageId`). */
  readonly duplicate?: number
  /** Probability that a routed message becomes available only after a random delay of up to `max`. */
  readonly delay?: { readonly probability: number; readonly max: Duration.Input }
}

/** Options of the memory broker. */
export interface MemoryBrokerOptions {
  /**
   * Like a quorum queue's `x-delivery-limit` (default 20): a message delivered more than this many
   * times is dead-lettered with reason "delivery limit reached" when it comes back unsettled.
   */
  readonly deliveryLimit?: number
  /** Faults to inject from the start (none by default). */
  readonly faults?: Faults
  /** The longest body a dead letter keeps (default 64 KiB); a longer one keeps only this prefix. */
  readonly maxDeadLetterBodyBytes?: number
}

/** Counters of everything the broker did since it was made. */
export interface BrokerStats {
  /** Messages handed to `publish` (in calls that did not fail). */
  readonly published: number
  /** Message copies routed to a queue (one per matching queue; fault duplicates not included). */
  readonly routed: number
  /** Published messages that matched no queue and were dropped. */
  readonly unroutable: number
  /** Extra copies enqueued by the `duplicate` fault. */
  readonly duplicated: number
  /** Deliveries to subscribers (redeliveries included). */
  readonly delivered: number
  readonly acked: number
  /** Messages put back in their queue: `nack({ requeue: true })` or a subscription that ended. */
  readonly requeued: number
  /** Messages given back with `release` (not counted as a delivery attempt). */
  readonly released: number
  /** Messages moved to a dead-letter store, for any reason. */
  readonly deadLettered: number
}

/** How many messages a queue holds, by state. */
export interface QueueDepth {
  /** Waiting in the queue, deliverable now. */
  readonly ready: number
  /** Delivered and not settled yet. */
  readonly unsettled: number
  /** Held back by the `delay` fault until their time comes. */
  readonly delayed: number
}

/** Test controls of the memory broker, provided next to `Broker` by `layer`. */
export class MemoryBroker extends Context.Service<MemoryBroker, {
  /** Fails every active subscription (of `queue`, or all) with `BrokerUnavailable`, like a lost connection. */
  readonly dropSubscriptions: (queue?: string) => Effect.Effect<void>
  /** Replaces the injected faults (and reseeds the PRNG); `undefined` turns faults off. */
  readonly setFaults: (faults: Faults | undefined) => Effect.Effect<void>
  /** Makes the next `n` `publish` calls fail with `BrokerUnavailable`. */
  readonly publishFails: (n: number) => Effect.Effect<void>
  /**
   * Makes the next `n` `deadLetter` moves fail, as when the dead-letter store refuses a copy: those
   * deliveries fall back to the broker's own dead-lettering (reason `rejectedReason`, no reason of theirs).
   */
  readonly deadLetterMovesFail: (n: number) => Effect.Effect<void>
  /** The broker's counters. */
  readonly stats: Effect.Effect<BrokerStats>
  /** The messages a queue holds, by state (zeros for an unknown queue). */
  readonly queueDepth: (queue: string) => Effect.Effect<QueueDepth>
  /** How many subscriptions are currently active on a queue. */
  readonly subscriberCount: (queue: string) => Effect.Effect<number>
}>()("entity-sync/memory/MemoryBroker") {}

const defaultPrefetch = 100
const defaultDeliveryLimit = 20
const reorderWindow = 8

/** One copy of a message in a queue. */
interface Entry {
  readonly message: OutgoingMessage
  deliveries: number
  redelivered: boolean
}

interface DelayedEntry {
  readonly entry: Entry
  readonly dueAt: number
  readonly order: number
}

interface StoredDeadLetter {
  readonly deadLetter: DeadLetter
  readonly message: OutgoingMessage
}

interface QueueState {
  readonly name: string
  readonly bindings: Set<string>
  /** Set for a lane queue: its bindings are its lanes' exchange's, and one subscription at a time is active. */
  readonly lane: Lane | undefined
  ready: Array<Entry>
  delayed: Array<DelayedEntry>
  deadLetters: Array<StoredDeadLetter>
  readonly subscriptions: Set<Subscription>
  /** Fired whenever something a waiting subscriber cares about changes. */
  readonly changed: Signal.Signal
}

interface Subscription {
  readonly queue: QueueState
  readonly prefetch: number
  /** Unsettled deliveries by delivery tag; insertion order is delivery order. */
  readonly unsettled: Map<number, Entry>
  ended: boolean
  failure: BrokerUnavailable | undefined
}

/** What a subscriber does next. */
type Step =
  | { readonly _tag: "Deliver"; readonly delivery: Delivery }
  | { readonly _tag: "Fail"; readonly error: BrokerUnavailable }
  | { readonly _tag: "Wait"; readonly changed: Deferred.Deferred<void>; readonly wakeAt: number | undefined }

interface ActiveFaults {
  readonly reorder: number
  readonly duplicate: number
  readonly delayProbability: number
  readonly delayMaxMillis: number
  readonly random: () => number
}

const activate = (faults: Faults | undefined): ActiveFaults | undefined =>
  faults === undefined ? undefined : {
    reorder: faults.reorder ?? 0,
    duplicate: faults.duplicate ?? 0,
    delayProbability: faults.delay?.probability ?? 0,
    delayMaxMillis: faults.delay === undefined ? 0 : Duration.toMillis(faults.delay.max),
    random: SeededRandom.make(faults.seed)
  }

/**
 * Makes a fresh broker: the `Broker` service and its test controls, sharing one state. It has topic
 * bindings, competing consumers, prefetch, ack / nack / dead-letter / release, redelivery of unsettled
 * messages when a subscription ends, a delivery limit, and the `Faults` it is given (reorder, duplicate,
 * delay) besides dropped connections, failing publishes and failing dead-letter moves (`MemoryBroker`).
 *
 * Ordered lanes (`Broker.laneQueues`): the lane queues of one exchange share its bindings; a message goes
 * to the one lane its entity key hashes to, and a lane delivers only to its oldest open subscription (a
 * single active consumer): when that one ends, its unsettled messages go back to the head of the lane and
 * the next subscription takes over.
 *
 * Like the RabbitMQ adapter, a dead letter keeps a reason cut to `maxReasonBytes`, at most
 * `maxDeadLetterBodyBytes` of the body and bounded headers (`boundHeaders`); `release` gives a message
 * back to the tail of its queue without spending a delivery attempt. Nobody vouches for publishers here
 * (`vouchesForPublishers` is false, `publisher` always undefined): R11 rests on signed events.
 */
export const make = (options?: MemoryBrokerOptions): Effect.Effect<{
  readonly broker: Broker["Service"]
  readonly controls: MemoryBroker["Service"]
}> =>
  Effect.sync(() => {
    const deliveryLimit = options?.deliveryLimit ?? defaultDeliveryLimit
    const maxBodyBytes = Math.max(0, options?.maxDeadLetterBodyBytes ?? defaultMaxDeadLetterBodyBytes)
    const queues = new Map<string, QueueState>()
    let faults = activate(options?.faults)
    let failingPublishes = 0
    let failingMoves = 0
    let nextTag = 0
    let nextDelayOrder = 0
    const stats = {
      published: 0,
      routed: 0,
      unroutable: 0,
      duplicated: 0,
      delivered: 0,
      acked: 0,
      requeued: 0,
      released: 0,
      deadLettered: 0
    }

    const chance = (probability: number): boolean =>
      faults !== undefined && probability > 0 && faults.random() < probability

    const notify = (queue: QueueState): void => queue.changed.fireUnsafe()

    const declareQueue = (spec: QueueSpec): QueueState => {
      const existing = queues.get(spec.name)
      const queue: QueueState = existing ?? {
        name: spec.name,
        bindings: new Set(),
        lane: spec.lane,
        ready: [],
        delayed: [],
        deadLetters: [],
        subscriptions: new Set(),
        changed: Signal.makeUnsafe()
      }
      spec.bindings.forEach((binding) => queue.bindings.add(binding))
      queues.set(spec.name, queue)
      return queue
    }

    /** Stores a dead letter with a bounded reason, body and headers; what is cut is gone, as on RabbitMQ. */
    const deadLetterEntry = (queue: QueueState, entry: Entry, reason: string, now: number): void => {
      const bounded = boundReason(reason)
      const { body, truncatedFrom } = boundBody(entry.message.body, maxBodyBytes)
      const message: OutgoingMessage = { ...entry.message, body, headers: boundHeaders(entry.message.headers) }
      queue.deadLetters.push({
        message,
        deadLetter: {
          queue: queue.name,
          messageId: message.messageId,
          routingKey: message.routingKey,
          type: message.type,
          body,
          headers: { ...message.headers, [reasonHeader]: bounded },
          reason: bounded,
          deadLetteredAt: now,
          deliveryCount: entry.deliveries,
          publisher: undefined,
          truncatedFrom
        }
      })
      stats.deadLettered++
    }

    /** `deadLetter(reason)`: the move, or the broker's own dead-lettering when the move fails. */
    const moveToDeadLetters = (queue: QueueState, entry: Entry, reason: string, now: number): void => {
      if (failingMoves > 0) {
        failingMoves--
        deadLetterEntry(queue, entry, rejectedReason, now)
      } else {
        deadLetterEntry(queue, entry, reason, now)
      }
    }

    /** Puts a released entry back at the tail of its queue; this delivery does not count as an attempt. */
    const releaseEntry = (queue: QueueState, entry: Entry): void => {
      entry.deliveries = Math.max(0, entry.deliveries - 1)
      entry.redelivered = true
      stats.released++
      queue.ready.push(entry)
    }

    /** Puts entries back at the head of their queue, in order, unless they reached the delivery limit. */
    const returnToHead = (queue: QueueState, entries: ReadonlyArray<Entry>, now: number): void => {
      const kept: Array<Entry> = []
      for (const entry of entries) {
        entry.redelivered = true
        if (entry.deliveries > deliveryLimit) deadLetterEntry(queue, entry, deliveryLimitReason, now)
        else kept.push(entry)
      }
      stats.requeued += kept.length
      queue.ready = [...kept, ...queue.ready]
    }

    const enqueue = (queue: QueueState, message: OutgoingMessage, now: number): void => {
      const entry: Entry = { message, deliveries: 0, redelivered: false }
      if (faults !== undefined && faults.delayMaxMillis > 0 && chance(faults.delayProbability)) {
        const delay = 1 + Math.floor(faults.random() * faults.delayMaxMillis)
        queue.delayed.push({ entry, dueAt: now + Math.min(delay, faults.delayMaxMillis), order: nextDelayOrder++ })
      } else {
        queue.ready.push(entry)
      }
    }

    /** Moves the delayed entries that are due to the tail of the queue, earliest first, and wakes its subscribers. */
    const promoteDue = (queue: QueueState, now: number): void => {
      if (queue.delayed.length === 0) return
      const due = queue.delayed.filter((d) => d.dueAt <= now)
      if (due.length === 0) return
      queue.delayed = queue.delayed.filter((d) => d.dueAt > now)
      due.sort((a, b) => a.dueAt - b.dueAt || a.order - b.order)
      due.forEach((d) => queue.ready.push(d.entry))
      notify(queue)
    }

    const endSubscription = (sub: Subscription, failure: BrokerUnavailable | undefined, now: number): void => {
      if (sub.ended) return
      sub.ended = true
      sub.failure = failure
      sub.queue.subscriptions.delete(sub)
      const unsettled = Array.from(sub.unsettled.values())
      sub.unsettled.clear()
      returnToHead(sub.queue, unsettled, now)
      notify(sub.queue)
    }

    /** Settles delivery `tag` of `sub` once; a no-op when it is already settled or the subscription ended. */
    const settle = (sub: Subscription, tag: number, f: (entry: Entry, now: number) => void) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          const entry = sub.unsettled.get(tag)
          if (sub.ended || entry === undefined) return
          sub.unsettled.delete(tag)
          f(entry, now)
          notify(sub.queue)
        }))

    const deliver = (sub: Subscription, entry: Entry): Delivery => {
      const tag = nextTag++
      const queue = sub.queue
      entry.deliveries++
      sub.unsettled.set(tag, entry)
      stats.delivered++
      const { message } = entry
      return {
        messageId: message.messageId,
        routingKey: message.routingKey,
        type: message.type,
        body: message.body,
        headers: message.headers,
        redelivered: entry.redelivered,
        publisher: undefined,
        ack: settle(sub, tag, () => {
          stats.acked++
        }),
        nack: ({ requeue }) =>
          settle(sub, tag, (e, now) =>
            requeue ? returnToHead(queue, [e], now) : deadLetterEntry(queue, e, rejectedReason, now)),
        deadLetter: (reason) =>
          settle(sub, tag, (e, now) =>
            moveToDeadLetters(queue, e, reason, now)),
        release: settle(sub, tag, (e) => releaseEntry(queue, e))
      }
    }

    const nextStep = (sub: Subscription, now: number): Step => {
      if (sub.failure !== undefined) return { _tag: "Fail", error: sub.failure }
      const queue = sub.queue
      promoteDue(queue, now)
      // a lane queue delivers to its single active subscription: the oldest one still open
      const active = queue.lane === undefined || queue.subscriptions.values().next().value === sub
      const hasRoom = active && !sub.ended && sub.unsettled.size < sub.prefetch
      if (hasRoom && queue.ready.length > 0) {
        const window = Math.min(reorderWindow, queue.ready.length)
        const index = faults !== undefined && chance(faults.reorder) ? Math.floor(faults.random() * window) : 0
        const [entry] = queue.ready.splice(index, 1)
        if (entry !== undefined) return { _tag: "Deliver", delivery: deliver(sub, entry) }
      }
      const wakeAt = hasRoom && queue.delayed.length > 0
        ? Math.min(...queue.delayed.map((d) => d.dueAt))
        : undefined
      return { _tag: "Wait", changed: queue.changed.currentUnsafe(), wakeAt }
    }

    /** The next delivery of `sub`: waits on the queue's change signal (or the next delayed message). */
    const pull = (sub: Subscription): Effect.Effect<Delivery, BrokerUnavailable> =>
      Effect.gen(function*() {
        while (true) {
          const now = yield* Clock.currentTimeMillis
          const step = nextStep(sub, now)
          switch (step._tag) {
            case "Deliver":
              return step.delivery
            case "Fail":
              return yield* step.error
            case "Wait":
              yield* step.wakeAt === undefined
                ? Deferred.await(step.changed)
                : Effect.raceFirst(Deferred.await(step.changed), Effect.sleep(Duration.millis(step.wakeAt - now)))
          }
        }
      })

    /**
     * The queues a message goes to, from those whose bindings match it: a plain queue takes it; the lanes
     * of one exchange take it once, in the lane its entity key hashes to (`laneOfKey`; an absent key
     * hashes as ""), like RabbitMQ's consistent-hash exchange with one binding of weight 1 per lane.
     */
    const routeToLanes = (matching: ReadonlyArray<QueueState>, message: OutgoingMessage): ReadonlyArray<QueueState> => {
      if (matching.every((queue) => queue.lane === undefined)) return matching
      const targets: Array<QueueState> = []
      const exchanges = new Map<string, number>()
      for (const queue of matching) {
        if (queue.lane === undefined) targets.push(queue)
        else exchanges.set(queue.lane.exchange, queue.lane.count)
      }
      for (const [exchange, count] of exchanges) {
        const index = laneOfKey(message.headers[entityKeyHeader] ?? "", count)
        for (const queue of queues.values()) {
          if (queue.lane?.exchange === exchange && queue.lane.index === index) targets.push(queue)
        }
      }
      return targets
    }

    const publish = (
      batch: ReadonlyArray<OutgoingMessage>
    ): Effect.Effect<void, BrokerUnavailable | PublishRejected> =>
      // R2: a Broker captured before an outbox transaction and used inside it is refused
      Effect.flatMap(Effect.andThen(ensureOutsideTransaction("publish"), Clock.currentTimeMillis), (now) =>
        Effect.suspend((): Effect.Effect<void, BrokerUnavailable | PublishRejected> => {
          if (failingPublishes > 0) {
            failingPublishes--
            return Effect.fail(
              new BrokerUnavailable({ operation: "publish", detail: "publish failure injected by MemoryBroker" })
            )
          }
          const touched = new Set<QueueState>()
          const unroutable: Array<OutgoingMessage> = []
          for (const published of batch) {
            const message: OutgoingMessage = {
              ...published,
              body: published.body.slice(),
              headers: { ...published.headers }
            }
            stats.published++
            const matching = Array.from(queues.values()).filter((queue) =>
              Array.from(queue.bindings).some((binding) =>
                matchesBinding(binding, message.routingKey)
              )
            )
            const targets = routeToLanes(matching, message)
            if (targets.length === 0) {
              stats.unroutable++
              unroutable.push(message)
            }
            for (const queue of targets) {
              stats.routed++
              enqueue(queue, message, now)
              if (faults !== undefined && chance(faults.duplicate)) {
                stats.duplicated++
                enqueue(queue, message, now)
              }
              touched.add(queue)
            }
          }
          touched.forEach(notify)
          return unroutable.length === 0 ? Effect.void : Effect.fail(
            new PublishRejected({
              messageIds: unroutable.map((m) => m.messageId),
              detail: `no queue is bound to ${[...new Set(unroutable.map((m) => m.routingKey))].join(", ")}`
            })
          )
        }))

    const subscribe = (
      spec: QueueSpec,
      subscribeOptions?: SubscribeOptions
    ): Stream.Stream<Delivery, BrokerUnavailable> =>
      Stream.unwrap(Effect.gen(function*() {
        const sub = yield* Effect.acquireRelease(
          Effect.sync((): Subscription => {
            const queue = declareQueue(spec)
            const created: Subscription = {
              queue,
              prefetch: Math.max(1, subscribeOptions?.prefetch ?? defaultPrefetch),
              unsettled: new Map(),
              ended: false,
              failure: undefined
            }
            queue.subscriptions.add(created)
            return created
          }),
          (sub) =>
            Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => endSubscription(sub, undefined, now)))
        )
        return Stream.fromEffectRepeat(pull(sub))
      }))

    const deadLetters = (
      queue: string,
      pageOptions?: { readonly limit?: number }
    ): Effect.Effect<DeadLetterPage, BrokerUnavailable> =>
      Effect.sync(() => {
        const stored = queues.get(queue)?.deadLetters ?? []
        return {
          total: stored.length,
          items: stored.slice(0, deadLetterPageSize(pageOptions)).map((s) => s.deadLetter)
        }
      })

    /** Moves the matching dead letters (at most `filter.limit`) back to the tail of their queue, in order. */
    const replayDeadLetters = (queueName: string, filter: DeadLetterFilter): Effect.Effect<number, BrokerUnavailable> =>
      Effect.sync(() => {
        const queue = queues.get(queueName)
        if (queue === undefined) return 0
        const limit = replayLimit(filter)
        const kept: Array<StoredDeadLetter> = []
        let replayed = 0
        for (const stored of queue.deadLetters) {
          if (replayed < limit && matchesFilter(filter, stored.deadLetter)) {
            queue.ready.push({ message: stored.message, deliveries: 0, redelivered: false })
            replayed++
          } else {
            kept.push(stored)
          }
        }
        queue.deadLetters = kept
        if (replayed > 0) notify(queue)
        return replayed
      })

    const replayDeadLetter = (queueName: string, messageId: string): Effect.Effect<boolean, BrokerUnavailable> =>
      Effect.map(replayDeadLetters(queueName, { messageIds: [messageId], limit: 1 }), (n) => n > 0)

    const broker = Broker.of({
      publish,
      declare: (spec) => Effect.sync(() => void declareQueue(spec)),
      subscribe,
      deadLetters,
      replayDeadLetter,
      replayDeadLetters,
      vouchesForPublishers: false
    })

    const controls = MemoryBroker.of({
      dropSubscriptions: (queue) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            const targets = queue === undefined ?
              Array.from(queues.values()) :
              Array.from(queues.values()).filter((q) => q.name === queue)
            for (const q of targets) {
              for (const sub of Array.from(q.subscriptions)) {
                endSubscription(
                  sub,
                  new BrokerUnavailable({ operation: "subscribe", detail: `connection to queue ${q.name} dropped` }),
                  now
                )
              }
            }
          })),
      setFaults: (next) =>
        Effect.sync(() => {
          faults = activate(next)
        }),
      publishFails: (n) =>
        Effect.sync(() => {
          failingPublishes = Math.max(0, n)
        }),
      deadLetterMovesFail: (n) =>
        Effect.sync(() => {
          failingMoves = Math.max(0, n)
        }),
      stats: Effect.sync(() => ({ ...stats })),
      queueDepth: (name) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            const queue = queues.get(name)
            if (queue === undefined) return { ready: 0, unsettled: 0, delayed: 0 }
            promoteDue(queue, now)
            let unsettled = 0
            queue.subscriptions.forEach((sub) => {
              unsettled += sub.unsettled.size
            })
            return { ready: queue.ready.length, unsettled, delayed: queue.delayed.length }
          })),
      subscriberCount: (name) => Effect.sync(() => queues.get(name)?.subscriptions.size ?? 0)
    })

    return { broker, controls }
  })

/** A fresh memory broker providing both `Broker` and its test controls `MemoryBroker`. */
export const layer = (options?: MemoryBrokerOptions): Layer.Layer<Broker | MemoryBroker> =>
  Layer.effectContext(
    Effect.map(make(options), ({ broker, controls }) =>
      Context.make(Broker, broker).pipe(Context.add(MemoryBroker, controls)))
  )
