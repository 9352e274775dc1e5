/**
 * Scale-out with ordered lanes in separate processes: 2 relays publishing each entity's events in version
 * order and 3 consumers reading 8 lanes, on the real PostgreSQL and RabbitMQ; one relay and the consumer
 * holding the most lanes killed with SIGKILL mid-run (the proof is `scale-out.ts`).
 */
import { describe, it } from "@effect/vitest"
import { quiet } from "./fixture.ts"
import { scaleOut } from "./scale-out.ts"

describe("faults: scale-out with ordered lanes in separate processes", () => {
  it.live(
    "8 lanes, 2 ordered relays, 3 consumers, SIGKILL: each entity handled in version order, nothing skipped but superseded hard deletes, lanes taken over",
    () => scaleOut(8).pipe(quiet),
    400_000
  )
})
