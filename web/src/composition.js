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
// So the sync messages from the server (remote edits, and the server's echo of ours)
// are held, in order, from the moment a composition starts, and applied once it has
// ended and CodeMirror has read the committed text. The Y.Doc and the editor never
// differ meanwhile: the user's own pre-edit states still go out as they are typed, and
// Yjs merges the held edits around them. A composition left open does not hold the
// document for ever: after HOLD_LIMIT_MS the held edits are applied anyway (and may
// cut into a composition still open, as any remote edit did before).

import { ViewPlugin } from '@codemirror/view'
import { messageSync } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

/** the longest a composition holds remote edits back (ms) */
export const HOLD_LIMIT_MS = 5000

/**
 * After compositionend, CodeMirror reads the committed text from the DOM in a microtask
 * (on Android, in the next animation frame); an edit dispatched before that would
 * discard it. Half of this is CodeMirror's own window for changes that trail a
 * composition (compositionEndedAt + 50 ms).
 */
const SETTLE_MS = 100

/**
 * A CodeMirror extension that holds `provider`'s incoming sync messages while `view`
 * composes, by wrapping y-websocket's sync message handler (`provider.messageHandlers`,
 * its documented extension point, as /static/palimpsest.js uses for type 100).
 */
export function holdRemoteWhileComposing (provider) {
  return ViewPlugin.define((view) => new RemoteHold(provider, view), {
    eventObservers: {
      compositionstart () { this.composing() },
      compositionend () { this.settleSoon() }
    }
  })
}

class RemoteHold {
  constructor (provider, view) {
    this.provider = provider
    this.view = view
    this.apply = provider.messageHandlers[messageSync]
    /** @type {{ bytes: Uint8Array, ws: WebSocket | null, emitSynced: boolean }[]} */
    this.held = []
    this.limit = null
    this.settle = null
    provider.messageHandlers[messageSync] = (encoder, decoder, p, emitSynced, type) => {
      if (!this.holding()) return this.apply(encoder, decoder, p, emitSynced, type)
      this.held.push({ bytes: decoding.readTailAsUint8Array(decoder), ws: provider.ws, emitSynced })
      this.limit ??= setTimeout(() => this.release(), HOLD_LIMIT_MS)
    }
  }

  /** Whether a message arriving now waits: a composition is open or not yet read, or older ones wait. */
  holding () {
    return this.view.compositionStarted || this.settle !== null || this.held.length > 0
  }

  /**
   * Any editor update once no composition is open schedules the release too: Android's
   * EditContext composes without composition events on the editor's DOM.
   */
  update () {
    if (this.held.length && this.settle === null && !this.view.compositionStarted) this.settleSoon()
  }

  composing () {
    clearTimeout(this.settle)
    this.settle = null
  }

  settleSoon () {
    clearTimeout(this.settle)
    this.settle = setTimeout(() => {
      this.settle = null
      if (!this.view.compositionStarted) this.release()
    }, SETTLE_MS)
  }

  /**
   * Apply the held messages in the order they came. A message from a socket that has
   * closed since is dropped, not applied: its edits come again in the sync of the
   * connection that replaced it (the server answers our state vector, which lacks
   * them), and its sync step 2 must not mark the new connection synced early.
   */
  release () {
    clearTimeout(this.limit)
    this.limit = null
    const ws = this.provider.ws
    for (const message of this.held.splice(0)) {
      if (message.ws !== ws) continue
      const reply = encoding.createEncoder()
      this.apply(reply, decoding.createDecoder(message.bytes), this.provider, message.emitSynced, messageSync)
      if (encoding.length(reply) > 1 && ws.readyState === 1) ws.send(encoding.toUint8Array(reply))
    }
  }

  destroy () {
    this.release()
    clearTimeout(this.settle)
    this.provider.messageHandlers[messageSync] = this.apply
  }
}
