/**
 * The User contract: `{ id, companyId, email, name, active }`, owned by `accounts`; a User depends on its
 * Company through `companyId`, so a consumer never holds a User whose Company it does not hold (R5).
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { Contract } from "entity-sync"
import { Company } from "./Company.ts"
import { Email, EntityId, Name } from "./Fields.ts"

/** A user's payload. */
export const UserPayload = Schema.Struct({
  id: EntityId,
  companyId: EntityId,
  email: Email,
  name: Name,
  active: Schema.Boolean
})

/** The User contract, owned by `accounts`, depending on Company through `companyId`. */
export const User = Contract.make({
  name: "User",
  owner: "accounts",
  id: "id",
  payload: UserPayload,
  dependencies: { companyId: Company }
})

/** A user as the contract carries it. */
export type User = Contract.Payload<typeof User>
