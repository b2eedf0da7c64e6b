// N y-websocket providers (y-websocket's own WebsocketProvider, each with a presence
// state, as a page sets one) joining ONE document at once, for bench/presence_join.py.
// Usage: node join_one_room.mjs --url ws://127.0.0.1:P/ws --doc D --n 500 [--timeout 90]
//        [--presence after-sync|at-open]
// --presence after-sync (the default): each provider sets its user field once it has
// synced, as a page does once it knows who is here (its first presence sent is then the
// clock-0 {} every Awareness starts with); at-open: set before the socket opens.
// Prints one JSON line: how many synced, when the last one did (ms after the first
// opened), how many see every provider's presence and when the last one did (ms),
// the sockets the server closed (by close code), the awareness updates the providers
// applied, the awareness frames they received (and the entries in them) and sent. It
// waits for both (or --timeout seconds).
import * as Y from 'yjs'
import { WebSocket } from 'ws'
import * as decoding from 'lib0/decoding'
import { WebsocketProvider } from 'y-websocket'

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), [])
)
globalThis.WebSocket ??= WebSocket
process.setMaxListeners(0)
const n = Number(args.n || 100)
const timeoutMs = Number(args.timeout || 90) * 1000
const providers = []
const closes = {}
let synced = 0
let lastSynced = 0
let awarenessFrames = 0
let framesIn = 0
let entriesIn = 0
let framesOut = 0
// counts the presence frames a provider receives (and the entries in them) and sends
class Counting extends WebSocket {
  constructor (...a) {
    super(...a)
    this.addEventListener('message', e => {
      const d = decoding.createDecoder(new Uint8Array(e.data))
      if (decoding.readVarUint(d) !== 1) return
      framesIn++
      entriesIn += decoding.readVarUint(decoding.createDecoder(decoding.readVarUint8Array(d)))
    })
  }

  send (data, ...rest) {
    if (data[0] === 1) framesOut++
    return super.send(data, ...rest)
  }
}
let complete = 0
let lastComplete = 0
const t0 = performance.now()

const allDone = new Promise(resolve => {
  const check = () => { if (synced === n && complete === n) resolve() }
  for (let i = 0; i < n; i++) {
    const provider = new WebsocketProvider(args.url, args.doc, new Y.Doc(), {
      WebSocketPolyfill: Counting,
      disableBc: true
    })
    const user = { name: `user ${i}`, color: '#888888' }
    if (args.presence === 'at-open') provider.awareness.setLocalStateField('user', user)
    let done = false
    provider.on('sync', s => {
      if (s && !done) {
        done = true
        if (args.presence !== 'at-open') provider.awareness.setLocalStateField('user', user)
        synced++
        lastSynced = performance.now() - t0
        check()
      }
    })
    let sees = false
    provider.awareness.on('change', () => {
      if (!sees && provider.awareness.getStates().size >= n) {
        sees = true
        complete++
        lastComplete = performance.now() - t0
        check()
      }
    })
    provider.on('connection-close', e => {
      const code = e?.code ?? 'none'
      closes[code] = (closes[code] || 0) + 1
    })
    provider.awareness.on('update', () => { awarenessFrames++ })
    providers.push(provider)
  }
})
await Promise.race([allDone, new Promise(resolve => setTimeout(resolve, timeoutMs))])
console.log(JSON.stringify({
  n,
  synced,
  ms: synced === n ? Math.round(lastSynced) : null,
  see_all: complete,
  see_all_ms: complete === n ? Math.round(lastComplete) : null,
  closes,
  awareness_updates: awarenessFrames,
  awareness_frames_in: framesIn,
  awareness_entries_in: entriesIn,
  awareness_frames_out: framesOut
}))
for (const p of providers) p.destroy()
setTimeout(() => process.exit(0), 200)
