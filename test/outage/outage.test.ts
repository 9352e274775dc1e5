/**
 * R12 on the real stack ("an outage pauses, it never dead-letters"): one side's database, on a PostgreSQL
 * cluster of the test's own, stopped for `OUTAGE_SECONDS` (default 180) under a steady write load, then
 * started again.
 *
 * * The consumer's database: the consumer must stop taking deliveries instead of spending RabbitMQ delivery
 *   attempts (the quorum queue's `x-delivery-limit`) on the outage, and resume by itself.
 * * The owner's database (outbox and rows): the writer keeps trying (what it could not commit does not
 *   exist); the relay must pause and resume by itself.
 *
 * Both: no dead letter, nothing lost, nothing applied twice, copies equal to the owner's rows, the owner's
 * state at recovery reached within 30 s. The two run at the same time (each on its own cluster, queue and
 * exchanges), as long tests that share no fault with the rest of the suite.
 */
import { describe, it } from "@effect/vitest"
import { quiet } from "../faults/quiet.ts"
import { runOutage, testTimeout } from "./outage.ts"

describe.concurrent("outage: a database stopped under load", () => {
  it.live(
    "the consumer's database: the consumer pauses and resumes, no dead letter, nothing lost or applied twice",
    () => runOutage("consumer-outage", "consumer").pipe(quiet),
    testTimeout
  )

  it.live(
    "the owner's database: the relay pauses and resumes, no dead letter, nothing lost or applied twice",
    () => runOutage("owner-outage", "owner").pipe(quiet),
    testTimeout
  )
})
