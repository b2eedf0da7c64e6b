// The live editor: a Y.Doc synced with the server by the stock y-websocket
// provider, its `content` Y.Text bound to CodeMirror 6 by y-codemirror.next
// (remote cursors and names come from awareness), and undo/redo sent to the
// server through /static/palimpsest.js instead of a local Y.UndoManager.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { Compartment, EditorState, Prec } from '@codemirror/state'
import {
  EditorView, keymap, drawSelection, dropCursor, highlightActiveLine,
  highlightSpecialChars, placeholder
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { searchKeymap, highlightSelectionMatches } from '@codemirror/search'
import { yCollab, ySyncAnnotation } from 'y-codemirror.next'
import { ServerUndo } from '../../static/palimpsest.js'
import { colorFor, lightColorFor } from './colors.js'
import { $, mountUrl, wsBase } from './util.js'

export function openDocument ({ doc, user, token, parent }) {
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('content')
  const wsUrl = wsBase()
  const params = { user }
  if (token) params.token = token
  // disableBc: tabs talk through the server only, so what you see is what it has.
  const provider = new WebsocketProvider(wsUrl, encodeURIComponent(doc), ydoc, {
    params,
    disableBc: true
  })
  provider.awareness.setLocalStateField('user', {
    name: user,
    color: colorFor(user),
    colorLight: lightColorFor(user, 0x33)
  })

  const undo = new ServerUndo(provider, { doc, user, token, baseUrl: mountUrl().replace(/\/$/, '') })
  const session = { doc, user, ydoc, ytext, provider, undo, view: null, onUndo: null, onRedo: null }

  const runUndo = () => { session.onUndo?.(); return true }
  const runRedo = () => { session.onRedo?.(); return true }

  const editable = new Compartment()
  const editableExt = (on) => [EditorView.editable.of(on), EditorState.readOnly.of(!on)]
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        // Undo and redo go to the server: highest precedence, before any default binding.
        Prec.highest(keymap.of([
          { key: 'Mod-z', run: runUndo, preventDefault: true },
          { key: 'Mod-y', run: runRedo, preventDefault: true },
          { key: 'Mod-Shift-z', run: runRedo, preventDefault: true }
        ])),
        EditorView.domEventHandlers({
          // the browser's Edit menu, mobile keyboards, "shake to undo"
          beforeinput (event) {
            if (event.inputType === 'historyUndo') { event.preventDefault(); runUndo(); return true }
            if (event.inputType === 'historyRedo') { event.preventDefault(); runRedo(); return true }
            return false
          }
        }),
        highlightSpecialChars(),
        drawSelection(),
        dropCursor(),
        highlightActiveLine(),
        highlightSelectionMatches(),
        EditorView.lineWrapping,
        placeholder('Start writing. Everyone in this document sees your text as you type.'),
        keymap.of([...defaultKeymap, ...searchKeymap, indentWithTab]),
        yCollab(ytext, provider.awareness, { undoManager: false }),
        undoGrouping(session),
        editable.of(editableExt(true)),
        EditorView.contentAttributes.of({ 'aria-label': `Text of ${doc}`, spellcheck: 'true' })
      ]
    })
  })
  session.view = view
  session.status = new ConnectionStatus(provider, ydoc, $('#status'))
  session.setEditable = (on) => {
    view.dispatch({ effects: editable.reconfigure(editableExt(on)) })
  }
  session.status.onRefused = (reason) => {
    const banner = $('#banner')
    banner.hidden = false
    banner.textContent = `The server refused this document: ${reason}`
    session.setEditable(false)
  }
  view.focus()
  return session
}

/**
 * Undo groups as people expect them: the server groups a user's edits by time; moving
 * the cursor elsewhere (or leaving the editor) after typing ends the group, so the
 * next undo takes back only what was typed since.
 */
