/**
 * Per-entity serialization: the consumer applies the events of one entity one at a time, while events of
 * different entities go on concurrently.
 *
 * @since 0.1.0
 */
import { Effect, Semaphore } from "effect"

/** Makes a lock by key: the returned function runs `effect` once no other effect holds `key`. */
export const make = () => {
  const locks = new Map<string, { readonly semaphore: Semaphore.Semaphore; users: number }>()
  return <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const lock = locks.get(key) ?? { semaphore: Semaphore.makeUnsafe(1), users: 0 }
        lock.users++
        locks.set(key, lock)
        return lock
      }),
      (lock) => Semaphore.withPermit(lock.semaphore)(effect),
      (lock) =>
        Effect.sync(() => {
          if (--lock.users === 0) locks.delete(key)
        })
    )
}
