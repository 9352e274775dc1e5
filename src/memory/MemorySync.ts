/**
 * Every store of the runtime in memory, over one fresh `MemoryDatabase`: for tests, examples and
 * single-process demos. Production uses the PostgreSQL layers.
 *
 * @since 0.1.0
 */
import { Layer } from "effect"
import type { CopyRepository } from "../CopyRepository.ts"
import type { Inbox } from "../Inbox.ts"
import type { Outbox } from "../Outbox.ts"
import type { OwnerTable } from "../OwnerTable.ts"
import type { SourceRepository } from "../SourceRepository.ts"
import type { Transactor } from "../Transactor.ts"
import * as MemoryCopyRepository from "./CopyRepository.ts"
import * as MemoryInbox from "./Inbox.ts"
import * as MemoryDatabase from "./MemoryDatabase.ts"
import * as MemoryOutbox from "./Outbox.ts"
import * as MemorySourceRepository from "./SourceRepository.ts"

/** Options of the memory stores: the outbox's, and the service's owner tables (see `OwnerTable`). */
export interface Options extends MemoryOutbox.Options {
  readonly ownerTables?: ReadonlyArray<OwnerTable>
}

/** Outbox, source rows, inbox and copies in one new in-memory database (each use of the layer gets its own). */
export const layer = (
  options?: Options
): Layer.Layer<Outbox | SourceRepository | Inbox | CopyRepository | Transactor | MemoryDatabase.MemoryDatabase> =>
  Layer.mergeAll(
    MemoryOutbox.layer(options),
    MemorySourceRepository.layer(options?.ownerTables),
    MemoryInbox.layer,
    MemoryCopyRepository.layer
  ).pipe(Layer.provideMerge(Layer.fresh(MemoryDatabase.layer)))
