/**
 * How the consumer takes its deliveries in batches. An idle consumer's first delivery opens a short window
 * for more; deliveries that arrived while the previous batch was applied go once that window has passed
 * since the previous batch was taken (at once when they fill a batch, or when applying took longer). So a
 * delivery waits at most one window for company, and a steady trickle is applied in batches of a window's
 * worth rather than one or two at a time.
 *
 * @since 0.1.0
 */
import { type Cause, Clock, Duration, Effect, Pull, Queue } from "effect"

/** Batch settings: at most `batchSize` items, gathered for at most `batchWindow`. */
export interface BatchOptions {
  readonly batchSize: number
  readonly batchWindow: Duration.Duration
}

/**
 * Takes the batches of `queue`, one per run of the effect: at most `batchSize` items each, at most one
 * batch per `batchWindow` unless a full one is waiting. Fails with `Cause.Done` when the queue has ended.
 */
export const make = <A, E>(
  queue: Queue.Dequeue<A, E | Cause.Done>,
  options: BatchOptions
): Effect.Effect<ReadonlyArray<A>, E | Cause.Done> => {
  const { batchSize, batchWindow } = options
  const windowMillis = Duration.toMillis(batchWindow)
  // when the previous batch was taken
  let takenAt = -Infinity
  const taken = (batch: ReadonlyArray<A>) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      takenAt = now
      return batch
    })
  const take = Effect.flatMap(Queue.takeBetween(queue, 1, batchSize), taken)
  // what arrived within the window (`Queue.takeBetween` with a minimum of 0 takes nothing: ask for 1 when
  // there is one)
  const rest = (first: ReadonlyArray<A>) =>
    Effect.andThen(
      Effect.sleep(batchWindow),
      Effect.suspend(() =>
        Queue.sizeUnsafe(queue) === 0 ?
          Effect.succeed(first) :
          Queue.takeBetween(queue, 1, batchSize - first.length).pipe(
            Pull.catchDone(() => Effect.succeed([])),
            Effect.map((later): ReadonlyArray<A> => [...first, ...later])
          )
      )
    )
  const idle = Effect.flatMap(
    Queue.takeBetween(queue, 1, batchSize),
    (first) => Effect.flatMap(first.length < batchSize ? rest(first) : Effect.succeed(first), taken)
  )
  return Effect.suspend(() => {
    const waiting = Queue.sizeUnsafe(queue)
    if (waiting === 0) return idle
    if (waiting >= batchSize) return take
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const wait = takenAt + windowMillis - now
      return wait > 0 ? Effect.andThen(Effect.sleep(Duration.millis(wait)), take) : take
    })
  })
}
