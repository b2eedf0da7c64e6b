// The Lexical page of tests/test_browser_tiptap.py: Lexical with rich text, bound to
// Yjs with @lexical/yjs the way @lexical/react's CollaborationPlugin binds it
// (createBinding, syncLexicalUpdateToYjs, syncYjsChangesToLexical, and its undo manager),
// through y-websocket:
//
//   lexical.html?ws=ws://HOST:PORT/ws&doc=NAME[&user=NAME]
//
// Everything a test needs is on window.harness; nothing here knows what is tested.
import {
  createEditor, $getRoot, $createRangeSelection, $setSelection, UNDO_COMMAND, REDO_COMMAND,
  COMMAND_PRIORITY_EDITOR
} from 'lexical'
import { registerRichText, HeadingNode, QuoteNode } from '@lexical/rich-text'
import {
  createBinding, createUndoManager, syncLexicalUpdateToYjs, syncYjsChangesToLexical
} from '@lexical/yjs'
import * as Y from 'yjs'
import { docName, errors, connect, expose } from './page.js'

const session = connect({ connect: false })  // connected once the binding is made
const { ydoc, provider } = session

const editor = createEditor({
  namespace: 'harness',
  nodes: [HeadingNode, QuoteNode],
  onError: (e) => errors.push(String(e))
})
editor.setRootElement(document.querySelector('#editor'))
registerRichText(editor)

const docMap = new Map([[docName, ydoc]])
const binding = createBinding(editor, provider, docName, ydoc, docMap)
binding.root.getSharedType().observeDeep((events, transaction) => {
  if (transaction.origin !== binding) {
    syncYjsChangesToLexical(binding, provider, events, transaction.origin instanceof Y.UndoManager)
  }
})
editor.registerUpdateListener(({ prevEditorState, editorState, dirtyElements, dirtyLeaves,
  normalizedNodes, tags }) => {
  if (!tags.has('skip-collab')) {
    syncLexicalUpdateToYjs(binding, provider, prevEditorState, editorState, dirtyElements,
      dirtyLeaves, normalizedNodes, tags)
  }
})
// Lexical's own undo, as @lexical/react's CollaborationPlugin wires it (useYjsHistory):
// a Y.UndoManager over the root, for this client's changes only, on Ctrl-Z / Ctrl-Y
const undoManager = createUndoManager(binding, binding.root.getSharedType())
editor.registerCommand(UNDO_COMMAND, () => { undoManager.undo(); return true }, COMMAND_PRIORITY_EDITOR)
editor.registerCommand(REDO_COMMAND, () => { undoManager.redo(); return true }, COMMAND_PRIORITY_EDITOR)
provider.connect()

expose(session, {
  editor,
  binding,
  /** what the user sees: per paragraph, its text nodes as [text, format bits] */
  nodes: () => editor.getEditorState().read(() =>
    $getRoot().getChildren().map((p) => ({
      type: p.getType(),
      text: p.getChildren ? p.getChildren().map((t) => [t.getTextContent(), t.getFormat ? t.getFormat() : null]) : []
    }))),
  /** the editor state's text, as $getRoot().getTextContent() gives it */
  rootText: () => editor.getEditorState().read(() => $getRoot().getTextContent()),
  /** select characters start..end of the first text node of paragraph i */
  select: (i, start, end) => new Promise((resolve) => editor.update(() => {
    const text = $getRoot().getChildAtIndex(i).getFirstChild()
    const sel = $createRangeSelection()
    sel.anchor.set(text.getKey(), start, 'text')
    sel.focus.set(text.getKey(), end, 'text')
    $setSelection(sel)
  }, { onUpdate: resolve }))
})
