/** Runs the owner-write conformance suite on the memory implementations. */
import { Layer } from "effect"
import * as MemoryDatabase from "../../src/memory/MemoryDatabase.ts"
import * as Outbox from "../../src/memory/Outbox.ts"
import * as SourceRepository from "../../src/memory/SourceRepository.ts"
import { ownerTables } from "../owner-tables.ts"
import { ownerWriteConformance } from "./owner-writes.ts"

ownerWriteConformance(
  "memory owner writes",
  () => Layer.mergeAll(Outbox.layer(), SourceRepository.layer()).pipe(Layer.provideMerge(MemoryDatabase.layer))
)

ownerWriteConformance(
  "memory owner writes, on owner tables",
  () =>
    Layer.mergeAll(Outbox.layer(), SourceRepository.layer(ownerTables())).pipe(
      Layer.provideMerge(MemoryDatabase.layer)
    )
)
