// Palimpsest's browser page: a document list at `/`, an editor at `/?doc=NAME`.
//
// Built by web/build.sh into static/app.js. The pieces a developer would copy
// into their own app are editor.js (yjs + y-websocket + CodeMirror 6) and
// /static/palimpsest.js (server-side undo/redo).

import { Api } from './api.js'
import { colorFor, initials, inkOn } from './colors.js'
import { $, h, clear, relativeTime, absoluteTime, formatBytes, mountUrl, showBanner, wsBase } from './util.js'
import { toast } from './toast.js'
import { removedList } from './removed.js'
import { openDocument } from './editor.js'
import { HistoryPanel } from './history.js'

const USER_KEY = 'palimpsest.user'
const TOKEN_KEY = 'palimpsest.token'

/**
 * A name as the server takes it: at most 64 characters, counted as the server counts
 * them (code points: cutting 64 UTF-16 units split an emoji, and encodeURIComponent
 * threw on the half left), no space at either end (also after the cut).
 */
function cleanName (name) {
  const spaced = String(name || '').trim().replace(/\s+/g, ' ')
  return Array.from(spaced).slice(0, 64).join('').trim()
}

/** The user's name: `?user=` wins (and is remembered), else localStorage, else ask once. */
async function ensureUser (params) {
  return knownName(params) || askName('')
}

/** `?user=` (remembered), else the name remembered, else '' */
function knownName (params) {
  const fromUrl = cleanName(params.get('user'))
  if (fromUrl) {
    try { localStorage.setItem(USER_KEY, fromUrl) } catch {}
    return fromUrl
  }
  try { return cleanName(localStorage.getItem(USER_KEY)) } catch { return '' }
}

/**
 * Who the page says you are: with a token, the user it names, never asked for (the
 * server takes the user from the token, and a name typed here would mean nothing); a
 * token the page cannot read, which the server refuses, falls back to a name known.
 * (`?user=` is remembered all the same, for a server without tokens.) Without a token,
 * the user the server already knows (`signedIn`), else a name known or asked for.
 * `server`: the server named the user.
 */
async function whoAmI (params, token) {
  if (!token) {
    const user = await signedIn()
    if (user) return { user, server: true }
    return { user: await ensureUser(params), server: false }
  }
  const known = knownName(params)
  return { user: tokenUser(token) || known || 'guest', server: false }
}

/**
 * The user the server already knows, or null: an app that embeds Palimpsest and signs
 * its users in itself (its own `authenticate`, a session cookie) has them edit under
 * that name, and asking "What should we call you?" meant nothing there. `GET api/me`
 * says who the server takes this browser for; in open mode (`open`), or when nobody
 * accepted it (401), the name is the page's to ask.
 */
async function signedIn () {
  try {
    const response = await fetch(mountUrl('api/me'), { headers: { Accept: 'application/json' } })
    if (!response.ok) return null
    const me = await response.json()
    return !me.open && typeof me.user === 'string' && me.user ? me.user : null
  } catch {
    return null
  }
}

/**
 * Ask for a name: the name given, or null when the dialog was dismissed (Esc). Its
 * listeners go when it closes, however it closes: one left behind by a dialog closed
 * with Esc would answer the next time too.
 */
function askName (current) {
  const dialog = $('#name-dialog')
  const form = $('#name-form')
  const input = $('#name-input')
  if (dialog.open) return Promise.resolve(null)
  input.value = current
  return new Promise((resolve) => {
    let chosen = null
    const onSubmit = (event) => {
      const name = cleanName(input.value)
      if (!name) { event.preventDefault(); return }
      chosen = name
      try { localStorage.setItem(USER_KEY, name) } catch {}
    }
    // The first time there is nothing to go back to: the dialog can't be dismissed.
    const onCancel = (event) => { if (!current) event.preventDefault() }
    const onClose = () => {
      if (chosen === null && !current) { dialog.showModal(); input.focus(); return } // (closed anyway)
      form.removeEventListener('submit', onSubmit)
      dialog.removeEventListener('cancel', onCancel)
      dialog.removeEventListener('close', onClose)
      resolve(chosen)
    }
    form.addEventListener('submit', onSubmit)
    dialog.addEventListener('cancel', onCancel)
    dialog.addEventListener('close', onClose)
    dialog.showModal()
    input.focus()
  })
}

