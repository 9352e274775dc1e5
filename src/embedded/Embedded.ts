/**
 * An embedded PostgreSQL for a service that has no database configured: PGlite (PostgreSQL compiled to
 * WebAssembly, running inside this process) served on a free loopback port by `@electric-sql/pglite-socket`,
 * with an `@effect/sql-pg` `PgClient` connected to it, so the library's PostgreSQL stores run their real SQL
 * over the real wire protocol with no server to install. For demos, examples and tests (see `layer` for its
 * limits); the demo services use it when no `DATABASE_URL` is set.
 *
 * ```ts
 * const Stores = process.env.DATABASE_URL === undefined
 *   ? Embedded.layerSync()                      // in memory; or Embedded.layerSync({ dataDir: "./data/accounts" })
 *   : PostgresSync.layerConfig()
 * ```
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { type ExecProtocolOptionsStream, PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Context, Duration, Effect, Layer, Redacted, Schema } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import * as PostgresSync from "../postgres/PostgresSync.ts"

/** Options of the embedded database. */
export interface Options {
  /**
   * The directory PGlite keeps the database in (created if missing; reopened, with its data, by the next
   * layer). Omitted: the database is in memory and gone when the layer is released.
   */
  readonly dataDir?: string
  /** The most connections the `PgClient` pool opens (default 10; at least 1, and 2 for `layerSync`). */
  readonly maxConnections?: number
}

/** Options of `layerSync`: the embedded database's and the stores' (`prefix`, `leaseMillis`). */
export interface SyncOptions extends Options, PostgresSync.Options {}

/** The default size of the connection pool: 10. */
export const defaultMaxConnections = 10

/** How many connections the socket server accepts beyond the pool's `maxConnections`: 8. */
export const spareServerConnections = 8

/** The loopback address the socket server listens on. */
export const host = "127.0.0.1"

/** A running embedded database: where it listens, for a second client (or `psql`) while the layer is alive. */
export class EmbeddedPostgres extends Context.Service<EmbeddedPostgres, {
  /** Its connection URL, `postgres://postgres@127.0.0.1:<port>/postgres`. */
  readonly url: Redacted.Redacted
  readonly host: string
  readonly port: number
  /** The directory of the database, or `undefined` when it is in memory. */
  readonly dataDir: string | undefined
  /** The size of the layer's connection pool. */
  readonly maxConnections: number
  /** How many connections the socket server accepts at once. */
  readonly serverConnections: number
}>()("entity-sync/postgres/EmbeddedPostgres") {}

/** The embedded database could not start: bad options, PGlite failed to open `dataDir`, or no port. */
export class EmbeddedPostgresError extends Schema.TaggedError<EmbeddedPostgresError>()("EmbeddedPostgresError", {
  detail: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message() {
    return `embedded PostgreSQL: ${this.detail}`
  }
}

// Frontend (client) message types.
const QUERY = 0x51 // 'Q'
const PARSE = 0x50 // 'P'
const TERMINATE = 0x58 // 'X'
// Backend message types this module looks at.
const NOTIFICATION = 0x41 // 'A' NotificationResponse
const COMMAND_COMPLETE = 0x43 // 'C'
const READY_FOR_QUERY = 0x5a // 'Z'

/** Backend messages larger than this are not PostgreSQL's: the scanner stops and passes bytes through. */
const maxBackendMessage = 1 << 30

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** The NUL-terminated string of a protocol message at `start`. */
const cString = (bytes: Uint8Array, start: number): string | undefined => {
  const nul = bytes.indexOf(0, start)
  return nul < 0 ? undefined : decoder.decode(bytes.subarray(start, nul))
}

/** A frontend message: type byte, int32 length (itself included), body. */
const frontendMessage = (type: number, body: Uint8Array): Uint8Array => {
  const message = new Uint8Array(5 + body.length)
  message[0] = type
  new DataView(message.buffer).setInt32(1, 4 + body.length)
  message.set(body, 5)
  return message
}

const simpleQuery = (sql: string) => frontendMessage(QUERY, encoder.encode(`${sql}\0`))

const isSpace = (byte: number) => byte === 0x20 || (byte >= 0x09 && byte <= 0x0d)

/** A PostgreSQL identifier as the backend stores it: quoted ones verbatim, others folded to lower case. */
const identifier = (token: string) =>
  token.startsWith("\"")
    ? token.slice(1, -1).replaceAll("\"\"", "\"")
    : token.replace(/[A-Z]+/g, (s) => s.toLowerCase())

/**
 * The channel of a `LISTEN <channel>` statement sent as a simple `Query` or as a `Parse`; `undefined` for
 * any other message (only a single `LISTEN` per message is recognised, which is what `@effect/sql-pg` sends).
 */
const listenedChannel = (message: Uint8Array): string | undefined => {
  const type = message[0]
  let start: number
  if (type === QUERY) start = 5
  else if (type === PARSE) {
    const name = message.indexOf(0, 5)
    if (name < 0) return undefined
    start = name + 1
  } else return undefined
  while (start < message.length && isSpace(message[start] ?? 0)) start++
  const keyword = "listen"
  for (let k = 0; k < keyword.length; k++) {
    if (((message[start + k] ?? 0) | 0x20) !== keyword.charCodeAt(k)) return undefined
  }
  if (!isSpace(message[start + keyword.length] ?? 0)) return undefined
  const statement = cString(message, start + keyword.length)
  const match = statement === undefined ? null : /^\s+("(?:[^"]|"")+"|[^\s;"]+)\s*;?\s*$/.exec(statement)
  const token = match?.[1]
  return token === undefined ? undefined : identifier(token)
}

