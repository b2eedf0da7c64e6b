// The page of tests/test_browser_tiptap.py: Tiptap 3 + its Collaboration extension
// (client-side undo with y-tiptap's Y.UndoManager, as every Tiptap collaboration setup
// has it), connected through either provider, chosen by the query:
//
//   index.html?provider=y-websocket|hocuspocus&ws=ws://HOST:PORT/ws&doc=NAME
//             [&user=NAME][&token=JWT]
//
// `ws` is the provider's base URL: /ws for y-websocket (the document name is appended
// by the provider), /hocuspocus for @hocuspocus/provider (the name travels in-band).
// Everything a test needs is on window.harness; nothing here knows what is tested.
import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import { ySyncPluginKey } from '@tiptap/y-tiptap'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import * as palimpsest from '../../../static/palimpsest.js'

const q = new URLSearchParams(location.search)
const kind = q.get('provider') || 'y-websocket'
const wsBase = q.get('ws')
const docName = q.get('doc')
const user = q.get('user') || ''
const token = q.get('token') || ''
const FIELD = 'default'

// Errors thrown inside provider/binding handlers (e.g. y-prosemirror's RangeError)
// are caught by nobody: collect them so a test can show them when it fails.
const errors = []
window.addEventListener('error', (e) => errors.push(String(e.error || e.message)))
window.addEventListener('unhandledrejection', (e) => errors.push(String(e.reason)))

const ydoc = new Y.Doc()
const state = { connected: false, synced: false, provider: kind }

function makeProvider () {
  if (!wsBase || !docName) throw new Error('the page needs ?ws=…&doc=…')
  if (kind === 'y-websocket') {
    const params = {}
    if (user) params.user = user
    if (token) params.token = token
    const p = new WebsocketProvider(wsBase, docName, ydoc, { params })
    p.on('status', (e) => { state.connected = e.status === 'connected' })
    p.on('sync', (s) => { state.synced = s })
    return p
  }
  if (kind === 'hocuspocus') {
    // open mode identifies the user by ?user=, as on /ws; with a token it goes in-band
    const url = user ? `${wsBase}?user=${encodeURIComponent(user)}` : wsBase
    return new HocuspocusProvider({
      url,
      name: docName,
      document: ydoc,
      token: token || null,
      onStatus: (e) => { state.connected = e.status === 'connected' },
      onSynced: (e) => { state.synced = e.state !== false },
      onAuthenticationFailed: (e) => errors.push(`authentication failed: ${e.reason}`)
    })
  }
  throw new Error(`unknown provider ${kind}`)
}

const provider = makeProvider()
const editor = new Editor({
  element: document.querySelector('#editor'),
  extensions: [
    // Collaboration brings its own undo (Y.UndoManager); StarterKit's must be off
    StarterKit.configure({ undoRedo: false }),
    Collaboration.configure({ document: ydoc, field: FIELD })
  ]
})

window.harness = {
  Y,
  /** /static/palimpsest.js (ServerUndo, holdWhileComposing), for a test to use */
  palimpsest,
  ydoc,
  editor,
  provider,
  errors,
  state,
  /** the editor's view: what the user sees */
  viewJSON: () => editor.getJSON(),
  viewText: () => editor.getText(),
  /** the shared Y.XmlFragment, as XML (what every peer holds) */
  fragmentXML: () => ydoc.getXmlFragment(FIELD).toString(),
  ready: () => state.connected && state.synced,
  /** y-tiptap's binding (its cached selection explains many binding bugs) */
  binding: () => ySyncPluginKey.getState(editor.state)?.binding ?? null
}
document.body.dataset.ready = 'harness'