/** The token kept under TOKEN_KEY in localStorage or sessionStorage, or null. */
function storedToken (storage) {
  try { return window[storage].getItem(TOKEN_KEY) } catch { return null }
}

/**
 * The token the page uses: this tab's own (a link's), else the one this browser keeps.
 *
 * A `?token=` is taken out of the address as soon as it is read (replaceState: not left
 * in the address bar, the history, a bookmark or a link copied from there) and kept for
 * this tab only (sessionStorage, which a reload keeps). A link never replaces the token
 * this browser keeps: anyone could otherwise send a link with their own token and have
 * every later visit work as them (token fixation). The page offers to keep it instead.
 * @returns {{token: string|null, tabOnly: boolean, kept: string|null}}
 */
function getToken (params) {
  const fromUrl = params.get('token')
  if (fromUrl !== null) {
    const url = new URL(location.href)
    url.searchParams.delete('token')
    history.replaceState(history.state, '', url)
    if (fromUrl) {
      try { sessionStorage.setItem(TOKEN_KEY, fromUrl) } catch {}
    }
  }
  const kept = storedToken('localStorage')
  const tab = storedToken('sessionStorage') || fromUrl || null
  if (tab && tab === kept) {
    try { sessionStorage.removeItem(TOKEN_KEY) } catch {}
  }
  return { token: tab || kept, tabOnly: Boolean(tab) && tab !== kept, kept }
}

/** The user a token names (its `sub`), for showing only: the server checks the token. */
function tokenUser (token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0))
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub
    return typeof sub === 'string' && sub ? sub : null
  } catch {
    return null
  }
}

/** A link signed this tab in: say as whom, and offer to keep that sign-in on this browser. */
function offerToKeep (token, kept) {
  const who = tokenUser(token)
  const named = (name) => (name ? ` as ${name}` : '')
  const other = kept ? ` This browser stays signed in${named(tokenUser(kept))} elsewhere.` : ''
  toast(`This tab is signed in${named(who)} by the link you opened, for this tab only.${other}`, {
    timeout: 0,
    action: {
      label: `Keep me signed in${named(who)}`,
      run: () => {
        try {
          localStorage.setItem(TOKEN_KEY, token)
          sessionStorage.removeItem(TOKEN_KEY)
        } catch {}
      }
    }
  })
}

/** Forget every token this page keeps (this tab's and this browser's), then load again. */
function signOut () {
  for (const storage of ['sessionStorage', 'localStorage']) {
    try { window[storage].removeItem(TOKEN_KEY) } catch {}
  }
  location.reload()
}

/** `server`: the server named the user (an app's sign-in): not a name to change here. */
function showUser (user, token, server = false) {
  const chip = $('#user-chip')
  chip.hidden = false
  $('#user-label').textContent = user
  const avatar = $('#user-avatar')
  avatar.textContent = initials(user)
  avatar.style.background = colorFor(user)
  if (server) {
    chip.title = `Signed in as ${user}`
    return
  }
  if (token) {
    chip.title = 'Change your name, or sign out'
    const signout = $('#signout-btn')
    signout.hidden = false
    signout.addEventListener('click', signOut)
  }
  chip.addEventListener('click', async () => {
    const name = await askName(user)
    if (name && name !== user) {
      const url = new URL(location.href)
      url.searchParams.delete('user')
      location.href = url.toString()
    }
  })
}

/**
 * How many documents the list asks the server for at a time: "Show more" asks for the
 * next ones (the server's own paging, `next`).
 */
const LIST_PAGE = 100

function docHref (doc) {
  return mountUrl(`?doc=${encodeURIComponent(doc)}`)
}

