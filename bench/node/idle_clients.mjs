// Idle y-websocket clients for bench/conn_memory.py: N WebsocketProviders (y-websocket's
// own, over `ws`, as a Node.js app or a test would open them), each with a small presence
// state, that connect, sync and then sit there.
// Usage: node idle_clients.mjs --url ws://127.0.0.1:P/ws --docs doc-a,doc-b,… [--batch 25]
// One document name per connection (repeat a name for several connections to one room).
// Prints "synced N" once every provider has synced, then "extensions E" (the
// Sec-WebSocket-Extensions the server answered on the first socket, "-" for none), then
// waits; on a line "close" (or stdin closing) destroys every provider and exits.
import readline from 'node:readline'
import * as Y from 'yjs'
import { WebSocket } from 'ws'
import { WebsocketProvider } from 'y-websocket'

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), [])
)
globalThis.WebSocket ??= WebSocket // (y-websocket's resync timer reads the global)
process.setMaxListeners(0) // (y-websocket adds an exit listener per provider)
const docs = args.docs.split(',')
const batch = Number(args.batch || 25)
const providers = []

const open = (docName, i) => new Promise((resolve, reject) => {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(args.url, docName, ydoc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    // without presence nothing would reach a client for 30 s, after which y-websocket's
    // provider closes the socket and reconnects: a re-sync every 10 s keeps it idle
    resyncInterval: args.awareness === 'off' ? 10000 : -1
  })
  if (args.awareness !== 'off') provider.awareness.setLocalStateField('user', { name: `idle ${i}`, color: '#888888' })
  else provider.awareness.setLocalState(null)
  const timer = setTimeout(() => reject(new Error(`connection ${i} to ${docName} did not sync in 300 s`)), 300000)
  provider.on('sync', synced => { if (synced) { clearTimeout(timer); resolve() } })
  providers.push(provider)
})

for (let i = 0; i < docs.length; i += batch) {
  await Promise.all(docs.slice(i, i + batch).map((d, j) => open(d, i + j)))
  if (args.verbose) console.error(`${i + batch} synced at ${Math.round(performance.now())} ms`)
}
console.log(`synced ${providers.length}`)
const first = providers[0]?.ws
console.log(`extensions ${first?.extensions || '-'}`)

const done = () => {
  for (const p of providers) p.destroy()
  setTimeout(() => process.exit(0), 200)
}
const rl = readline.createInterface({ input: process.stdin })
rl.on('line', line => { if (line.trim() === 'close') done() })
rl.on('close', done)
