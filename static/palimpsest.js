/**
 * palimpsest.js: server-side undo/redo for a y-websocket provider.
 *
 * A standalone ES module with no imports: use it as is with `<script type="module">`
 * or bundle it. It speaks Palimpsest's websocket extension message:
 *
 *   frame    = varUint(100) · varString(JSON)        (lib0 encoding)
 *   requests = {"type":"undo"|"redo"|"close_group"|"hello","id":N}
 *   answers  = {"type":"result","id":N,"ok":true,"seq":123}
 *            | {"type":"result","id":N,"ok":false,"reason":"nothing to undo"}
 *            | {"type":"error","reason":"..."}
 *
 * A connection opts in to type-100 messages by sending one; this helper sends
 * `hello` on every (re)connect. Undo and redo act on the *server's* per-user
 * history: they revert the user's own latest change group, keep everybody
 * else's edits, and work across tabs, devices and reloads.
 *
 * @example
 *   import { WebsocketProvider } from 'y-websocket'
 *   import { ServerUndo } from '/static/palimpsest.js'
 *   const provider = new WebsocketProvider(`ws://${location.host}/ws`, 'notes', ydoc,
 *                                          { params: { user: 'alice' } })
 *   const history = new ServerUndo(provider, { doc: 'notes', user: 'alice' })
 *   const r = await history.undo()   // {type:'result', id, ok, seq | reason}
 *
 * When the websocket is not open, requests fall back to the HTTP API
 * (`POST /api/docs/{doc}/undo|redo?user=NAME`), which answers with the same JSON.
 */

export const MESSAGE_PALIMPSEST = 100

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

/**
 * Encode one extension frame: varUint(100) followed by varString(JSON).
 * @param {object} message
 * @returns {Uint8Array}
 */
export function encodeFrame (message) {
  const body = textEncoder.encode(JSON.stringify(message))
  const out = []
  writeVarUint(out, MESSAGE_PALIMPSEST)
  writeVarUint(out, body.length)
  const frame = new Uint8Array(out.length + body.length)
  frame.set(out, 0)
  frame.set(body, out.length)
  return frame
}

/**
 * Decode the JSON payload of an extension frame whose message type was already
 * read. Works on lib0 decoders (objects with `arr` and `pos`) and advances them.
 * @param {{arr: Uint8Array, pos: number}} decoder
 * @returns {any}
 */
export function readPayload (decoder) {
  const len = readVarUint(decoder)
  const bytes = decoder.arr.subarray(decoder.pos, decoder.pos + len)
  if (bytes.length !== len) throw new Error('palimpsest: truncated frame')
  decoder.pos += len
  return JSON.parse(textDecoder.decode(bytes))
}

/**
 * Decode a whole extension frame (type included).
 * @param {Uint8Array} frame
 * @returns {any}
 */
export function decodeFrame (frame) {
  const decoder = { arr: frame, pos: 0 }
  const type = readVarUint(decoder)
  if (type !== MESSAGE_PALIMPSEST) throw new Error(`palimpsest: not an extension frame (type ${type})`)
  return readPayload(decoder)
}

/** @param {number[]} out @param {number} num */
function writeVarUint (out, num) {
  while (num > 0x7f) {
    out.push(0x80 | (num & 0x7f))
    num = Math.floor(num / 128)
  }
  out.push(num & 0x7f)
}

/** @param {{arr: Uint8Array, pos: number}} decoder */
function readVarUint (decoder) {
  let num = 0
  let mult = 1
  for (;;) {
    if (decoder.pos >= decoder.arr.length) throw new Error('palimpsest: truncated varUint')
    const r = decoder.arr[decoder.pos++]
    num += (r & 0x7f) * mult
    if (r < 0x80) return num
    mult *= 128
    if (mult > Number.MAX_SAFE_INTEGER) throw new Error('palimpsest: varUint too large')
  }
}

