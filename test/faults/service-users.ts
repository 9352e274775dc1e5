/**
 * The real stack of a test where every service has a broker login of its own, on the test's virtual host
 * (`vhost.ts`): the owner's relay publishing as the owner's login, the consumer consuming as its own
 * login (its `producers` mapping the owner to the owner's login), each in `declare` or `passive` topology
 * mode. The consumer's handler records applies like `contract.ts`, and can be made to fail for chosen
 * entity ids (a transient defect: its deliveries are dead-lettered, and apply once replayed).
 */
import { Effect, Layer } from "effect"
import type { Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as RabbitBroker from "../../src/amqp/RabbitBroker.ts"
import type { Topology } from "../../src/amqp/RabbitConfig.ts"
import type { Broker } from "../../src/Broker.ts"
import type { Envelope } from "../../src/Envelope.ts"
import * as PostgresSync from "../../src/postgres/PostgresSync.ts"
import * as Relay from "../../src/Relay.ts"
import * as Subscription from "../../src/Subscription.ts"
import * as SyncConsumer from "../../src/SyncConsumer.ts"
import { ownerSide } from "../harness.ts"
import { appliesTable, Group, Item, owner } from "./contract.ts"
import { type Names, pool, roles } from "./stack.ts"

/** Entity ids whose applies fail (with a defect) while they are in the set. */
export type Failing = Set<string>

/**
 * The consumer's subscriptions: `Group` (its dependency) and `Item`, recording every apply; a defect for the
 * ids in `failing`.
 */
export const subscriptionsFailing = (failing: Failing) => {
  const handler = ({ envelope }: { readonly envelope: Envelope }) =>
    failing.has(envelope.entityId)
      ? Effect.die(new Error(`the handler fails for ${envelope.entityId} (injected by the test)`))
      : Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`INSERT INTO ${sql(appliesTable)} (message_id, entity_id, version)
          VALUES (${envelope.messageId}, ${envelope.entityId}, ${envelope.version})`.pipe(Effect.asVoid))
  return [Subscription.subscribe(Group, { handler }), Subscription.subscribe(Item, { handler })]
}

/** The broker of one login: `url` on the test's virtual host, default exchange names. */
export const brokerOf = (url: string, topology: Topology, connectionName: string): Layer.Layer<Broker> =>
  RabbitBroker.layer({ url, topology, connectionName })

/** The owner's relay publishing through `broker` (the owner's login). */
export const relayWith = (url: Redacted.Redacted, names: Names, broker: Layer.Layer<Broker>) =>
  Relay.layer({ producer: owner, pollInterval: "500 millis" }).pipe(
    Layer.provide(
      ownerSide(PostgresSync.layer({ prefix: names.ownerPrefix, leaseMillis: 2_000 })).pipe(
        Layer.provide(pool(url, roles.relay, 4))
      )
    ),
    Layer.provide(broker)
  )

/** Options of a consumer with a login of its own. */
export interface ConsumerWithOptions {
  readonly broker: Layer.Layer<Broker>
  /** The owner's broker logins. */
  readonly ownerLogins: ReadonlyArray<string>
  readonly failing?: Failing
}

/** The test's consumer (service `names.service`) consuming through `options.broker`. */
export const consumerWith = (url: Redacted.Redacted, names: Names, options: ConsumerWithOptions) =>
  SyncConsumer.layer({
    service: names.service,
    subscriptions: subscriptionsFailing(options.failing ?? new Set()),
    producers: { [owner]: options.ownerLogins }
  }).pipe(
    Layer.provide(
      PostgresSync.layer({ prefix: names.consumerPrefix }).pipe(Layer.provideMerge(pool(url, roles.consumer, 6)))
    ),
    Layer.provide(options.broker)
  )
