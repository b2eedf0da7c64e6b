#!/usr/bin/env node
// A scripted, unmodified y-websocket client, used by tests/test_interop_node.py.
//
// It keeps one Y.Doc whose shared text is Y.Text 'content' (y-websocket 3.0, or 2.1 with
// PALIMPSEST_Y_WEBSOCKET=2), connected through
// `new WebsocketProvider(url, doc, ydoc, {WebSocketPolyfill: ws})`, and runs
// actions given as JSON:
//
//   script mode (default): one JSON object {"actions": [...]} (or a bare array)
//     from --script FILE or stdin; prints ONE JSON line on stdout at the end:
//     {"ok": true, "clientID": N, "text": "...", "results": [...]}
//   interactive mode (--interactive): one JSON action per stdin line; answers
//     each with one JSON line {"ok": true, "op": "...", "result": {...}}.
//     EOF on stdin ends the client (exit 0).
//
// Any failure (bad action, timeout, connection trouble) prints a message on
// stderr, a line {"ok": false, "op": ..., "error": ...} on stdout, and exits 1.
// Bad command-line arguments exit 2.
//
// Actions ({"op": NAME, ...}); every wait takes "timeout" (ms, default --timeout):
//   connect                     create the provider / provider.connect(); wait for 'synced'
//   disconnect                  provider.disconnect(); wait until the socket is closed
//   waitSynced                  wait for provider.synced
//   waitConnected {connected?: true|false}   wait for the socket to be open / closed
//   waitClosed {connect?: bool, code?: N}     wait for the server to close the socket; {code, reason}
//   insert   {pos, text}        one transaction; pos may be "end" (default) or negative (from end)
//   type     {text, pos?, delayMs?}  one transaction (= one update) per character
//   delete   {pos, len}         one transaction
//   unsent   {pos?, text}       an insert the provider never sends (its own origin): a
//                               frame lost on the way
//   format   {pos, len, attrs}  one transaction: Y.Text.format (as Quill formats)
//   delta    {}                 the text as a Yjs delta (with its formatting)
//   awareness {state} | {field, value} | {state: null}
//   waitText {equals | contains | containsAll: [..] | length}
//   waitAwareness {name, present?: true|false, where?: {key: value}}
//                               a remote state whose user.name (or name) is name and
//                               whose top-level keys deep-equal `where`
//   sleep    {ms}
//   state                       {text, clientID, connected, synced, localUpdates, awareness}
//   frames   {clear?}           the frames seen so far (needs --trace)
//   request  {message}          send an extension message (docs/undo.md: varUint 100, then
//                               the JSON as a varString), e.g. {"type": "undo"}, with an
//                               "id" added; wait for the server's answer to it: {answer}
//                               (an answer {"ok": false, ...} is a result, not a failure)
//   openGroup {group?}          request {"type": "open_group", "group"}: an explicit undo
//                               group (the server makes an id when none is given)
//   closeGroup {group?}         request {"type": "close_group", "group"}
//   exit                        destroy provider, answer, exit 0
//   crash                       exit at once (SIGKILL on itself): no close frame, no goodbye
import * as Y from 'yjs'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { readFileSync } from 'node:fs'
import readline from 'node:readline'

// PALIMPSEST_Y_WEBSOCKET=2 runs the same actions on y-websocket 2.1 (the npm alias
// y-websocket-2 in package.json); the default is y-websocket 3
const Y_WEBSOCKET = process.env.PALIMPSEST_Y_WEBSOCKET === '2' ? 'y-websocket-2' : 'y-websocket'
const { WebsocketProvider } = await import(Y_WEBSOCKET)
const Y_WEBSOCKET_VERSION = JSON.parse(
  readFileSync(new URL(`./node_modules/${Y_WEBSOCKET}/package.json`, import.meta.url))
).version

const USAGE = `usage: node client.mjs --url ws://HOST:PORT/ws --doc NAME [--user NAME]
       [--param KEY=VALUE]... [--timeout MS] [--trace] [--verbose]
       [--interactive | --script FILE|-]`

const die = (code, msg) => {
  process.stderr.write(`client.mjs: ${msg}\n`)
  process.exit(code)
}

