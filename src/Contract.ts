/**
 * An entity contract: what an entity is called, which service owns it (R1), the Schema of its payload,
 * its id field, the entities it depends on (R5), and its version with the payload schemas of its earlier
 * versions and the migration from each to the next (`versions`). Contracts are plain values shared by the
 * owner and its consumers.
 *
 * @since 0.1.0
 */
import { Effect, Schema, SchemaGetter, SchemaIssue } from "effect"
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
  /** The schema of the current version's payload. */
  readonly payload: Schema.Codec<A, I>
  /** The current version: what the owner publishes, and the newest a consumer built with it can read. */
  readonly version: number
  /** The earlier versions, oldest first (version 1 … `version - 1`), each able to decode to the current type. */
  readonly earlier: ReadonlyArray<EarlierVersion<A>>
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

/** An earlier version of a contract's payload, and how a payload of it becomes the current type. */
export interface EarlierVersion<A> {
  readonly version: number
  /** The schema of this version's payload, as its events carry it. */
  readonly payload: Schema.Codec<unknown, Schema.Json>
  /**
   * Decodes a payload of this version to the current type: this version's schema, then each migration to
   * the next version and its schema in turn (it never encodes: nothing is published at an earlier version).
   */
  readonly upcast: Schema.Decoder<A>
}

// The version after `N`, for literal versions up to 64 (a wider `number` is checked when a layer is built).
type Count<N extends number, T extends ReadonlyArray<unknown> = []> = T["length"] extends N ? T
  : T["length"] extends 64 ? never
  : Count<N, [...T, unknown]>
type Successor<N extends number> = number extends N ? number : [...Count<N>, unknown]["length"] & number

/**
 * The versions of a contract's payload: the first one's schema (version 1), then each later version's schema
 * with the migration from the one before it. The last is the current version. Built with `versions(…)
 * .next(…)`: the compiler refuses a version that is not the one after the last, and a migration whose
 * result is not the next schema's encoded payload.
 */
export interface Versions<A, I extends Schema.Json, V extends number> {
  readonly version: V
  /** The current version's schema. */
  readonly payload: Schema.Codec<A, I>
  /** The earlier versions, oldest first. */
  readonly earlier: ReadonlyArray<EarlierVersion<A>>
  /**
   * The next version: its number (the one after this), its schema, and the migration of a payload of this
   * version (decoded) to a payload of the next (encoded, as the next schema decodes it).
   */
  readonly next: <const N extends Successor<V>, B, J extends Schema.Json>(
    version: N,
    payload: Schema.Codec<B, J>,
    migrate: (previous: A) => NoInfer<J>
  ) => Versions<B, J, N>
}

const migration = (from: number, migrate: (previous: unknown) => unknown) =>
  SchemaGetter.transformEffect((previous: unknown) =>
    Effect.try({
      try: () => migrate(previous),
      catch: (cause) =>
        new SchemaIssue.InvalidValue({
          message: `the migration from version ${from} failed: ${
            cause instanceof Error ? cause.message : String(cause)
          }`
        })
    })
  )

const notEncoded = SchemaGetter.forbidden<unknown, unknown>(() => "a payload is never encoded to an earlier version")

// `schema` followed by the migration from version `from` and the schema after it.
const thenDecodeTo = <A>(
  schema: Schema.Decoder<unknown>,
  from: number,
  migrate: (previous: unknown) => unknown,
  to: Schema.Decoder<A>
): Schema.Decoder<A> => schema.pipe(Schema.decodeTo(to, { decode: migration(from, migrate), encode: notEncoded }))

const makeVersions = <A, I extends Schema.Json, V extends number>(
  version: V,
  payload: Schema.Codec<A, I>,
  earlier: ReadonlyArray<EarlierVersion<A>>
): Versions<A, I, V> => ({
  version,
  payload,
  earlier,
  next: <const N extends Successor<V>, B, J extends Schema.Json>(
    next: N,
    schema: Schema.Codec<B, J>,
    migrate: (previous: A) => NoInfer<J>
  ): Versions<B, J, N> => {
    const step = (previous: unknown): unknown => migrate(previous as A) // decoded by the schema before it
    return makeVersions(next, schema, [
      ...earlier.map((e) => ({ ...e, upcast: thenDecodeTo(e.upcast, version, step, schema) })),
      { version, payload, upcast: thenDecodeTo(payload, version, step, schema) }
    ])
  }
})

