/**
 * An in-memory database for the memory implementations of the stores: tables of persistent maps,
 * serializable transactions (one writer at a time) and rollback on failure or interruption, so the
 * memory layers keep the same atomicity promises as PostgreSQL.
 *
 * @since 0.1.0
 */
import { Context, Effect, HashMap, Layer, Option, Semaphore } from "effect"
import { Transactor } from "../Transactor.ts"

/** A table of rows by key. Read and write it only inside `MemoryDatabase.run` or a transaction. */
export interface MemoryTable<V> {
  readonly get: (key: string) => V | undefined
  readonly set: (key: string, value: V) => void
  readonly delete: (key: string) => void
  readonly values: () => ReadonlyArray<V>
  readonly size: () => number
}

interface Snapshotable {
  readonly snapshot: () => () => void
}

const InTransaction = Context.Reference<ReadonlySet<object>>("entity-sync/memory/InTransaction", {
  defaultValue: () => new Set()
})

/** The database of one service: its tables and its transaction lock. */
export class MemoryDatabase extends Context.Service<MemoryDatabase, {
  /** Creates a table of this database. */
  readonly table: <V>() => MemoryTable<V>
  /** Runs `f` atomically: inside the current transaction if there is one, else as its own. */
  readonly run: <A>(f: () => A) => Effect.Effect<A>
  /** Runs `effect` as one transaction; nested calls join the outer one. */
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}>()("entity-sync/memory/MemoryDatabase") {}

/** Makes a new, empty database. */
export const make: Effect.Effect<MemoryDatabase["Service"]> = Effect.gen(function*() {
  const lock = yield* Semaphore.make(1)
  const tables: Array<Snapshotable> = []
  const id = {}

  const table = <V>(): MemoryTable<V> => {
    let rows = HashMap.empty<string, V>()
    tables.push({
      snapshot: () => {
        const saved = rows
        return () => {
          rows = saved
        }
      }
    })
    return {
      get: (key) => Option.getOrUndefined(HashMap.get(rows, key)),
      set: (key, value) => {
        rows = HashMap.set(rows, key, value)
      },
      delete: (key) => {
        rows = HashMap.remove(rows, key)
      },
      values: () => Array.from(HashMap.values(rows)),
      size: () => HashMap.size(rows)
    }
  }

  const withTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.flatMap(InTransaction, (open): Effect.Effect<A, E, R> => {
      if (open.has(id)) return effect
      return Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const rollbacks = tables.map((t) => t.snapshot())
          const exit = yield* Effect.exit(
            restore(effect).pipe(Effect.provideService(InTransaction, new Set([...open, id])))
          )
          if (exit._tag === "Failure") rollbacks.forEach((rollback) => rollback())
          return yield* exit
        })
      ).pipe(Semaphore.withPermit(lock))
    })

  const run = <A>(f: () => A): Effect.Effect<A> => withTransaction(Effect.sync(f))

  return MemoryDatabase.of({ table, run, withTransaction })
})

/** A fresh memory database, also serving as the service's `Transactor`. */
export const layer: Layer.Layer<MemoryDatabase | Transactor> = Layer.effectContext(
  Effect.map(make, (db) =>
    Context.make(MemoryDatabase, db).pipe(
      Context.add(Transactor, Transactor.of({ withTransaction: db.withTransaction, probe: Effect.void }))
    ))
)