type Sink = (data: Uint8Array) => void

/**
 * Follows the backend's output message by message as it streams by, without copying what it passes on:
 * every message goes to `forward` in order, except the ones whose type is in `held`, which are assembled
 * and given to `onHeld` instead (it forwards them itself, or not).
 */
class OutputScanner {
  /** Bytes of the current message seen so far (type byte included). */
  private position = 0
  /** The current message's length field (read big-endian), then its size with the type byte. */
  private length = 0
  private total = 0
  private holding = false
  private held: Uint8Array | undefined
  private readonly header = new Uint8Array(5)
  private broken = false

  constructor(
    private readonly forward: Sink,
    private readonly heldTypes: ReadonlySet<number>,
    private readonly onHeld: (message: Uint8Array) => void
  ) {}

  feed(chunk: Uint8Array): void {
    if (this.broken) return this.forward(chunk)
    // The range of `chunk` to pass on as it is: from its start when it continues a message passed on.
    let passFrom = this.position > 0 && !this.holding ? 0 : -1
    const pass = (to: number) => {
      if (passFrom >= 0 && to > passFrom) this.forward(chunk.subarray(passFrom, to))
      passFrom = -1
    }
    let i = 0
    while (i < chunk.length) {
      if (this.position === 0) {
        this.holding = this.heldTypes.has(chunk[i] ?? 0)
        if (this.holding) pass(i)
        else if (passFrom < 0) passFrom = i
      }
      if (this.position < 5) {
        const byte = chunk[i] ?? 0
        if (this.holding) this.header[this.position] = byte
        if (this.position > 0) this.length = this.length * 256 + byte
        this.position++
        i++
        if (this.position < 5) continue
        if (this.length < 4 || this.length > maxBackendMessage) {
          // Not a PostgreSQL message stream after all: pass everything on, unchanged, from here.
          this.broken = true
          if (this.holding) {
            this.forward(this.header.slice())
            passFrom = i
          } else if (passFrom < 0) passFrom = i
          return pass(chunk.length)
        }
        this.total = 1 + this.length
        if (this.holding) {
          this.held = new Uint8Array(this.total)
          this.held.set(this.header)
        }
      } else {
        const take = Math.min(this.total - this.position, chunk.length - i)
        this.held?.set(chunk.subarray(i, i + take), this.position)
        this.position += take
        i += take
      }
      if (this.position === this.total) {
        const held = this.held
        this.position = 0
        this.length = 0
        this.total = 0
        this.held = undefined
        if (held !== undefined) this.onHeld(held)
      }
    }
    pass(chunk.length)
  }

  /** After the last chunk: a held message cut short (never expected) is passed on as it is. */
  end(): void {
    if (this.holding && this.position > 0) {
      this.forward(this.held === undefined ? this.header.slice(0, this.position) : this.held.subarray(0, this.position))
    }
    this.position = 0
    this.held = undefined
  }
}

const heldTypes: ReadonlySet<number> = new Set([NOTIFICATION, COMMAND_COMPLETE, READY_FOR_QUERY])
const notificationsOnly: ReadonlySet<number> = new Set([NOTIFICATION])

/**
 * PGlite as `PGLiteSocketServer` needs it for several pooled connections. The server runs every frontend
 * message of every connection through `execProtocolRawStream` (with a callback writing to that connection's
 * socket) and, while `isInTransaction()` is true, only takes messages of the connection that sent the last
 * one. This subclass:
 *
 * * reports `isInTransaction()` also while an extended-query cycle is open (from its first message until
 *   the backend's `ReadyForQuery`), so two connections' `Parse`/`Bind`/`Execute` messages never interleave
 *   (they would share the unnamed statement and portal of the single backend), as the server does for
 *   transactions;
 * * takes `NotificationResponse` messages out of the output and writes them to the connections that sent a
 *   `LISTEN` for their channel (PGlite puts them in the output of the committing statement), and listens
 *   again after an `UNLISTEN`, since one connection's `UNLISTEN` would stop the shared backend listening
 *   for all of them.
 *
 * Limits: the callbacks of connections that `LISTEN`ed are kept after they close (writing to a closed
 * socket is a no-op); a connection that sends `LISTEN` on a channel again with a new `Parse` while still
 * listening receives its notifications twice (`@effect/sql-pg` sends one `LISTEN` per channel and
 * connection, and reuses its prepared statement).
 */
