import { availableParallelism } from "node:os"
import { defineConfig } from "vitest/config"
import { BaseSequencer, type TestSpecification } from "vitest/node"

// The broker-restart fault test stops the local RabbitMQ for a second or two, so it runs on its own,
// after every other test file has finished.
const exclusive = ["test/faults/broker-restart.test.ts"]

// The outage tests (test/outage) stop a PostgreSQL cluster of their own for minutes and share no fault with
// the rest: they start first, and the other files run beside them. One more worker than vitest's default
// (CPUs - 1) is their lane, so on a two-CPU machine the other files still run one at a time meanwhile.
const isOutage = (file: TestSpecification) => file.moduleId.includes("/test/outage/")

/** vitest's order (failed first, then the longest), with the outage tests before everything else. */
class OutageFirst extends BaseSequencer {
  override async sort(files: Array<TestSpecification>): Promise<Array<TestSpecification>> {
    const sorted = await super.sort(files)
    return [...sorted.filter(isOutage), ...sorted.filter((file) => !isOutage(file))]
  }
}

// The demo services import the package by its own name ("entity-sync"); in this repository the
// `entity-sync-source` condition resolves it to the sources, as `customConditions` does for tsc and
// `--conditions` for the npm scripts. The other conditions are Vite's defaults for server code.
const conditions = ["entity-sync-source", "module", "node", "development|production"]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["entity-sync-source"] } },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    maxWorkers: Math.max(availableParallelism() - 1, 1) + 1,
    sequence: { sequencer: OutageFirst },
    projects: [
      {
        extends: true,
        test: { name: "main", include: ["test/**/*.test.ts"], exclude: exclusive, sequence: { groupOrder: 0 } }
      },
      {
        extends: true,
        test: { name: "exclusive", include: exclusive, sequence: { groupOrder: 1 } }
      }
    ]
  }
})
