/**
 * The names of the library's PostgreSQL objects. Every table, index, function and notification channel
 * starts with a configurable prefix (default `sync_`), so several services (or test runs) can share one
 * database and the names never collide with the application's own tables.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"

/** The default table prefix: `sync_`. */
export const defaultPrefix = "sync_"

/** What a prefix must look like: a lowercase SQL identifier start, so names never need case folding. */
export const prefixPattern = /^[a-z_][a-z0-9_]*$/

/** The longest suffix appended to the prefix (an index name); PostgreSQL names are at most 63 bytes. */
const longestSuffix = "waiting_wake_keys_idx"

/** The longest accepted prefix, so that every derived name fits PostgreSQL's 63-byte limit. */
export const maxPrefixLength = 63 - longestSuffix.length

/** A table prefix that is not a lowercase SQL identifier, or too long. */
export class InvalidTablePrefix extends Schema.TaggedError<InvalidTablePrefix>()("InvalidTablePrefix", {
  prefix: Schema.String,
  message: Schema.String
}) {}

/** The names of the library's objects for one prefix (unquoted; quote them with `sql(name)`). */
export interface Tables {
  readonly prefix: string
  /** The migrations table of the library, `<prefix>migrations`. */
  readonly migrations: string
  readonly outbox: string
  readonly source: string
  /** The tombstones of hard-deleted entities of owner tables (see `OwnerTable`). */
  readonly tombstones: string
  readonly inbox: string
  readonly waiting: string
  readonly dead: string
  readonly copies: string
  /** The SQL function turning a jsonb array of `{entity, id}` into wake keys. */
  readonly refKeys: string
  /** The SQL function that claims due outbox rows (see `Migrations`). */
  readonly claimDue: string
  /** The channel `NOTIFY`-ed when outbox rows are appended, `<prefix>outbox`. */
  readonly outboxChannel: string
  /** The name of an index (or constraint) of the library: `<prefix><name>`. */
  readonly index: (name: string) => string
}

/** The names for a prefix that is already known to be valid. */
const names = (prefix: string): Tables => ({
  prefix,
  migrations: `${prefix}migrations`,
  outbox: `${prefix}outbox`,
  source: `${prefix}source`,
  tombstones: `${prefix}tombstones`,
  inbox: `${prefix}inbox`,
  waiting: `${prefix}waiting`,
  dead: `${prefix}dead`,
  copies: `${prefix}copies`,
  refKeys: `${prefix}ref_keys`,
  claimDue: `${prefix}claim_due`,
  outboxChannel: `${prefix}outbox`,
  index: (name) => `${prefix}${name}`
})

/**
 * Validates `prefix` (default `sync_`) against `/^[a-z_][a-z0-9_]*$/` and a length of at most
 * `maxPrefixLength` characters, and gives the names of the library's objects.
 */
export const make = (prefix: string = defaultPrefix): Effect.Effect<Tables, InvalidTablePrefix> =>
  !prefixPattern.test(prefix)
    ? Effect.fail(
      new InvalidTablePrefix({
        prefix,
        message: `invalid table prefix ${JSON.stringify(prefix)}: it must match ${prefixPattern.source} ` +
          `(lowercase letters, digits and underscores, not starting with a digit), e.g. "sync_"`
      })
    )
    : prefix.length > maxPrefixLength
    ? Effect.fail(
      new InvalidTablePrefix({
        prefix,
        message: `invalid table prefix ${JSON.stringify(prefix)}: it is ${prefix.length} characters long; ` +
          `the limit is ${maxPrefixLength} so that every table and index name fits in 63 bytes`
      })
    )
    : Effect.succeed(names(prefix))