const parseArgs = (argv) => {
  const opts = { url: null, doc: null, user: null, params: {}, timeout: 10000, trace: false, verbose: false, interactive: false, script: '-' }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) die(2, `${a} needs a value\n${USAGE}`)
      return argv[++i]
    }
    switch (a) {
      case '--url': opts.url = next(); break
      case '--doc': opts.doc = next(); break
      case '--user': opts.user = next(); break
      case '--param': {
        const kv = next()
        const eq = kv.indexOf('=')
        if (eq <= 0) die(2, `--param wants KEY=VALUE, got ${JSON.stringify(kv)}`)
        opts.params[kv.slice(0, eq)] = kv.slice(eq + 1)
        break
      }
      case '--timeout': {
        const v = Number(next())
        if (!Number.isFinite(v) || v <= 0) die(2, `--timeout wants a positive number of ms\n${USAGE}`)
        opts.timeout = v
        break
      }
      case '--trace': opts.trace = true; break
      case '--verbose': opts.verbose = true; break
      case '--interactive': opts.interactive = true; break
      case '--script': opts.script = next(); break
      case '-h': case '--help': process.stdout.write(USAGE + '\n'); process.exit(0); break
      default: die(2, `unknown argument ${JSON.stringify(a)}\n${USAGE}`)
    }
  }
  if (!opts.url) die(2, `--url is required\n${USAGE}`)
  if (!/^wss?:\/\//.test(opts.url)) die(2, `--url must start with ws:// or wss://, got ${JSON.stringify(opts.url)}`)
  if (opts.doc === null || opts.doc === '') die(2, `--doc is required\n${USAGE}`)
  if (opts.user !== null) opts.params.user = opts.user
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const t0 = Date.now()
const log = (msg) => {
  if (opts.verbose) process.stderr.write(`[client ${opts.user ?? '-'} ${opts.doc} +${Date.now() - t0}ms] ${msg}\n`)
}

// ---------------------------------------------------------------- frames
const MSG = ['sync', 'awareness', 'auth', 'queryAwareness']
const EXTENSION = 100 // the server's extension messages (docs/undo.md), sent by `request`
const SYNC = ['step1', 'step2', 'update']
const describeFrame = (data) => {
  const buf = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength ?? data.length)
  const f = { len: buf.length }
  try {
    const d = decoding.createDecoder(buf)
    const t = decoding.readVarUint(d)
    f.type = MSG[t] ?? t
    if (t === 0) {
      const s = decoding.readVarUint(d)
      f.sub = SYNC[s] ?? s
      f.payload = decoding.readVarUint8Array(d).length
    } else if (t === 1) {
      const u = decoding.createDecoder(decoding.readVarUint8Array(d))
      const n = decoding.readVarUint(u)
      f.states = []
      for (let i = 0; i < n; i++) {
        const clientID = decoding.readVarUint(u)
        const clock = decoding.readVarUint(u)
        const state = JSON.parse(decoding.readVarString(u))
        f.states.push({ clientID, clock, name: state === null ? null : (state?.user?.name ?? state?.name ?? '?') })
      }
    } else if (t === 2) {
      f.sub = decoding.readVarUint(d)
      f.reason = decoding.readVarString(d)
    } else if (t === EXTENSION) {
      f.message = decoding.readVarString(d)
    }
  } catch (e) {
    f.error = String(e)
  }
  return f
}
const frames = []
const record = (dir, data) => {
  const f = { dir, t: Date.now() - t0, ...describeFrame(data) }
  frames.push(f)
  log(`${dir} ${JSON.stringify(f)}`)
}
class TracingWebSocket extends WebSocket {
  constructor (...args) {
    super(...args)
    this.on('message', (data) => record('recv', data))
    this.on('close', (code, reason) => {
      frames.push({ dir: 'close', t: Date.now() - t0, code, reason: reason.toString() })
      log(`closed ${code} ${reason}`)
    })
  }

  send (data, ...rest) {
    record('send', data)
    return super.send(data, ...rest)
  }
}

// ---------------------------------------------------------------- doc + provider
const ydoc = new Y.Doc()
const ytext = ydoc.getText('content')
let provider = null
let localUpdates = 0
let lastClose = null
const waiters = new Set()
let lastRequestId = 0
const answers = new Map() // request id -> the server's answer, once it came
const poke = () => { for (const w of waiters) w() }
ydoc.on('update', (_u, origin) => {
  if (provider === null || origin !== provider) localUpdates++
  poke()
})

