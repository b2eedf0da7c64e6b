// The Quill page of tests/test_browser_tiptap.py: Quill 2 bound to a Y.Text with
// y-quill (the binding Yjs's docs point Quill users to), through y-websocket:
//
//   quill.html?ws=ws://HOST:PORT/ws&doc=NAME[&user=NAME]
//
// Everything a test needs is on window.harness; nothing here knows what is tested.
import Quill from 'quill'
import { QuillBinding } from 'y-quill'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { wsBase, docName, user, errors } from './page.js'

const FIELD = 'quill'

const ydoc = new Y.Doc()
const state = { connected: false, synced: false }
const provider = new WebsocketProvider(wsBase, docName, ydoc, { params: user ? { user } : {} })
provider.on('status', (e) => { state.connected = e.status === 'connected' })
provider.on('sync', (s) => { state.synced = s })

const quill = new Quill(document.querySelector('#editor'), {
  modules: { toolbar: false, history: { userOnly: true } }
})
const binding = new QuillBinding(ydoc.getText(FIELD), quill, provider.awareness)

window.harness = {
  Y,
  ydoc,
  quill,
  binding,
  provider,
  errors,
  state,
  /** what the user sees, as Quill's delta */
  contents: () => quill.getContents().ops,
  /** the shared Y.Text, as a delta (what every peer holds) */
  ytext: () => ydoc.getText(FIELD).toDelta(),
  ready: () => state.connected && state.synced
}
document.body.dataset.ready = 'harness'
