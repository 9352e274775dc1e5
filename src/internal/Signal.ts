/**
 * A wake-up signal: fibers wait until something may have changed (a commit, an apply, a new message), and
 * one `fire` wakes them all.
 *
 * @since 0.1.0
 */
import { Deferred, type Duration, Effect } from "effect"

/**
 * A wake-up signal; `E` is what `fail` hands its waiters. A waiter that takes `current` before it looks for
 * work and awaits it after is woken by any fire in between, so no wake-up is lost.
 */
export interface Signal<E = never> {
  /** What waiters wait on now: it completes at the next `fire` (or `fail`). */
  readonly current: Effect.Effect<Deferred.Deferred<void, E>>
  /** `current`, synchronously. */
  readonly currentUnsafe: () => Deferred.Deferred<void, E>
  /** Waits for the next `fire` (or fails with the next `fail`). */
  readonly await: Effect.Effect<void, E>
  /** Wakes every waiter; later waiters wait for the next one. */
  readonly fire: Effect.Effect<void>
  /** `fire`, synchronously. */
  readonly fireUnsafe: () => void
  /** Fails every waiter with `error`; later waiters wait for the next `fire`. */
  readonly fail: (error: E) => Effect.Effect<void>
}

/** A new signal, synchronously. */
export const makeUnsafe = <E = never>(): Signal<E> => {
  let current = Deferred.makeUnsafe<void, E>()
  const swap = () => {
    const previous = current
    current = Deferred.makeUnsafe<void, E>()
    return previous
  }
  const fireUnsafe = () => {
    Deferred.doneUnsafe(swap(), Effect.void)
  }
  return {
    current: Effect.sync(() => current),
    currentUnsafe: () => current,
    await: Effect.suspend(() => Deferred.await(current)),
    fire: Effect.sync(fireUnsafe),
    fireUnsafe,
    fail: (error) => Effect.sync(() => void Deferred.doneUnsafe(swap(), Effect.fail(error)))
  }
}

/** A new signal. */
export const make = <E = never>(): Effect.Effect<Signal<E>> => Effect.sync(() => makeUnsafe<E>())

/** Waits for a wake-up taken from `Signal.current`, at most `timeout`. */
export const awaitAtMost = <E>(
  wakeUp: Deferred.Deferred<void, E>,
  timeout: Duration.Duration
): Effect.Effect<void, E> => Deferred.await(wakeUp).pipe(Effect.timeoutOption(timeout), Effect.asVoid)