const makeProvider = () => {
  const p = new WebsocketProvider(opts.url, opts.doc, ydoc, {
    WebSocketPolyfill: opts.trace || opts.verbose ? TracingWebSocket : WebSocket,
    params: opts.params,
    disableBc: true,
    connect: false
  })
  p.on('status', ({ status }) => { log(`status ${status}`); poke() })
  p.on('sync', (s) => { log(`synced=${s}`); poke() })
  p.on('connection-close', (ev) => {
    if (ev) lastClose = { code: ev.code, reason: String(ev.reason ?? '') }
    log(`connection-close ${JSON.stringify(lastClose)}`)
    poke()
  })
  p.on('connection-error', () => { log('connection-error'); poke() })
  p.awareness.on('change', poke)
  // an extension answer; without a handler y-websocket logs "Unable to compute message".
  // Whatever a handler writes into the encoder is sent back: it writes nothing.
  p.messageHandlers[EXTENSION] = (_encoder, decoder) => {
    const answer = JSON.parse(decoding.readVarString(decoder))
    if (answers.has(answer.id)) answers.set(answer.id, answer)
    else log(`an answer nobody waits for: ${JSON.stringify(answer)}`)
    poke()
  }
  return p
}

const remoteStates = () => {
  if (provider === null) return []
  const out = []
  for (const [id, state] of provider.awareness.getStates()) {
    if (id !== ydoc.clientID) out.push({ clientID: id, state })
  }
  return out
}
const stateName = (s) => s?.user?.name ?? s?.name

const snapshot = () => ({
  yWebsocket: Y_WEBSOCKET_VERSION,
  text: ytext.toString(),
  clientID: ydoc.clientID,
  connected: provider?.wsconnected ?? false,
  synced: provider?.synced ?? false,
  localUpdates,
  awareness: remoteStates(),
  lastClose
})

class TimeoutError extends Error {}

// Resolve when pred() is true; re-checked on every doc/awareness/status event
// and every 50 ms. Fails with describe() in the message after `timeout` ms.
const waitFor = (pred, timeout, describe) => new Promise((resolve, reject) => {
  if (pred()) return resolve()
  let timer = null
  let iv = null
  const done = () => { waiters.delete(check); clearTimeout(timer); clearInterval(iv) }
  const check = () => { if (pred()) { done(); resolve() } }
  waiters.add(check)
  iv = setInterval(check, 50)
  timer = setTimeout(() => {
    done()
    reject(new TimeoutError(`timeout after ${timeout}ms waiting for ${describe()}; state: ${JSON.stringify(snapshot())}`))
  }, timeout)
})

const posOf = (pos, len) => {
  if (pos === undefined || pos === null || pos === 'end') return len
  if (typeof pos !== 'number' || !Number.isInteger(pos)) throw new Error(`bad pos ${JSON.stringify(pos)}`)
  const p = pos < 0 ? len + 1 + pos : pos
  if (p < 0 || p > len) throw new Error(`pos ${pos} out of range 0..${len}`)
  return p
}
const needString = (a, k) => {
  if (typeof a[k] !== 'string') throw new Error(`${a.op}: "${k}" must be a string`)
  return a[k]
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Send `message` as an extension message on the provider's socket, after whatever the
// provider sent before it (edits go out as they are made), and wait for its answer.
const request = async (message, timeout) => {
  if (message === null || typeof message !== 'object' || typeof message.type !== 'string') throw new Error(`request: "message" must be an object with a "type", got ${JSON.stringify(message)}`)
  if (!(provider?.wsconnected ?? false)) throw new Error(`request ${message.type}: not connected`)
  const id = ++lastRequestId
  answers.set(id, null)
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, EXTENSION)
  encoding.writeVarString(e, JSON.stringify({ ...message, id }))
  provider.ws.send(encoding.toUint8Array(e))
  try {
    await waitFor(() => answers.get(id) !== null, timeout, () => `the answer to ${JSON.stringify(message)} (id ${id})`)
    return { answer: answers.get(id) }
  } finally {
    answers.delete(id)
  }
}
const groupMessage = (type, a) => (a.group === undefined ? { type } : { type, group: a.group })

