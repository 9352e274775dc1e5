/**
 * An entity contract: what an entity is called, which service owns it (R1), the Schema of its payload,
 * its id field and the entities it depends on (R5). Contracts are plain values shared by the owner and
 * its consumers.
 *
 * @since 0.1.0
 */
import type { Schema } from "effect"
import type { EntityRef } from "./Errors.ts"

/** A declared dependency: the payload field `field` holds the id of an entity of contract `entity`. */
export interface Dependency {
  readonly field: string
  readonly entity: string
}

/**
 * An entity contract. `Owner` is a literal type so that R1 is checked by the compiler; the payload
 * encodes to JSON (`I`).
 */
export interface Contract<Name extends string, Owner extends string, A, I extends Schema.Json> {
  readonly name: Name
  readonly owner: Owner
  readonly payload: Schema.Codec<A, I>
  readonly idField: string
  readonly dependencies: ReadonlyArray<Dependency>
  /** The entity id held by a payload. */
  idOf(payload: A): string
  /** The entities a payload references through its declared dependencies (null references are skipped). */
  referencesOf(payload: A): ReadonlyArray<EntityRef>
}

/** Any contract, whatever its name, owner and payload. */
export type Any = Contract<string, string, unknown, Schema.Json>

/** The payload type of a contract. */
export type Payload<C> = C extends Contract<string, string, infer A, Schema.Json> ? A : never

/** The encoded (wire) payload type of a contract. */
export type Encoded<C> = C extends Contract<string, string, unknown, infer I> ? I : never

/** Contracts owned by `Owner`. */
export type OwnedBy<Owner extends string> = Contract<string, Owner, unknown, Schema.Json>

type KeysOfType<T, V> = { [K in keyof T]-?: T[K] extends V ? K : never }[keyof T] & string

/**
 * Declares a contract.
 *
 * ```ts
 * const User = Contract.make({
 *   name: "User", owner: "accounts", payload: UserSchema, id: "id",
 *   dependencies: { companyId: Company }
 * })
 * ```
 */
export const make = <
  const Name extends string,
  const Owner extends string,
  A extends object,
  I extends Schema.Json,
  const Id extends KeysOfType<A, string>
>(options: {
  readonly name: Name
  readonly owner: Owner
  readonly payload: Schema.Codec<A, I>
  readonly id: Id
  readonly dependencies?: { readonly [K in KeysOfType<A, string | null | undefined>]?: Any }
}): Contract<Name, Owner, A, I> => {
  const dependencies: ReadonlyArray<Dependency> = Object.entries<Any | undefined>(options.dependencies ?? {}).flatMap(
    ([field, contract]) => contract === undefined ? [] : [{ field, entity: contract.name }]
  )
  const field = (payload: A, name: string): unknown => Reflect.get(payload, name)
  return {
    name: options.name,
    owner: options.owner,
    payload: options.payload,
    idField: options.id,
    dependencies,
    idOf: (payload) => String(field(payload, options.id)),
    referencesOf: (payload) =>
      dependencies.flatMap((dep) => {
        const id = field(payload, dep.field)
        return typeof id === "string" ? [{ entity: dep.entity, id }] : []
      })
  }
}
