/**
 * palimpsest.js: server-side undo/redo for a y-websocket provider (ServerUndo), and
 * holdWhileComposing, which keeps an input method's composition whole in any editor
 * binding over y-websocket (at the end of this file).
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
 *  - `hello`   ({ok, user, role, ops, can_undo, can_redo}) the server's answer to `hello`,
 *               on every (re)connect (can_undo / can_redo: whether the user has a step to
 *               undo / redo then; docs/undo.md)
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
   * @param {string} [opts.user]     user name for the HTTP fallback (`?user=`, open dev mode; not sent with a token)
   * @param {string} [opts.token]    bearer token for the HTTP fallback
   * @param {string} [opts.baseUrl]  where the server is mounted, e.g. https://host/collab (default: the page's origin)
   * @param {number} [opts.timeout]  ms to wait for an answer before rejecting (default 10000)
   * @param {boolean} [opts.httpFallback] use HTTP when the websocket is closed (default true);
   *   refused (the promise rejects) while the doc holds edits made since it closed
   *   (`unsent`): the server does not have them yet
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

    // Edits typed while the socket is down reach the server only in the sync step 2 of
    // the next connection: until then an undo over HTTP would take back the step before
    // them (and their arrival would then clear its redo), so the fallback is refused
    /** whether this doc holds edits made while the socket was down, not synced since */
    this.unsent = false
    this._onUpdate = (_update, origin) => {
      if (origin !== provider && !this._wsOpen()) this.unsent = true
    }
    this._onSync = (synced) => { if (synced) this.unsent = false }
    provider.doc.on('update', this._onUpdate)
    provider.on('sync', this._onSync)
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
    this.provider.off('sync', this._onSync)
    this.provider.doc.off('update', this._onUpdate)
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
    if (this.unsent) {
      throw new Error(`${op.replace('_', ' ')} waits for the connection: what you typed while ` +
        'it was down is not on the server yet (over HTTP it would take back what you ' +
        'typed before it)')
    }
    return this._http(op, fields)
  }

  async _http (op, fields = {}) {
    const params = new URLSearchParams()
    // the user a token names is the token's: ?user= is open mode's (with a token, another
    // name there is refused, 400)
    if (this.user && !this.token) params.set('user', this.user)
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

// ---------------------------------------------------------------- input methods (IME)

/** y-websocket's message type for sync messages (updates, sync steps 1 and 2) */
const MESSAGE_SYNC = 0

/**
 * The longest a composition holds remote edits back (ms), after which it is committed
 * as it stands: long enough for a phrase composed at a thinking pace (a Japanese
 * sentence of a dozen keys took 6 s), short enough that the tab is not long out of date.
 */
export const HOLD_LIMIT_MS = 15000

/**
 * How long after `compositionend` the editor has surely read the committed text from the
 * DOM: Quill reads it in a microtask, ProseMirror (Tiptap) in a 20 ms timeout,
 * CodeMirror 6 in a microtask (on Android, the next animation frame). A remote edit
 * applied before that is drawn into the composition's range and discards the commit.
 */
export const SETTLE_MS = 100

/**
 * Hold a y-websocket provider's remote edits, and the user's own pre-edit states, while
 * the user composes text with an input method in `element` (Japanese, Chinese, Korean,
 * a phone keyboard's suggestions), for any editor binding: Tiptap/ProseMirror
 * (`editor.view.dom`), Quill (`quill.root`), CodeMirror 6 (`view.contentDOM`)…
 *
 * During a composition the browser owns a range of the editor's DOM, the pre-edit text
 * it replaces on every key until the user commits. A remote edit drawn in the same
 * paragraph makes the binding redraw or move that DOM, Chromium loses the range, and
 * every later pre-edit state is inserted beside the one before instead of replacing it
 * (`にほにほん…日本語` stored for 日本語, for everyone); Quill, which reads a composition
 * only once it ends, moves or duplicates text. So:
 *
 * - incoming sync messages wait, in order, from `compositionstart` until the editor has
 *   read the commit (`settleMs` after `compositionend`, or the next `compositionstart`,
 *   which a Korean IME sends at once), then are applied as if they came then (Yjs
 *   merges them around the user's own edits);
 * - the user's own updates made meanwhile are sent with the commit as one update
 *   (`mergeUpdates`: pass `Y.mergeUpdates`; without it they go back to back), so that
 *   the server's undo takes a composition back in one step, not one pre-edit state at
 *   a time;
 * - a composition left open longer than `holdLimitMs` is ended (the editor loses the
 *   focus and takes it back, which makes the browser commit the pre-edit text as it
 *   stands) and what waited is applied after it.
 *
 * Needs y-websocket's `WebsocketProvider` (2.x or 3.x): it wraps the sync handler in
 * `provider.messageHandlers` and takes the place of the provider's Y.Doc update
 * listener. `@hocuspocus/provider` has neither and is not covered.
 *
 * @example
 *   import { holdWhileComposing } from '/static/palimpsest.js'
 *   holdWhileComposing(provider, editor.view.dom, { mergeUpdates: Y.mergeUpdates })  // Tiptap
 *   holdWhileComposing(provider, quill.root, { mergeUpdates: Y.mergeUpdates })       // Quill
 *
 * @param {any} provider  a y-websocket WebsocketProvider
 * @param {HTMLElement} element  the editor's editable DOM element (or an ancestor of it)
 * @param {object} [opts]
 * @param {(updates: Uint8Array[]) => Uint8Array} [opts.mergeUpdates]  Y.mergeUpdates
 * @param {number} [opts.settleMs]  wait after compositionend (default SETTLE_MS)
 * @param {number} [opts.holdLimitMs]  the longest hold (default HOLD_LIMIT_MS)
 * @param {() => boolean} [opts.composing]  whether a composition is open (default: between
 *   the composition events on `element`; CodeMirror's page passes its view's own flag)
 * @param {() => void} [opts.endComposition]  end an open composition (default: blur the
 *   focused element inside `element` and focus it again)
 * @returns {CompositionHold}  `.stop()` applies and sends what waits, and lets go
 */
export function holdWhileComposing (provider, element, opts = {}) {
  return new CompositionHold(provider, element, opts)
}

export class CompositionHold {
  constructor (provider, element, opts = {}) {
    if (!provider.messageHandlers || typeof provider._updateHandler !== 'function') {
      throw new Error('holdWhileComposing needs a y-websocket WebsocketProvider')
    }
    this.provider = provider
    this.element = element
    this.settleMs = opts.settleMs ?? SETTLE_MS
    this.holdLimitMs = opts.holdLimitMs ?? HOLD_LIMIT_MS
    this.mergeUpdates = opts.mergeUpdates ?? null
    this._composingOpt = opts.composing ?? null
    this._endOpt = opts.endComposition ?? null
    this._open = false
    /** @type {{ bytes: Uint8Array, ws: any, emitSynced: boolean }[]} */
    this.held = []
    this.limit = null
    this.settle = null
    this.replaying = false

    this.apply = provider.messageHandlers[MESSAGE_SYNC]
    this._handler = (encoder, decoder, p, emitSynced, type) => {
      if (this.replaying || !this.holding()) return this.apply(encoder, decoder, p, emitSynced, type)
      // the whole message as it came (y-websocket decodes a fresh Uint8Array of it)
      this.held.push({ bytes: decoder.arr, ws: provider.ws, emitSynced })
      this.limit ??= setTimeout(() => this.expire(), this.holdLimitMs)
    }
    provider.messageHandlers[MESSAGE_SYNC] = this._handler

    /** the user's updates made since a composition started, not sent yet */
    this.own = []
    // y-websocket (2.x, 3.x) sends each local update from this listener
    this.send = provider._updateHandler
    this.queue = (update, origin) => {
      if (origin === provider) return
      if (!this.composing() && !this.own.length && this.settle === null) return this.send(update, origin)
      this.own.push(update)
    }
    provider.doc.off('update', this.send)
    provider.doc.on('update', this.queue)

    // Capture: before the editor's own handlers, so that what waited is applied before
    // the editor starts the next composition (Quill starts batching its DOM there).
    this._onStart = () => { this.started(); this._open = true }
    this._onEnd = () => { this._open = false; this.ended() }
    element.addEventListener('compositionstart', this._onStart, true)
    element.addEventListener('compositionend', this._onEnd, true)
  }

  /** Whether a composition is open. */
  composing () {
    return this._composingOpt ? this._composingOpt() : this._open
  }

  /** Whether a message arriving now waits: a composition is open or not read yet, or older ones wait. */
  holding () {
    return this.composing() || this.settle !== null || this.held.length > 0
  }

  /**
   * A composition starts. The one before it, if any, has been read by now (the editors
   * read it in a microtask, or flush it as the new one starts, ProseMirror in its own
   * compositionstart handler, which runs after this one but reads a DOM the browser has
   * not touched for the new composition yet). So what waits goes now, before the new
   * composition holds it for another round (a Korean typist never pauses between
   * syllables).
   */
  started () {
    if (this.settle === null) return
    clearTimeout(this.settle)
    this.settle = null
    this.flush()
  }

  /** A composition ended: what waits goes once the editor has read its commit. */
  ended () {
    this.settleSoon()
  }

  /**
   * Tell the hold that the editor changed: once no composition is open, what waits goes
   * after settleMs (CodeMirror's page calls this on every view update, since Chrome on
   * Android composes through an EditContext, without composition events on the DOM).
   */
  idle () {
    if (this.composing() || this.settle !== null || (!this.held.length && !this.own.length)) return
    this.settleSoon()
  }

  settleSoon () {
    clearTimeout(this.settle)
    this.settle = setTimeout(() => {
      this.settle = null
      if (!this.composing()) this.flush()
    }, this.settleMs)
  }

  /** Send the user's composition as one update, then apply the held messages. */
  flush () {
    this.sendOwn()
    this.release()
  }

  sendOwn () {
    if (this.composing() || !this.own.length) return
    const updates = this.own.splice(0)
    if (this.mergeUpdates) this.send(this.mergeUpdates(updates), null)
    else for (const update of updates) this.send(update, null)
  }

  /**
   * The hold has lasted holdLimitMs: a composition still open is ended first, then what
   * waited goes once the editor has read its commit.
   */
  expire () {
    this.limit = null
    if (this.composing()) this.endComposition()
    setTimeout(() => {
      if (this.composing()) {
        // the browser kept the composition open: apply anyway, the tab must not stay behind
        this._open = false
      }
      this.flush()
    }, this.settleMs)
  }

  endComposition () {
    if (this._endOpt) return this._endOpt()
    const active = this.element.ownerDocument.activeElement
    if (!active || !this.element.contains(active) || typeof active.blur !== 'function') return
    active.blur()
    active.focus({ preventScroll: true })
  }

  /**
   * Apply the held messages in the order they came, through the provider's own entry
   * points (so that its answers, a sync step 2, go where they would have gone). A
   * message from a socket that has closed since is dropped: its edits come again in
   * the sync of the connection that replaced it (the server answers our state vector,
   * which lacks them), and its sync step 2 must not mark the new connection synced early.
   */
  release () {
    clearTimeout(this.limit)
    this.limit = null
    const provider = this.provider
    const ws = provider.ws
    this.replaying = true
    try {
      for (const message of this.held.splice(0)) {
        if (message.ws !== ws) continue
        try {
          if (message.emitSynced && ws && typeof ws.onmessage === 'function') {
            ws.onmessage({ data: message.bytes })
          } else if (!message.emitSynced && typeof provider._bcSubscriber === 'function') {
            provider._bcSubscriber(message.bytes, null)   // from another tab (BroadcastChannel)
          }
        } catch (err) {
          console.error('palimpsest: a held sync message', err)
        }
      }
    } finally {
      this.replaying = false
    }
  }

  /** Apply and send what waits, and let go of the provider and the element. */
  stop () {
    clearTimeout(this.settle)
    this.settle = null
    this._open = false
    this._composingOpt = null
    this.flush()
    this.element.removeEventListener('compositionstart', this._onStart, true)
    this.element.removeEventListener('compositionend', this._onEnd, true)
    this.provider.doc.off('update', this.queue)
    this.provider.doc.on('update', this.send)
    if (this.provider.messageHandlers[MESSAGE_SYNC] === this._handler) {
      this.provider.messageHandlers[MESSAGE_SYNC] = this.apply
    }
  }
}
