/**
 * The field schemas the demo contracts share: ids that are safe in a URL path, non-empty names, e-mail
 * addresses. They validate on both sides of the bus: the owner cannot write, and a consumer does not
 * accept, a payload that breaks them.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/** An entity id: 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or a digit. */
export const EntityId = Schema.String.check(
  Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/u, {
    message: "an id of 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit"
  })
)

/** A display name: 1 to 200 characters, not only blanks. */
export const Name = Schema.String.check(
  Schema.isPattern(/\S/u, { message: "a name that is not blank" }),
  Schema.isMaxLength(200)
)

/** An e-mail address (one `@`, no blanks), at most 254 characters. */
export const Email = Schema.String.check(
  Schema.isPattern(/^[^@\s]+@[^@\s]+$/u, { message: "an e-mail address" }),
  Schema.isMaxLength(254)
)
