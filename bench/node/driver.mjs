// Load driver for Palimpsest's benchmarks. Every server is driven by the same code: real
// Yjs documents synced by the real providers (y-websocket's WebsocketProvider, or
// @hocuspocus/provider for Hocuspocus, whose wire protocol differs).
//
//   node driver.mjs '<json spec>'
//
// spec: {scenario, server: {kind: "y-websocket"|"hocuspocus", url, durable: {...}}, ...}
// Progress goes to stderr as "progress DONE TOTAL" lines; the result is one JSON line on
// stdout (the last line). Scenarios: ingest, fanout, load, concurrent, connections.
import fs from 'node:fs'
import zlib from 'node:zlib'
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import readline from 'node:readline'
import * as Y from 'yjs'
import { WebSocket } from 'ws'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider } from '@hocuspocus/provider'

const now = () => performance.now()
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const tick = () => new Promise(resolve => setImmediate(resolve))
const progress = (done, total) => process.stderr.write(`progress ${done} ${total}\n`)
const log = msg => process.stderr.write(`log ${msg}\n`)

// ---------------------------------------------------------------- traces

export function loadTrace (file, limit = 0) {
  const data = JSON.parse(zlib.gunzipSync(fs.readFileSync(file)).toString('utf8'))
  const patches = []
  for (const txn of data.txns) {
    for (const p of txn.patches) patches.push(p)
    if (limit && patches.length >= limit) break
  }
  if (limit && patches.length > limit) patches.length = limit
  let expected = data.endContent
  if (limit && limit < countPatches(data)) expected = applyPatches(data.startContent || '', patches)
  return { patches, expected }
}

function countPatches (data) {
  let n = 0
  for (const txn of data.txns) n += txn.patches.length
  return n
}

function applyPatches (content, patches) {
  // positions are code points; the traces have no characters above U+FFFF, so UTF-16
  // indices are the same (and so are Y.Text's indices)
  const parts = [content]
  let s = content
  for (const [pos, del, ins] of patches) s = s.slice(0, pos) + ins + s.slice(pos + del)
  return s
}

// A file of Yjs updates, each prefixed by its length (uint32, little-endian): another
// writer's exact updates (bench/storage_bench.py sends the ones its own bench sends), and
// the text they end with. Returns {updates, expected, writerId} (the updates' one client).
export function loadUpdates (file, expectedFile) {
  const buf = fs.readFileSync(file)
  const updates = []
  for (let at = 0; at < buf.length;) {
    if (at + 4 > buf.length) throw new Error(`${file}: truncated length at byte ${at}`)
    const n = buf.readUInt32LE(at)
    if (at + 4 + n > buf.length) throw new Error(`${file}: truncated update at byte ${at}`)
    updates.push(new Uint8Array(buf.buffer, buf.byteOffset + at + 4, n))
    at += 4 + n
  }
  const clients = new Set()
  for (const u of updates) {
    for (const id of Y.decodeStateVector(Y.encodeStateVectorFromUpdate(u)).keys()) clients.add(id)
    if (clients.size) break
  }
  if (clients.size !== 1) throw new Error(`${file}: the updates are not one writer's (${clients.size} clients)`)
  return { updates, expected: fs.readFileSync(expectedFile, 'utf8'), writerId: [...clients][0] }
}

// ---------------------------------------------------------------- clients

function makeClient (server, docName, { user = 'bench', awareness = true } = {}) {
  const ydoc = new Y.Doc()
  const client = { ydoc, docName, synced: false }
  let resolveSynced
  client.whenSynced = new Promise(resolve => { resolveSynced = resolve })
  if (server.kind === 'hocuspocus') {
    const provider = new HocuspocusProvider({
      url: server.url,
      name: docName,
      document: ydoc,
      WebSocketPolyfill: WebSocket,
      token: 'bench',
      onSynced: () => { client.synced = true; resolveSynced() }
    })
    if (!awareness) provider.awareness?.setLocalState(null)
    client.provider = provider
    client.socket = () => provider.configuration.websocketProvider?.webSocket
    client.destroy = () => { provider.destroy(); try { provider.configuration.websocketProvider?.destroy() } catch {} }
  } else {
    const provider = new WebsocketProvider(server.url, docName, ydoc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      params: { user },
      resyncInterval: -1
    })
    if (!awareness) provider.awareness.setLocalState(null)
    provider.on('sync', isSynced => { if (isSynced) { client.synced = true; resolveSynced() } })
    client.provider = provider
    client.socket = () => provider.ws
    client.destroy = () => provider.destroy()
  }
  return client
}

