// The Quill page of tests/test_browser_tiptap.py: Quill 2 bound to a Y.Text with
// y-quill (the binding Yjs's docs point Quill users to), through y-websocket:
//
//   quill.html?ws=ws://HOST:PORT/ws&doc=NAME[&user=NAME]
//
// Everything a test needs is on window.harness; nothing here knows what is tested.
import Quill from 'quill'
import { QuillBinding } from 'y-quill'
import { connect, expose } from './page.js'

const FIELD = 'quill'

const session = connect()
const { ydoc, provider } = session

const quill = new Quill(document.querySelector('#editor'), {
  modules: { toolbar: false, history: { userOnly: true } }
})
const binding = new QuillBinding(ydoc.getText(FIELD), quill, provider.awareness)

expose(session, {
  quill,
  binding,
  /** what the user sees, as Quill's delta */
  contents: () => quill.getContents().ops,
  /** the shared Y.Text, as a delta (what every peer holds) */
  ytext: () => ydoc.getText(FIELD).toDelta()
})
