// Remote edits wait while the user composes text with an input method (IME: Japanese,
// Chinese, Korean…, or a phone keyboard's suggestions).
//
// During a composition the browser owns a range of the editor's DOM: the pre-edit text
// it replaces on every keystroke until the user commits. A remote change drawn on the
// same line makes CodeMirror redraw the line's text node; Chrome then loses that range,
// and every later pre-edit state is inserted beside the previous one instead of
// replacing it: typing にほんご and committing 日本語 next to a remote typist stored
// "ににほにほんにほんご日本語" for everyone. CodeMirror (6.43.15 as pinned, 6.44.2 alike)
// keeps a composition only while its text node matches the document, which any edit to
// that node breaks, and y-codemirror.next (0.3.6, the latest) draws remote edits at once.
//
// So the page uses /static/palimpsest.js's holdWhileComposing, the helper it offers any
// editor binding over y-websocket (Tiptap, Quill…): the sync messages from the server
// (remote edits, and the server's echo of ours) are held, in order, from the moment a
// composition starts, and applied once it has ended and CodeMirror has read the
// committed text (a little after compositionend, or at the next compositionstart when
// that comes first: a Korean IME starts the next syllable's composition as it commits
// one); the user's own pre-edit states are held too and sent with the commit as one
// update, so that the server's undo takes a composition back in one step; a composition
// left open past HOLD_LIMIT_MS is committed as it stands, then the held edits applied.
//
// What is CodeMirror's own: whether a composition is open is the view's
// `compositionStarted` (which also knows the compositions Chrome on Android runs through
// an EditContext, without composition events on the editor's DOM, so every view update
// lets the hold check again), and a composition is ended by taking the focus away from
// the view and giving it back.

import * as Y from 'yjs'
import { ViewPlugin } from '@codemirror/view'
import { holdWhileComposing } from '../../static/palimpsest.js'

/**
 * A CodeMirror extension that holds `provider`'s incoming sync messages and the user's
 * own updates while `view` composes.
 */
export function holdRemoteWhileComposing (provider) {
  return ViewPlugin.define((view) => new RemoteHold(provider, view))
}

class RemoteHold {
  constructor (provider, view) {
    this.hold = holdWhileComposing(provider, view.contentDOM, {
      mergeUpdates: Y.mergeUpdates,
      composing: () => view.compositionStarted,
      // Where the browser composes through an EditContext (Chrome on Android), the
      // editor's DOM is CodeMirror's own and there is no browser composition to end.
      endComposition: () => {
        if (view.contentDOM.editContext || !view.hasFocus) return
        view.contentDOM.blur()
        view.focus()
      }
    })
  }

  update () {
    this.hold.idle()
  }

  destroy () {
    this.hold.stop()
  }
}
