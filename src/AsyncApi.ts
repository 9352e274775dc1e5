/**
 * The bus as an AsyncAPI 3.0 document, generated from contracts: the topic exchange and its routing keys as
 * channels (one per contract and action, and one for the contract's resync requests), who sends and who
 * receives on each, and every message as it travels — the whole CloudEvent (DESIGN §3, wire format 2) with
 * its attributes described and its `data` the JSON Schema of the contract's payload for every contract
 * version, tied to its `contractversion`. The payload schemas are Effect's own JSON Schema of the contracts'
 * Schemas (draft-07, AsyncAPI's schema format), with shared definitions in `components.schemas`.
 *
 * The document is a plain JSON value and deterministic (stable key order, no timestamps), so a generated
 * file can be checked for staleness by comparing bytes.
 *
 * ```ts
 * const doc = AsyncApi.document({ contracts: [Company, User], consumers: { directory: [Company, User] } })
 * writeFileSync("asyncapi.json", AsyncApi.render(doc))
 * ```
 *
 * @since 0.1.0
 */
import { JsonSchema, Schema, SchemaRepresentation } from "effect"
import type * as Contract from "./Contract.ts"
import * as Envelope from "./Envelope.ts"
import * as Resync from "./Resync.ts"
import * as Signature from "./Signature.ts"

type Json = Schema.Json
type JsonObject = Schema.JsonObject

/** The AsyncAPI version of the documents. */
export const asyncApiVersion = "3.0.0"

/** The version of the AMQP bindings used in the documents. */
export const amqpBindingVersion = "0.3.0"

/** The default events exchange: a durable topic exchange (as the RabbitMQ adapter's default exchange). */
export const defaultExchange = "sync.events"

/** A server of the document: where the broker is (AsyncAPI `Server Object`, AMQP protocols only). */
export interface Server {
  /** `host[:port]`, e.g. `rabbitmq.internal:5672`. */
  readonly host: string
  readonly protocol: "amqp" | "amqps"
  /** The AMQP protocol version, e.g. `0.9.1`. */
  readonly protocolVersion?: string
  /** The virtual host as a path, e.g. `/` or `/sync`. */
  readonly pathname?: string
  readonly title?: string
  readonly description?: string
}

/** A contract as the document needs it: its entity, owner, payload versions. */
export type DocumentedContract = Pick<Contract.Any, "name" | "owner" | "payload" | "version" | "earlier">

/** What a document is made of. */
export interface Options {
  /** The contracts on the bus: one set of channels each. Entity names must be unique. */
  readonly contracts: ReadonlyArray<DocumentedContract>
  /**
   * The consuming services and the contracts each subscribes to (each one of `contracts`, by name): each
   * gets a `receive` operation per channel of its contracts, and a `send` operation on their resync
   * channels. Without it, one anonymous `receive` (and resync `send`) operation per channel stands for every
   * consumer.
   */
  readonly consumers?: Readonly<Record<string, ReadonlyArray<Pick<Contract.Any, "name">>>>
  /** `info.title` (default `"entity-sync bus"`). */
  readonly title?: string
  /** `info.version`, the version of the document (default `"1.0.0"`). */
  readonly version?: string
  /** `info.description` (default: a description of the bus and its wire format). */
  readonly description?: string
  /** The events exchange (default `defaultExchange`, `sync.events`). */
  readonly exchange?: string
  /** The document's servers, by name (default none). */
  readonly servers?: Readonly<Record<string, Server>>
}

/** An AsyncAPI 3.0 document: a plain JSON value. */
export type Document = {
  readonly asyncapi: typeof asyncApiVersion
  readonly info: JsonObject
  readonly servers?: JsonObject
  readonly defaultContentType: string
  readonly channels: Readonly<Record<string, JsonObject>>
  readonly operations: Readonly<Record<string, JsonObject>>
  readonly components: {
    readonly schemas: Readonly<Record<string, JsonObject>>
    readonly messages: Readonly<Record<string, JsonObject>>
  }
}

/** A document as a file holds it: JSON indented by 2 spaces, with a trailing newline. */
export const render = (doc: Document): string => `${JSON.stringify(doc, null, 2)}\n`

// --- JSON helpers ---

/** A JSON Pointer reference token (RFC 6901). */
const token = (key: string): string => key.replaceAll("~", "~0").replaceAll("/", "~1")

