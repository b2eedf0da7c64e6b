// The Monaco page of tests/test_browser_tiptap.py: Monaco (the editor of VS Code) bound
// to a Y.Text with y-monaco, through y-websocket:
//
//   monaco.html?ws=ws://HOST:PORT/ws&doc=NAME[&user=NAME]
//
// Monaco runs without its web workers (the page does not serve them; for plain text
// they only do word suggestions), so MonacoEnvironment says so and Monaco does their
// work on the page. Everything a test needs is on window.harness.
import * as monaco from 'monaco-editor/esm/vs/editor/editor.api.js'
import { MonacoBinding } from 'y-monaco'
import { connect, expose } from './page.js'

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

expose(session, {
  editor,
  binding,
  /** what the user sees */
  value: () => editor.getModel().getValue(),
  /** the shared Y.Text */
  text: () => ytext.toString(),
  /** where the caret is, as an offset into the text */
  caret: () => editor.getModel().getOffsetAt(editor.getPosition())
})
