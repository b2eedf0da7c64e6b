// The live editor: a Y.Doc synced with the server by the stock y-websocket
// provider, its `content` Y.Text (or the one plain text root of a document another
// editor wrote, such as y-monaco's) bound to CodeMirror 6 by y-codemirror.next
// (remote cursors and names come from awareness; y-monaco's too, see monacocarets.js),
// and undo/redo sent to the
// server through /static/palimpsest.js instead of a local Y.UndoManager. A document
// with structure or formatting (Tiptap, Lexical, Quill) is drawn live, read-only.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { Compartment, EditorState, Prec, Transaction } from '@codemirror/state'
import {
  EditorView, keymap, drawSelection, dropCursor, highlightActiveLine, placeholder
} from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { searchKeymap, highlightSelectionMatches } from '@codemirror/search'
import { yCollab, ySyncAnnotation } from 'y-codemirror.next'
import { ServerUndo } from '../../static/palimpsest.js'
import { colorFor, lightColorFor } from './colors.js'
import { visibleText } from './controls.js'
import { holdRemoteWhileComposing } from './composition.js'
import { monacoCarets } from './monacocarets.js'
import { specialChars } from './specialchars.js'
import { lineDirection } from './direction.js'
import { $, h, clear, mountUrl, showBanner, wsBase } from './util.js'
import { LiveTree, chooseRoot, drawNodes, jsonOfRoot, modelOfRoot, rootKinds } from './render.js'

export function openDocument ({ doc, user, token, parent }) {
  const ydoc = new Y.Doc()
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
  // `root`: the text root the editor edits, or null while the document loads and when
  // it is only shown (`shown`: the roots drawn read-only); `ready` settles once that is
  // decided, after the first sync.
  const session = {
    doc, user, ydoc, ytext: null, root: null, shown: null, provider, undo, view: null, onUndo: null, onRedo: null
  }

  const runUndo = () => { session.onUndo?.(); return true }
  const runRedo = () => { session.onRedo?.(); return true }

  const editable = new Compartment()
  const collab = new Compartment()
  const hint = new Compartment()
  const editableExt = (on) => [EditorView.editable.of(on), EditorState.readOnly.of(!on)]
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: '',
      extensions: [
        // CodeMirror's document must be exactly the Y.Text: by default it splits lines on
        // \r\n, \r and \n alike and joins them with \n, so each CRLF would count one
        // character less than in the Y.Text and every edit after it would land at the
        // wrong place. With only \n a line break, a \r stays a character of its line
        // (drawn as ␍ by specialChars) and positions are the Y.Text's.
        EditorState.lineSeparator.of('\n'),
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
        specialChars, // (not highlightSpecialChars(): see specialchars.js)
        lineDirection,
        drawSelection(),
        dropCursor(),
        highlightActiveLine(),
        highlightSelectionMatches(),
        EditorView.lineWrapping,
        hint.of(placeholder('Opening the document…')),
        // No Tab binding: Tab and Shift+Tab move the focus out of the editor, as everywhere
        // else on the page (WCAG 2.1.2, no keyboard trap), and never indent the shared text.
        keymap.of([...defaultKeymap, ...searchKeymap]),
        collab.of([]),
        holdRemoteWhileComposing(provider), // (remote edits wait for an IME's commit)
        undoGrouping(session),
        editable.of(editableExt(false)),
        EditorView.contentAttributes.of({ 'aria-label': `Text of ${doc}`, spellcheck: 'true' })
      ]
    })
  })
  session.view = view
  // Until the first sync the page cannot know what the document holds: a Tiptap or
  // Lexical document would get a stray text root from a keystroke here. So the editor
  // is bound then, to a plain text root, or the document is drawn read-only.
  let allowed = true
  let settle
  session.ready = new Promise((resolve) => { settle = resolve })
  const bind = (synced) => {
    if (!synced || session.root !== null || session.shown !== null) return
    provider.off('sync', bind)
    const choice = chooseRoot(rootKinds(ydoc))
    if (choice.edit !== undefined) {
      const ytext = ydoc.getText(choice.edit)
      session.ytext = ytext
      session.root = choice.edit
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: ytext.toString() },
        annotations: Transaction.remote.of(true), // (the text as loaded: nobody's typing)
        effects: [
          collab.reconfigure([
            yCollab(ytext, provider.awareness, { undoManager: false }),
            monacoCarets(ytext, provider.awareness) // (y-monaco's carets: its `selection` field)
          ]),
          hint.reconfigure(placeholder('Start writing. Everyone in this document sees your text as you type.')),
          editable.reconfigure(editableExt(allowed))
        ]
      })
      parent.dataset.root = choice.edit
      // The editor can take the focus only now that it is editable: give it the focus
      // if nothing else has it (the page just loaded) and it is on show (not a preview).
      const idle = !document.activeElement || document.activeElement === document.body
      if (allowed && idle && !parent.hidden) view.focus()
    } else {
      session.shown = choice.show
      parent.dataset.shown = choice.show.join(' ') // styled: the text editor goes
      parent.append(liveView(ydoc, choice.show))
    }
    settle()
  }
  provider.on('sync', bind)
  session.status = new ConnectionStatus(provider, ydoc, $('#status'))
  session.setEditable = (on) => {
    allowed = on
    if (session.root !== null) view.dispatch({ effects: editable.reconfigure(editableExt(on)) })
  }
  session.focus = () => { if (session.root !== null) view.focus() }
  session.blur = () => view.contentDOM.blur()
  session.status.onRefused = (reason, code) => {
    showBanner(refusal(doc, reason, code, token))
    session.setEditable(false)
    if (session.root === null) view.dispatch({ effects: hint.reconfigure([]) }) // not opening
  }
  return session
}