const ref = (...path: ReadonlyArray<string>): JsonObject => ({ $ref: `#/${path.map(token).join("/")}` })

const schemaRef = (name: string): JsonObject => ref("components", "schemas", name)

const isRecord = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const isJsonObject = (json: Json | undefined): json is JsonObject =>
  typeof json === "object" && json !== null && !Array.isArray(json)

/**
 * A value from Effect's JSON Schema output as JSON, with each `$ref` rewritten by `rename`; fails on what is
 * not JSON (the decoder of this module: everything else is built as JSON).
 */
const toJson = (value: unknown, rename: (ref: string) => string, where: string): Json => {
  if (value === null || typeof value === "string" || typeof value === "boolean") return value
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`entity-sync AsyncApi: ${where} holds the number ${value}`)
    return value
  }
  if (Array.isArray(value)) return value.map((item) => toJson(item, rename, where))
  if (isRecord(value)) {
    const out: Record<string, Json> = {}
    for (const [key, item] of Object.entries(value)) {
      if (item === undefined) continue
      out[key] = key === "$ref" && typeof item === "string" ? rename(item) : toJson(item, rename, where)
    }
    return out
  }
  throw new Error(`entity-sync AsyncApi: ${where} holds a ${typeof value}, which is not JSON`)
}

const toJsonObject = (value: unknown, rename: (ref: string) => string, where: string): JsonObject => {
  const json = toJson(value, rename, where)
  if (!isJsonObject(json)) throw new Error(`entity-sync AsyncApi: ${where} is not a JSON object`)
  return json
}

/** A component key AsyncAPI accepts (`^[\w\d.\-_]+$`): other characters become `_`. */
const componentKey = (name: string): string => name.replace(/[^A-Za-z0-9._-]/g, "_") || "_"

// --- payload schemas: Effect's JSON Schema, draft-07, definitions shared in components.schemas ---

/** A schema to generate a JSON Schema of, under the component key its root gets. */
interface PayloadInput {
  readonly key: string
  readonly schema: Schema.Top
  /** What it is, for an error message. */
  readonly label: string
}

interface PayloadSchemas {
  /** The root schema of each input, by its key. */
  readonly roots: ReadonlyMap<string, JsonObject>
  /** The shared definitions, by their component key. */
  readonly definitions: ReadonlyArray<readonly [string, JsonObject]>
}

/**
 * The JSON Schemas (draft-07) of the JSON forms of `schemas`, generated together so that they share their
 * definitions (named by Effect from the schemas' `identifier` annotations), renamed away from `reserved`
 * component keys.
 */
const payloadSchemas = (
  inputs: readonly [PayloadInput, ...Array<PayloadInput>],
  reserved: ReadonlySet<string>
): PayloadSchemas => {
  const [head, ...tail] = inputs
  const ast = (input: PayloadInput) => Schema.toCodecJson(input.schema).ast
  const multi = SchemaRepresentation.toJsonSchemaMultiDocument(
    SchemaRepresentation.toRepresentations([ast(head), ...tail.map(ast)])
  )
  const draft07 = (schema: JsonSchema.JsonSchema, definitions: JsonSchema.Definitions, where: string) => {
    try {
      return JsonSchema.toDocumentDraft07({ dialect: "draft-2020-12", schema, definitions })
    } catch (cause) {
      throw new Error(
        `entity-sync AsyncApi: ${where} has no JSON Schema draft-07 form: ${
          cause instanceof Error ? cause.message : String(cause)
        }`
      )
    }
  }
  const names = new Map<string, string>()
  const taken = new Set(reserved)
  for (const name of Object.keys(multi.definitions)) {
    let key = componentKey(name)
    for (let n = 2; taken.has(key); n++) key = `${componentKey(name)}_${n}`
    taken.add(key)
    names.set(name, key)
  }
  const rename = (where: string) => (reference: string): string => {
    const prefix = "#/definitions/"
    const name = reference.startsWith(prefix) ? reference.slice(prefix.length) : undefined
    const key = name === undefined ? undefined : names.get(name)
    if (key === undefined) {
      throw new Error(`entity-sync AsyncApi: ${where} refers to ${reference}, which is not defined`)
    }
    return `#/components/schemas/${token(key)}`
  }
  const definitions = draft07({}, multi.definitions, "a shared definition").definitions
  return {
    roots: new Map(multi.schemas.map((schema, i) => {
      const input = inputs[i] ?? head
      return [
        input.key,
        toJsonObject(draft07(schema, multi.definitions, input.label).schema, rename(input.label), input.label)
      ] as const
    })),
    definitions: Object.entries(definitions).map(([name, schema]) => {
      const where = `the definition ${name}`
      return [names.get(name) ?? componentKey(name), toJsonObject(schema, rename(where), where)] as const
    })
  }
}

