/**
 * The Company contract: `{ id, name }`, owned by `accounts`.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { Contract } from "entity-sync"
import { EntityId, Name } from "./Fields.ts"

/** A company's payload. */
export const CompanyPayload = Schema.Struct({ id: EntityId, name: Name })

/** The Company contract, owned by `accounts`. */
export const Company = Contract.make({
  name: "Company",
  owner: "accounts",
  id: "id",
  payload: CompanyPayload
})

/** A company as the contract carries it. */
export type Company = Contract.Payload<typeof Company>