class MultiplexedPGlite extends PGlite {
  /** An extended-query cycle (or a COPY) is open: the backend has not sent `ReadyForQuery` since. */
  private cycleOpen = false
  private relistenPending = false
  private readonly listeners = new Map<string, Set<Sink>>()

  override isInTransaction(): boolean {
    return this.cycleOpen === true || super.isInTransaction()
  }

  override async execProtocolRawStream(message: Uint8Array, options: ExecProtocolOptionsStream): Promise<void> {
    const type = message[0] ?? 0
    const channel = listenedChannel(message)
    if (channel !== undefined) this.addListener(channel, options.onRawData)
    let ready = false
    const forward = options.onRawData
    const scanner = new OutputScanner(forward, heldTypes, (held) => {
      const heldType = held[0]
      if (heldType === NOTIFICATION) return this.route(held)
      if (heldType === READY_FOR_QUERY) ready = true
      else if (heldType === COMMAND_COMPLETE && cString(held, 5) === "UNLISTEN") this.relistenPending = true
      forward(held)
    })
    await super.execProtocolRawStream(message, { ...options, onRawData: (chunk) => scanner.feed(chunk) })
    scanner.end()
    // A startup packet (type byte 0) and `Terminate` (no output) leave the state as it was.
    if (ready) this.cycleOpen = false
    else if (type !== 0 && type !== TERMINATE) this.cycleOpen = true
    if (ready && this.relistenPending) await this.relisten()
  }

  private addListener(channel: string, sink: Sink): void {
    const sinks = this.listeners.get(channel)
    if (sinks === undefined) this.listeners.set(channel, new Set([sink]))
    else sinks.add(sink)
  }

  /** Writes a `NotificationResponse` to every connection listening on its channel. */
  private route(notification: Uint8Array): void {
    const channel = cString(notification, 9)
    const sinks = channel === undefined ? undefined : this.listeners.get(channel)
    if (sinks === undefined) return
    for (const sink of sinks) {
      try {
        sink(notification)
      } catch {
        // a connection that cannot take it is going away; the others still get it
      }
    }
  }

  /** Runs protocol messages of this module's own; their output is dropped, except notifications. */
  private internal(message: Uint8Array): Promise<void> {
    const scanner = new OutputScanner(() => {}, notificationsOnly, (held) => this.route(held))
    return super.execProtocolRawStream(message, { onRawData: (chunk) => scanner.feed(chunk) }).then(() => scanner.end())
  }

  private relisten(): Promise<void> {
    this.relistenPending = false
    const channels = Array.from(this.listeners.keys(), (channel) => `LISTEN "${channel.replaceAll("\"", "\"\"")}"`)
    return channels.length === 0 ? Promise.resolve() : this.internal(simpleQuery(channels.join("; ")))
  }
}

const validPoolSize = (maxConnections: number | undefined, minimum: number) => {
  const size = maxConnections ?? defaultMaxConnections
  return Number.isSafeInteger(size) && size >= minimum
    ? Effect.succeed(size)
    : Effect.fail(
      new EmbeddedPostgresError({ detail: `maxConnections must be an integer of at least ${minimum}, got ${size}` })
    )
}

const make = (options: Options | undefined, minimumPool: number) =>
  Effect.gen(function*() {
    const maxConnections = yield* validPoolSize(options?.maxConnections, minimumPool)
    const dataDir = options?.dataDir
    const where = dataDir === undefined ? "in memory" : `in ${dataDir}`
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const db = new MultiplexedPGlite(dataDir)
          await db.waitReady
          return db
        },
        catch: (cause) => new EmbeddedPostgresError({ detail: `PGlite could not open a database ${where}`, cause })
      }),
      (db) =>
        Effect.tryPromise(() => db.close()).pipe(
          Effect.catch((error) => Effect.logWarning(`entity-sync: closing the embedded database failed: ${error}`))
        )
    )
    const serverConnections = maxConnections + spareServerConnections
    const server = new PGLiteSocketServer({ db, host, port: 0, maxConnections: serverConnections })
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => server.start(),
        catch: (cause) => new EmbeddedPostgresError({ detail: `could not listen on ${host}`, cause })
      }),
      () =>
        Effect.tryPromise(() => server.stop()).pipe(
          Effect.catch((error) => Effect.logWarning(`entity-sync: stopping the embedded database failed: ${error}`))
        )
    )
    const address = server.getServerConn()
    const port = Number(address.slice(address.lastIndexOf(":") + 1))
    if (!(Number.isSafeInteger(port) && port > 0)) {
      return yield* new EmbeddedPostgresError({ detail: `unexpected server address ${address}` })
    }
    return EmbeddedPostgres.of({
      url: Redacted.make(`postgres://postgres@${host}:${port}/postgres`),
      host,
      port,
      dataDir,
      maxConnections,
      serverConnections
    })
  })

