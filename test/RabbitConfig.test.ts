/**
 * The RabbitMQ adapter's node addresses: `AMQP_URL` / `url` with several comma-separated URLs and `urls`
 * resolve to one list, in order; reconnects go round it (`nextUrlIndex`); logs show `host:port` only. The
 * last test runs the adapter's connection against an address nobody answers on and the local RabbitMQ
 * (127.0.0.1:5672): a failed attempt and a lost connection each move the next attempt to the next node.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Redacted } from "effect"
import { makeConnection } from "../src/amqp/Connection.ts"
import * as RabbitConfig from "../src/amqp/RabbitConfig.ts"

const values = (urls: ReadonlyArray<Redacted.Redacted<string>>) => urls.map((url) => Redacted.value(url))

describe("RabbitConfig node addresses", () => {
  it("splits a comma-separated list, trimming and dropping empty entries", () => {
    assert.deepStrictEqual(RabbitConfig.splitUrls("amqp://a:5672"), ["amqp://a:5672"])
    assert.deepStrictEqual(
      RabbitConfig.splitUrls(" amqp://u:p@a:5672/v , amqp://u:p@b:5673/v,,amqp://u:p@c/v, "),
      ["amqp://u:p@a:5672/v", "amqp://u:p@b:5673/v", "amqp://u:p@c/v"]
    )
    // nothing to split: kept as it is, for amqplib to report when it connects
    assert.deepStrictEqual(RabbitConfig.splitUrls(""), [""])
    assert.deepStrictEqual(RabbitConfig.splitUrls(" , "), [","])
  })

  it("resolves url (a list or one URL, plain or Redacted) then urls, in order; login and url are the first's", () => {
    const single = RabbitConfig.resolve({ url: "amqp://relay:secret@a:5672/v" })
    assert.deepStrictEqual(values(single.urls), ["amqp://relay:secret@a:5672/v"])
    assert.strictEqual(Redacted.value(single.url), "amqp://relay:secret@a:5672/v")
    assert.strictEqual(single.login, "relay")

    const several = RabbitConfig.resolve({
      url: Redacted.make("amqp://relay:secret@a:5681,amqp://relay:secret@b:5682"),
      urls: ["amqp://relay:secret@c:5683", Redacted.make("amqp://relay:secret@d:5684,amqp://relay:secret@e:5685")]
    })
    assert.deepStrictEqual(values(several.urls), [
      "amqp://relay:secret@a:5681",
      "amqp://relay:secret@b:5682",
      "amqp://relay:secret@c:5683",
      "amqp://relay:secret@d:5684",
      "amqp://relay:secret@e:5685"
    ])
    assert.strictEqual(Redacted.value(several.url), "amqp://relay:secret@a:5681")
    assert.strictEqual(several.login, "relay")
    // the whole list never shows in a log or an error: every entry is Redacted
    assert.notInclude(String(several.urls[1]), "secret")
  })

  it("reads AMQP_URL with several nodes from the environment", () =>
    Effect.gen(function*() {
      const options = yield* RabbitConfig.config.parse(ConfigProvider.fromEnv({
        env: { AMQP_URL: "amqp://guest:guest@127.0.0.1:5681,amqp://guest:guest@127.0.0.1:5682" }
      }))
      const resolved = RabbitConfig.resolve(options)
      assert.deepStrictEqual(values(resolved.urls), [
        "amqp://guest:guest@127.0.0.1:5681",
        "amqp://guest:guest@127.0.0.1:5682"
      ])
      assert.strictEqual(resolved.login, "guest")
    }).pipe(Effect.runPromise))

  it("goes round the nodes: the next index after the last is the first; one node is always itself", () => {
    assert.strictEqual(RabbitConfig.nextUrlIndex(0, 3), 1)
    assert.strictEqual(RabbitConfig.nextUrlIndex(1, 3), 2)
    assert.strictEqual(RabbitConfig.nextUrlIndex(2, 3), 0)
    assert.strictEqual(RabbitConfig.nextUrlIndex(0, 1), 0)
    assert.strictEqual(RabbitConfig.nextUrlIndex(0, 0), 0)
    const visited: Array<number> = []
    let index = 0
    for (let i = 0; i < 7; i++) {
      visited.push(index)
      index = RabbitConfig.nextUrlIndex(index, 3)
    }
    assert.deepStrictEqual(visited, [0, 1, 2, 0, 1, 2, 0])
  })

  it("shows a node as host:port, never its login or password", () => {
    assert.strictEqual(RabbitConfig.addressOf(Redacted.make("amqp://u:secret@rabbit-2:5682/v")), "rabbit-2:5682")
    assert.strictEqual(RabbitConfig.addressOf(Redacted.make("amqp://u:secret@rabbit-2/v")), "rabbit-2:5672")
    assert.strictEqual(RabbitConfig.addressOf(Redacted.make("amqps://u:secret@rabbit-2")), "rabbit-2:5671")
    assert.notInclude(RabbitConfig.addressOf(Redacted.make("not a url, secret")), "secret")
  })

  it("connects each node with its own URL and the heartbeat", () => {
    const settings = RabbitConfig.resolve({ url: "amqp://u:p@a:5681,amqp://u:p@b:5682?heartbeat=5" })
    assert.strictEqual(RabbitConfig.connectUrl(settings), "amqp://u:p@a:5681?heartbeat=30")
    assert.strictEqual(
      RabbitConfig.connectUrl(settings, settings.urls[1] ?? settings.url),
      "amqp://u:p@b:5682?heartbeat=5"
    )
  })
})

describe("the connection goes round the nodes", () => {
  it.live(
    "skips a node that does not answer and, after a loss, tries the next node first",
    () =>
      Effect.gen(function*() {
        const run = Math.random().toString(36).slice(2, 8)
        const settings = RabbitConfig.resolve({
          // port 1: refused at once; then the local RabbitMQ
          url: "amqp://guest:guest@127.0.0.1:1,amqp://guest:guest@127.0.0.1:5672",
          connectionName: "entity-sync-test-rotation",
          exchange: `test.rotation.${run}.events`,
          deadLetterExchange: `test.rotation.${run}.dead`,
          replayExchange: `test.rotation.${run}.replay`
        })
        const connection = yield* makeConnection(settings, new Map())
        const first = yield* Effect.flip(connection.acquire)
        assert.include(first.detail, "ECONNREFUSED")
        // the next attempt, after the schedule's first delay (100 ms), goes to the second node
        yield* Effect.sleep("150 millis")
        const session = yield* connection.acquire
        assert.strictEqual(session.node, "127.0.0.1:5672")
        // the node goes away: the next attempt goes at once to the next node (round: the first, refused)
        yield* Effect.promise(() => session.model.close())
        const again = yield* Effect.flip(connection.acquire)
        assert.include(again.detail, "ECONNREFUSED")
        yield* Effect.sleep("150 millis")
        const back = yield* connection.acquire
        assert.strictEqual(back.node, "127.0.0.1:5672")
        yield* connection.close(Effect.void)
        // the test's exchanges go with the test
        yield* Effect.promise(async () => {
          const amqp = (await import("amqplib")).default
          const model = await amqp.connect("amqp://guest:guest@127.0.0.1:5672")
          const channel = await model.createChannel()
          for (const name of [settings.exchange, settings.deadLetterExchange, settings.replayExchange]) {
            await channel.deleteExchange(name)
          }
          await model.close()
        })
      }),
    30_000
  )
})
