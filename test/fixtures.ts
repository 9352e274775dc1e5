/**
 * Contracts shared by the tests: a Company owned by "accounts", and a User of "accounts" that depends on
 * its Company (and its version 2); plus a Invoice owned by "billing" for R1's negative cases.
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

const UserPayload = Schema.Struct({
  id: Schema.String,
  companyId: Schema.String,
  email: Schema.String,
  name: Schema.String,
  active: Schema.Boolean
})

export const User = Contract.make({
  name: "User",
  owner: "accounts",
  payload: UserPayload,
  id: "id",
  dependencies: { companyId: Company }
})
export type User = Contract.Payload<typeof User>

/** Version 2 of User: a nickname, null for the Users of version 1. */
export const UserV2 = Contract.make({
  name: "User",
  owner: "accounts",
  payload: Contract.versions(UserPayload).next(
    2,
    Schema.Struct({ ...UserPayload.fields, nickname: Schema.NullOr(Schema.String) }),
    (v1) => ({ ...v1, nickname: null })
  ),
  id: "id",
  dependencies: { companyId: Company }
})

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