const actions = {
  async connect (a, timeout) {
    if (provider === null) provider = makeProvider()
    provider.connect()
    await waitFor(() => provider.synced, timeout, () => `'synced' after connect to ${provider.url}`)
    return { clientID: ydoc.clientID, text: ytext.toString() }
  },
  async disconnect (a, timeout) {
    if (provider === null) throw new Error('disconnect before connect')
    const ws = provider.ws
    provider.disconnect()
    if (ws) await waitFor(() => ws.readyState === WebSocket.CLOSED, timeout, () => 'the socket to close')
    return {}
  },
  async waitConnected (a, timeout) {
    const want = a.connected ?? true
    await waitFor(() => (provider?.wsconnected ?? false) === want, timeout, () => `connected === ${want}`)
    return { lastClose }
  },
  async waitClosed (a, timeout) {
    // the close code and reason the server last closed us with (needs --trace/--verbose
    // for the reason of a close before 'open'; the provider reports it otherwise)
    if (provider === null) provider = makeProvider()
    if (a.connect) provider.connect()
    await waitFor(() => lastClose !== null && (a.code === undefined || lastClose.code === a.code), timeout,
      () => `a close${a.code === undefined ? '' : ' with code ' + a.code}`)
    return { ...lastClose }
  },
  async waitSynced (a, timeout) {
    if (provider === null) throw new Error('waitSynced before connect')
    await waitFor(() => provider.synced, timeout, () => "'synced'")
    return {}
  },
  async insert (a) {
    const text = needString(a, 'text')
    const p = posOf(a.pos, ytext.length)
    ydoc.transact(() => ytext.insert(p, text))
    return { length: ytext.length }
  },
  async type (a) {
    // pos absent or "end": every character goes to the current end (remote
    // edits arriving meanwhile do not split the typed run); else at pos, advancing.
    const text = needString(a, 'text')
    const atEnd = a.pos === undefined || a.pos === null || a.pos === 'end'
    let p = atEnd ? 0 : posOf(a.pos, ytext.length)
    for (const ch of text) {
      if (atEnd) p = ytext.length
      ydoc.transact(() => ytext.insert(p, ch))
      p += ch.length
      if (a.delayMs) await sleep(a.delayMs)
    }
    return { length: ytext.length }
  },
  async unsent (a) {
    const text = needString(a, 'text')
    const p = posOf(a.pos, ytext.length)
    ydoc.transact(() => ytext.insert(p, text), provider)
    return { length: ytext.length }
  },
  async delete (a) {
    const p = posOf(a.pos, ytext.length)
    const len = a.len ?? 1
    if (!Number.isInteger(len) || len < 0 || p + len > ytext.length) throw new Error(`delete: bad len ${JSON.stringify(a.len)} at ${p} (length ${ytext.length})`)
    ydoc.transact(() => ytext.delete(p, len))
    return { length: ytext.length }
  },
  async format (a) {
    // attributes on a range, as Quill's binding sets them ({bold: true}; null removes)
    const p = posOf(a.pos, ytext.length)
    const len = a.len ?? 1
    if (!Number.isInteger(len) || len < 0 || p + len > ytext.length) throw new Error(`format: bad len ${JSON.stringify(a.len)} at ${p} (length ${ytext.length})`)
    ydoc.transact(() => ytext.format(p, len, a.attrs ?? {}))
    return { delta: ytext.toDelta() }
  },
  async delta () {
    return { delta: ytext.toDelta() }
  },
  async awareness (a) {
    if (provider === null) provider = makeProvider()
    if ('field' in a) provider.awareness.setLocalStateField(needString(a, 'field'), a.value)
    else if ('state' in a) provider.awareness.setLocalState(a.state)
    else throw new Error('awareness: give "state" or "field" + "value"')
    return { state: provider.awareness.getLocalState() }
  },
  async waitText (a, timeout) {
    let pred, what
    if ('equals' in a) { pred = (t) => t === a.equals; what = `text === ${JSON.stringify(a.equals)}` } else if ('contains' in a) { pred = (t) => t.includes(a.contains); what = `text containing ${JSON.stringify(a.contains)}` } else if ('containsAll' in a) { pred = (t) => a.containsAll.every((s) => t.includes(s)); what = `text containing all of ${JSON.stringify(a.containsAll)}` } else if ('length' in a) { pred = (t) => t.length === a.length; what = `text of length ${a.length}` } else throw new Error('waitText: give equals, contains, containsAll or length')
    await waitFor(() => pred(ytext.toString()), timeout, () => what)
    return { text: ytext.toString() }
  },
  async waitAwareness (a, timeout) {
    const name = needString(a, 'name')
    const present = a.present ?? true
    const where = a.where ?? {}
    const matches = (s) => stateName(s) === name &&
      Object.entries(where).every(([k, v]) => JSON.stringify(s[k]) === JSON.stringify(v))
    const find = () => remoteStates().filter((e) => matches(e.state))
    await waitFor(() => (find().length > 0) === present, timeout,
      () => `a remote awareness state named ${JSON.stringify(name)}${a.where ? ' with ' + JSON.stringify(where) : ''} to be ${present ? 'present' : 'absent'}`)
    return { matches: find(), awareness: remoteStates() }
  },
  async sleep (a) {
    await sleep(a.ms ?? 0)
    return {}
  },
  async state () {
    return snapshot()
  },
  async frames (a) {
    const out = frames.slice()
    if (a.clear) frames.length = 0
    return { frames: out }
  },
  async request (a, timeout) {
    return request(a.message, timeout)
  },
  async openGroup (a, timeout) {
    return request(groupMessage('open_group', a), timeout)
  },
  async closeGroup (a, timeout) {
    return request(groupMessage('close_group', a), timeout)
  }
}

