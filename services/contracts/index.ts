/**
 * The contracts shared by the demo services: the owner (`accounts`) produces them, the consumer
 * (`directory`) keeps copies. Nothing else is shared between the two.
 *
 * @since 0.1.0
 */
export { Company, CompanyPayload } from "./Company.ts"
export { Email, EntityId, Name } from "./Fields.ts"
export { User, UserPayload } from "./User.ts"
