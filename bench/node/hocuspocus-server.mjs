// Hocuspocus peer for the benchmarks: @hocuspocus/server with @hocuspocus/extension-sqlite,
// stock settings (debounce 2 s, maxDebounce 10 s). Usage:
//   node hocuspocus-server.mjs --port P --db FILE
import { Server } from '@hocuspocus/server'
import { SQLite } from '@hocuspocus/extension-sqlite'

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), [])
)
const port = Number(args.port || 1234)
const host = args.host || '127.0.0.1'
const database = args.db || 'hocuspocus.sqlite'

const server = new Server({
  port,
  address: host,
  quiet: true,
  stopOnSignals: true, // SIGINT/SIGTERM: flush pending stores, then exit
  extensions: [new SQLite({ database })]
})

await server.listen()
console.log(`listening on http://${host}:${port}`)