/** The first version of a contract's payload; add later ones with `.next(version, schema, migrate)`. */
export const versions = <A, I extends Schema.Json>(first: Schema.Codec<A, I>): Versions<A, I, 1> =>
  makeVersions(1, first, [])

const isVersions = <A, I extends Schema.Json>(
  payload: Schema.Codec<A, I> | Versions<A, I, number>
): payload is Versions<A, I, number> => !Schema.isSchema(payload)

/**
 * Declares a contract. `payload` is a schema (version 1), or `versions(…).next(…)` for a contract whose
 * payload has changed shape: events of an earlier version are upcast to the current one when consumed.
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
  readonly payload: Schema.Codec<A, I> | Versions<A, I, number>
  readonly id: Id
  readonly dependencies?: { readonly [K in KeysOfType<A, string | null | undefined>]?: Any }
}): Contract<Name, Owner, A, I> => {
  const { earlier, payload, version } = isVersions(options.payload)
    ? options.payload
    : { payload: options.payload, version: 1, earlier: [] }
  const dependencies: ReadonlyArray<Dependency> = Object.entries<Any | undefined>(options.dependencies ?? {}).flatMap(
    ([field, contract]) => contract === undefined ? [] : [{ field, entity: contract.name }]
  )
  const field = (payload: A, name: string): unknown => Reflect.get(payload, name)
  return {
    name: options.name,
    owner: options.owner,
    payload,
    version,
    earlier,
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

/** A contract whose versions do not hold together (found when a layer using it is built). */
export class InvalidContract extends Schema.TaggedError<InvalidContract>()("InvalidContract", {
  entity: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `contract ${this.entity}: ${this.detail}`
  }
}

/** The schema's `examples` annotation, if any. */
const examplesOf = (schema: Schema.Top): ReadonlyArray<unknown> => {
  const examples: unknown = Schema.resolveAnnotations(schema)?.examples
  return Array.isArray(examples) ? examples : []
}

/**
 * Checks what the compiler cannot always check: the versions are 1, 2, … in order up to the current one
 * (a `number` that is not a literal, or a contract made without `versions`, gets past the compiler), and
 * every example an earlier version's schema declares (its `examples` annotation) upcasts to the current
 * type — a migration whose output does not fit the next schema fails here, naming the version.
 */
export const check = (contract: Any): Effect.Effect<void, InvalidContract> =>
  Effect.gen(function*() {
    const fail = (detail: string) => Effect.fail(new InvalidContract({ entity: contract.name, detail }))
    if (!Number.isSafeInteger(contract.version) || contract.version < 1) {
      return yield* fail(`its version ${contract.version} is not a whole number ≥ 1`)
    }
    const declared = contract.earlier.map((e) => e.version)
    const expected = Array.from({ length: contract.version - 1 }, (_, i) => i + 1)
    if (declared.length !== expected.length || declared.some((v, i) => v !== expected[i])) {
      return yield* fail(
        `version ${contract.version} needs the earlier versions ${expected.join(", ") || "(none)"} in order; it has ${
          declared.join(", ") || "none"
        }`
      )
    }
    for (const earlier of contract.earlier) {
      for (const example of examplesOf(earlier.payload)) {
        const encoded = yield* Schema.encodeUnknownEffect(earlier.payload)(example).pipe(
          Effect.mapError((error) =>
            new InvalidContract({
              entity: contract.name,
              detail: `an example of version ${earlier.version} does not fit its schema: ${error.message}`
            })
          )
        )
        yield* Schema.decodeUnknownEffect(earlier.upcast)(encoded).pipe(
          Effect.mapError((error) =>
            new InvalidContract({
              entity: contract.name,
              detail: `an example of version ${earlier.version} does not upcast to version ${contract.version}: ${
                error.message.replace(/\n\s*/g, " ")
              }`
            })
          )
        )
      }
    }
  })

/**
 * The decoder of a payload of `version` to the current type: the contract's schema for the current version,
 * the upcast of an earlier one; undefined for a version this contract does not know (a newer one).
 */
export const decoderOf = <A>(
  contract: Contract<string, string, A, Schema.Json>,
  version: number
): Schema.Decoder<A> | undefined =>
  version === contract.version ? contract.payload : contract.earlier.find((e) => e.version === version)?.upcast