async function showHome (api) {
  document.body.dataset.view = 'home'
  $('#home').hidden = false
  document.title = 'Documents · Palimpsest'
  for (const el of document.querySelectorAll('[data-origin]')) el.textContent = mountUrl().replace(/\/$/, '')
  for (const el of document.querySelectorAll('[data-ws]')) el.textContent = wsBase()

  const input = $('#open-name')
  $('#open-form').addEventListener('submit', (event) => {
    event.preventDefault()
    const name = input.value.trim()
    if (name) location.href = docHref(name)
  })
  input.focus()

  const rows = $('#doc-rows')
  const more = $('#doc-more')
  const moreBtn = $('#doc-more-btn')
  const count = $('#doc-count')
  // The server sorts and pages the list (sort=updated: the newest first). Sorting one
  // page here instead showed, from a store of 20,000 documents, 1,000 by name, and
  // never the one just edited; nothing said that most were missing.
  const shown = new Set()
  let next = null
  const addRows = (docs) => {
    const added = []
    for (const d of docs) {
      // a document edited while the list pages moves to the front: once is enough
      if (shown.has(d.doc)) continue
      shown.add(d.doc)
      const link = h('a', { class: 'doc-link', href: docHref(d.doc) }, d.doc)
      rows.append(h('tr', { dataset: { doc: d.doc } },
        h('td', {}, link),
        h('td', { class: 'num' }, d.head ?? ''),
        h('td', { title: absoluteTime(d.updated) }, relativeTime(d.updated)),
        h('td', { class: 'num' }, formatBytes(d.size))
      ))
      added.push(link)
    }
    return added
  }
  const showCount = () => {
    const n = shown.size.toLocaleString('en')
    const noun = shown.size === 1 ? 'document' : 'documents'
    count.textContent = next
      ? `The ${n} most recently edited ${noun}; older ones follow.`
      : `All ${n} ${noun}.`
    more.hidden = !next && shown.size <= LIST_PAGE
    moreBtn.hidden = !next
  }
  let data
  try {
    data = await api.docs({ sort: 'updated', limit: LIST_PAGE })
  } catch (err) {
    $('#doc-empty').hidden = false
    $('#doc-empty').textContent = `Could not list documents: ${err.message}`
    return
  }
  clear(rows)
  addRows((data && data.docs) || [])
  next = (data && data.next) || null
  $('#doc-empty').hidden = shown.size > 0
  $('#doc-table').hidden = shown.size === 0
  showCount()
  moreBtn.addEventListener('click', async () => {
    if (!next || moreBtn.disabled) return
    moreBtn.disabled = true
    try {
      const page = await api.docs({ sort: 'updated', limit: LIST_PAGE, after: next })
      const added = addRows((page && page.docs) || [])
      next = (page && page.next) || null
      showCount()
      // the button goes with the last page: the focus goes to the first row it brought
      if (!next && added.length) added[0].focus()
    } catch (err) {
      toast(`Could not list more documents: ${err.message}`, { kind: 'error' })
    } finally {
      moreBtn.disabled = false
    }
  })
}