// --- the CloudEvent, attribute by attribute ---

/** What each attribute of the wire format is, and what the wire format requires of it beyond its type. */
const attributes: Readonly<Record<string, { readonly description: string } & JsonObject>> = {
  specversion: { description: "The CloudEvents version: always \"1.0\"." },
  id: {
    description: "The event's unique id (a UUIDv7), also the AMQP `message_id`: consumers deduplicate by it (R3)."
  },
  source: {
    description: "The owner service that published the event (a URI-reference): the contract's owner (R1, R11).",
    pattern: Envelope.uriReference.source
  },
  type: {
    description: "`entitysync.<Entity>.<action>`, also the AMQP `type` property. The action is created, " +
      "updated, deleted, softDeleted or snapshot.",
    pattern: `^entitysync\\..+\\.(?:${Envelope.Action.literals.join("|")})$`
  },
  subject: { description: "The entity's id." },
  time: { description: "When the owner made the change (RFC 3339).", format: "date-time" },
  datacontenttype: {
    description: "The media type of `data`: always `application/json`.",
    pattern: "^application/json(?:;.*)?$"
  },
  data: {
    description: "The entity's payload, as the contract version `contractversion` shapes it; null only for " +
      "`deleted`."
  },
  entityversion: {
    description: "The entity's version at the owner, strictly increasing per entity: a copy changes only for a " +
      "higher one (R4), or an equal or higher one when `forcesync` is true (R8)."
  },
  contractversion: {
    description: "The contract version `data` follows: a consumer upcasts an earlier one to its current " +
      "version and dead-letters one newer than it knows (UnsupportedContractVersion)."
  },
  forcesync: {
    description: "True for snapshots and repairs (full sync): applied at a version equal to the copy's too (R8)."
  },
  reset: {
    description: "Only with `forcesync`: a repair of a copy that is ahead of its owner, applied whatever the " +
      "copy's version (only from the authenticated owner, R11)."
  },
  traceparent: {
    description: "The W3C trace context of the owner's write (CloudEvents distributed tracing extension), so " +
      "the consumer's apply joins its trace (R10)."
  },
  tracestate: { description: "The W3C `tracestate` that goes with `traceparent`." }
}

const extensionDescription = "An extension attribute: the request context (`Producer.RequestContext`) of the " +
  `owner's write, a string under a name of 1 to ${Envelope.maxExtensionNameLength} lower-case letters and digits ` +
  "(e.g. `correlationid`); consumers ignore extension attributes that are not strings."

/**
 * The schema of every event: the properties and required attributes of `Envelope.CloudEvent`, generated by
 * Effect, each described, with the checks the wire format makes beyond its types.
 */
const cloudEventSchema = (): JsonObject => {
  const generated = toJsonObject(
    Schema.toJsonSchemaDocument(Envelope.CloudEvent).schema,
    (reference) => reference,
    "the CloudEvent schema"
  )
  const properties = generated.properties
  if (!isJsonObject(properties)) throw new Error("entity-sync AsyncApi: the CloudEvent schema has no properties")
  const described: Record<string, Json> = {}
  for (const [name, schema] of Object.entries(properties)) {
    const documented = Object.hasOwn(attributes, name) ? attributes[name] : undefined
    if (documented === undefined || !isJsonObject(schema)) {
      throw new Error(`entity-sync AsyncApi: the CloudEvent attribute ${name} is not documented`)
    }
    const { description, ...checks } = documented
    described[name] = { description, ...schema, ...checks }
  }
  return {
    title: "CloudEvent",
    description: "An entity event on the wire (wire format 2): a CloudEvents 1.0 event in structured mode, " +
      "UTF-8 JSON. Attribute names are lower-case letters and digits (CloudEvents).",
    type: "object",
    properties: described,
    required: generated.required ?? [],
    propertyNames: { pattern: Envelope.attributeName.source },
    additionalProperties: { description: extensionDescription },
    not: {
      description: "`reset` is only allowed with `forcesync`.",
      properties: { reset: { const: true }, forcesync: { const: false } },
      required: ["reset", "forcesync"]
    }
  }
}

