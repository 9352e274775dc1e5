/**
 * The compile-time rules are part of `npm test`: this runs the TypeScript compiler on `test/types` (the
 * programs that must compile, and the `@ts-expect-error` attempts that must not) and fails with its
 * diagnostics if anything is reported. A rule that stops holding shows as an unused `@ts-expect-error`
 * (TS2578), so the second test checks that such a directive fails the same command.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../../", import.meta.url))
const tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin", "tsc")

interface Compiled {
  readonly code: number | null
  readonly output: string
}

/** Runs `tsc --noEmit -p <project>` from the repository's root. */
const compile = (project: string) =>
  new Promise<Compiled>((resolve) => {
    execFile(
      process.execPath,
      [tsc, "--noEmit", "--pretty", "false", "-p", project],
      { cwd: root, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) =>
        resolve({
          code: error === null ? 0 : typeof error.code === "number" ? error.code : null,
          output: `${stdout}${stderr}`
        })
    )
  })

describe("type-level rules", () => {
  it("test/types compiles: every allowed program compiles and every @ts-expect-error attempt is an error", async () => {
    const { code, output } = await compile("test/types/tsconfig.json")
    assert.strictEqual(code, 0, `tsc -p test/types/tsconfig.json reported:\n${output}`)
  }, 60_000)

  it("a rule that stops holding fails it: an unused @ts-expect-error is reported", async () => {
    const dir = mkdtempSync(join(tmpdir(), "entity-sync-types-"))
    try {
      const entry = join(root, "src", "index.ts")
      writeFileSync(
        join(dir, "regression.ts"),
        `import { Producer } from ${JSON.stringify(entry)}\n` +
          `// @ts-expect-error R1: pretends that a literal name does not compile\n` +
          `export const accounts = Producer.make("accounts")\n`
      )
      writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }))
      writeFileSync(
        join(dir, "tsconfig.json"),
        JSON.stringify({
          extends: join(root, "tsconfig.json"),
          compilerOptions: { typeRoots: [join(root, "node_modules", "@types")] },
          include: ["regression.ts"]
        })
      )
      const { code, output } = await compile(join(dir, "tsconfig.json"))
      assert.notStrictEqual(code, 0, output)
      const errors = output.split("\n").filter((line) => line.includes("error TS"))
      assert.strictEqual(errors.length, 1, output)
      assert.match(errors[0] ?? "", /regression\.ts\(2,1\): error TS2578: Unused '@ts-expect-error' directive/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})
