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
// ended and CodeMirror has read the committed text: a little after compositionend, or
// at the next compositionstart when that comes first (a Korean IME starts the next
// syllable's composition as it commits one). The Y.Doc and the editor never differ
// meanwhile: Yjs merges the held edits around the user's own.
//
// The user's own pre-edit states are held too, and sent with the commit as one update:
// the server groups a user's edits into undo steps by time, and a composition typed at
// a human pace would be as many steps as pre-edit states, so that Ctrl-Z after a commit
// brought back kana nobody committed. Sent as one, a composition and its commit are one
// step (joined with the typing around it like any edit, by time).
//
// A composition left open does not hold the document for ever: after HOLD_LIMIT_MS it
// is ended (the editor loses the focus and takes it back, which makes the browser
// commit the pre-edit text as it stands) and the held edits are applied after it. A
// phrase still being converted is then committed as it was typed, which the user sees
// and can correct; applied into the open composition, the held edits made the browser
// keep every pre-edit state, for everyone.

import * as Y from 'yjs'
import { ViewPlugin } from '@codemirror/view'
import { messageSync } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

/**
 * the longest a composition holds remote edits back (ms), after which it is committed as
 * it stands: long enough for a phrase composed at a thinking pace (a Japanese sentence
 * of a dozen keys took 6 s), short enough that the tab is not long out of date
 */
export const HOLD_LIMIT_MS = 15000

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
 * its documented extension point, as /static/palimpsest.js uses for type 100), and the
 * user's own updates, by taking the place of the provider's Y.Doc update listener.
 */
export function holdRemoteWhileComposing (provider) {
  return ViewPlugin.define((view) => new RemoteHold(provider, view), {
    eventObservers: {
      compositionstart () { this.composing() },
      compositionend () { this.ended() }
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
      this.limit ??= setTimeout(() => this.expire(), HOLD_LIMIT_MS)
    }
    /** the user's updates made since a composition started, not sent yet */
    this.own = []
    this.sending = null
    // y-websocket 2.1 sends each local update from this listener (`_updateHandler`)
    this.send = provider._updateHandler
    this.queue = (update, origin) => {
      if (origin === provider) return
      if (!this.view.compositionStarted && !this.own.length) return this.send(update, origin)
      this.own.push(update)
    }
    provider.doc.off('update', this.send)
    provider.doc.on('update', this.queue)
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
    if (this.view.compositionStarted) return
    if (this.held.length && this.settle === null) this.settleSoon()
    if (this.own.length) this.sendSoon()
  }

  /**
   * A composition starts. The one before it, if any, has been read by now: the browser
   * runs CodeMirror's microtask between dispatching compositionend and this event, and
   * has not touched the DOM for the new one yet. So what waits for it goes now, before
   * the new composition holds it for another round (a Korean typist never pauses
   * SETTLE_MS between syllables).
   */
  composing () {
    if (this.settle === null) return
    clearTimeout(this.settle)
    this.settle = null
    this.sendOwn()
    this.release()
  }

  ended () {
    this.sendSoon()
    this.settleSoon()
  }

  /** After CodeMirror has read the commit (its microtask), the composition goes out as one update. */
  sendSoon () {
    this.sending ??= setTimeout(() => this.sendOwn(), 0)
  }

  sendOwn () {
    clearTimeout(this.sending)
    this.sending = null
    if (this.view.compositionStarted || !this.own.length) return
    this.send(Y.mergeUpdates(this.own.splice(0)), null)
  }

  settleSoon () {
    clearTimeout(this.settle)
    this.settle = setTimeout(() => {
      this.settle = null
      if (!this.view.compositionStarted) this.release()
    }, SETTLE_MS)
  }

  /**
   * The hold has lasted HOLD_LIMIT_MS: a composition still open is ended first, then
   * the held edits are applied once CodeMirror has read its commit. (Where the browser
   * composes through an EditContext, as Chrome on Android does, the editor's DOM is
   * CodeMirror's own, and there is no browser composition to end.)
   */
  expire () {
    this.limit = null
    const dom = this.view.contentDOM
    if (this.view.compositionStarted && !dom.editContext && this.view.hasFocus) {
      dom.blur()
      this.view.focus()
    }
    setTimeout(() => {
      this.sendOwn()
      this.release()
    }, 0)
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
    clearTimeout(this.sending)
    if (this.own.length) this.send(Y.mergeUpdates(this.own.splice(0)), null)
    this.provider.doc.off('update', this.queue)
    this.provider.doc.on('update', this.send)
    this.provider.messageHandlers[messageSync] = this.apply
  }
}