const headerSchema = (traceparent: boolean): JsonObject => ({
  type: "object",
  properties: {
    ...(traceparent
      ? {
        traceparent: {
          description: "The event's `traceparent`, when it has one (for tracing without reading the body).",
          type: "string"
        }
      }
      : {}),
    [Signature.signatureHeader]: {
      description: "When the publisher signs (R11): the base64 Ed25519 signature of the exact body bytes.",
      type: "string",
      maxLength: Signature.maxSignatureLength
    },
    [Signature.keyIdHeader]: {
      description: "When the publisher signs (R11): the id of the key that signed the body.",
      type: "string",
      maxLength: Signature.maxKeyIdLength
    }
  }
})

// --- actions ---

const actionSummaries: Readonly<Record<Envelope.Action, string>> = {
  created: "a new entity",
  updated: "the entity's new state",
  deleted: "a delete; copies keep a tombstone with its version (R4), `data` is null",
  softDeleted: "a soft delete; copies keep the row, marked deleted (R7)",
  snapshot: "the entity's current state, republished by a full sync (`forcesync`, R8)"
}

const actionTitles: Readonly<Record<Envelope.Action, string>> = {
  created: "created",
  updated: "updated",
  deleted: "deleted",
  softDeleted: "soft-deleted",
  snapshot: "snapshot"
}

// --- the document ---

const defaultDescription = "The entity event bus of entity-sync. Each entity's owner publishes its changes " +
  "through a transactional outbox to a durable topic exchange, as CloudEvents 1.0 in structured mode " +
  `(content type \`${Envelope.contentType}\`), with routing key \`<owner>.<Entity>.<action>\`, persistent, ` +
  "with publisher confirms and the AMQP `user_id` of the owner's broker login. Each consuming service reads " +
  "the routing keys of the contracts it subscribes to from one durable quorum queue `<service>.sync` (with a " +
  "delivery limit, dead letters to `<service>.sync.dead`) and keeps copies of the entities. A consumer asks an " +
  "owner to republish an entity (a full sync) with a resync request on `<owner>.resync.<Entity>`."

const byOwnerAndName = (a: DocumentedContract, b: DocumentedContract): number =>
  a.owner === b.owner ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.owner < b.owner ? -1 : 1

/** The contracts, each once, sorted by owner and name; fails on two different contracts of one entity. */
const distinct = (contracts: ReadonlyArray<DocumentedContract>): ReadonlyArray<DocumentedContract> => {
  const byName = new Map<string, DocumentedContract>()
  const byKey = new Map<string, string>()
  for (const contract of contracts) {
    const known = byName.get(contract.name)
    if (known !== undefined && known !== contract) {
      throw new Error(`entity-sync AsyncApi: two different contracts are named ${contract.name}`)
    }
    const other = byKey.get(componentKey(contract.name))
    if (other !== undefined && other !== contract.name) {
      throw new Error(`entity-sync AsyncApi: the entity names ${other} and ${contract.name} make the same keys`)
    }
    byName.set(contract.name, contract)
    byKey.set(componentKey(contract.name), contract.name)
  }
  return [...byName.values()].sort(byOwnerAndName)
}

/** The payload schemas of a contract's versions, oldest first. */
const versionsOf = (contract: DocumentedContract): ReadonlyArray<readonly [number, Schema.Top]> => [
  ...contract.earlier.map((e) => [e.version, e.payload] as const),
  [contract.version, contract.payload] as const
]

const sendBindings: JsonObject = { amqp: { deliveryMode: 2, mandatory: true, bindingVersion: amqpBindingVersion } }
const receiveBindings: JsonObject = { amqp: { ack: true, bindingVersion: amqpBindingVersion } }

/**
 * The AsyncAPI 3.0 document of the bus for `options.contracts` (see the module's documentation). Contracts
 * are sorted by owner and entity name, so their order does not matter. Throws an `Error` when two different
 * contracts name the same entity, a consumer names a contract that is not among `contracts`, or a payload
 * schema has no JSON Schema form.
 */
