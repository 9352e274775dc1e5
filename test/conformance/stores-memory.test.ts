/** Runs the store conformance suite on the memory implementations. */
import { Layer } from "effect"
import * as CopyRepository from "../../src/memory/CopyRepository.ts"
import * as Inbox from "../../src/memory/Inbox.ts"
import * as MemoryDatabase from "../../src/memory/MemoryDatabase.ts"
import * as Outbox from "../../src/memory/Outbox.ts"
import * as SourceRepository from "../../src/memory/SourceRepository.ts"
import { storeConformance } from "./stores.ts"

const leaseMillis = 10_000

const makeLayer = () =>
  Layer.mergeAll(Outbox.layer({ leaseMillis }), Inbox.layer, CopyRepository.layer, SourceRepository.layer()).pipe(
    Layer.provideMerge(MemoryDatabase.layer)
  )

storeConformance("memory stores", makeLayer, { leaseMillis })