async function showDocument (api, doc, user, token) {
  document.body.dataset.view = 'doc'
  document.title = `${doc} · Palimpsest`
  $('#workspace').hidden = false
  $('#crumbs').hidden = false
  $('#doc-name').textContent = doc
  $('#toolbar').hidden = false
  $('#status').hidden = false

  const session = openDocument({ doc, user, token, parent: $('#editor') })
  const history = new HistoryPanel({ api, doc, user, session })
  // Exposed for tests and for poking at from the devtools console.
  window.palimpsest = { doc, user, api, session, history, ydoc: session.ydoc, provider: session.provider }

  // Undo and redo change the live document: not while an earlier version is on show
  // in its place, where their effect could not be seen.
  const notWhilePreviewing = () => {
    if (history.previewSeq === null) return false
    toast('Undo and redo work on the live document: go back to it first (Esc)', { kind: 'info' })
    return true
  }
  const undo = async () => {
    if (notWhilePreviewing()) return
    try {
      const r = await session.undo.undo()
      if (!r.ok) toast(r.reason ? capitalize(r.reason) : 'Nothing to undo', { kind: 'info' })
      else if (r.already) tellAlready('undo', r.already)
      else {
        tellSkipped(r.skipped, redo)
        tellKept(r.kept_containers)
        tellRemovedOthers('undo', r.removed_others, redo)
      }
    } catch (err) {
      toast(`Undo failed: ${err.message}`, { kind: 'error' })
    }
  }
  const redo = async () => {
    if (notWhilePreviewing()) return
    try {
      const r = await session.undo.redo()
      if (!r.ok) toast(r.reason ? capitalize(r.reason) : 'Nothing to redo', { kind: 'info' })
      else if (r.already) tellAlready('redo', r.already)
      else {
        tellKept(r.kept_containers)
        tellRemovedOthers('redo', r.removed_others, undo)
      }
    } catch (err) {
      toast(`Redo failed: ${err.message}`, { kind: 'error' })
    }
  }
  session.onUndo = undo
  session.onRedo = redo
  session.undo.on('error', (m) => toast(`Server: ${m.reason || 'error'}`, { kind: 'error' }))
  // Undo and Redo are enabled while the user has a step to undo / redo: as the server's
  // hello said, then each undo's and redo's answer (both say can_undo / can_redo), and
  // this page's own typing (a step to undo; the server drops the redo stack). Another
  // tab's undos are not seen here until the next answer: a button left enabled answers
  // "nothing to …", which disables it. (A server without can_undo: both stay enabled.)
  const offered = { undo: true, redo: true }
  const can = { undo: true, redo: true }
  const drawUndoButtons = () => {
    $('#undo-btn').disabled = !(offered.undo && can.undo)
    $('#redo-btn').disabled = !(offered.redo && can.redo)
  }
  const followStacks = (answer) => {
    if (typeof answer.can_undo === 'boolean') can.undo = answer.can_undo
    if (typeof answer.can_redo === 'boolean') can.redo = answer.can_redo
    drawUndoButtons()
  }
  session.undo.on('result', (r) => {
    if (r.op !== 'undo' && r.op !== 'redo') return
    // (an answer over HTTP, the socket down, does not say them: what it did does)
    if (r.ok && typeof r.can_undo !== 'boolean') can[r.op === 'undo' ? 'redo' : 'undo'] = true
    followStacks(r)
  })
  // a step of this user's own: typing here, or a restore from the history panel (made
  // over HTTP: it comes back through the provider, as others' edits do)
  session.stepTaken = () => {
    can.undo = true
    can.redo = false
    drawUndoButtons()
  }
  session.ydoc.on('update', (_update, origin) => {
    if (origin !== session.provider && !(can.undo && !can.redo)) session.stepTaken()
  })
  // What the server knows about this connection: who we are (a token decides that, not
  // the name typed here), our role, and which operations it offers.
  session.undo.on('hello', (hello) => {
    if (!hello || !hello.ok) return
    if (hello.user && hello.user !== user) {
      const state = session.provider.awareness.getLocalState()
      session.provider.awareness.setLocalStateField('user', { ...(state && state.user), name: hello.user })
      $('#user-label').textContent = hello.user
    }
    const readOnly = hello.role === 'read'
    session.setEditable(!readOnly)
    const ops = hello.ops || []
    for (const op of ['undo', 'redo']) offered[op] = !readOnly && (ops.length === 0 || ops.includes(op))
    followStacks(hello)
    if (readOnly) showBanner(['You have read-only access to this document.'], 'info')
  })
  $('#undo-btn').addEventListener('click', () => { undo(); session.focus() })
  $('#redo-btn').addEventListener('click', () => { redo(); session.focus() })

  // Shortcuts outside the editor (inside it, the editor's keymap handles them).
  document.addEventListener('keydown', (event) => {
    const target = event.target
    if (target instanceof HTMLElement && (target.closest('.cm-editor') || target.matches('input, textarea'))) return
    const mod = event.ctrlKey || event.metaKey
    if (!mod || event.altKey) return
    const key = event.key.toLowerCase()
    if (key === 'z' && !event.shiftKey) { event.preventDefault(); undo() } else if ((key === 'z' && event.shiftKey) || key === 'y') { event.preventDefault(); redo() }
  })

  // Presence: everyone whose awareness state has a user, self first.
  const presence = $('#presence')
  const renderPresence = () => {
    clear(presence)
    const states = [...session.provider.awareness.getStates().entries()]
    const selfId = session.ydoc.clientID
    states.sort(([a], [b]) => (a === selfId ? -1 : b === selfId ? 1 : a - b))
    const seen = new Set()
    for (const [clientId, state] of states) {
      const u = state && state.user
      if (!u || !u.name) continue
      if (seen.has(u.name)) continue // one avatar per person, however many tabs
      seen.add(u.name)
      const color = u.color || colorFor(u.name) // (another app's user: its own colour)
      const who = clientId === selfId ? `${u.name} (you)` : u.name
      presence.append(h('span', {
        class: 'avatar' + (clientId === selfId ? ' self' : ''),
        title: who,
        dataset: { user: u.name },
        style: { background: color, color: inkOn(color) }
      }, h('span', { 'aria-hidden': 'true' }, initials(u.name)), h('span', { class: 'visually-hidden' }, who)))
    }
  }
  session.provider.awareness.on('change', renderPresence)
  renderPresence()

  const params = new URLSearchParams(location.search)
  if (params.get('history') === '1' || params.has('version')) history.open()
  if (params.has('version')) history.preview(params.get('version'))

}

