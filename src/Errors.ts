/**
 * The runtime's typed sync errors. Each carries what an operator needs to act on it.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/** A reference to one entity: contract name and id. */
export const EntityRef = Schema.Struct({ entity: Schema.String, id: Schema.String })
export type EntityRef = typeof EntityRef.Type

const formatRefs = (refs: ReadonlyArray<EntityRef>) => refs.map((r) => `${r.entity}:${r.id}`).join(", ")

/**
 * R5: an event needs entities the consumer does not hold yet (or, for a hard delete, copies still
 * reference the entity). It is retried on the dependency schedule and dead-lettered when the budget is spent.
 */
export class DependencyMissing extends Schema.TaggedError<DependencyMissing>()("DependencyMissing", {
  messageId: Schema.String,
  entity: Schema.String,
  entityId: Schema.String,
  version: Schema.Number,
  missing: Schema.Array(EntityRef),
  attempts: Schema.Number
}) {
  override get message() {
    return `${this.entity}:${this.entityId} v${this.version} (message ${this.messageId}) waits for ${
      formatRefs(this.missing)
    } after ${this.attempts} attempt(s)`
  }
}

/** R4: an event whose version is not newer than the copy's; acked, counted, never applied. */
export class StaleMessage extends Schema.TaggedError<StaleMessage>()("StaleMessage", {
  messageId: Schema.String,
  entity: Schema.String,
  entityId: Schema.String,
  version: Schema.Number,
  currentVersion: Schema.Number
}) {
  override get message() {
    return `${this.entity}:${this.entityId} v${this.version} (message ${this.messageId}) is stale: the copy holds v${this.currentVersion}`
  }
}

/** Why a message could not be read (R6). */
export const MalformedReason = Schema.Literals([
  "TooLarge",
  "NotJson",
  "TooComplex",
  "InvalidEnvelope",
  "UnknownEntity",
  "InvalidPayload",
  "UnsupportedContractVersion"
])
export type MalformedReason = typeof MalformedReason.Type

/**
 * R6: a message that cannot be read or routed; dead-lettered with its reason, never retried as is. An event
 * of a contract version newer than the consumer knows is `UnsupportedContractVersion`: replay it once the
 * consumer is upgraded.
 */
export class MalformedMessage extends Schema.TaggedError<MalformedMessage>()("MalformedMessage", {
  reason: MalformedReason,
  detail: Schema.String,
  messageId: Schema.optionalKey(Schema.String),
  entity: Schema.optionalKey(Schema.String)
}) {
  override get message() {
    const about = [this.messageId && `message ${this.messageId}`, this.entity && `entity ${this.entity}`]
      .filter(Boolean)
      .join(", ")
    return `${this.reason}${about ? ` (${about})` : ""}: ${this.detail}`
  }
}

/**
 * R11: an event whose producer is not authenticated as its contract's owner — published by another
 * broker login, or with a missing, unknown or bad signature. Dead-lettered, never applied.
 */
export class ForgedProducer extends Schema.TaggedError<ForgedProducer>()("ForgedProducer", {
  messageId: Schema.String,
  entity: Schema.String,
  /** The contract's owner. */
  owner: Schema.String,
  /** Who published it, as far as anyone vouches (a broker login or a key id); undefined when unknown. */
  publisher: Schema.optionalKey(Schema.String),
  detail: Schema.String
}) {
  override get message() {
    return `ForgedProducer (message ${this.messageId}, entity ${this.entity}): ${this.detail}`
  }
}

/**
 * R6: a defect (an unexpected exception) met while handling one message; the message is dead-lettered
 * with it and nothing else is affected.
 */
export class Defect extends Schema.TaggedError<Defect>()("Defect", {
  messageId: Schema.String,
  entity: Schema.optionalKey(Schema.String),
  detail: Schema.String
}) {
  override get message() {
    return `Defect (message ${this.messageId}${
      this.entity === undefined ? "" : `, entity ${this.entity}`
    }): ${this.detail}`
  }
}

/** The broker could not be reached, or did not confirm a publish; the caller retries. */
export class BrokerUnavailable extends Schema.TaggedError<BrokerUnavailable>()("BrokerUnavailable", {
  operation: Schema.String,
  detail: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message() {
    return `broker unavailable during ${this.operation}: ${this.detail}`
  }
}

/**
 * The broker confirmed a publish except for these messages, which no queue would take (RabbitMQ returns
 * them as unroutable with `mandatory`). They are kept and retried; the others were published.
 */
export class PublishRejected extends Schema.TaggedError<PublishRejected>()("PublishRejected", {
  messageIds: Schema.Array(Schema.String),
  detail: Schema.String
}) {
  override get message() {
    return `${this.messageIds.length} message(s) not accepted by the broker: ${this.detail}`
  }
}

/** A write on the owner side named an entity that already exists. */
export class EntityExists extends Schema.TaggedError<EntityExists>()("EntityExists", {
  entity: Schema.String,
  entityId: Schema.String
}) {
  override get message() {
    return `${this.entity}:${this.entityId} already exists`
  }
}

/** A write on the owner side named an entity that does not exist (or was deleted). */
export class EntityNotFound extends Schema.TaggedError<EntityNotFound>()("EntityNotFound", {
  entity: Schema.String,
  entityId: Schema.String
}) {
  override get message() {
    return `${this.entity}:${this.entityId} does not exist`
  }
}

/** The errors of the sync runtime that a consumer handler may raise besides `SqlError`. */
export type SyncError = DependencyMissing | StaleMessage | MalformedMessage
