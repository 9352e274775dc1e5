/**
 * `entity-sync/memory`: in-memory implementations of the stores and of the broker, with fault injection,
 * for tests and examples. They pass the same conformance suites as the PostgreSQL stores and RabbitMQ.
 *
 * @since 0.2.0
 */
export * as MemoryCopyRepository from "./CopyRepository.ts"
export * as MemoryInbox from "./Inbox.ts"
export * as MemoryBroker from "./MemoryBroker.ts"
export * as MemoryDatabase from "./MemoryDatabase.ts"
export * as MemorySync from "./MemorySync.ts"
export * as MemoryOutbox from "./Outbox.ts"
export * as MemorySourceRepository from "./SourceRepository.ts"
