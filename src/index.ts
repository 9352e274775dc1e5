/**
 * entity-sync: keep copies of entities in sync between services through a transactional outbox, a
 * broker and an inbox, on Effect. This entry point is the core: contracts, the owner's and the consumer's
 * services and their rules. The stores and the broker are in `entity-sync/postgres`, `entity-sync/amqp`,
 * `entity-sync/embedded` and `entity-sync/memory`.
 *
 * @since 0.1.0
 */
export * as AsyncApi from "./AsyncApi.ts"
export * as Broker from "./Broker.ts"
export * as Contract from "./Contract.ts"
export * as CopyRepository from "./CopyRepository.ts"
export * as DeadLetters from "./DeadLetters.ts"
export * as Envelope from "./Envelope.ts"
export * as Errors from "./Errors.ts"
export * as Gauges from "./Gauges.ts"
export * as Health from "./Health.ts"
export * as Inbox from "./Inbox.ts"
export * as Metrics from "./Metrics.ts"
export * as Outage from "./Outage.ts"
export * as Outbox from "./Outbox.ts"
export * as OwnerTable from "./OwnerTable.ts"
export * as Producer from "./Producer.ts"
export * as PrometheusEndpoint from "./PrometheusEndpoint.ts"
export * as Relay from "./Relay.ts"
export * as Resync from "./Resync.ts"
export * as RetrySchedule from "./RetrySchedule.ts"
export * as Signature from "./Signature.ts"
export * as SourceRepository from "./SourceRepository.ts"
export * as Subscription from "./Subscription.ts"
export * as SyncConfig from "./SyncConfig.ts"
export * as SyncConsumer from "./SyncConsumer.ts"
export * as Tracing from "./Tracing.ts"
export * as Transactor from "./Transactor.ts"