export const document = (options: Options): Document => {
  const contracts = distinct(options.contracts)
  const known = new Set(contracts.map((c) => c.name))
  const exchange = options.exchange ?? defaultExchange
  // a channel: one routing key on the topic exchange, carrying one message
  const channelOf = (address: string, title: string, message: string): JsonObject => ({
    address,
    title,
    description: `Routing key \`${address}\` on the topic exchange \`${exchange}\`.`,
    messages: { [message]: ref("components", "messages", message) },
    bindings: {
      amqp: {
        is: "routingKey",
        exchange: { name: exchange, type: "topic", durable: true, autoDelete: false },
        bindingVersion: amqpBindingVersion
      }
    }
  })
  const consumers = Object.entries(options.consumers ?? {}).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map((
    [service, subscriptions]
  ) => {
    const subscribed = new Set(subscriptions.map((c) => c.name))
    for (const name of subscribed) {
      if (!known.has(name)) {
        throw new Error(`entity-sync AsyncApi: the consumer ${service} subscribes to ${name}, which is not a contract`)
      }
    }
    return { service, subscribed }
  })
  const consumersOf = (entity: string): ReadonlyArray<string> | undefined =>
    options.consumers === undefined
      ? undefined
      : consumers.filter((c) => c.subscribed.has(entity)).map((c) => c.service)

  // the resync request and every version's payload schema, generated together; the keys this module names
  const fixed = new Set(["CloudEvent", "EventHeaders", "ResyncHeaders", "ResyncRequest"])
  const inputs: [PayloadInput, ...Array<PayloadInput>] = [
    { key: "ResyncRequest", schema: Resync.ResyncRequest, label: "the resync request" }
  ]
  for (const contract of contracts) {
    const key = componentKey(contract.name)
    for (const suffix of ["data", "resync", ...Envelope.Action.literals]) fixed.add(`${key}.${suffix}`)
    for (const [version, schema] of versionsOf(contract)) {
      fixed.add(`${key}.v${version}`)
      inputs.push({ key: `${key}.v${version}`, schema, label: `the payload of ${contract.name} version ${version}` })
    }
  }
  const generated = payloadSchemas(inputs, fixed)
  const rootOf = (key: string): JsonObject => {
    const root = generated.roots.get(key)
    if (root === undefined) throw new Error(`entity-sync AsyncApi: no JSON Schema was generated for ${key}`)
    return root
  }

  const schemas: Record<string, JsonObject> = {
    CloudEvent: cloudEventSchema(),
    EventHeaders: {
      description: "The AMQP headers of an entity event.",
      ...headerSchema(true)
    },
    ResyncRequest: {
      title: "ResyncRequest",
      description: "A consumer's request that the owner republish an entity's current state (or some ids) as " +
        "snapshots through its outbox. Published with routing key `<owner>.resync.<Entity>` and type " +
        "`resync.<Entity>`, read by the owner from its queue `<owner>.resync`.",
      ...rootOf("ResyncRequest")
    },
    ResyncHeaders: {
      description: "The AMQP headers of a resync request.",
      ...headerSchema(false)
    }
  }
  const messages: Record<string, JsonObject> = {}
  const channels: Record<string, JsonObject> = {}
  const operations: Record<string, JsonObject> = {}

  for (const contract of contracts) {
    const entity = contract.name
    const key = componentKey(entity)
    const versions = versionsOf(contract)
    for (const [version] of versions) schemas[`${key}.v${version}`] = rootOf(`${key}.v${version}`)
    schemas[`${key}.data`] = {
      description: `The payload of the ${entity} contract at each of its versions, by \`contractversion\`.`,
      oneOf: versions.map(([version]) => ({
        title: `${entity} version ${version}`,
        properties: { contractversion: { const: version }, data: schemaRef(`${key}.v${version}`) },
        required: ["contractversion", "data"]
      }))
    }
    const consumersOfEntity = consumersOf(entity)
    for (const action of Envelope.Action.literals) {
      const address = Envelope.routingKey({ producer: contract.owner, entity, action })
      const type = Envelope.messageType({ entity, action })
      const id = `${key}.${action}`
      const title = `${entity} ${actionTitles[action]}`
      const summary = `${title}, published by its owner ${contract.owner}: ${actionSummaries[action]}.`
      schemas[id] = {
        title,
        description: `The CloudEvent \`${type}\`. ${summary}`,
        allOf: [schemaRef("CloudEvent"), ...(action === "deleted" ? [] : [schemaRef(`${key}.data`)])],
        properties: {
          source: { const: contract.owner },
          type: { const: type },
          ...(action === "deleted"
            ? { data: { type: "null" }, contractversion: { enum: versions.map(([version]) => version) } }
            : {})
        }
      }
      messages[id] = {
        name: id,
        title,
        summary,
        contentType: Envelope.contentType,
        headers: ref("components", "schemas", "EventHeaders"),
        payload: schemaRef(id),
        bindings: { amqp: { messageType: type, bindingVersion: amqpBindingVersion } }
      }
      channels[address] = channelOf(address, `${title} events`, id)
      const channel = ref("channels", address)
      const message = [ref("channels", address, "messages", id)]
      operations[`${contract.owner}.send.${id}`] = {
        action: "send",
        title: `${contract.owner} publishes ${title}`,
        description: `The owner's relay publishes the event from its outbox: persistent, with a publisher confirm, ` +
          "`message_id` = `id`, `type` = `type`, `user_id` = its broker login.",
        channel,
        messages: message,
        bindings: sendBindings
      }
      for (const service of consumersOfEntity ?? [undefined]) {
        operations[service === undefined ? `receive.${id}` : `${service}.receive.${id}`] = {
          action: "receive",
          title: `${service ?? "A consumer"} applies ${title}`,
          description:
            `${service === undefined ? "Each consuming service" : service} reads it from its queue \`${
              service ?? "<service>"
            }.sync\` (bound to \`${contract.owner}.${entity}.*\`) ` +
            "and applies it to its copy, acking after its commit.",
          channel,
          messages: message,
          bindings: receiveBindings
        }
      }
    }

    // resync requests for the entity
    const address = Resync.routingKey(contract.owner, entity)
    const id = `${key}.resync`
    const title = `${entity} resync request`
    schemas[id] = {
      title,
      description: `A request to ${contract.owner} for a full sync of ${entity}.`,
      allOf: [schemaRef("ResyncRequest")],
      properties: { owner: { const: contract.owner }, entity: { const: entity } }
    }
    messages[id] = {
      name: id,
      title,
      summary: `Asks ${contract.owner} to republish ${entity} entities (all, or some ids) as snapshots.`,
      contentType: "application/json",
      headers: ref("components", "schemas", "ResyncHeaders"),
      payload: schemaRef(id),
      bindings: { amqp: { messageType: `resync.${entity}`, bindingVersion: amqpBindingVersion } }
    }
    channels[address] = channelOf(address, `${title}s`, id)
    const channel = ref("channels", address)
    const message = [ref("channels", address, "messages", id)]
    operations[`${contract.owner}.receive.${id}`] = {
      action: "receive",
      title: `${contract.owner} answers ${title}s`,
      description: `The owner's responder reads requests from its queue \`${Resync.queueOf(contract.owner).name}\` ` +
        "and answers each with a full sync through its outbox (coalesced and rate-limited per requester).",
      channel,
      messages: message,
      bindings: receiveBindings
    }
    for (const service of consumersOfEntity ?? [undefined]) {
      operations[service === undefined ? `send.${id}` : `${service}.send.${id}`] = {
        action: "send",
        title: `${service ?? "A consumer"} asks for a ${entity} resync`,
        channel,
        messages: message,
        bindings: sendBindings
      }
    }
  }
  for (const [name, schema] of generated.definitions) schemas[name] = schema

  const servers = options.servers === undefined ? undefined : Object.fromEntries(
    Object.entries(options.servers).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map((
      [name, server]
    ): readonly [string, JsonObject] => {
      return [name, {
        host: server.host,
        protocol: server.protocol,
        ...(server.protocolVersion === undefined ? {} : { protocolVersion: server.protocolVersion }),
        ...(server.pathname === undefined ? {} : { pathname: server.pathname }),
        ...(server.title === undefined ? {} : { title: server.title }),
        ...(server.description === undefined ? {} : { description: server.description })
      }]
    })
  )
  return {
    asyncapi: asyncApiVersion,
    info: {
      title: options.title ?? "entity-sync bus",
      version: options.version ?? "1.0.0",
      description: options.description ?? defaultDescription
    },
    ...(servers === undefined ? {} : { servers }),
    defaultContentType: Envelope.contentType,
    channels,
    operations,
    components: { schemas, messages }
  }
}