function undoGrouping (session) {
  let dirty = false
  const close = () => {
    if (!dirty) return
    dirty = false
    const ops = (session.undo.hello && session.undo.hello.ops) || []
    if (ops.includes('close_group')) session.undo.closeGroup().catch(() => {})
  }
  return [
    EditorView.updateListener.of((update) => {
      for (const tr of update.transactions) {
        if (tr.docChanged && tr.annotation(ySyncAnnotation) === undefined) dirty = true
        else if (!tr.docChanged && tr.selection && tr.isUserEvent('select')) close()
      }
    }),
    EditorView.domEventHandlers({ blur () { close(); return false } })
  ]
}

/**
 * Connection state for the status pill: connected / connecting / reconnecting /
 * offline with edits pending / refused. "Pending" counts local Y updates made
 * while the websocket was down; they go to the server in the sync step 2 that
 * answers its step 1 when the socket is back, and count as delivered once the
 * provider is synced again.
 */
export class ConnectionStatus {
  constructor (provider, ydoc, el) {
    this.provider = provider
    this.el = el
    this.state = 'connecting'
    this.everConnected = false
    this.pending = 0
    this.refused = null
    this.onRefused = null
    this.listeners = new Set()

    provider.on('status', ({ status }) => {
      if (status === 'connected') this.everConnected = true
      this.render()
    })
    provider.on('sync', (synced) => {
      if (synced && this.pending > 0) {
        // the server answered our step 1; our step 2 (with the offline edits) is on the
        // same socket ahead of anything else we send: wait until the socket drained it
        this._waitDrained()
      }
      this.render()
    })
    provider.on('connection-close', (event) => {
      // 4400–4499: a permanent refusal (bad name, bad token, forbidden): stop retrying
      if (event && event.code >= 4400 && event.code < 4500) {
        this.refused = event.reason || `closed with code ${event.code}`
        provider.disconnect()
        this.onRefused?.(this.refused)
      }
      this.render()
    })
    ydoc.on('update', (_update, origin) => {
      if (origin === provider) return // came from the server
      if (!this._live()) {
        this.pending++
        this.render()
      }
    })
    window.addEventListener('online', () => this.render())
    window.addEventListener('offline', () => this.render())
    this.render()
  }

  _live () {
    const ws = this.provider.ws
    return this.provider.wsconnected && ws && ws.readyState === 1 && this.provider.synced
  }

  _waitDrained () {
    const check = () => {
      const ws = this.provider.ws
      if (!ws || !this.provider.wsconnected) return
      if (ws.bufferedAmount === 0) {
        this.pending = 0
        this.render()
      } else {
        setTimeout(check, 100)
      }
    }
    setTimeout(check, 0)
  }

  on (fn) { this.listeners.add(fn); return () => this.listeners.delete(fn) }

  compute () {
    const p = this.provider
    if (this.refused) return { state: 'refused', text: 'Refused', title: this.refused }
    if (p.wsconnected && p.synced && this.pending === 0) {
      return { state: 'connected', text: 'Connected', title: 'Live: edits are saved as you type' }
    }
    if (p.wsconnected && !p.synced) {
      return { state: 'syncing', text: 'Syncing…', title: 'Exchanging changes with the server' }
    }
    if (p.wsconnected && this.pending > 0) {
      return { state: 'syncing', text: 'Saving…', title: 'Sending the edits made offline' }
    }
    if (this.pending > 0) {
      return {
        state: 'offline',
        text: `Offline · ${this.pending === 1 ? '1 edit' : `${this.pending} edits`} pending`,
        title: 'Your edits are kept here and sent when the connection is back'
      }
    }
    if (this.everConnected) {
      return { state: 'reconnecting', text: 'Reconnecting…', title: 'The connection dropped; retrying' }
    }
    return { state: 'connecting', text: 'Connecting…', title: 'Opening the connection' }
  }

  render () {
    const { state, text, title } = this.compute()
    this.state = state
    this.el.dataset.state = state
    this.el.querySelector('.pill-text').textContent = text
    this.el.title = title
    for (const fn of this.listeners) fn(state)
  }
}