async function withTimeout (promise, ms, what) {
  let timer
  const t = new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timeout: ${what} after ${ms} ms`)), ms) })
  try { return await Promise.race([promise, t]) } finally { clearTimeout(timer) }
}

// Resolves when doc holds `clock` items of client `id`.
function waitForClock (doc, id, clock, onProgress) {
  return new Promise(resolve => {
    const check = () => {
      const c = Y.getState(doc.store, id)
      if (onProgress) onProgress(c)
      if (c >= clock) { doc.off('update', check); resolve(now()); return true }
      return false
    }
    if (!check()) doc.on('update', check)
  })
}

// Resolves (with the time) when cond() holds, checked after each update of doc.
function waitFor (doc, cond) {
  return new Promise(resolve => {
    const check = () => {
      if (cond()) { doc.off('update', check); resolve(now()); return true }
      return false
    }
    if (!check()) doc.on('update', check)
  })
}

// ---------------------------------------------------------------- durability probes

function httpJson (url) {
  return new Promise((resolve, reject) => {
    http.get(url, res => {
      let body = ''
      res.on('data', c => { body += c })
      res.on('end', () => { try { resolve(JSON.parse(body)) } catch (e) { reject(e) } })
    }).on('error', reject)
  })
}

let BetterSqlite3 = null
let durableProgress = null // {stored, at}: the last count a probe saw, for a store that did not catch up
async function openSqlite (file) {
  if (!BetterSqlite3) BetterSqlite3 = (await import('better-sqlite3')).default
  return new BetterSqlite3(file, { readonly: true, fileMustExist: true, timeout: 2000 })
}

// Waits until the server's own storage holds the writer's whole history. Returns the time
// (performance.now()) it was seen, or null for servers without persistence.
async function waitDurable (durable, docName, writerId, clock, updates, expectedLength, deadline) {
  const kind = durable?.kind || 'none'
  if (kind === 'none') return null
  if (kind === 'broadcast') return 'broadcast' // durable before broadcast: observer time
  while (now() < deadline) {
    try {
      if (kind === 'hocuspocus-sqlite') {
        const db = await openSqlite(durable.file)
        try {
          const row = db.prepare('SELECT data FROM documents WHERE name = ?').get(docName)
          if (row) {
            const data = new Uint8Array(row.data)
            const sv = Y.decodeStateVector(Y.encodeStateVectorFromUpdate(data))
            if ((sv.get(writerId) || 0) >= clock) {
              const d = new Y.Doc()
              Y.applyUpdate(d, data)
              if (d.getText('content').length === expectedLength) return now()
            }
          }
        } finally { db.close() }
      } else if (kind === 'pycrdt-sqlite') {
        const db = await openSqlite(durable.file)
        try {
          const row = db.prepare('SELECT count(*) AS n FROM yupdates WHERE path = ?').get('/' + docName)
          if (row) durableProgress = { stored: row.n, at: now() }
          if (row && row.n >= updates) return now()
        } finally { db.close() }
      } else if (kind === 'http-count') {
        const r = await httpJson(`${durable.url}/${encodeURIComponent(docName)}`)
        durableProgress = { stored: r.stored - (durable.extra || 0), at: now() }
        if (r.stored >= updates + (durable.extra || 0)) return now()
      }
    } catch (e) {
      // busy database, not created yet: try again
    }
    await sleep(50)
  }
  return NaN
}

// ---------------------------------------------------------------- scenarios

// One writer sends the trace, one patch per transaction; or, with spec.updatesFile (and
// spec.expectedFile), it applies those updates one by one, each sent as the provider sends
// any change of its document (patches below then means those updates).
async function ingest (spec) {
  const given = spec.updatesFile ? loadUpdates(spec.updatesFile, spec.expectedFile) : null
  const { patches, expected } = given ? { patches: given.updates, expected: given.expected } : loadTrace(spec.trace, spec.limit || 0)
  const docName = spec.doc
  const writer = makeClient(spec.server, docName, { user: 'writer', awareness: false })
  const observer = makeClient(spec.server, docName, { user: 'observer', awareness: false })
  await withTimeout(Promise.all([writer.whenSynced, observer.whenSynced]), 30000, 'initial sync')
  const ytext = writer.ydoc.getText('content')
  const otext = observer.ydoc.getText('content')
  const writerId = given ? given.writerId : writer.ydoc.clientID
  let updates = 0
  let updateBytes = 0 // what the writer's provider sent: Yjs re-encodes a given update
  writer.ydoc.on('update', u => { updates++; updateBytes += u.length })
  const clocks = new Uint32Array(patches.length) // writer clock after patch i
  const window = spec.window || 2000
  const deadline = now() + (spec.timeoutSec || 300) * 1000
  let observed = 0 // observer's clock of the writer
  const timeline = [] // [seconds, patches observed]
  const clockToPatches = c => { // patches fully observed given clock c
    let lo = 0; let hi = patches.length
    while (lo < hi) { const mid = (lo + hi) >> 1; if (clocks[mid] <= c && clocks[mid] > 0) lo = mid + 1; else hi = mid }
    return lo
  }
  observer.ydoc.on('update', () => { observed = Y.getState(observer.ydoc.store, writerId) })
  const t0 = now()
  let sent = 0
  let timedOut = false
  const sampler = setInterval(() => {
    const done = clockToPatches(observed)
    timeline.push([(now() - t0) / 1000, done])
    progress(done, patches.length)
  }, 100)
  for (let i = 0; i < patches.length; i++) {
    if (given) {
      Y.applyUpdate(writer.ydoc, patches[i]) // origin null: the provider sends it
    } else {
      const [pos, del, ins] = patches[i]
      writer.ydoc.transact(() => {
        if (del > 0) ytext.delete(pos, del)
        if (ins.length > 0) ytext.insert(pos, ins)
      })
    }
    clocks[i] = Y.getState(writer.ydoc.store, writerId) || 1
    sent = i + 1
    if ((i & 63) === 63) {
      await tick()
      // closed loop: stay at most `window` patches ahead of the observer
      while (i - clockToPatches(observed) > window) {
        if (now() > deadline) { timedOut = true; break }
        await sleep(1)
      }
      if (timedOut) break
    }
  }
  const tSent = now()
  const finalClock = Y.getState(writer.ydoc.store, writerId)
  let tObs = NaN
  if (!timedOut) {
    try {
      // the clock covers inserts; deletes do not advance it, so also wait for the length
      tObs = await withTimeout(waitFor(observer.ydoc, () =>
        Y.getState(observer.ydoc.store, writerId) >= finalClock && otext.length === expected.length
      ), Math.max(1, deadline - now()), 'observer')
    } catch (e) { timedOut = true }
  }
  clearInterval(sampler)
  const doneObserved = clockToPatches(Y.getState(observer.ydoc.store, writerId))
  timeline.push([(now() - t0) / 1000, doneObserved])
  let tDur = null
  if (!timedOut) {
    tDur = await waitDurable(spec.server.durable, docName, writerId, finalClock, updates, expected.length, now() + (spec.durableTimeoutSec || 60) * 1000)
    if (tDur === 'broadcast') tDur = tObs
  }
  // sanity check for servers that claim durable-before-broadcast: how many events does the
  // log hold right when the observer has everything? (read-only, WAL: no interference)
  let loggedAtObserver = null
  if (spec.server.durable?.verify?.kind === 'palimpsest-sqlite') {
    try {
      const db = await openSqlite(spec.server.durable.verify.file)
      try { loggedAtObserver = db.prepare('SELECT head FROM docs WHERE name = ?').get(docName)?.head ?? null } finally { db.close() }
    } catch (e) { loggedAtObserver = String(e.message || e) }
  }
  const content = otext.toString()
  const correct = !timedOut && content === expected
  writer.destroy(); observer.destroy()
  const secObs = (tObs - t0) / 1000
  const secDur = tDur === null ? null : (tDur - t0) / 1000
  return {
    scenario: 'ingest',
    patches: patches.length,
    sent,
    observedPatches: doneObserved,
    updates,
    updateBytes,
    timedOut,
    correct,
    contentLength: content.length,
    expectedLength: expected.length,
    writerId,
    finalClock,
    loggedAtObserver,
    sendSeconds: (tSent - t0) / 1000,
    observerSeconds: timedOut ? null : secObs,
    durableSeconds: secDur === null || Number.isNaN(secDur) ? null : secDur,
    observerRate: timedOut ? doneObserved / ((now() - t0) / 1000) : patches.length / secObs,
    durableRate: secDur === null || Number.isNaN(secDur) ? null : patches.length / secDur,
    // a store that had not caught up by the cap: how far it got, and how fast
    durableCapped: secDur !== null && Number.isNaN(secDur),
    storedAtCap: durableProgress && Number.isNaN(secDur) ? durableProgress.stored : null,
    storedRateAtCap: durableProgress && Number.isNaN(secDur) ? durableProgress.stored / ((durableProgress.at - t0) / 1000) : null,
    timeline
  }
}

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))
  return sorted[idx]
}

async function fanout (spec) {
  const docName = spec.doc
  const n = spec.observers
  const rate = spec.rate || 50 // edits per second
  const edits = spec.edits || 500
  const writer = makeClient(spec.server, docName, { user: 'writer', awareness: false })
  const observers = []
  for (let i = 0; i < n; i++) observers.push(makeClient(spec.server, docName, { user: `obs${i}`, awareness: false }))
  await withTimeout(Promise.all([writer.whenSynced, ...observers.map(o => o.whenSynced)]), 60000, 'initial sync')
  const ytext = writer.ydoc.getText('content')
  const writerId = writer.ydoc.clientID
  const base = Y.getState(writer.ydoc.store, writerId)
  const sentAt = new Float64Array(edits + 1) // by writer clock (one char per edit)
  const latencies = []
  let received = 0
  const total = edits * n
  for (const o of observers) {
    let seen = Y.getState(o.ydoc.store, writerId)
    o.ydoc.on('update', () => {
      const t = now()
      const c = Y.getState(o.ydoc.store, writerId)
      for (let k = seen + 1; k <= c; k++) {
        const e = k - base
        if (e >= 1 && e <= edits) { latencies.push(t - sentAt[e]); received++ }
      }
      seen = Math.max(seen, c)
    })
  }
  const text = 'The quick brown fox jumps over the lazy dog. '
  const t0 = now()
  const interval = 1000 / rate
  for (let e = 1; e <= edits; e++) {
    const due = t0 + (e - 1) * interval
    let wait = due - now()
    if (wait > 1) await sleep(wait - 0.5)
    while (now() < due) { /* spin the last fraction of a ms */ }
    sentAt[e] = now()
    ytext.insert(ytext.length, text[e % text.length])
    if (e % 25 === 0) progress(e, edits)
  }
  const deadline = now() + (spec.drainSec || 30) * 1000
  while (received < total && now() < deadline) await sleep(5)
  latencies.sort((a, b) => a - b)
  writer.destroy(); for (const o of observers) o.destroy()
  if (spec.samplesFile) fs.writeFileSync(spec.samplesFile, JSON.stringify(latencies.map(x => Math.round(x * 1000) / 1000)))
  return {
    scenario: 'fanout',
    observers: n,
    rate,
    edits,
    expected: total,
    received,
    lost: total - received,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.length ? latencies[latencies.length - 1] : null,
    mean: latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : null
  }
}

async function load (spec) {
  // cold load: a fresh client until it holds the whole final document
  if (spec.trace) {
    const { expected } = loadTrace(spec.trace, spec.limit || 0)
    spec.expected = expected
    spec.expectedLength = expected.length
  }
  const t0 = now()
  const client = makeClient(spec.server, spec.doc, { user: 'loader', awareness: false })
  const text = client.ydoc.getText('content')
  const done = new Promise(resolve => {
    const check = () => {
      if (client.synced && text.length === spec.expectedLength &&
          (!spec.writerId || Y.getState(client.ydoc.store, spec.writerId) >= spec.finalClock)) {
        client.ydoc.off('update', check); resolve(now()); return true
      }
      return false
    }
    client.whenSynced.then(() => { if (!check()) client.ydoc.on('update', check) })
  })
  let t1 = NaN
  let error = null
  try { t1 = await withTimeout(done, (spec.timeoutSec || 120) * 1000, 'cold load') } catch (e) { error = String(e.message || e) }
  const length = text.length
  const correct = spec.expected === undefined ? length === spec.expectedLength : text.toString() === spec.expected
  client.destroy()
  return { scenario: 'load', seconds: error ? null : (t1 - t0) / 1000, length, expectedLength: spec.expectedLength, correct, error }
}

// Precompute the two agents' Yjs updates of a concurrent trace. Each txn's positions are
// relative to the merge of its parents: agent a's document is brought to exactly that
// version (its own earlier txns plus the other agent's txns that the parents include),
// then the patches are applied. Returns per agent: [{update, needOther}] where needOther
// is the other agent's clock that must be present before this update can be applied.
export function compileConcurrent (file, limit = 0) {
  const data = JSON.parse(zlib.gunzipSync(fs.readFileSync(file)).toString('utf8'))
  // txns are in causal order (parents come first), so a prefix is a consistent history
  if (limit && limit < data.txns.length) data.txns = data.txns.slice(0, limit)
  const agents = data.numAgents
  const docs = []; const ids = []
  for (let a = 0; a < agents; a++) {
    const d = new Y.Doc(); d.clientID = 1000 + a; docs.push(d); ids.push(d.clientID)
  }
  // version of each txn: per agent, how many of that agent's txns it includes
  const versions = []
  const agentTxnCount = new Array(agents).fill(0)
  const updatesByAgent = Array.from({ length: agents }, () => [])
  const order = [] // updates in trace order, for the final check
  const clockAfter = Array.from({ length: agents }, () => [0]) // clockAfter[a][k] = clock after a's k-th txn
  const applied = new Array(agents).fill(0).map(() => new Array(agents).fill(0)) // applied[a][b] = txns of b merged into doc a
  for (let i = 0; i < data.txns.length; i++) {
    const txn = data.txns[i]
    const a = txn.agent
    const v = new Array(agents).fill(0)
    for (const p of txn.parents) {
      const pv = versions[p]
      for (let b = 0; b < agents; b++) v[b] = Math.max(v[b], pv[b])
    }
    // bring doc a to version v
    const missing = []
    for (let b = 0; b < agents; b++) {
      if (b === a) continue
      while (applied[a][b] < v[b]) {
        missing.push(updatesByAgent[b][applied[a][b]])
        applied[a][b]++
      }
    }
    missing.sort((x, y) => x.index - y.index) // causal (trace) order: nothing goes pending
    for (const m of missing) Y.applyUpdate(docs[a], m.update)
    const t = docs[a].getText('content')
    let update = null
    const h = u => { update = update ? Y.mergeUpdates([update, u]) : u }
    docs[a].on('update', h)
    docs[a].transact(() => {
      for (const [pos, del, ins] of txn.patches) {
        if (del > 0) t.delete(pos, del)
        if (ins.length > 0) t.insert(pos, ins)
      }
    })
    docs[a].off('update', h)
    const need = {}
    for (let b = 0; b < agents; b++) if (b !== a) need[b] = clockAfter[b][v[b]]
    updatesByAgent[a].push({ update: update || new Uint8Array([0, 0]), need, index: i })
    order.push(updatesByAgent[a][updatesByAgent[a].length - 1].update)
    agentTxnCount[a]++
    v[a] = agentTxnCount[a]
    applied[a][a] = agentTxnCount[a]
    clockAfter[a].push(Y.getState(docs[a].store, ids[a]))
    versions.push(v)
  }
  // check: merge everything
  const check = new Y.Doc()
  for (const u of order) Y.applyUpdate(check, u)
  const merged = check.getText('content').toString()
  const ok = limit ? true : merged === data.endContent
  if (limit) data.endContent = merged
  return { agents, ids, updatesByAgent, finalClocks: clockAfter.map(c => c[c.length - 1]), endContent: data.endContent, ok }
}

async function concurrent (spec) {
  const c = compileConcurrent(spec.trace, spec.limit || 0)
  if (!c.ok) throw new Error('concurrent trace did not compile to its endContent')
  const writers = []
  for (let a = 0; a < c.agents; a++) writers.push(makeClient(spec.server, spec.doc, { user: `agent${a}`, awareness: false }))
  await withTimeout(Promise.all(writers.map(w => w.whenSynced)), 30000, 'initial sync')
  const total = c.updatesByAgent.reduce((s, u) => s + u.length, 0)
  const deadline = now() + (spec.timeoutSec || 300) * 1000
  let done = 0
  let timedOut = false
  const t0 = now()
  const sampler = setInterval(() => progress(done, total), 100)
  const runAgent = async a => {
    const w = writers[a]
    let i = 0
    for (const { update, need } of c.updatesByAgent[a]) {
      for (const b of Object.keys(need)) {
        const id = c.ids[b]
        if (Y.getState(w.ydoc.store, id) < need[b]) {
          await Promise.race([waitForClock(w.ydoc, id, need[b]), sleep(Math.max(0, deadline - now()))])
          if (now() >= deadline) { timedOut = true; return }
        }
      }
      Y.applyUpdate(w.ydoc, update) // origin null: the provider sends it to the server
      done++
      if ((++i & 31) === 0) await tick()
    }
  }
  await Promise.all(writers.map((_w, a) => runAgent(a)))
  const tSent = now()
  // converged: every writer holds every agent's final clock
  const waits = []
  for (const w of writers) for (let a = 0; a < c.agents; a++) waits.push(waitForClock(w.ydoc, c.ids[a], c.finalClocks[a]))
  let tConv = NaN
  if (!timedOut) {
    try {
      await withTimeout(Promise.all(waits), Math.max(1, deadline - now()), 'convergence')
      // deletes do not advance clocks: wait for the texts as well
      const texts = writers.map(w => waitFor(w.ydoc, () => w.ydoc.getText('content').length === c.endContent.length))
      tConv = Math.max(...await withTimeout(Promise.all(texts), Math.max(1, deadline - now()), 'convergence'))
    } catch { timedOut = true }
  }
  clearInterval(sampler)
  const contents = writers.map(w => w.ydoc.getText('content').toString())
  const correct = !timedOut && contents.every(x => x === c.endContent)
  for (const w of writers) w.destroy()
  return {
    scenario: 'concurrent',
    txns: total,
    timedOut,
    correct,
    sendSeconds: (tSent - t0) / 1000,
    seconds: timedOut ? null : (tConv - t0) / 1000,
    rate: timedOut ? done / ((now() - t0) / 1000) : total / ((tConv - t0) / 1000)
  }
}

async function connections (spec) {
  // N idle clients, `perDoc` to a document; report READY, hold until stdin says "close"
  const n = spec.clients
  const perDoc = spec.perDoc || 10
  const clients = []
  const t0 = now()
  const batch = spec.batch || 50
  let failed = 0
  for (let i = 0; i < n; i += batch) {
    const group = []
    for (let j = i; j < Math.min(n, i + batch); j++) {
      const cl = makeClient(spec.server, `${spec.doc}-${Math.floor(j / perDoc)}`, { user: `idle${j}`, awareness: true })
      group.push(cl); clients.push(cl)
    }
    try {
      await withTimeout(Promise.all(group.map(g => g.whenSynced)), 30000, 'connect')
    } catch (e) { failed += group.filter(g => !g.synced).length; log(String(e.message)) }
    progress(Math.min(n, i + batch), n)
  }
  const connectSeconds = (now() - t0) / 1000
  console.log(JSON.stringify({ ready: true, connected: clients.filter(c => c.synced).length, connectSeconds }))
  // hold until told
  const rl = readline.createInterface({ input: process.stdin })
  await withTimeout(new Promise(resolve => rl.on('line', l => { if (l.trim() === 'close') resolve() })), (spec.holdSec || 120) * 1000, 'hold').catch(() => {})
  rl.close()
  // still connected after the idle period?
  const alive = clients.filter(c => { const s = c.socket(); return s && s.readyState === 1 }).length
  for (const c of clients) c.destroy()
  return { scenario: 'connections', clients: n, connected: clients.filter(c => c.synced).length, failed, alive, connectSeconds }
}

// ---------------------------------------------------------------- main

const scenarios = { ingest, fanout, load, concurrent, connections }

async function main () {
  const spec = JSON.parse(process.argv[2])
  const fn = scenarios[spec.scenario]
  if (!fn) throw new Error(`unknown scenario ${spec.scenario}`)
  const result = await fn(spec)
  console.log(JSON.stringify(result))
  process.exit(0)
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop())) {
  main().catch(e => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(1) })
}
