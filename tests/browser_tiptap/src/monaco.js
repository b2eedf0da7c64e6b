// The Monaco page of tests/test_browser_tiptap.py: Monaco (the editor of VS Code) bound
// to a Y.Text with y-monaco, through y-websocket:
//
//   monaco.html?ws=ws://HOST:PORT/ws&doc=NAME[&user=NAME][&undo=server]
//
// With undo=server, Ctrl-Z and Ctrl-Shift-Z / Ctrl-Y go to the server's undo and redo
// (static/palimpsest.js's ServerUndo) instead of Monaco's own stack, as docs/undo.md
// shows: Monaco's own undo does nothing once a collaborator's edit has come in.
//
// Monaco runs without its web workers (the page does not serve them; for plain text
// they only do word suggestions), so MonacoEnvironment says so and Monaco does their
// work on the page. Everything a test needs is on window.harness.
import * as monaco from 'monaco-editor/esm/vs/editor/editor.api.js'
import { MonacoBinding } from 'y-monaco'
import { ServerUndo } from '../../../static/palimpsest.js'
import { connect, expose, user } from './page.js'

const FIELD = 'monaco'

self.MonacoEnvironment = { getWorker: () => { throw new Error('no workers on this page') } }

const session = connect()
const { ydoc, provider } = session

const editor = monaco.editor.create(document.querySelector('#editor'), {
  value: '',
  language: 'plaintext',
  automaticLayout: false,
  minimap: { enabled: false },
  wordBasedSuggestions: 'off',
  quickSuggestions: false
})
const ytext = ydoc.getText(FIELD)
const binding = new MonacoBinding(ytext, editor.getModel(), new Set([editor]), provider.awareness)

let serverUndo = null
if (new URLSearchParams(location.search).get('undo') === 'server') {
  serverUndo = new ServerUndo(provider, { user })
  const { KeyMod, KeyCode } = monaco
  editor.addCommand(KeyMod.CtrlCmd | KeyCode.KeyZ, () => serverUndo.undo())
  editor.addCommand(KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ, () => serverUndo.redo())
  editor.addCommand(KeyMod.CtrlCmd | KeyCode.KeyY, () => serverUndo.redo())
}

expose(session, {
  editor,
  binding,
  /** what the user sees */
  value: () => editor.getModel().getValue(),
  /** the shared Y.Text */
  text: () => ytext.toString(),
  /** the server's undo, with undo=server */
  serverUndo: () => serverUndo,
  /** where the caret is, as an offset into the text */
  caret: () => editor.getModel().getOffsetAt(editor.getPosition())
})
