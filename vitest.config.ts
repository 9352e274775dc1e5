import { defineConfig } from "vitest/config"

// The broker-restart fault test stops the local RabbitMQ for a second or two, so it runs on its own,
// after every other test file has finished.
const exclusive = ["test/faults/broker-restart.test.ts"]

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
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