/**
 * Say so when an undo or a redo also took out what others wrote (undoing the Enter that
 * made a paragraph takes out what others typed in it since; the server's answer lists
 * it, per user, as `removed_others`), with the button that brings it back.
 * @param {'undo'|'redo'} op
 * @param {Array<{user: string|null, characters: number, items: number}>|undefined} removed
 * @param {Function} back  the other one of undo and redo
 */
function tellRemovedOthers (op, removed, back) {
  if (!removed || !removed.length) return
  const [did, undoes] = op === 'undo' ? ['Undo', 'Redo'] : ['Redo', 'Undo']
  toast(`${did} also removed ${removedList(removed)}; ${undoes} brings them back`, {
    kind: 'info', timeout: 12000, action: { label: undoes, run: back }
  })
}

/**
 * Say so when an undo or a redo kept an element the user made (a paragraph, a block)
 * because others wrote in it: their words stay, the user's own went (docs/undo.md,
 * "What others wrote inside what you made stays").
 * @param {{items: number, others: Array<{user: string|null, characters: number, items: number}>}|undefined} kept
 */
function tellKept (kept) {
  if (!kept || !kept.others || !kept.others.length) return
  toast(`Kept ${removedList(kept.others)} inside what you had made`, { kind: 'info', timeout: 12000 })
}

/**
 * Say so when an undo found nothing left of the user's latest steps (someone else moved
 * or removed that text: an editor's Enter in Lexical or Slate, a cut and paste) and
 * undid the step before instead (docs/undo.md, "Text another user moved is theirs").
 * @param {Array<Array<number>>|undefined} skipped  the seqs of each step skipped
 * @param {Function} redo
 */
function tellSkipped (skipped, redo) {
  if (!skipped || !skipped.length) return
  const which = skipped.length === 1 ? 'Your last change was' : `Your last ${skipped.length} changes were`
  toast(`${which} moved or removed by someone else: undid the one before`, {
    kind: 'info', timeout: 12000, action: { label: 'Redo', run: redo }
  })
}

/**
 * Say so when an undo or a redo changed nothing because a restore had done it already:
 * the text it would bring back is there (docs/undo.md, "Text a restore brought back
 * already is not brought back again"). It stopped there; the next one goes on below.
 * @param {'undo'|'redo'} op
 * @param {string} already  why ("restored")
 */
function tellAlready (op, already) {
  const what = op === 'undo' ? 'Undo' : 'Redo'
  const why = already === 'restored' ? 'a restore brought that text back already' : 'done already'
  toast(`${what} changed nothing: ${why}`, { kind: 'info', timeout: 8000 })
}

function capitalize (s) {
  return s ? s[0].toUpperCase() + s.slice(1) : s
}

async function main () {
  const params = new URLSearchParams(location.search)
  const { token, tabOnly, kept } = getToken(params)
  const { user, server } = await whoAmI(params, token)
  showUser(user, token, server)
  if (tabOnly) offerToKeep(token, kept)
  const api = new Api({ user, token })
  const doc = params.get('doc')
  if (doc && doc.trim()) {
    await showDocument(api, doc.trim(), user, token)
  } else {
    await showHome(api)
  }
}

main().catch((err) => {
  console.error(err)
  toast(`Something went wrong: ${err.message}`, { kind: 'error', timeout: 0 })
})
