/**
 * `entity-sync/embedded`: an embedded PostgreSQL (PGlite, an optional peer dependency needed only by this
 * entry point) for demos, examples and tests that have no database configured.
 *
 * @since 0.2.0
 */
export * as Embedded from "./Embedded.ts"
