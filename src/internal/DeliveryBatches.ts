/**
 * How the consumer takes its deliveries in batches: deliveries that arrived while the previous batch was
 * applied go at once (they have waited already); otherwise the first delivery opens a short window for more.
 *
 * @since 0.1.0
 */
import { type Cause, type Duration, Effect, Pull, Queue } from "effect"

/**
 * The next batch of at most `batchSize` items from `queue`: what is there, or else the first item to
 * arrive and whatever follows within `batchWindow`. Fails with `Cause.Done` when the queue has ended.
 */
export const next = <A, E>(
  queue: Queue.Dequeue<A, E | Cause.Done>,
  options: { readonly batchSize: number; readonly batchWindow: Duration.Duration }
): Effect.Effect<ReadonlyArray<A>, E | Cause.Done> => {
  const { batchSize, batchWindow } = options
  const rest = (first: ReadonlyArray<A>) =>
    Effect.andThen(Effect.sleep(batchWindow), Queue.takeBetween(queue, 0, batchSize - first.length)).pipe(
      Pull.catchDone(() => Effect.succeed([])),
      Effect.map((later): ReadonlyArray<A> => later.length === 0 ? first : [...first, ...later])
    )
  return Effect.suspend(() => {
    const take = Queue.takeBetween(queue, 1, batchSize)
    return Queue.sizeUnsafe(queue) > 0
      ? take
      : Effect.flatMap(take, (first) => first.length < batchSize ? rest(first) : Effect.succeed(first))
  })
}
