/**
 * The package as a user installs it: `npm pack` (which builds `dist/`), the tarball installed into a
 * scratch project outside the repository, then plain `node` (no loader) on the entry points and `tsc`
 * (NodeNext, strict, no `skipLibCheck`) on a consumer file whose `@ts-expect-error` lines are the sync
 * rules R1, R2 and the handler error rule; the bin `entity-sync` (the admin CLI) runs.
 */
import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import { execFile } from "node:child_process"
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const root = join(import.meta.dirname, "..", "..")
const fixture = join(import.meta.dirname, "consumer")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const run = (command: string, args: ReadonlyArray<string>, cwd: string): Promise<Run> =>
  new Promise((resolve) => {
    // plain Node: none of the repository's loaders or conditions
    const env = { ...process.env, NODE_OPTIONS: "" }
    execFile(command, args, { cwd, env, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr }))
  })

const ok = async (command: string, args: ReadonlyArray<string>, cwd: string): Promise<string> => {
  const result = await run(command, args, cwd)
  assert.strictEqual(result.code, 0, `${command} ${args.join(" ")} failed:\n${result.stdout}\n${result.stderr}`)
  return result.stdout
}

const Manifest = Schema.Struct({ devDependencies: Schema.Record(Schema.String, Schema.String) })
const versions = Schema.decodeUnknownSync(Schema.fromJsonString(Manifest))(
  readFileSync(join(root, "package.json"), "utf8")
).devDependencies
const pinned = (name: string): string => `${name}@${versions[name]}`

const Packed = Schema.fromJsonString(Schema.Array(Schema.Struct({ filename: Schema.String })))

const lastLine = (output: string): string => output.trim().split("\n").at(-1) ?? ""

describe("the packed package", () => {
  it("installs from its tarball and works with plain node and tsc, as a user's project uses it", async () => {
    const scratch = mkdtempSync(join(tmpdir(), "entity-sync-consumer-"))
    try {
      const packed = Schema.decodeUnknownSync(Packed)(
        await ok("npm", ["pack", "--json", "--pack-destination", scratch], root)
      )
      const tarball = join(scratch, packed[0]?.filename ?? "")
      cpSync(fixture, scratch, { recursive: true })
      writeFileSync(join(scratch, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
      const install = ["install", "--no-audit", "--no-fund", "--prefer-offline", "--no-package-lock"]

      // (a) the required peers only: core, memory and postgres load; a create reaches the copy
      await ok("npm", [...install, tarball, pinned("effect"), pinned("@effect/sql-pg")], scratch)
      const core = JSON.parse(lastLine(await ok("node", ["core.mjs"], scratch)))
      assert.deepStrictEqual(core.copy, {
        entity: "Company",
        id: "c-1",
        version: 1,
        payload: { id: "c-1", name: "Acme" }
      })
      assert.strictEqual(core.postgresLayer, "function")
      assert.match(core.amqpWithoutAmqplib, /^ERR_MODULE_NOT_FOUND: .*amqplib/)

      // the bin `entity-sync` (the admin CLI) runs without amqplib too, and says what is wrong
      const bin = join(scratch, "node_modules", ".bin", "entity-sync")
      assert.include(await ok(bin, ["--help"], scratch), "outbox")
      const usage = await run(bin, ["prune", "--inbox-retention", "a week"], scratch)
      assert.strictEqual(usage.code, 2)
      assert.include(usage.stderr, "--inbox-retention: expected a duration")

      // (b) with the optional peers: every entry point, and nothing internal
      await ok("npm", [
        ...install,
        pinned("amqplib"),
        pinned("@electric-sql/pglite"),
        pinned("@electric-sql/pglite-socket"),
        pinned("@types/node")
      ], scratch)
      const entries = JSON.parse(lastLine(await ok("node", ["entries.mjs"], scratch)))
      assert.includeMembers(entries.modules["entity-sync"], [
        "Contract",
        "Outbox",
        "OwnerTable",
        "Producer",
        "Relay",
        "SyncConsumer"
      ])
      assert.deepStrictEqual(entries.modules["entity-sync/postgres"], [
        "Columns",
        "Migrations",
        "PostgresSync",
        "Tables"
      ])
      assert.deepStrictEqual(entries.modules["entity-sync/amqp"], ["Permissions", "RabbitBroker", "RabbitConfig"])
      assert.deepStrictEqual(entries.modules["entity-sync/embedded"], ["Embedded"])
      assert.includeMembers(entries.modules["entity-sync/memory"], ["MemoryBroker", "MemoryDatabase", "MemorySync"])
      assert.strictEqual(entries.internal, "ERR_PACKAGE_PATH_NOT_EXPORTED")

      // (c) the type-level rules survive packaging
      const tsc = await run(join(root, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], scratch)
      assert.strictEqual(tsc.code, 0, `tsc on the consumer reported:\n${tsc.stdout}${tsc.stderr}`)
    } finally {
      rmSync(scratch, { recursive: true, force: true })
    }
  }, 300_000)
})
