// Reference y-websocket server (@y/websocket-server 0.1.1) for the benchmarks, with its own
// setupWSConnection and, when --persist DIR is given, its own LevelDB persistence
// (exactly what YPERSISTENCE=DIR does in its bin/server.js). The only addition is a
// measurement counter: GET /durable/<doc> answers how many updates of <doc> LevelDB has
// acknowledged (level writes are not fsynced: "durable" here means handed to the OS).
// Usage: node y-websocket-server.mjs --port P [--persist DIR]
import http from 'node:http'

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), [])
)
const port = Number(args.port || 1234)
const host = args.host || '127.0.0.1'
if (args.persist) process.env.YPERSISTENCE = args.persist // read by utils.js at import time

const { WebSocketServer } = await import('ws')
const utils = await import('@y/websocket-server/utils')
const { setupWSConnection } = utils

const stored = new Map() // doc -> updates acknowledged by LevelDB
const persistence = utils.getPersistence()
if (persistence !== null) {
  const ldb = persistence.provider
  const storeUpdate = ldb.storeUpdate.bind(ldb)
  ldb.storeUpdate = (docName, update) => {
    const p = storeUpdate(docName, update)
    p.then(() => stored.set(docName, (stored.get(docName) || 0) + 1))
    return p
  }
}

const wss = new WebSocketServer({ noServer: true })
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/durable/')) {
    const doc = decodeURIComponent(req.url.slice('/durable/'.length))
    res.writeHead(200, { 'Content-Type': 'application/json' })
    res.end(JSON.stringify({ stored: stored.get(doc) || 0, persistent: persistence !== null }))
    return
  }
  res.writeHead(200, { 'Content-Type': 'text/plain' })
  res.end('okay')
})
wss.on('connection', setupWSConnection)
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, ws => wss.emit('connection', ws, request))
})
const stop = async () => {
  server.close()
  if (persistence !== null) {
    try { await persistence.provider.destroy() } catch {}
  }
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
server.listen(port, host, () => console.log(`listening on http://${host}:${port}`))
