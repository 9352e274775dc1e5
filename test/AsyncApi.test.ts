/**
 * `AsyncApi`: the AsyncAPI 3.0 document of the bus is valid for the official parser, has one channel per
 * contract and action plus one for resync requests, its message schemas accept the events the library
 * really sends (and refuse what a consumer refuses), it carries every contract version, and the demo's
 * committed document is what its contracts generate.
 */
import { Parser } from "@asyncapi/parser/cjs/parser.js"
import { assert, describe, it } from "@effect/vitest"
import { Ajv } from "ajv"
import AjvFormats from "ajv-formats"
import { Schema } from "effect"
import * as DemoDocument from "../services/contracts/asyncapi.ts"
import { Company, User } from "../services/contracts/index.ts"
import * as RabbitConfig from "../src/amqp/RabbitConfig.ts"
import * as AsyncApi from "../src/AsyncApi.ts"
import * as Contract from "../src/Contract.ts"
import * as Envelope from "../src/Envelope.ts"
import * as Resync from "../src/Resync.ts"
import * as Signature from "../src/Signature.ts"

// --- a contract with two versions ---

const PersonId = Schema.String.check(Schema.isMinLength(1)).annotate({ identifier: "PersonId" })
const PersonV1 = Schema.Struct({ id: PersonId, fullName: Schema.String })
const PersonV2 = Schema.Struct({ id: PersonId, givenName: Schema.String, familyName: Schema.String })
const Person = Contract.make({
  name: "Person",
  owner: "people",
  id: "id",
  payload: Contract.versions(PersonV1).next(2, PersonV2, (p) => {
    const [givenName = "", ...rest] = p.fullName.split(" ")
    return { id: p.id, givenName, familyName: rest.join(" ") }
  })
})

const demo = DemoDocument.document()
const versioned = AsyncApi.document({ contracts: [Person], exchange: "people.events" })

// --- helpers ---

type Doc = AsyncApi.Document

const errorsOf = async (doc: Doc) => {
  const diagnostics = await new Parser().validate(doc)
  return diagnostics.filter((d) => d.severity === 0).map((d) => `${d.code} at ${d.path.join(".")}: ${d.message}`)
}

/**
 * The validator of the payload of message `message`, with the document's `$ref`s resolved: why it refuses
 * an event, undefined when it accepts it.
 */
const refusalOf = (doc: Doc, message: string) => {
  const ajv = new Ajv({ strict: false, allErrors: true })
  AjvFormats.default(ajv)
  ajv.addSchema({ $id: "asyncapi.json", components: doc.components })
  const payload = doc.components.messages[message]?.payload
  assert.isDefined(payload, `message ${message}`)
  const reference = Schema.decodeUnknownSync(Schema.Struct({ $ref: Schema.String }))(payload)
  const validate = ajv.compile({ $ref: `asyncapi.json${reference.$ref}` })
  return (event: unknown): string | undefined =>
    validate(event) ? undefined : ajv.errorsText(validate.errors, { dataVar: "event" })
}

const accepts = (doc: Doc, message: string, event: unknown) => {
  const error = refusalOf(doc, message)(event)
  assert.isUndefined(error, `${message} refuses ${JSON.stringify(event)}`)
}

const refuses = (doc: Doc, message: string, event: unknown) =>
  assert.isDefined(refusalOf(doc, message)(event), `${message} accepts ${JSON.stringify(event)}`)

const envelope = (
  contract: Pick<Contract.Any, "name" | "owner">,
  action: Envelope.Action,
  payload: Schema.Json,
  extra: Partial<Envelope.Envelope> = {}
): Envelope.Envelope => ({
  messageId: "0193a000-0000-7000-8000-000000000001",
  entity: contract.name,
  entityId: "e-1",
  action,
  version: 7,
  contractVersion: 1,
  occurredAt: "2026-11-22T03:00:00.123Z",
  producer: contract.owner,
  forceSync: action === "snapshot",
  payload: action === "deleted" ? null : payload,
  ...extra
})