/**
 * Server-side undo/redo bound to a y-websocket `WebsocketProvider`.
 *
 * Events (subscribe with `on(name, fn)`, unsubscribe with the returned function):
 *  - `hello`   ({ok, user, role, ops}) the server's answer to `hello`, on every (re)connect
 *  - `result`  ({type:'result', id, ok, seq?, reason?, op}) every answer to a request
 *  - `error`   ({type:'error', reason}) a server-side error not tied to a request
 *  - `message` (any) every extension message received, including the two above
 */
// The HTTP route of each request that has one (docs/undo.md, "Over HTTP").
const HTTP_PATHS = { undo: 'undo', redo: 'redo', open_group: 'undo/open', close_group: 'undo/close' }

export class ServerUndo {
  /**
   * @param {any} provider  a y-websocket WebsocketProvider
   * @param {object} [opts]
   * @param {string} [opts.doc]      document name (defaults to provider.roomname); for the HTTP fallback
   * @param {string} [opts.user]     user name for the HTTP fallback (`?user=`, open dev mode)
   * @param {string} [opts.token]    bearer token for the HTTP fallback
   * @param {string} [opts.baseUrl]  where the server is mounted, e.g. https://host/collab (default: the page's origin)
   * @param {number} [opts.timeout]  ms to wait for an answer before rejecting (default 10000)
   * @param {boolean} [opts.httpFallback] use HTTP when the websocket is closed (default true)
   */
  constructor (provider, opts = {}) {
    this.provider = provider
    this.doc = opts.doc ?? provider.roomname
    this.user = opts.user ?? null
    this.token = opts.token ?? null
    this.baseUrl = opts.baseUrl ?? (typeof location !== 'undefined' ? location.origin : '')
    this.timeout = opts.timeout ?? 10000
    this.httpFallback = opts.httpFallback ?? true
    this._nextId = 1
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any, op: string}>} */
    this._pending = new Map()
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map()
    /** the answer to the latest `hello`, if any */
    this.hello = null

    this._previousHandler = provider.messageHandlers[MESSAGE_PALIMPSEST]
    // y-websocket calls handlers as (encoder, decoder, provider, emitSynced, messageType);
    // whatever the handler writes to `encoder` is sent back, so write nothing.
    provider.messageHandlers[MESSAGE_PALIMPSEST] = (_encoder, decoder, _provider, _emitSynced, _type) => {
      let message
      try {
        message = readPayload(decoder)
      } catch (err) {
        console.error('palimpsest: bad extension frame', err)
        return
      }
      this._receive(message)
    }

    this._onStatus = ({ status }) => {
      if (status === 'connected') {
        // opt this connection in; the answer tells what the server knows about us
        this._send('hello').then((r) => {
          this.hello = r
          this._emit('hello', r)
        }, () => {})
      } else if (status === 'disconnected') {
        // answers to requests on the old socket will never come
        for (const [id, p] of this._pending) {
          if (p.viaWs) {
            clearTimeout(p.timer)
            this._pending.delete(id)
            p.reject(new Error('connection lost before the server answered'))
          }
        }
      }
    }
    provider.on('status', this._onStatus)
    if (this._wsOpen()) this._onStatus({ status: 'connected' })
  }

  /** Undo this user's latest change group on the server. */
  undo () { return this._request('undo') }

  /** Redo what this user's latest undo reverted. */
  redo () { return this._request('redo') }

  /**
   * Open an explicit undo group: everything this user writes until `closeGroup(group)` is
   * one undo step, however long the pauses (docs/undo.md, "Explicit undo groups").
   * @param {string} [group]  an id of your own; the server makes one when absent
   */
  openGroup (group) { return this._request('open_group', group == null ? {} : { group }) }

  /**
   * End the current undo step (the next edit starts a new one), or, given the id
   * `openGroup` answered with, that explicit group.
   * @param {string} [group]
   */
  closeGroup (group) { return this._request('close_group', group == null ? {} : { group }) }

  /**
   * @param {'hello'|'result'|'error'|'message'} name
   * @param {Function} fn
   * @returns {() => void} unsubscribe
   */
  on (name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set())
    this._listeners.get(name).add(fn)
    return () => this._listeners.get(name)?.delete(fn)
  }

  destroy () {
    this.provider.off('status', this._onStatus)
    if (this._previousHandler) {
      this.provider.messageHandlers[MESSAGE_PALIMPSEST] = this._previousHandler
    } else {
      delete this.provider.messageHandlers[MESSAGE_PALIMPSEST]
    }
    for (const p of this._pending.values()) {
      clearTimeout(p.timer)
      p.reject(new Error('destroyed'))
    }
    this._pending.clear()
  }

  _emit (name, value) {
    for (const fn of this._listeners.get(name) ?? []) {
      try { fn(value) } catch (err) { console.error(err) }
    }
  }

  _wsOpen () {
    const ws = this.provider.ws
    return !!(this.provider.wsconnected && ws && ws.readyState === 1)
  }

  _receive (message) {
    this._emit('message', message)
    if (message && message.type === 'result') {
      const p = this._pending.get(message.id)
      if (p) {
        this._pending.delete(message.id)
        clearTimeout(p.timer)
        const result = { ...message, op: p.op }
        this._emit('result', result)
        p.resolve(result)
      }
    } else if (message && message.type === 'error') {
      // an error naming a request id fails that request; others are reported
      const p = message.id != null ? this._pending.get(message.id) : undefined
      if (p) {
        this._pending.delete(message.id)
        clearTimeout(p.timer)
        p.reject(new Error(message.reason || 'server error'))
      }
      this._emit('error', message)
    }
  }

  /**
   * Resolves once the provider is synced: its sync step 2 (what it typed offline) is
   * sent before the server's answer to its step 1 makes it synced, so a request sent
   * after that is read after it. An undo sent as the socket opens, before its step 2,
   * reverted the step the server had last, not the offline work, and the step 2 that
   * followed emptied the redo stack.
   */
  _whenSynced () {
    if (this.provider.synced) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const done = (err) => {
        clearTimeout(timer)
        this.provider.off('sync', onSync)
        this.provider.off('status', onStatus)
        if (err) reject(err)
        else resolve()
      }
      const onSync = (synced) => { if (synced) done() }
      const onStatus = ({ status }) => {
        if (status === 'disconnected') done(new Error('connection lost before the document was synced'))
      }
      const timer = setTimeout(() => done(new Error(`not synced within ${this.timeout} ms`)), this.timeout)
      this.provider.on('sync', onSync)
      this.provider.on('status', onStatus)
    })
  }

  async _send (op, fields = {}) {
    if (op !== 'hello') await this._whenSynced()
    const id = this._nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id)
        reject(new Error(`no answer to ${op} within ${this.timeout} ms`))
      }, this.timeout)
      this._pending.set(id, { resolve, reject, timer, op, viaWs: true })
      try {
        this.provider.ws.send(encodeFrame({ ...fields, type: op, id }))
      } catch (err) {
        clearTimeout(timer)
        this._pending.delete(id)
        reject(err)
      }
    })
  }

  async _request (op, fields = {}) {
    if (this._wsOpen()) return this._send(op, fields)
    if (!this.httpFallback || !(op in HTTP_PATHS)) {
      throw new Error('not connected')
    }
    return this._http(op, fields)
  }

  async _http (op, fields = {}) {
    const params = new URLSearchParams()
    if (this.user) params.set('user', this.user)
    const headers = { 'Content-Type': 'application/json' }
    if (this.token) headers.Authorization = `Bearer ${this.token}`
    const url = `${this.baseUrl}/api/docs/${encodeURIComponent(this.doc)}/${HTTP_PATHS[op]}` +
      (params.toString() ? `?${params}` : '')
    const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(fields) })
    let body
    try { body = await response.json() } catch { body = {} }
    if (!response.ok && body.ok === undefined) {
      throw new Error(body.reason || body.error || `HTTP ${response.status}`)
    }
    const result = { type: 'result', ok: !!body.ok, ...body, op }
    this._emit('result', result)
    return result
  }
}
