#!/usr/bin/env node
// Unmodified @hocuspocus/provider clients (2.x and 3.x, installed as the npm aliases
// hocuspocus-provider-2 / hocuspocus-provider-3) and y-websocket clients in one process,
// driven by tests/test_hocuspocus_node.py. Every document's shared text is Y.Text 'content'.
//
// One JSON command per stdin line; one JSON answer per command on stdout:
// {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
//
//   socket {name, version: 2|3, url, options?}
//                                        a HocuspocusProviderWebsocket (one socket, many docs);
//                                        options: its configuration's own (messageReconnectTimeout…)
//   open {name, socket, doc, token?, tab?, tokenDelay?, tokens?}   a HocuspocusProvider for doc
//                                        on that socket; tokenDelay (ms): its token comes from a
//                                        callback that takes that long (an app fetching one);
//                                        tokens: from a callback giving the next of them at each
//                                        call (the last one again once they run out), its calls
//                                        counted (state's tokenCalls); a null among them throws
//   yws {name, url, doc, params?, stopOn44xx?, tab?}   a y-websocket WebsocketProvider (url
//                                        ends in /ws); stopOn44xx: disconnect() on a 44xx close
//                                        tab {state, clientID, offline?}: the Y.Doc of a tab
//                                        that stayed open while its server changed: state
//                                        (a base64 Yjs update) and clientID (its own), and
//                                        `offline` typed at its start before it connects
//   insert {name, text, pos?}            one transaction (pos: index, default the end)
//   unsent {name, text}                  an edit the provider never sends (its own origin): a
//                                        frame lost on the way, as with a connection that died
//   forge {name, clientID}               the doc's next edits carry another Yjs client id
//   awareness {name, state}              provider.awareness.setLocalState(state)
//   stateless {name, payload}            provider.sendStateless(payload)
//   state {name}                         {text, synced, unsynced, scope, denied, stateless,
//                                        closes, connected, socketCloses, presence, statuses}
//                                        (closes: close codes; a y-websocket provider's
//                                        'connection-close' events as [code, reason];
//                                        presence: user.name of every remote state, sorted;
//                                        statuses: the sync statuses received, 1 or 0)
//   wait {name, field, equals? | contains? | truthy? | atLeast?, timeout?}
//                                        poll state[field] until it holds; answers the state
//   destroy {name}                       provider.destroy()
//   exit
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import readline from 'node:readline'
import * as H2 from 'hocuspocus-provider-2'
import * as H3 from 'hocuspocus-provider-3'

const HOCUSPOCUS = { 2: H2, 3: H3 }
const sockets = new Map()
const clients = new Map()

const client = (name) => {
  const c = clients.get(name)
  if (!c) throw new Error(`no client named ${name}`)
  return c
}

const track = (doc) => ({
  doc,
  text: doc.getText('content'),
  scope: null,
  denied: [],
  stateless: [],
  closes: [],
})

/** A new Y.Doc, or a tab's that stayed open (see `tab` above). */
const newDoc = (tab) => {
  const ydoc = new Y.Doc()
  if (tab) {
    Y.applyUpdate(ydoc, Buffer.from(tab.state, 'base64'))
    // after the update: Yjs takes a new id when a remote update carries its own
    ydoc.clientID = tab.clientID
    if (tab.offline) ydoc.getText('content').insert(0, tab.offline)
  }
  return ydoc
}

