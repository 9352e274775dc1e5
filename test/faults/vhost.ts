/**
 * A RabbitMQ virtual host of one test with one broker user per service, each granted exactly its
 * permission matrix (`Permissions`) through `rabbitmqctl`; the guest login administers the virtual host
 * (declares a passive topology, browses queues). The users and the virtual host are deleted when the
 * test's scope closes.
 */
import amqp from "amqplib"
import { Effect, type Scope } from "effect"
import * as Permissions from "../../src/amqp/Permissions.ts"
import { rabbitmqctl } from "./rabbit.ts"

/** A test's virtual host. */
export interface TestVhost {
  readonly name: string
  /** The guest login on this virtual host: the administrator's URL. */
  readonly adminUrl: string
  /** The URL of a user created with `addUser`. */
  readonly urlOf: (user: string) => string
  /**
   * Creates a user (deleted with the virtual host's scope; created once) holding exactly `matrix` on this
   * virtual host.
   */
  readonly addUser: (user: string, matrix: Permissions.PermissionMatrix) => Effect.Effect<void, never, Scope.Scope>
  /** Replaces what a user holds on this virtual host with `matrix`. */
  readonly grant: (user: string, matrix: Permissions.PermissionMatrix) => Effect.Effect<void>
}

const host = "127.0.0.1:5672"

/** Creates a fresh virtual host `<test>-<random>` for the current scope. */
export const makeVhost = (test: string): Effect.Effect<TestVhost, never, Scope.Scope> =>
  Effect.gen(function*() {
    const name = `faults-${test}-${Math.random().toString(36).slice(2, 8)}`
    const password = Math.random().toString(36).slice(2, 14)
    const path = encodeURIComponent(name)
    yield* Effect.acquireRelease(
      rabbitmqctl("add_vhost", name),
      () => rabbitmqctl("delete_vhost", name).pipe(Effect.ignore)
    )
    yield* rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    const grant = (user: string, matrix: Permissions.PermissionMatrix) =>
      Effect.forEach(
        Permissions.rabbitmqctlArguments(matrix, { user, vhost: name }),
        (args) => rabbitmqctl(...args),
        { discard: true }
      )
    const users = new Set<string>()
    return {
      name,
      adminUrl: `amqp://guest:guest@${host}/${path}`,
      urlOf: (user) => `amqp://${encodeURIComponent(user)}:${password}@${host}/${path}`,
      addUser: (user, matrix) =>
        Effect.suspend(() =>
          users.has(user) ? Effect.void : Effect.acquireRelease(
            rabbitmqctl("add_user", user, password).pipe(Effect.tap(() => Effect.sync(() => users.add(user)))),
            () => rabbitmqctl("delete_user", user).pipe(Effect.ignore)
          )
        ).pipe(Effect.andThen(grant(user, matrix))),
      grant
    }
  })

/** What RabbitMQ did with one raw publish: confirmed it, or closed the channel refusing it. */
export type PublishOutcome =
  | { readonly _tag: "Confirmed" }
  | { readonly _tag: "Refused"; readonly reason: string }

/** A raw publish by some login, outside the adapter: exchange, routing key, body and AMQP properties. */
export interface RawPublish {
  readonly exchange: string
  readonly routingKey: string
  readonly body: string
  readonly options: amqp.Options.Publish
}

/**
 * Publishes each message on a confirm channel of its own (a refusal closes the channel), over one
 * connection of `url`; gives what RabbitMQ did with each.
 */
export const publishRaw = (
  url: string,
  messages: ReadonlyArray<RawPublish>
): Effect.Effect<ReadonlyArray<PublishOutcome>> =>
  Effect.promise(async () => {
    const connection = await amqp.connect(url)
    connection.on("error", () => {})
    try {
      const outcomes: Array<PublishOutcome> = []
      for (const message of messages) {
        const channel = await connection.createConfirmChannel()
        let closedWith = ""
        channel.on("error", (error: Error) => {
          closedWith = error.message
        })
        const outcome = await new Promise<PublishOutcome>((resolve) => {
          channel.once("close", () => resolve({ _tag: "Refused", reason: closedWith || "the channel closed" }))
          try {
            channel.publish(
              message.exchange,
              message.routingKey,
              Buffer.from(message.body),
              message.options,
              (error) => {
                if (error === null || error === undefined) resolve({ _tag: "Confirmed" })
              }
            )
          } catch (error) {
            resolve({ _tag: "Refused", reason: error instanceof Error ? error.message : String(error) })
          }
        })
        outcomes.push(outcome)
        if (outcome._tag === "Confirmed") await channel.close().catch(() => undefined)
      }
      return outcomes
    } finally {
      await connection.close().catch(() => undefined)
    }
  })
