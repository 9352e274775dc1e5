/**
 * Scale-out in separate processes: 2 relays and 3 consumers on the real PostgreSQL and RabbitMQ, one of
 * each killed with SIGKILL mid-run (the proof is `scale-out.ts`).
 */
import { describe, it } from "@effect/vitest"
import { quiet } from "./fixture.ts"
import { scaleOut } from "./scale-out.ts"

describe("faults: scale-out in separate processes", () => {
  it.live(
    "2 relays and 3 consumers, one of each killed with SIGKILL: nothing lost, nothing applied twice",
    () => scaleOut().pipe(quiet),
    400_000
  )
})
