/**
 * `npm run asyncapi`: writes `services/contracts/asyncapi.json`, the AsyncAPI 3.0 document of the demo's
 * bus, generated from its contracts (`AsyncApi.document`) with the directory service as their consumer.
 * `npm run asyncapi:check` (`--check`) writes nothing and exits 1 when the file on disk is not what the
 * contracts generate.
 *
 * @since 0.1.0
 */
import { AsyncApi } from "entity-sync"
import { readFileSync, writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as DirectoryService from "../directory/DirectoryService.ts"
import { Company, User } from "./index.ts"

/** Where the document is kept, relative to the repository root. */
export const file = "services/contracts/asyncapi.json"

const path = fileURLToPath(new URL("asyncapi.json", import.meta.url))

/** The demo's AsyncAPI document. */
export const document = (): AsyncApi.Document =>
  AsyncApi.document({
    contracts: [Company, User],
    consumers: { [DirectoryService.name]: DirectoryService.subscriptions.map((s) => s.contract) },
    title: "entity-sync demo bus",
    version: "1.0.0"
  })

/** The document as the file holds it. */
export const text = (): string => AsyncApi.render(document())

/** The file's current text, or undefined when there is none. */
export const onDisk = (): string | undefined => {
  try {
    return readFileSync(path, "utf8")
  } catch {
    return undefined
  }
}

const main = (args: ReadonlyArray<string>): number => {
  const fresh = text()
  if (args.includes("--check")) {
    if (onDisk() === fresh) return 0
    console.error(`${file} is stale: run npm run asyncapi`)
    return 1
  }
  writeFileSync(path, fresh)
  console.log(`wrote ${file}`)
  return 0
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = main(process.argv.slice(2))
}