/**
 * What the page says when the server refuses the document: the server's reason, except
 * for a sign-in missing or not accepted (4401), where the reason is written for
 * developers ("?token= on the websocket, Authorization: Bearer on HTTP") and the reader
 * needs to know how to sign in: with a link, the page's one way in (see main.js).
 */
function refusal (doc, reason, code, token) {
  if (code !== 4401) return [`The server refused this document: ${reason}`]
  const example = `${mountUrl(`?doc=${encodeURIComponent(doc)}`)}&token=…`
  return [
    token
      ? `Your sign-in was not accepted (${reason}). To sign in again, open a new sign-in link`
      : 'You are not signed in, and this server opens documents only to people who are. To sign in, open the sign-in link you were given',
    ' (an address like ', h('code', {}, example), '). Whoever runs this server can make you one.'
  ]
}

/**
 * A document the page does not edit, drawn as it is and kept current: each of the
 * roots `names` (an XML tree, a formatted text), then any maps and arrays as JSON.
 */
function liveView (ydoc, names) {
  const body = h('div', { class: 'doc-view live-view' })
  const note = names.length
    ? ['this document was written with an editor that keeps structure or formatting (Tiptap, ',
        'Lexical, Quill…), which this page\'s plain-text editor would lose. Its history, blame, ',
        'diffs and restore work here.']
    : ['this document holds only maps and arrays (an app\'s data, such as a board\'s shapes) ',
        'and no text for this page\'s editor. Its history and restore work here.']
  // a Tab stop, labelled: nothing in it takes the focus, and the keyboard must reach
  // and scroll a long document (axe: scrollable-region-focusable)
  const box = h('div', { class: 'live', id: 'live', tabindex: 0, role: 'region', 'aria-label': 'The document, read-only' },
    h('p', { class: 'live-note' }, 'Shown as it is, live and read-only: ', ...note),
    body)
  let queued = false
  let othersOpen = null // whether the maps and arrays are shown, once drawn
  const trees = new Map() // name -> LiveTree, for XML roots
  const draw = () => {
    queued = false
    clear(body)
    const kinds = rootKinds(ydoc)
    for (const name of names) {
      const kind = kinds.get(name)
      let blocks
      if (kind === 'xml') {
        if (!trees.has(name)) trees.set(name, new LiveTree(ydoc.getXmlFragment(name)))
        blocks = trees.get(name).draw()
      } else {
        const model = modelOfRoot(ydoc, name, kind)
        if (!model) continue
        blocks = drawNodes(model.nodes)
      }
      const section = h('section', { class: 'root', dataset: { root: name } })
      if (names.length > 1) section.append(h('h6', { class: 'root-name' }, name))
      section.append(blocks)
      body.append(section)
    }
    const others = [...kinds].filter(([name, kind]) => !names.includes(name) && (kind === 'map' || kind === 'array'))
    if (others.length) {
      // open when they are all there is (a board's shapes); as the reader left it after
      othersOpen = othersOpen ?? !names.length
      body.append(h('details', { class: 'other-roots', open: othersOpen, ontoggle: (e) => { othersOpen = e.target.open } },
        h('summary', {}, `${names.length ? 'Other shared types' : 'Shared types'} (${others.map(([n]) => n).join(', ')})`),
        h('pre', {}, visibleText(others.map(([name, kind]) => `${name} (${kind}): ${JSON.stringify(jsonOfRoot(ydoc, name, kind), null, 2)}\n`).join('\n')))))
    }
  }
  ydoc.on('update', () => {
    if (!queued) { queued = true; requestAnimationFrame(draw) }
  })
  draw()
  return box
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
        const typed = tr.annotation(ySyncAnnotation) === undefined && !tr.annotation(Transaction.remote)
        if (tr.docChanged && typed) dirty = true
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
    this.refusedCode = null
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
        this.refusedCode = event.code // 4404: the document was deleted
        provider.disconnect()
        this.onRefused?.(this.refused, this.refusedCode)
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
