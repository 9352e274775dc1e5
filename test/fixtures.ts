/**
 * Contracts shared by the tests: a Company owned by "accounts", and a User of "accounts" that depends on
 * its Company; plus a Invoice owned by "billing" for R1's negative cases.
 */
import { Schema } from "effect"
import * as Contract from "../src/Contract.ts"
import type { Envelope } from "../src/Envelope.ts"

export const Company = Contract.make({
  name: "Company",
  owner: "accounts",
  payload: Schema.Struct({ id: Schema.String, name: Schema.String }),
  id: "id"
})
export type Company = Contract.Payload<typeof Company>

export const User = Contract.make({
  name: "User",
  owner: "accounts",
  payload: Schema.Struct({
    id: Schema.String,
    companyId: Schema.String,
    email: Schema.String,
    name: Schema.String,
    active: Schema.Boolean
  }),
  id: "id",
  dependencies: { companyId: Company }
})
export type User = Contract.Payload<typeof User>

export const Invoice = Contract.make({
  name: "Invoice",
  owner: "billing",
  payload: Schema.Struct({ id: Schema.String, amount: Schema.Number }),
  id: "id"
})

/** A User "created" event at version 1 whose entity id is its message id, for tests of the stores. */
export const createdEnvelope = (messageId: string): Envelope => ({
  contractVersion: 1,
  messageId,
  entity: "User",
  entityId: messageId,
  action: "created",
  version: 1,
  occurredAt: "2026-01-01T00:00:00.000Z",
  producer: "accounts",
  forceSync: false,
  payload: { name: messageId }
})