/** The database, its socket server and a `PgClient` on it, for a pool of at least `minimumPool`. */
const embedded = (
  options: Options | undefined,
  minimumPool: number
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | EmbeddedPostgres, EmbeddedPostgresError | SqlError.SqlError> =>
  Layer.unwrap(
    Effect.gen(function*() {
      const database = yield* EmbeddedPostgres
      return PgClient.layer({
        url: database.url,
        maxConnections: database.maxConnections,
        // Never close idle connections: their prepared statements would stay behind in the shared session.
        idleTimeout: Duration.infinity
      })
    })
  ).pipe(Layer.provideMerge(Layer.effect(EmbeddedPostgres, make(options, minimumPool))))

/**
 * An embedded PostgreSQL and a `PgClient` (also provided as `SqlClient`) connected to it. Building the layer
 * starts PGlite (in memory, where initialising takes a few seconds, or in `options.dataDir`, reopened with
 * its data) and serves it on a free loopback port; releasing it closes the pool, stops the server and closes
 * PGlite. `EmbeddedPostgres` tells where it listens.
 *
 * Limits — for demos, examples and tests, not for production:
 *
 * * Single process. The database lives in this process and is reachable on 127.0.0.1 only, while the
 *   layer is alive. One layer per `dataDir` at a time: two PGlite instances on one directory corrupt it.
 * * One backend, on the main thread. PGlite is a single PostgreSQL session; the socket server multiplexes
 *   every connection onto it, one protocol message at a time, on this process's event loop (a long
 *   statement stalls every fiber meanwhile). Statements never run in parallel, so it does not scale with
 *   connections or cores.
 * * **An open transaction holds every other connection** until it commits or rolls back, not only the rows
 *   it locked: a fiber that keeps a transaction open while it waits for a statement on another connection
 *   deadlocks. `FOR UPDATE SKIP LOCKED` works, but as transactions never overlap there is never a locked
 *   row to skip.
 * * Session state is shared by all connections: `SET`, temporary tables, advisory locks (they do not
 *   exclude each other), prepared statements. Cancel requests are ignored (a statement runs to its end);
 *   `pg_stat_activity` and `pg_terminate_backend` show and end nothing.
 * * Connections: the pool opens at most `maxConnections` (default 10); the socket server accepts
 *   `maxConnections + 8` (room for cancel requests, a reconnect while the old connection closes, or a
 *   `psql`) and refuses more. Pooled connections are not closed when idle: a connection's prepared
 *   statements outlive it in the shared session, so the pool does not churn.
 *
 * `LISTEN`/`NOTIFY` across connections and extended-query cycles that never interleave are added to what
 * the socket server does on its own (see `MultiplexedPGlite`).
 */
export const layer = (
  options?: Options
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | EmbeddedPostgres, EmbeddedPostgresError | SqlError.SqlError> =>
  embedded(options, 1)

/**
 * All the library's PostgreSQL stores (`PostgresSync.layer`: migrations applied, then `Outbox | Inbox |
 * CopyRepository | SourceRepository | Transactor`) on an embedded database (`layer`), which is also
 * provided (`PgClient`, `SqlClient`, `EmbeddedPostgres`) for the application's own tables: what a demo
 * service uses when no `DATABASE_URL` is set. `prefix`, `leaseMillis`, `ownerTables` and `migrations` are as
 * in `PostgresSync.layer`;
 * `maxConnections` must be at least 2 (the outbox holds one connection for `LISTEN`).
 * Its limits are those of `layer`.
 */
export const layerSync = (
  options?: SyncOptions
): Layer.Layer<
  PostgresSync.Stores | PgClient.PgClient | SqlClient.SqlClient | EmbeddedPostgres,
  EmbeddedPostgresError | PostgresSync.LayerError
> =>
  PostgresSync.layer({
    ...(options?.prefix === undefined ? {} : { prefix: options.prefix }),
    ...(options?.leaseMillis === undefined ? {} : { leaseMillis: options.leaseMillis }),
    ...(options?.ownerTables === undefined ? {} : { ownerTables: options.ownerTables }),
    ...(options?.migrations === undefined ? {} : { migrations: options.migrations })
  }).pipe(
    Layer.provideMerge(
      embedded({
        ...(options?.dataDir === undefined ? {} : { dataDir: options.dataDir }),
        ...(options?.maxConnections === undefined ? {} : { maxConnections: options.maxConnections })
      }, 2)
    )
  )