const companyPayload = Schema.encodeSync(Company.payload)({ id: "c-1", name: "Acme" })
const userPayload = Schema.encodeSync(User.payload)({
  id: "u-1",
  companyId: "c-1",
  email: "ada@example.com",
  name: "Ada",
  active: true
})

const demoContracts = [
  { contract: Company, payload: companyPayload },
  { contract: User, payload: userPayload }
] as const

describe("AsyncApi", () => {
  it("the demo's document is valid AsyncAPI 3.0 for the official parser", async () => {
    assert.deepStrictEqual(await errorsOf(demo), [])
    const { document } = await new Parser().parse(demo)
    assert.isDefined(document)
    assert.strictEqual(document?.version(), "3.0.0")
    assert.strictEqual(document?.channels().length, 12)
    assert.strictEqual(document?.messages().length, 12)
  }, 120_000)

  it("the demo's channels: one per contract and action, one for resync requests, on the topic exchange", () => {
    const expected = demoContracts.flatMap(({ contract }) => [
      ...Envelope.Action.literals.map((action) =>
        Envelope.routingKey({ producer: contract.owner, entity: contract.name, action })
      ),
      Resync.routingKey(contract.owner, contract.name)
    ])
    assert.sameMembers(Object.keys(demo.channels), expected)
    for (const [id, channel] of Object.entries(demo.channels)) {
      assert.strictEqual(channel.address, id)
      assert.deepStrictEqual(channel.bindings, {
        amqp: {
          is: "routingKey",
          exchange: { name: "sync.events", type: "topic", durable: true, autoDelete: false },
          bindingVersion: "0.3.0"
        }
      })
    }
    assert.strictEqual(AsyncApi.defaultExchange, RabbitConfig.defaults.exchange)
  })

  it("the owner sends and the consumer receives each event; the consumer sends resync requests, the owner receives them", () => {
    const operations = Object.values(demo.operations)
    const on = (address: string, action: string) =>
      Object.entries(demo.operations).filter(([, op]) =>
        op.action === action && JSON.stringify(op.channel) === JSON.stringify({ $ref: `#/channels/${address}` })
      ).map(([id]) => id)
    for (const { contract } of demoContracts) {
      for (const action of Envelope.Action.literals) {
        const address = Envelope.routingKey({ producer: contract.owner, entity: contract.name, action })
        assert.deepStrictEqual(on(address, "send"), [`accounts.send.${contract.name}.${action}`])
        assert.deepStrictEqual(on(address, "receive"), [`directory.receive.${contract.name}.${action}`])
      }
      const resync = Resync.routingKey(contract.owner, contract.name)
      assert.deepStrictEqual(on(resync, "send"), [`directory.send.${contract.name}.resync`])
      assert.deepStrictEqual(on(resync, "receive"), [`accounts.receive.${contract.name}.resync`])
    }
    assert.lengthOf(operations, 24)
  })

  it("each entity message: the CloudEvents content type, its type as the AMQP message type, the headers", () => {
    for (const { contract } of demoContracts) {
      for (const action of Envelope.Action.literals) {
        const message = demo.components.messages[`${contract.name}.${action}`]
        assert.isDefined(message)
        assert.strictEqual(message?.contentType, Envelope.contentType)
        assert.deepStrictEqual(message?.bindings, {
          amqp: { messageType: Envelope.messageType({ entity: contract.name, action }), bindingVersion: "0.3.0" }
        })
      }
    }
    const headers = demo.components.schemas.EventHeaders?.properties
    assert.hasAllKeys(headers, ["traceparent", Signature.signatureHeader, Signature.keyIdHeader])
    assert.hasAllKeys(demo.components.schemas.ResyncHeaders?.properties, [
      Signature.signatureHeader,
      Signature.keyIdHeader
    ])
  })

  it("every CloudEvents attribute of a real event is described", () => {
    const event = Envelope.toCloudEvent(
      envelope(Company, "snapshot", companyPayload, {
        reset: true,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "vendor=1"
      })
    )
    const properties = Schema.decodeUnknownSync(
      Schema.Record(Schema.String, Schema.Struct({ description: Schema.String }))
    )(demo.components.schemas.CloudEvent?.properties)
    for (const name of Object.keys(event)) {
      assert.isAbove(properties[name]?.description.length ?? 0, 10, name)
    }
  })

  it("each message's schema accepts the events the library sends, with every optional attribute too", () => {
    const sent: Array<readonly [string, unknown]> = []
    for (const { contract, payload } of demoContracts) {
      for (const action of Envelope.Action.literals) {
        const message = `${contract.name}.${action}`
        sent.push([message, Envelope.toCloudEvent(envelope(contract, action, payload))])
        sent.push([
          message,
          Envelope.toCloudEvent(envelope(contract, action, payload, {
            forceSync: true,
            reset: true,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            tracestate: "vendor=1",
            context: { correlationid: "r-1", tenant: "t-1" }
          }))
        ])
        // the event travels as JSON: what is parsed from the body is accepted as well
        const body = Envelope.encode(envelope(contract, action, payload))
        sent.push([message, JSON.parse(new TextDecoder().decode(body))])
      }
      const request = {
        specVersion: 1,
        requestId: "0193a000-0000-7000-8000-000000000002",
        owner: contract.owner,
        entity: contract.name,
        ids: ["e-1"],
        requester: "directory",
        requestedAt: "2026-11-22T03:00:00.000Z"
      }
      sent.push([`${contract.name}.resync`, Schema.decodeUnknownSync(Resync.ResyncRequest)(request)])
      refuses(demo, `${contract.name}.resync`, { ...request, owner: "elsewhere" })
      refuses(demo, `${contract.name}.resync`, { ...request, entity: "Other" })
    }
    assert.lengthOf(sent, 2 * (5 * 3 + 1))
    const refusals = sent.flatMap(([message, event]) => {
      const refusal = refusalOf(demo, message)(event)
      return refusal === undefined ? [] : [`${message}: ${refusal}`]
    })
    assert.deepStrictEqual(refusals, [])
  })

  it("each message's schema refuses what the wire format or the contract refuses", () => {
    const event = Envelope.toCloudEvent(envelope(User, "updated", userPayload))
    const refused: ReadonlyArray<unknown> = [
      { ...event, type: "entitysync.Company.updated" },
      { ...event, type: "entitysync.User.created" },
      { ...event, source: "directory" },
      { ...event, specversion: "0.3" },
      { ...event, data: null },
      { ...event, data: { ...userPayload, email: 42 } },
      { ...event, data: { id: "u-1" } },
      { ...event, contractversion: 2 },
      { ...event, entityversion: 0 },
      { ...event, time: "yesterday" },
      { ...event, datacontenttype: "text/plain" },
      { ...event, reset: true },
      { ...event, Tenant: "t-1" },
      (({ subject: _, ...rest }) => rest)(event)
    ]
    const updated = refusalOf(demo, "User.updated")
    assert.isUndefined(updated(event))
    assert.deepStrictEqual(refused.filter((bad) => updated(bad) === undefined), [])
    const deleted = Envelope.toCloudEvent(envelope(User, "deleted", null))
    const deletes = refusalOf(demo, "User.deleted")
    assert.isUndefined(deletes(deleted))
    assert.isDefined(deletes({ ...deleted, data: userPayload }))
    assert.isDefined(deletes({ ...deleted, contractversion: 2 }))
  })

  it("a versioned contract: valid AsyncAPI, every version's payload schema tied to its contractversion", async () => {
    assert.deepStrictEqual(await errorsOf(versioned), [])
    const data = Schema.decodeUnknownSync(
      Schema.Struct({
        oneOf: Schema.Array(Schema.Struct({
          properties: Schema.Struct({
            contractversion: Schema.Struct({ const: Schema.Number }),
            data: Schema.Struct({ $ref: Schema.String })
          })
        }))
      })
    )(versioned.components.schemas["Person.data"])
    assert.deepStrictEqual(
      data.oneOf.map((branch) => [branch.properties.contractversion.const, branch.properties.data.$ref]),
      [[1, "#/components/schemas/Person.v1"], [2, "#/components/schemas/Person.v2"]]
    )
    // the shared field is one definition, referenced by both versions
    assert.deepStrictEqual(versioned.components.schemas.PersonId, { type: "string", minLength: 1 })
    for (const version of ["Person.v1", "Person.v2"]) {
      assert.include(JSON.stringify(versioned.components.schemas[version]), "#/components/schemas/PersonId")
    }
    const binding = Schema.decodeUnknownSync(
      Schema.Struct({
        bindings: Schema.Struct({ amqp: Schema.Struct({ exchange: Schema.Struct({ name: Schema.String }) }) })
      })
    )(versioned.channels["people.Person.updated"])
    assert.strictEqual(binding.bindings.amqp.exchange.name, "people.events")

    const v1 = Schema.encodeSync(PersonV1)({ id: "p-1", fullName: "Ada Lovelace" })
    const v2 = Schema.encodeSync(Person.payload)({ id: "p-1", givenName: "Ada", familyName: "Lovelace" })
    for (const action of ["created", "updated", "softDeleted", "snapshot"] as const) {
      const message = `Person.${action}`
      const atV1 = Envelope.toCloudEvent(envelope(Person, action, v1, { contractVersion: 1 }))
      const atV2 = Envelope.toCloudEvent(envelope(Person, action, v2, { contractVersion: 2 }))
      accepts(versioned, message, atV1)
      accepts(versioned, message, atV2)
      refuses(versioned, message, { ...atV1, contractversion: 2 })
      refuses(versioned, message, { ...atV2, contractversion: 1 })
      refuses(versioned, message, { ...atV2, contractversion: 3 })
      refuses(versioned, message, { ...atV2, data: { ...v2, id: "" } })
    }
    const deleted = Envelope.toCloudEvent(envelope(Person, "deleted", null, { contractVersion: 2 }))
    accepts(versioned, "Person.deleted", deleted)
    accepts(versioned, "Person.deleted", { ...deleted, contractversion: 1 })
    refuses(versioned, "Person.deleted", { ...deleted, contractversion: 3 })
  }, 120_000)

  it("without consumers, one anonymous receive per event channel and one resync send stand for every consumer", () => {
    const ids = Object.keys(versioned.operations)
    assert.includeMembers(ids, ["people.send.Person.created", "receive.Person.created", "send.Person.resync"])
    assert.includeMembers(ids, ["people.receive.Person.resync"])
    assert.lengthOf(ids, 5 * 2 + 2)
  })

  it("is deterministic: the same bytes whatever the order of the contracts", () => {
    const consumers = { directory: [Company, User] }
    const a = AsyncApi.render(AsyncApi.document({ contracts: [Company, User, Person], consumers }))
    const b = AsyncApi.render(AsyncApi.document({ contracts: [Person, User, Company, User], consumers }))
    assert.strictEqual(a, b)
    assert.isTrue(a.endsWith("}\n"))
    assert.notInclude(a, new Date().toISOString().slice(0, 10))
  })

  it("refuses two contracts of one entity, and a consumer of a contract it does not document", () => {
    const Other = Contract.make({ name: "Company", owner: "billing", id: "id", payload: PersonV1 })
    assert.throws(() => AsyncApi.document({ contracts: [Company, Other] }), /two different contracts are named Company/)
    assert.throws(
      () => AsyncApi.document({ contracts: [Company], consumers: { directory: [User] } }),
      /the consumer directory subscribes to User, which is not a contract/
    )
  })

  it("the committed services/contracts/asyncapi.json is what the demo's contracts generate", () => {
    assert.strictEqual(
      DemoDocument.onDisk(),
      DemoDocument.text(),
      `${DemoDocument.file} is stale: run npm run asyncapi`
    )
  })
})
