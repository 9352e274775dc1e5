// Run by plain `node` once the optional peers are installed too: every entry point loads and names its
// modules; the package's internals are not reachable.
const entries = [
  "entity-sync",
  "entity-sync/postgres",
  "entity-sync/amqp",
  "entity-sync/embedded",
  "entity-sync/memory"
]
const modules = {}
for (const entry of entries) {
  modules[entry] = Object.keys(await import(entry)).sort()
}
const internal = await import("entity-sync/dist/Relay.js").then(() => "reachable", (error) => error.code)
console.log(JSON.stringify({ modules, internal }))