const run = async (a) => {
  if (a === null || typeof a !== 'object' || typeof a.op !== 'string') throw new Error(`an action must be an object with "op", got ${JSON.stringify(a)}`)
  const fn = actions[a.op]
  if (!fn) throw new Error(`unknown op ${JSON.stringify(a.op)}; known: ${[...Object.keys(actions), 'exit', 'crash'].join(', ')}`)
  log(`run ${JSON.stringify(a)}`)
  return fn(a, a.timeout ?? opts.timeout)
}

const write = (obj) => new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + '\n', resolve))

const finish = async (obj, code) => {
  if (provider !== null) {
    // like a closing browser tab: the close handshake runs after everything queued
    const ws = provider.ws
    provider.destroy()
    if (ws) await waitFor(() => ws.readyState === WebSocket.CLOSED, 3000, () => 'the socket to close').catch(() => {})
  }
  ydoc.destroy()
  await write(obj)
  process.exit(code)
}

const fail = async (op, err) => {
  process.stderr.write(`client.mjs [user=${opts.user ?? '-'} doc=${opts.doc}] ${op ?? 'input'} failed: ${err && err.stack ? err.stack : err}\n`)
  await finish({ ok: false, op, error: String(err && err.message ? err.message : err), state: snapshot() }, 1)
}

const crash = () => {
  process.kill(process.pid, 'SIGKILL')
}

const readAll = async (path) => {
  if (path !== '-') return readFileSync(path, 'utf8')
  const chunks = []
  for await (const c of process.stdin) chunks.push(c)
  return Buffer.concat(chunks).toString('utf8')
}

const main = async () => {
  if (opts.interactive) {
    const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
    for await (const line of rl) {
      if (line.trim() === '') continue
      let a
      try { a = JSON.parse(line) } catch (e) { return fail(null, `bad JSON line ${JSON.stringify(line)}: ${e.message}`) }
      if (a && a.op === 'crash') return crash()
      if (a && a.op === 'exit') return finish({ ok: true, op: 'exit', result: snapshot() }, 0)
      let result
      try { result = await run(a) } catch (e) { return fail(a && a.op, e) }
      await write({ ok: true, op: a.op, result })
    }
    return finish({ ok: true, op: 'eof', result: snapshot() }, 0)
  }
  let script
  try {
    script = JSON.parse(await readAll(opts.script))
  } catch (e) {
    return fail(null, `cannot read the script from ${opts.script === '-' ? 'stdin' : opts.script}: ${e.message}`)
  }
  const list = Array.isArray(script) ? script : script && script.actions
  if (!Array.isArray(list)) return fail(null, 'the script must be a JSON array of actions or {"actions": [...]}')
  const results = []
  for (const a of list) {
    if (a && a.op === 'crash') return crash()
    if (a && a.op === 'exit') break
    try { results.push({ op: a.op, result: await run(a) }) } catch (e) { return fail(a && a.op, e) }
  }
  return finish({ ok: true, yWebsocket: Y_WEBSOCKET_VERSION, clientID: ydoc.clientID, text: ytext.toString(), localUpdates, results }, 0)
}

process.on('unhandledRejection', (e) => fail('unhandledRejection', e))
main().catch((e) => fail('main', e))
