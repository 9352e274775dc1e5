/**
 * `entity-sync/postgres`: the library's stores on PostgreSQL through `@effect/sql-pg` — the outbox, the
 * inbox, the copies and the owner's rows — their migrations, the names of their tables, and the column
 * codecs a service's own queries on those tables (or on its own `bigint` columns) decode with.
 *
 * @since 0.2.0
 */
export * as Columns from "./Columns.ts"
export * as Migrations from "./Migrations.ts"
export * as PostgresSync from "./PostgresSync.ts"
export * as Tables from "./Tables.ts"
