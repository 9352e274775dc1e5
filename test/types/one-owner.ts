/**
 * R1 against ordinary code: the ways a producer could end up with a name wider than one literal — and so
 * with repositories for every contract — as a user would write them, without a cast, through the package
 * entry. Each `@ts-expect-error` is a program that must not compile; `tsc.test.ts` fails if one starts to.
 * Nothing here runs.
 */
import { Effect, type Schema } from "effect"
import { type Contract, Producer } from "../../src/index.ts"
import { Company, Invoice } from "../fixtures.ts"

declare const fromConfig: string
declare const flag: boolean
declare const untyped: any
declare const impossible: never
declare const prefixed: `svc-${string}`

/** The allowed producers: one literal, written or held in a `const`, and the repositories of its contracts. */
export const allowed = () => {
  const accounts = Producer.make("accounts")
  const name = "billing"
  const billing = Producer.make(name)
  const declared: Producer.Producer<"accounts"> = accounts
  const company = accounts.repository(Company)
  const invoice = billing.repository(Invoice)
  // a helper generic in the service keeps its literal, so R1 still holds inside it
  const repositoryOf = <S extends string, N extends string, A, I extends Schema.Json>(
    producer: Producer.Producer<S>,
    contract: Contract.Contract<N, S, A, I>
  ) => producer.repository(contract)
  const viaHelper = repositoryOf(accounts, Company)
  // @ts-expect-error R1: through the generic helper, "accounts" still does not own Invoice
  repositoryOf(accounts, Invoice)
  return [declared, company, invoice, viaHelper]
}

/** A name that is not one literal does not compile, whatever its source. */
export const widenedNames = () => [
  // @ts-expect-error R1: a name from configuration or the environment is a `string`
  Producer.make(fromConfig),
  // @ts-expect-error R1: the same, read where it is used
  Producer.make(process.env["SERVICE_NAME"] ?? "accounts"),
  // @ts-expect-error R1: an explicit `string` type argument widens a literal
  Producer.make<string>("accounts"),
  // @ts-expect-error R1: a union of two services
  Producer.make(flag ? "accounts" : "billing"),
  // @ts-expect-error R1: an explicit union type argument
  Producer.make<"accounts" | "billing">("accounts"),
  // @ts-expect-error R1: a template type stands for many names
  Producer.make(prefixed),
  // @ts-expect-error R1: `any` fits every parameter type; the extra parameter refuses it
  Producer.make(untyped),
  // @ts-expect-error R1: `never` likewise
  Producer.make(impossible)
]

/** The message a widened name shows is the reason, as the parameter's type. */
export const readableMessage = () => {
  type Shown = Producer.ServiceName<string>
  const reason: Shown extends Producer.ServiceNameError<infer Reason> ? Reason : never =
    "R1: the service name must be one string literal such as \"accounts\", not `string` or a template; a name read from configuration is written as a literal and checked with Producer.checkConfigured"
  const literal: Producer.ServiceName<"accounts"> = "anything: a literal adds no requirement"
  return [reason, literal]
}

/** A producer cannot be widened after it was made either. */
export const widenedProducers = () => {
  const accounts = Producer.make("accounts")
  const repositoryFor = (producer: Producer.Producer<string>) => producer.repository(Invoice)
  // @ts-expect-error R1: a helper taking a widened producer does not accept the "accounts" producer
  repositoryFor(accounts)
  // @ts-expect-error R1: nor does an annotation widen it
  const widened: Producer.Producer<string> = accounts
  // @ts-expect-error R1: nor a union of two producers
  const either: Producer.Producer<"accounts" | "billing"> = accounts
  return [widened, either]
}

/** A configured name is checked against the literal at start-up. */
export const configured = () =>
  Effect.gen(function*() {
    const accounts = Producer.make("accounts")
    const name: "accounts" = yield* Producer.checkConfigured(accounts, fromConfig)
    return name
  })
