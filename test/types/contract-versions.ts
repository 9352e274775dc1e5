/**
 * Contract versions: a chain of versions with a gap, or a migration whose result is not the next version's
 * encoded payload, does not compile. Each `@ts-expect-error` is a program that must not compile;
 * `tsc.test.ts` fails if one starts to. What the compiler cannot see (a version that is a plain `number`)
 * is refused when a layer is built (`Contract.check`, tested in test/Contract.test.ts). Nothing here runs.
 */
import { Schema } from "effect"
import { Contract } from "../../src/index.ts"

const V1 = Schema.Struct({ id: Schema.String, name: Schema.String })
const V2 = Schema.Struct({ id: Schema.String, first: Schema.String, last: Schema.String })
const V3 = Schema.Struct({
  id: Schema.String,
  first: Schema.String,
  last: Schema.String,
  tags: Schema.Array(Schema.String)
})
const split = (v1: typeof V1.Type) => ({ id: v1.id, first: v1.name, last: "" })

/** The allowed chains: 1 → 2 → 3, each migration giving the next version's payload. */
export const allowed = () => {
  const chain = Contract.versions(V1).next(2, V2, split).next(3, V3, (v2) => ({ ...v2, tags: [] }))
  const contract = Contract.make({ name: "Person", owner: "people", id: "id", payload: chain })
  const current: Contract.Payload<typeof contract> = { id: "p", first: "A", last: "B", tags: [] }
  return [contract, current]
}

export const gaps = () => [
  // @ts-expect-error a gap: version 3 cannot follow version 1
  Contract.versions(V1).next(3, V3, (v1) => ({ id: v1.id, first: v1.name, last: "", tags: [] })),
  // @ts-expect-error a version cannot repeat the one before it
  Contract.versions(V1).next(1, V2, split),
  // @ts-expect-error nor go back
  Contract.versions(V1).next(2, V2, split).next(1, V3, (v2) => ({ ...v2, tags: [] }))
]

export const wrongOutputs = () => [
  // @ts-expect-error the migration to version 2 must give a version-2 payload: `last` is missing
  Contract.versions(V1).next(2, V2, (v1) => ({ id: v1.id, first: v1.name })),
  // @ts-expect-error the migration to version 3 gives `tags` of the wrong type
  Contract.versions(V1).next(2, V2, split).next(3, V3, (v2) => ({ ...v2, tags: "none" })),
  Contract.versions(V1).next(2, V2, (v1) => {
    // @ts-expect-error a migration reads the previous version's payload: version 1 has no `first`
    const first: string = v1.first
    return { id: v1.id, first, last: "" }
  })
]
