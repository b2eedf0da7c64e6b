// What the Quill, Lexical and Monaco pages share: their query, a Y.Doc and its
// y-websocket provider, the errors nobody catches (thrown inside provider or binding
// handlers, collected for a failing test to show), and how they expose window.harness.
//
//   PAGE.html?ws=ws://HOST:PORT/ws&doc=NAME[&user=NAME]
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import * as palimpsest from '../../../static/palimpsest.js'

const q = new URLSearchParams(location.search)
export const wsBase = q.get('ws')
export const docName = q.get('doc')
export const user = q.get('user') || ''
if (!wsBase || !docName) throw new Error('the page needs ?ws=…&doc=…')

export const errors = []
window.addEventListener('error', (e) => errors.push(String(e.error || e.message)))
window.addEventListener('unhandledrejection', (e) => errors.push(String(e.reason)))

/** A Y.Doc and a y-websocket provider for the page's query (`options` go to the
 * provider); `state` follows its connection and sync. */
export function connect (options = {}) {
  const ydoc = new Y.Doc()
  const state = { connected: false, synced: false }
  const provider = new WebsocketProvider(wsBase, docName, ydoc, {
    params: user ? { user } : {},
    ...options
  })
  provider.on('status', (e) => { state.connected = e.status === 'connected' })
  provider.on('sync', (s) => { state.synced = s })
  return { ydoc, provider, state }
}

/** window.harness: what every page has (Y, /static/palimpsest.js, the doc, provider and state, the errors,
 * ready()) and the page's own `extra`; then the page says it is ready. */
export function expose ({ ydoc, provider, state }, extra) {
  window.harness = {
    Y,
    palimpsest,
    ydoc,
    provider,
    state,
    errors,
    ready: () => state.connected && state.synced,
    ...extra
  }
  document.body.dataset.ready = 'harness'
}
