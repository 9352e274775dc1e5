/**
 * Per-entity serialization: the consumer applies the events of one entity one at a time, while events of
 * different entities go on concurrently. A batch holds the keys of all its entities at once.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"

/** Runs `effect` once no other effect holds any of `keys`, holding them all until it ends. */
export type EntityLock = <A, E, R>(
  keys: ReadonlyArray<string>,
  effect: Effect.Effect<A, E, R>
) => Effect.Effect<A, E, R>

interface Waiter {
  readonly keys: ReadonlyArray<string>
  /** Set while the waiter's fiber is suspended. */
  wake: (() => void) | undefined
}

/**
 * Makes a lock by key. Requests are served first come, first served per key: a request goes when none of
 * its keys is held or wanted by a request that came before it, so waiting requests never deadlock and
 * one entity's requests keep their order. Taking free keys is synchronous.
 */
export const make = (): EntityLock => {
  const held = new Set<string>()
  // waiting requests in arrival order
  const waiters = new Set<Waiter>()

  const free = (keys: ReadonlyArray<string>) => keys.every((key) => !held.has(key))
  const overlaps = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) => a.some((key) => b.includes(key))
  /** Whether `waiter` may go now: its keys are free and no request ahead of it wants one of them. */
  const mayGo = (waiter: Waiter) => {
    if (!free(waiter.keys)) return false
    for (const ahead of waiters) {
      if (ahead === waiter) return true
      if (overlaps(ahead.keys, waiter.keys)) return false
    }
    return true
  }
  const wakeReady = () => {
    for (const waiter of Array.from(waiters)) {
      if (waiter.wake !== undefined && mayGo(waiter)) {
        const wake = waiter.wake
        waiter.wake = undefined
        wake()
      }
    }
  }
  const release = (keys: ReadonlyArray<string>) =>
    Effect.sync(() => {
      for (const key of keys) held.delete(key)
      if (waiters.size > 0) wakeReady()
    })
  const take = (keys: ReadonlyArray<string>) => {
    for (const key of keys) held.add(key)
  }

  return (keys, effect) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const run = Effect.ensuring(restore(effect), release(keys))
        if (waiters.size === 0 && free(keys)) {
          take(keys)
          return run
        }
        const waiter: Waiter = { keys, wake: undefined }
        waiters.add(waiter)
        const leave = Effect.sync(() => {
          if (waiters.delete(waiter)) wakeReady()
        })
        // A wake reserves nothing: the waiter checks again when it runs.
        const wait = restore(Effect.callback<void>((resume) => {
          if (mayGo(waiter)) resume(Effect.void)
          else waiter.wake = () => resume(Effect.void)
        }))
        const loop: Effect.Effect<void> = Effect.flatMap(wait, () => mayGo(waiter) ? Effect.void : loop)
        return Effect.onInterrupt(loop, () => leave).pipe(
          Effect.andThen(Effect.sync(() => {
            waiters.delete(waiter)
            take(keys)
          })),
          Effect.andThen(run)
        )
      })
    )
}
