// Reference y-websocket server (@y/websocket-server 0.1.1) for the benchmarks, with its own
// setupWSConnection and, when --persist DIR is given, its own LevelDB persistence
// (exactly what YPERSISTENCE=DIR does in its bin/server.js). The only addition is a
// measurement counter: GET /durable/<doc> answers how many updates of <doc> LevelDB has
// acknowledged (level writes are not fsynced: "durable" here means handed to the OS).
//
// --fsync-log FILE makes it the floor of a durable-first server: every sync update (and
// non-empty sync step 2) a client sends is written to FILE and fdatasync'd before y-websocket handles it (applies
// it, broadcasts it), the messages read in one turn of the event loop sharing one sync
// (a group commit). Nothing else: no index, no rows, no snapshots; the file is laid down
// (zeros) at start so that a commit overwrites blocks the file already has, the cheapest
// sync this disk does; read back at start. What Palimpsest's SQLite store does at the
// least, in Node.js.
// GET /durable/<doc> then answers how many of <doc>'s updates (not steps 2) were synced.
// --warm-ms P keeps the disk warm between syncs as Palimpsest's store does (below).
// Usage: node y-websocket-server.mjs --port P [--persist DIR | --fsync-log FILE [--warm-ms P]]
import fs from 'node:fs'
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

// the durable-first floor (--fsync-log). The file holds records [u32 name length, name,
// u32 update length, update] (little-endian), then zeros; read back at start, so that a
// restart keeps every synced update (the cold load). Messages wait in `pending` as
// [message, its handler, its doc] until the sync of their turn.
const LOG_RESERVE = 64 * 1024 * 1024
let log = null
if (args['fsync-log']) {
  const file = args['fsync-log']
  const Y = await import('yjs')
  const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+')
  const have = fs.readFileSync(file)
  let offset = 0
  while (offset + 4 <= have.length) { // the records written before a restart
    const nameLength = have.readUInt32LE(offset)
    if (nameLength === 0 || offset + 8 + nameLength > have.length) break
    const name = have.toString('utf8', offset + 4, offset + 4 + nameLength)
    const length = have.readUInt32LE(offset + 4 + nameLength)
    const at = offset + 8 + nameLength
    if (length === 0 || at + length > have.length) break
    Y.applyUpdate(utils.getYDoc(name), have.subarray(at, at + length))
    offset = at + length
  }
  const zeros = Buffer.alloc(1024 * 1024)
  for (let at = offset; at < offset + LOG_RESERVE; at += zeros.length) fs.writeSync(fd, zeros, 0, zeros.length, at)
  fs.fsyncSync(fd)
  log = { fd, offset, pending: [], scheduled: false, last: 0 }
  // --warm-ms P: keep the disk's I/O path warm as Palimpsest's SQLite store does
  // (server/store/disk_warm.py): an fdatasync of the (clean) file every P ms in which no
  // sync came along, for one second after the last one; on libuv's thread pool, so that
  // the event loop goes on meanwhile
  const period = Number(args['warm-ms'] || 0)
  if (period > 0) {
    const warmFd = fs.openSync(file, 'r')
    let warming = false
    setInterval(() => {
      const idle = Date.now() - log.last
      if (warming || idle < period || idle > 1000) return
      warming = true
      fs.fdatasync(warmFd, () => { warming = false })
    }, period).unref()
  }
}
// a sync update message: [0 (sync), 2 (update), varuint length, update]; a sync step 2
// (what a client holds that the server lacks, on connecting) has the same layout with 1,
// and is logged too unless it is empty (an update of no structs and no deletions, [0, 0])
const isUpdate = m => m.length > 1 && m[0] === 0 && m[1] === 2
const isLogged = m => m.length > 2 && m[0] === 0 && (m[1] === 2 || (m[1] === 1 && !isEmpty(updateOf(m))))
const isEmpty = u => u.length === 2 && u[0] === 0 && u[1] === 0
const updateOf = m => {
  let at = 2; let length = 0; let shift = 0
  while (true) { const b = m[at++]; length += (b & 0x7f) * 2 ** shift; shift += 7; if (b < 0x80) break }
  return m.subarray(at, at + length)
}
const record = (doc, update) => {
  const name = Buffer.from(doc, 'utf8')
  const head = Buffer.alloc(4); head.writeUInt32LE(name.length)
  const size = Buffer.alloc(4); size.writeUInt32LE(update.length)
  return [head, name, size, update]
}
const flush = () => {
  log.scheduled = false
  const batch = log.pending
  log.pending = []
  const parts = []
  for (const [m, , doc] of batch) if (isLogged(m)) parts.push(...record(doc, updateOf(m)))
  if (parts.length > 0) {
    const body = Buffer.concat(parts)
    fs.writeSync(log.fd, body, 0, body.length, log.offset)
    log.offset += body.length
    fs.fdatasyncSync(log.fd)
    log.last = Date.now()
    for (const [m, , doc] of batch) if (isUpdate(m)) stored.set(doc, (stored.get(doc) || 0) + 1)
  }
  for (const [, handler] of batch) handler()
}
const logFirst = (conn, doc) => {
  const on = conn.on.bind(conn)
  conn.on = (event, handler) => on(event, event !== 'message'
    ? handler
    : message => {
      const m = new Uint8Array(message)
      // anything after an update waits for it, so that the order of messages holds
      if (!isLogged(m) && log.pending.length === 0) return handler(message)
      log.pending.push([m, () => handler(message), doc])
      if (!log.scheduled) { log.scheduled = true; setImmediate(flush) }
    })
}

const wss = new WebSocketServer({ noServer: true })
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/durable/')) {
    const doc = decodeURIComponent(req.url.slice('/durable/'.length))
    res.writeHead(200, { 'Content-Type': 'application/json' })
    res.end(JSON.stringify({ stored: stored.get(doc) || 0, persistent: persistence !== null || log !== null }))
    return
  }
  res.writeHead(200, { 'Content-Type': 'text/plain' })
  res.end('okay')
})
wss.on('connection', (conn, req) => {
  if (log !== null) logFirst(conn, (req.url || '').slice(1).split('?')[0])
  setupWSConnection(conn, req)
})
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