const commands = {
  socket ({ name, version, url, options }) {
    const lib = HOCUSPOCUS[version]
    if (!lib) throw new Error(`no provider version ${version}`)
    const ws = new lib.HocuspocusProviderWebsocket({
      url, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 100, maxDelay: 500, quiet: true,
      ...(options ?? {}),
    })
    const entry = { ws, version, closes: 0 }
    ws.on('close', () => { entry.closes++ })
    sockets.set(name, entry)
    return { version }
  },
  open ({ name, socket, doc, token, tab, tokenDelay, tokens }) {
    const s = sockets.get(socket)
    if (!s) throw new Error(`no socket named ${socket}`)
    const ydoc = newDoc(tab)
    const c = track(ydoc)
    c.kind = `hocuspocus-${s.version}`
    c.socket = s
    const config = {
      websocketProvider: s.ws,
      name: doc,
      document: ydoc,
      onAuthenticated: () => { c.scope = c.provider.authorizedScope ?? 'authenticated' },
      onAuthenticationFailed: ({ reason }) => { c.denied.push(reason) },
      onStateless: ({ payload }) => { c.stateless.push(payload) },
      onClose: ({ event }) => { c.closes.push(event?.code ?? null) },
    }
    c.tokenCalls = 0
    if (tokens) { // an app's token callback that fetches a fresh one each time
      config.token = async () => {
        const next = tokens[Math.min(c.tokenCalls++, tokens.length - 1)]
        if (next === null) throw new Error('idp down')
        return next
      }
    } else if (tokenDelay) { // an app's token callback that fetches one (`token: async () => …`)
      config.token = () => new Promise((resolve) => setTimeout(() => resolve(token), tokenDelay))
    } else if (token !== undefined && token !== null) config.token = token
    c.provider = new HOCUSPOCUS[s.version].HocuspocusProvider(config)
    c.statuses = []
    c.provider.on('message', ({ message }) => { // every sync status the server sends
      message.readVarString()
      if (message.readVarUint() === 8) c.statuses.push(message.readVarUint())
    })
    if (s.version >= 3) c.provider.attach()
    clients.set(name, c)
    return { clientID: ydoc.clientID }
  },
  yws ({ name, url, doc, params, stopOn44xx, tab }) {
    const ydoc = newDoc(tab)
    const c = track(ydoc)
    c.kind = 'y-websocket'
    // disableBc: the providers of this process would share presence and edits through
    // lib0's in-process BroadcastChannel, around the server (as client.mjs does)
    c.provider = new WebsocketProvider(url, doc, ydoc, {
      WebSocketPolyfill: WebSocket, params: params ?? {}, disableBc: true,
    })
    // (called a second time with null by provider.disconnect())
    c.provider.on('connection-close', (event) => { if (event) c.closes.push([event.code, event.reason]) })
    if (stopOn44xx) { // what README.md tells an app to do
      c.provider.on('connection-close', (event) => {
        if (event && event.code >= 4400 && event.code < 4500) c.provider.disconnect()
      })
    }
    clients.set(name, c)
    return { clientID: ydoc.clientID }
  },
  insert ({ name, text, pos }) {
    const c = client(name)
    c.text.insert(pos ?? c.text.length, text)
    return state(c)
  },
  unsent ({ name, text }) {
    const c = client(name)
    Y.transact(c.doc, () => c.text.insert(c.text.length, text), c.provider)
    return state(c)
  },
  awareness ({ name, state }) {
    client(name).provider.awareness.setLocalState(state)
    return null
  },
  forge ({ name, clientID }) {
    client(name).doc.clientID = clientID
    return null
  },
  async renew ({ name, token }) { // a fresh token, sent on the open document
    const c = client(name)
    c.provider.configuration.token = token
    await c.provider.sendToken()
    return null
  },
  stateless ({ name, payload }) {
    client(name).provider.sendStateless(payload)
    return null
  },
  state ({ name }) { return state(client(name)) },
  async wait ({ name, field, equals, contains, truthy, atLeast, timeout }) {
    const c = client(name)
    const deadline = Date.now() + (timeout ?? 10000)
    for (;;) {
      const s = state(c)
      const v = s[field]
      const hay = typeof v === 'string' ? v : Array.isArray(v) ? v.join('\n') : JSON.stringify(v)
      const holds = equals !== undefined ? JSON.stringify(v) === JSON.stringify(equals)
        : contains !== undefined ? [contains].flat().every((x) => hay.includes(x))
          : atLeast !== undefined ? v >= atLeast
            : truthy === false ? !truthful(v) : truthful(v)
      if (holds) return s
      if (Date.now() > deadline) throw new Error(`${name}.${field} did not hold: ${JSON.stringify(s)}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  },
  destroy ({ name }) {
    client(name).provider.destroy()
    clients.delete(name)
    return null
  },
}

const truthful = (v) => (Array.isArray(v) ? v.length > 0 : !!v)

function remoteNames (c) {
  const names = []
  for (const [id, st] of c.provider.awareness.getStates()) {
    if (id !== c.doc.clientID && st) names.push(st.user?.name ?? null)
  }
  return names.sort()
}

function state (c) {
  const p = c.provider
  const hocus = c.kind !== 'y-websocket'
  return {
    kind: c.kind,
    text: c.text.toString(),
    synced: !!p.synced,
    unsynced: hocus ? p.unsyncedChanges : null,
    hasUnsynced: hocus ? p.hasUnsyncedChanges : null,
    scope: c.scope,
    denied: c.denied,
    stateless: c.stateless,
    closes: c.closes,
    connected: hocus ? p.configuration.websocketProvider.status === 'connected' : p.wsconnected,
    socketCloses: c.socket ? c.socket.closes : null,
    presence: remoteNames(c),
    statuses: hocus ? c.statuses : null,
    tokenCalls: hocus ? c.tokenCalls : null,
    // y-websocket: failed connections in a row (its back-off), whether it reconnects
    retries: hocus ? null : p.wsUnsuccessfulReconnects,
    shouldConnect: hocus ? null : p.shouldConnect,
  }
}

/** One answer line, written out before the promise settles: process.exit() drops what a
 * pipe has not taken yet (tests/node/lexical_session.mjs lost the end of a long line so). */
const write = (obj) => new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + '\n', resolve))

const rl = readline.createInterface({ input: process.stdin })
for await (const line of rl) {
  if (!line.trim()) continue
  let answer
  try {
    const cmd = JSON.parse(line)
    if (cmd.op === 'exit') {
      await write({ ok: true, result: null })
      process.exit(0)
    }
    const fn = commands[cmd.op]
    if (!fn) throw new Error(`unknown op ${cmd.op}`)
    answer = { ok: true, result: await fn(cmd) }
  } catch (e) {
    answer = { ok: false, error: String(e?.stack ?? e) }
  }
  await write(answer)
}
process.exit(0)
