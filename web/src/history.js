// The history panel: editing sessions and their events, a slider over all
// versions, a read-only preview of any version (text, changes since then with
// authors' colours, blame), named versions, and "restore this version".

import { $, h, clear, debounce, relativeTime, absoluteTime, shortTime, clockTime, timeOfDay, sameDay, plural, formatBytes, own, selectTab, tabKeys } from './util.js'
import { authorMarks, colorFor, lightColorFor } from './colors.js'
import { toast } from './toast.js'
import { ask } from './ask.js'
import { removedList, removedSummary } from './removed.js'
import * as Y from 'yjs'
import { drawNodes, modelOfRoot, rootKinds, walkRuns } from './render.js'
import { visibleText } from './controls.js'

const SESSION_ROWS = 300
// versions listed to compare with, the newest first (older ones: GET /diff?from=&to=)
const COMPARE_ROWS = 2000

export class HistoryPanel {
  constructor ({ api, doc, user, session }) {
    this.api = api
    this.doc = doc
    this.user = user
    this.session = session
    this.head = 0
    // where history starts: a compacted log's base (the server's base_seq), else 0
    this.base = 0
    this.isOpen = false
    this.previewSeq = null // number while previewing
    this.previewLabel = null
    this.mode = 'text'
    this.expanded = new Set() // session keys whose events are shown
    this.eventCache = new Map() // seq -> event
    this.mark = authorMarks([]) // actor -> mark in the timeline drawn (colors.js)
    this.tags = []
    // the version "Changes since" counts up to: null for the current one, else a seq
    // (two named versions compared: "draft-1" on show, "signed v2" chosen here)
    this.compareTo = null
    this._previewToken = 0

    this.el = $('#history')
    this.timeline = $('#timeline')
    this.scrub = $('#scrub')
    this.scrubLabel = $('#scrub-label')

    $('#history-btn').addEventListener('click', () => (this.isOpen ? this.close() : this.open()))
    $('#history-close').addEventListener('click', () => this.close())
    $('#preview-close').addEventListener('click', () => this.exitPreview())
    $('#restore-btn').addEventListener('click', () => this.restore())
    $('#tag-btn').addEventListener('click', () => this.askTag(this.previewSeq))
    for (const button of document.querySelectorAll('#preview-modes [data-mode]')) {
      button.addEventListener('click', () => this.setMode(button.dataset.mode))
    }
    tabKeys($('#preview-modes'), (tab) => this.setMode(tab.dataset.mode))
    $('#compare-to').addEventListener('change', (event) => {
      const value = event.target.value
      this.compareTo = value === '' ? null : Number(value)
      if (this.previewSeq !== null) this.renderPreview(++this._previewToken)
    })
    for (const button of document.querySelectorAll('.tabs [data-tab]')) {
      button.addEventListener('click', () => this.setTab(button.dataset.tab))
    }
    tabKeys($('.tabs'), (tab) => this.setTab(tab.dataset.tab))
    $('#preview-body').addEventListener('keydown', stepAmongParts)
    $('#tag-form').addEventListener('submit', (event) => {
      event.preventDefault()
      const input = $('#tag-name')
      const name = input.value.trim()
      const seq = typeof this.previewSeq === 'number' ? this.previewSeq : this.head
      if (name) this.saveTag(name, seq).then((ok) => { if (ok) input.value = '' })
    })
    // The "Name this version" dialog: one listener for good, reading the version the
    // dialog was opened for (a listener added per opening outlived a dialog closed with
    // Esc, and the next name was then saved twice, once on the old version).
    this._tagDialogSeq = null
    const tagDialog = $('#tag-dialog')
    $('#tag-dialog-form').addEventListener('submit', (event) => {
      const name = $('#tag-dialog-input').value.trim()
      const seq = this._tagDialogSeq
      if (!name || seq === null) { event.preventDefault(); return }
      this._tagDialogSeq = null
      this.saveTag(name, seq)
    })
    $('#tag-dialog-cancel').addEventListener('click', () => tagDialog.close())
    tagDialog.addEventListener('close', () => { this._tagDialogSeq = null })
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.previewSeq !== null && !document.querySelector('dialog[open]')) {
        this.exitPreview()
      }
    })

    // The version the slider was moved to, until its preview starts: a refresh of the
    // panel meanwhile (someone edits) must not put the slider back where it was.
    this._scrubTarget = null
    const previewFromScrub = debounce(() => {
      const seq = this._scrubTarget
      this._scrubTarget = null
      if (seq >= this.firstSeq) this.preview(seq)
    }, 150)
    this.scrub.addEventListener('input', () => {
      this._scrubTarget = Number(this.scrub.value)
      this.renderScrubLabel(this._scrubTarget)
      previewFromScrub()
    })

    // Keep the panel current while people edit: any change to the live document,
    // ours or theirs, becomes an event on the server.
    this.refreshSoon = debounce(() => this.refresh(), 700)
    session.ydoc.on('update', () => { if (this.isOpen) this.refreshSoon() })
    // undo, redo and group marks are events too (a mark changes no text)
    session.undo.on('result', () => { if (this.isOpen) this.refreshSoon() })
    // (refused: the document may have been deleted, which the panel then says)
    session.status.on((state) => {
      if ((state === 'connected' || state === 'refused') && this.isOpen) this.refreshSoon()
    })
  }

  open () {
    this.isOpen = true
    this.el.hidden = false
    document.body.classList.add('history-open')
    $('#history-btn').setAttribute('aria-pressed', 'true')
    return this.refresh()
  }

  close () {
    this.isOpen = false
    this.el.hidden = true
    document.body.classList.remove('history-open')
    $('#history-btn').setAttribute('aria-pressed', 'false')
    this.exitPreview()
  }

  setTab (tab) {
    const tabs = [...document.querySelectorAll('.tabs [data-tab]')]
    selectTab(tabs, tabs.find((button) => button.dataset.tab === tab))
    for (const panel of this.el.querySelectorAll('[data-panel]')) {
      panel.hidden = panel.dataset.panel !== tab
    }
  }

  refresh () {
    // (kept: a message about the versions there are waits for the latest count)
    this.refreshed = this._refresh()
    return this.refreshed
  }

  async _refresh () {
    const token = (this._refreshToken = (this._refreshToken || 0) + 1)
    const oldHead = this.head
    const [sessions, tags] = await Promise.allSettled([
      this.loadSessions(),
      this.api.tags(this.doc)
    ])
    if (token !== this._refreshToken) return
    // (after a reload the connection is not refused: only the server's 410 says "deleted")
    this.goneOnServer = [sessions, tags].some((r) => r.status === 'rejected' && Boolean(r.reason?.deleted))
    if (tags.status === 'fulfilled' || docNotFound(tags.reason)) {
      this.tags = (tags.value && tags.value.tags) || []
      this.renderTags()
    } else {
      this.renderTagsError(tags.reason)
    }
    if (sessions.status === 'fulfilled' || docNotFound(sessions.reason)) {
      // (a document with only a name, no events yet, is a 404 too: no sessions)
      const list = (sessions.value && sessions.value.sessions) || []
      this.base = (sessions.value && sessions.value.base) || 0
      this.head = Math.max(this.base, ...list.map((s) => s.end_seq || 0))
      await this.renderSessions(list, token)
    } else {
      // no sessions endpoint: fall back to the latest page of plain events
      await this.renderFlatEvents(sessions.reason, token)
    }
    this.updateScrub()
    this.fillCompare()
    if (this.previewSeq !== null && this.mode === 'diff' && this.compareTo === null && this.head !== oldHead) {
      this.renderPreview(++this._previewToken) // "changes since" is against the live head
    }
  }

  /**
   * the server closed this page's connection because the document was deleted, or (after
   * a reload) says it was deleted and nothing has been written under its name since
   */
  get deleted () {
    return this.session.status.refusedCode === 4404 || Boolean(this.goneOnServer)
  }

  /** why the document is gone, as the server said it, for the messages that say so */
  get deletedWhy () {
    return this.session.status.refusedCode === 4404 ? ` (${this.session.status.refused})` : ''
  }

  /** the oldest version left: 1, or a compacted log's base (versions before it are gone) */
  get firstSeq () { return Math.max(1, this.base) }

  /** what the timeline says at its end (the oldest) of a compacted log */
  compactedNote () {
    return h('p', { class: 'muted small compacted' },
      `History starts at version #${this.base}: the events before it were compacted away.`)
  }

  /** what the timeline says when there are no events */
  emptyTimeline () {
    if (!this.deleted && this.base > 0) {
      return h('p', { class: 'empty' }, `No edits since version #${this.base}, where history starts: the events before it were compacted away.`)
    }
    if (!this.deleted) return h('p', { class: 'empty' }, 'No edits yet. Type something and it shows up here.')
    const again = this.session.status.refusedCode === 4404 ? '' : ' What you type here starts a new document of the same name.'
    return h('p', { class: 'empty deleted' }, `This document was deleted${this.deletedWhy}. Its history went with it.${again}`)
  }

  /**
   * Redraw `container` with `build`, keeping the keyboard focus on the same row (its
   * data-focus-key), or on its session's head if the row went, and the scroll position:
   * the panel is redrawn whenever anyone edits, and a keyboard user must stay put.
   */
  keepingFocus (container, scroller, build) {
    const active = document.activeElement
    const inside = active instanceof HTMLElement && container.contains(active)
    const keys = inside
      ? [active.dataset.focusKey, active.closest('.session')?.querySelector('.session-head')?.dataset.focusKey]
      : []
    const top = scroller.scrollTop
    build()
    scroller.scrollTop = top
    for (const key of keys) {
      if (key === undefined) continue
      const again = [...container.querySelectorAll('[data-focus-key]')].find((el) => el.dataset.focusKey === key)
      if (again) { again.focus({ preventScroll: true }); return }
    }
  }

  // ----- timeline -----

  sessionKey (s) { return `${s.actor}:${s.start_seq}` }

  /** all sessions (pages of up to 1000, oldest first), at most 20 pages, and where history starts */
  async loadSessions () {
    const all = []
    let after = 0
    let base = 0
    for (let i = 0; i < 20; i++) {
      const page = await this.api.sessions(this.doc, { after, limit: 1000 })
      all.push(...((page && page.sessions) || []))
      base = (page && page.base_seq) || base
      if (!page || page.next_after === null || page.next_after === undefined) break
      after = page.next_after
    }
    return { sessions: all, base }
  }

  async renderSessions (list, token) {
    const expandedData = new Map()
    // most recently active first (an actor's session can span other people's events)
    const newest = [...list].sort((a, b) => b.end_seq - a.end_seq || b.start_seq - a.start_seq)
    // the newest session is open by default, so the latest events show at once
    if (newest.length && this._autoExpanded !== true) {
      this.expanded.add(this.sessionKey(newest[0]))
      this._autoExpanded = true
    }
    await Promise.all(newest.filter((s) => this.expanded.has(this.sessionKey(s))).map(async (s) => {
      try {
        expandedData.set(this.sessionKey(s), await this.loadSessionEvents(s))
      } catch (err) {
        expandedData.set(this.sessionKey(s), err)
      }
    }))
    if (token !== this._refreshToken) return
    const total = list.reduce((n, s) => n + changesOf(s), 0)
    $('#history-count').textContent = list.length
      ? `${plural(total, 'change')} · ${plural(list.length, 'session')}`
      : ''
    this.keepingFocus(this.timeline, this.timeline, () => this.drawSessions(newest, expandedData))
  }

  drawSessions (newest, expandedData) {
    clear(this.timeline)
    if (!newest.length) {
      this.timeline.append(this.emptyTimeline())
      return
    }
    this.mark = authorMarks(newest.map((s) => s.actor))
    for (const s of newest) {
      const key = this.sessionKey(s)
      const open = this.expanded.has(key)
      const color = colorFor(s.actor)
      const item = h('section', {
        class: 'session' + (open ? ' open' : ''),
        style: { '--author': color },
        dataset: { actor: s.actor, start: s.start_seq, end: s.end_seq }
      })
      const range = s.start_seq === s.end_seq ? `#${s.start_seq}` : `#${s.start_seq}–${s.end_seq}`
      const head = h('button', {
        class: 'session-head',
        'aria-expanded': String(open),
        dataset: { focusKey: `session:${key}` },
        onclick: () => {
          if (this.expanded.has(key)) this.expanded.delete(key)
          else this.expanded.add(key)
          this.refresh()
        }
      },
      h('span', { class: 'dot', style: { background: color } }),
      h('span', { class: 'session-who', dataset: { mark: this.mark(s.actor) } }, s.actor || 'unknown'),
      h('span', { class: 'session-when', title: `${absoluteTime(s.start)} – ${absoluteTime(s.end)}` }, sessionWhen(s)),
      h('span', { class: 'session-meta' }, `${plural(changesOf(s), 'change')} · ${range}`)
      )
      item.append(head)
      if (open) {
        const data = expandedData.get(key)
        if (data instanceof Error) {
          item.append(h('p', { class: 'error small' }, `Could not load events: ${data.message}`))
        } else if (data) {
          const ul = h('ol', { class: 'events' })
          const rows = [...data.events].reverse().filter(shown)
          for (const e of rows) ul.append(this.eventItem(e))
          item.append(ul)
          if (data.truncated) {
            item.append(h('p', { class: 'muted small more' },
              `The latest ${rows.length} of ${plural(changesOf(s), 'change')}; the slider reaches every version.`))
          }
        }
      }
      this.timeline.append(item)
    }
    if (this.base > 0) this.timeline.append(this.compactedNote())
    this.markActive()
  }

  /** a session's events (its actor's, start_seq..end_seq): the latest SESSION_ROWS of them */
  async loadSessionEvents (s) {
    const after = Math.max(s.start_seq - 1, s.end_seq - SESSION_ROWS)
    const page = await this.api.events(this.doc, { after, limit: SESSION_ROWS, actor: s.actor })
    const events = ((page && page.events) || []).filter((e) => e.seq <= s.end_seq && e.actor === s.actor)
    for (const e of events) this.eventCache.set(e.seq, e)
    return { events, truncated: events.length < (s.events || 0) }
  }

  async renderFlatEvents (reason, token) {
    let events = []
    let base = 0
    try {
      let after = 0
      for (let i = 0; i < 50; i++) {
        const page = await this.api.events(this.doc, { after, limit: 500 })
        events.push(...((page && page.events) || []))
        base = (page && page.base_seq) || base
        if (page.next_after === null || page.next_after === undefined) break
        after = page.next_after
      }
    } catch (err) {
      if (token !== this._refreshToken) return
      if (docNotFound(err)) {
        events = []
      } else {
        clear(this.timeline)
        this.timeline.append(h('p', { class: 'error' }, err.unavailable
          ? `History is not available on this server (${reason && reason.message}).`
          : `Could not load the history: ${err.message}`))
        return
      }
    }
    if (token !== this._refreshToken) return
    for (const e of events) this.eventCache.set(e.seq, e)
    this.base = base
    this.head = events.length ? events[events.length - 1].seq : base
    const changes = events.filter(shown).length
    $('#history-count').textContent = changes ? plural(changes, 'change') : ''
    this.keepingFocus(this.timeline, this.timeline, () => {
      clear(this.timeline)
      if (!events.length) { this.timeline.append(this.emptyTimeline()); return }
      const ul = h('ol', { class: 'events flat' })
      const rows = events.filter(shown).slice(-200).reverse()
      this.mark = authorMarks(rows.map((e) => e.actor))
      for (const e of rows) ul.append(this.eventItem(e))
      this.timeline.append(ul)
      if (this.base > 0) this.timeline.append(this.compactedNote())
    })
    this.markActive()
  }

  eventItem (e) {
    const kind = e.kind || 'edit'
    const color = colorFor(e.actor)
    const details = []
    // (the server lists the version a restore went back to as what it reverts, too)
    if (kind === 'restore') {
      if (e.meta && e.meta.restores !== undefined) details.push(`back to version #${e.meta.restores}`)
    } else if (e.reverts && e.reverts.length) details.push(`reverts ${seqList(e.reverts)}`)
    const tags = this.tags.filter((t) => t.seq === e.seq)
    return h('li', {
      class: 'event',
      dataset: { seq: e.seq, kind, actor: e.actor },
      style: { '--author': color }
    },
    h('button', {
      class: 'event-row',
      dataset: { focusKey: `event:${e.seq}` },
      title: `${absoluteTime(e.ts)} · ${formatBytes(e.size)} · click to view this version`,
      onclick: () => this.preview(e.seq)
    },
    h('span', { class: 'seq' }, `#${e.seq}`),
    h('span', { class: `kind kind-${kind}` }, kind),
    h('span', { class: 'who' }, h('span', { class: 'dot', style: { background: color } }),
      h('span', { dataset: { mark: this.mark(e.actor) } }, e.actor || 'unknown')),
    h('span', { class: 'when' }, clockTime(e.ts)),
    details.length ? h('span', { class: 'detail' }, details.join(' ')) : null,
    tags.map((t) => h('span', { class: 'tag-chip' }, t.name))
    ))
  }

  markActive () {
    for (const li of this.el.querySelectorAll('.event')) {
      li.classList.toggle('active', Number(li.dataset.seq) === this.previewSeq)
    }
    for (const li of this.el.querySelectorAll('.tag-item')) {
      li.classList.toggle('active', Number(li.dataset.seq) === this.previewSeq)
    }
  }

  updateScrub () {
    // from the oldest version left (a compacted log's base) to the head
    this.scrub.max = String(Math.max(this.firstSeq, this.head))
    this.scrub.min = String(this.firstSeq)
    this.scrub.disabled = this.head < 1
    const previewed = typeof this.previewSeq === 'number' ? this.previewSeq : null
    const value = this._scrubTarget ?? previewed ?? this.head
    this.scrub.value = String(value)
    this.renderScrubLabel(value)
  }

  renderScrubLabel (seq) {
    if (this.head < 1) {
      this.scrubLabel.textContent = 'no versions yet'
      this.scrub.setAttribute('aria-valuetext', 'no versions yet')
      return
    }
    const live = this.previewSeq === null && seq === this.head
    this.scrubLabel.textContent = live ? `#${seq} · live` : `#${seq} of ${this.head}`
    // what a screen reader says of the slider (else the bare number)
    this.scrub.setAttribute('aria-valuetext', live ? `version ${seq}, the live one` : `version ${seq} of ${this.head}`)
  }

  // ----- named versions -----

  renderTags () {
    const ul = $('#tag-list')
    this.keepingFocus(ul, $('#tags'), () => this.drawTags(ul))
    this.markActive()
  }

  drawTags (ul) {
    clear(ul)
    if (!this.tags.length) {
      ul.append(h('li', { class: 'empty' }, 'No named versions yet.'))
      return
    }
    for (const t of [...this.tags].sort((a, b) => b.seq - a.seq)) {
      ul.append(h('li', { class: 'tag-item', dataset: { seq: t.seq, name: t.name } },
        h('button', { onclick: () => this.preview(t.seq, t.name), dataset: { focusKey: `tag:${t.name}` } },
          h('span', { class: 'tag-name' }, t.name),
          h('span', { class: 'muted' }, `#${t.seq}`),
          h('span', { class: 'muted small', title: absoluteTime(t.ts) },
            [t.actor, relativeTime(t.ts)].filter(Boolean).join(' · ')))
      ))
    }
  }

  renderTagsError (err) {
    const ul = $('#tag-list')
    clear(ul)
    ul.append(h('li', { class: 'error small' }, err && err.unavailable
      ? 'Named versions are not available on this server.'
      : `Could not load named versions: ${err && err.message}`))
  }

  askTag (seq) {
    if (typeof seq !== 'number') seq = this.head
    const dialog = $('#tag-dialog')
    if (dialog.open) return
    const input = $('#tag-dialog-input')
    $('#tag-dialog-text').textContent = `Version #${seq} will be listed under this name.`
    input.value = ''
    this._tagDialogSeq = seq // (the form's submit listener, set once, names this one)
    dialog.showModal()
    input.focus()
  }

  async saveTag (name, seq) {
    if (!(seq >= 1)) {
      toast('There is no version to name yet: nothing has been written in this document.', { kind: 'info' })
      return false
    }
    try {
      // a name in use is not moved without asking (clicking "Name…" twice with the same
      // name lost the version it named first)
      let data = await this.api.addTag(this.doc, name, seq, { move: false }).catch((err) => {
        if (err.status === 409) return null
        throw err
      })
      if (data === null) {
        const tags = ((await this.api.tags(this.doc)) || {}).tags || []
        const old = tags.find((t) => t.name === name)
        if (old && old.seq !== seq && !(await ask({
          title: 'Move this name?',
          text: `“${name}” already names version #${old.seq}. Move it to #${seq}?`,
          yes: 'Move it'
        }))) {
          toast(`“${name}” still names version #${old.seq}`, { kind: 'info' })
          return false
        }
        data = await this.api.addTag(this.doc, name, seq)
      }
      if (data && data.tags) { this.tags = data.tags; this.renderTags() }
      toast(`Named version #${seq} “${name}”`, { kind: 'ok' })
      this.refresh()
      return true
    } catch (err) {
      toast(`Could not name the version: ${err.message}`, { kind: 'error' })
      return false
    }
  }

  /**
   * The versions "Changes since" can count up to: the current one, each named version,
   * then every version from the newest (the slider's range), the one chosen kept.
   */
  fillCompare () {
    const select = $('#compare-to')
    const chosen = this.compareTo
    clear(select)
    select.append(h('option', { value: '' }, 'the current version'))
    if (this.tags.length) {
      select.append(h('optgroup', { label: 'Named versions' },
        [...this.tags].sort((a, b) => b.seq - a.seq).map((t) =>
          h('option', { value: String(t.seq) }, `“${t.name}” · #${t.seq}`))))
    }
    const seqs = []
    for (let seq = this.head; seq >= this.firstSeq && seqs.length < COMPARE_ROWS; seq--) seqs.push(seq)
    if (seqs.length) {
      select.append(h('optgroup', { label: 'Versions' },
        seqs.map((seq) => h('option', { value: String(seq) }, `#${seq}`))))
    }
    if (chosen !== null && !select.querySelector(`option[value="${chosen}"]`)) {
      select.append(h('option', { value: String(chosen) }, `#${chosen}`))
    }
    select.value = chosen === null ? '' : String(chosen)
  }

  /** [from, to] of "Changes since" the version `seq`: to the version chosen, older first */
  diffRange (seq) {
    const to = this.compareTo ?? Math.max(this.head, seq)
    return to < seq ? [to, seq] : [seq, to]
  }

  /** "#3 (“draft-1”)" */
  versionName (seq) {
    const tag = this.tags.find((t) => t.seq === seq)
    return tag ? `#${seq} (“${tag.name}”)` : `#${seq}`
  }

  // ----- preview -----

  /**
   * Show a version read-only: `ref` a seq (a number, or digits as in `?version=12`), or
   * anything the server resolves to one (a version's name, "head"); `label` its name.
   */
  async preview (ref, label = null) {
    if (!this.isOpen) this.open()
    const token = ++this._previewToken
    const text = String(ref).trim()
    this.previewSeq = typeof ref === 'number' ? ref : /^\d{1,15}$/.test(text) ? Number(text) : text
    this.previewLabel = label
    document.body.classList.add('previewing')
    $('#preview-bar').hidden = false
    $('#preview').hidden = false
    $('#editor').hidden = true
    this.session.blur()
    $('#preview-meta').textContent = ''
    this.showPreviewSeq()
    await this.renderPreview(token)
  }

  /** the title, slider, name field and buttons for the version previewed */
  showPreviewSeq () {
    const seq = this.previewSeq
    const label = this.previewLabel
    const known = typeof seq === 'number'
    $('#preview-title').textContent = !known
      ? (seq === 'head' ? 'The latest version' : `“${seq}”`)
      : label ? `“${label}” · version #${seq}` : `Version #${seq}`
    $('#tag-name').placeholder = known ? `Name version #${seq}` : 'Name the current version'
    $('#tag-btn').disabled = !known
    this.markActive()
    if (known) {
      this.scrub.value = String(seq)
      this.renderScrubLabel(seq)
    }
  }

  exitPreview () {
    this._previewToken++
    this.previewSeq = null
    this.previewLabel = null
    $('#tag-btn').disabled = false
    document.body.classList.remove('previewing')
    $('#tag-name').placeholder = 'Name the current version'
    $('#preview-bar').hidden = true
    $('#preview').hidden = true
    $('#editor').hidden = false
    this.markActive()
    this.updateScrub()
    this.session.focus()
  }

  setMode (mode) {
    this.mode = mode
    const tabs = [...document.querySelectorAll('#preview-modes [data-mode]')]
    const selected = tabs.find((button) => button.dataset.mode === mode)
    selectTab(tabs, selected)
    $('#preview').setAttribute('aria-labelledby', selected.id)
    $('#compare').hidden = mode !== 'diff'
    if (this.previewSeq !== null) this.renderPreview(++this._previewToken)
  }

  async renderPreview (token) {
    const seq = this.previewSeq
    const body = $('#preview-body')
    const legend = $('#preview-legend')
    const extra = $('#preview-extra')
    const pane = $('#preview')
    pane.dataset.mode = this.mode
    pane.dataset.seq = String(seq)
    pane.classList.add('loading')
    try {
      const version = await this.api.version(this.doc, seq)
      if (token !== this._previewToken) return
      const realSeq = version.seq ?? seq
      pane.dataset.seq = String(realSeq)
      if (typeof seq !== 'number' && typeof realSeq === 'number') {
        // a name (or "head") the server resolved: show the version it names
        this.previewSeq = realSeq
        if (seq !== 'head') this.previewLabel = this.previewLabel ?? seq
        this.showPreviewSeq()
      }
      let e = this.eventCache.get(realSeq)
      if (!e && realSeq > 0) {
        const page = await this.api.events(this.doc, { after: realSeq - 1, limit: 1 }).catch(() => null)
        e = page && page.events && page.events.find((x) => x.seq === realSeq)
        if (e) this.eventCache.set(e.seq, e)
        if (token !== this._previewToken) return
      }
      const meta = [
        e && e.actor ? `${e.kind || 'edit'} by ${e.actor}` : null,
        version.ts ? `${absoluteTime(version.ts)} (${relativeTime(version.ts)})` : null
      ].filter(Boolean).join(' · ')
      $('#preview-meta').textContent = meta
      $('#restore-btn').disabled = false
      clear(legend); clear(body); clear(extra)

      await this.session.ready
      if (token !== this._previewToken) return
      const root = this.session.root
      const names = root !== null ? [root] : this.session.shown
      if (root === null) {
        await this.renderShown(token, names, realSeq)
      } else if (this.mode === 'text') {
        body.append(textOf(version.roots, root))
        legend.append(h('span', { class: 'muted' }, 'The text as it was at this version.'))
      } else if (this.mode === 'diff') {
        const diff = await this.api.diff(this.doc, ...this.diffRange(realSeq))
        if (token !== this._previewToken) return
        const ops = own(diff.roots, root)?.ops || []
        const authors = new Set()
        let inserted = 0
        let deleted = 0
        let moved = 0
        const merged = mergeOps(ops)
        for (const op of merged) {
          if (op.op === 'insert') { inserted += charCount(op.text); if (op.actor) authors.add(op.actor) }
          if (op.op === 'delete') { deleted += charCount(op.text); if (op.actor) authors.add(op.actor) }
          if (op.moved && op.op === 'insert') moved += charCount(op.text)
        }
        const mark = authorMarks(authors)
        for (const op of merged) body.append(opSpan(op, mark))
        legend.append(...this.diffLegend(diff, realSeq, inserted, deleted, authors, moved, mark))
        if (!ops.length) body.append(h('span', { class: 'muted' }, '(empty)'))
      } else if (this.mode === 'blame') {
        const blame = await this.api.blame(this.doc, realSeq)
        if (token !== this._previewToken) return
        const runs = own(blame.roots, root)?.runs || []
        const merged = mergeOps(runs.map((r) => ({ ...r, op: 'blame' })))
        const authors = new Set(merged.map((run) => run.actor).filter(Boolean))
        const mark = authorMarks(authors)
        for (const run of merged) {
          const who = writtenBy(run.actor, seqRange(run.minSeq, run.maxSeq))
          body.append(h('span', {
            class: 'blame-run',
            style: { background: lightColorFor(run.actor, 0x30), '--author': colorFor(run.actor) },
            title: who,
            dataset: { actor: run.actor, seq: run.minSeq, mark: mark(run.actor), who }
          }, visibleText(run.text)))
        }
        legend.append(h('span', {}, `Who wrote each part of version #${realSeq}:`), authorChips(authors, mark))
        if (!runs.length) body.append(h('span', { class: 'muted' }, '(empty)'))
      }

      partsReachable(body)
      scrollReachable(pane, body)

      const others = Object.entries(version.roots || {}).filter(([name]) => !names.includes(name))
      if (others.length && this.mode === 'text') {
        const only = !names.length // a document of maps and arrays alone: they are the version
        extra.append(h('details', { class: 'other-roots', open: only },
          h('summary', {}, `${only ? 'Shared types' : 'Other shared types'} (${others.map(([n]) => n).join(', ')})`),
          h('pre', {}, visibleText(others.map(([name, root]) => `${name} (${root.type}): ${JSON.stringify(root.value, null, 2)}\n`).join('\n')))
        ))
      }
    } catch (err) {
      if (token !== this._previewToken) return
      clear(body); clear(legend); clear(extra)
      let message = `Could not load version ${typeof seq === 'number' ? `#${seq}` : `“${seq}”`}: ${err.message}`
      if (err.unavailable && this.mode !== 'text') {
        message = `This view is not available on the server (${err.message}).`
      } else if (err.noDocument) { // (not "no seq 9", nor "no tag named x")
        message = this.deleted || err.deleted
          ? `This document was deleted${this.deletedWhy}: none of its versions is left.`
          : 'This document has no versions yet: nothing has been written in it.'
      } else if (typeof seq !== 'number' && (err.status === 404 || err.status === 400)) {
        // ?version=abc, 1.5, -3: neither a seq nor a version's name
        await this.refreshed?.catch(() => {}) // (to say how many versions there are)
        if (token !== this._previewToken) return
        $('#preview-title').textContent = `No version “${seq}”`
        message = `“${seq}” is neither a version number${this.head >= 1 ? ` (${this.firstSeq} to ${this.head})` : ''} nor the name of a version.`
      }
      body.append(h('span', { class: 'error' }, message))
      $('#restore-btn').disabled = true
      $('#tag-btn').disabled = true
    } finally {
      if (token === this._previewToken) pane.classList.remove('loading')
    }
  }

  /**
   * A version of a document the page only shows (Tiptap, Lexical, Quill): drawn as its
   * editor lays it out, from the version's own Yjs update (text), or from the server's
   * tree of who made each element and wrote each run (blame) or of what changed since
   * (diff), coloured by author.
   */
  async renderShown (token, names, seq) {
    const body = $('#preview-body')
    const legend = $('#preview-legend')
    const section = (name) => {
      const el = h('section', { class: 'root', dataset: { root: name } })
      if (names.length > 1) el.append(h('h6', { class: 'root-name' }, name))
      body.append(el)
      return el
    }
    if (this.mode === 'text') {
      const update = await this.api.versionUpdate(this.doc, seq)
      if (token !== this._previewToken) return
      const vdoc = new Y.Doc()
      Y.applyUpdate(vdoc, update)
      const kinds = rootKinds(vdoc)
      for (const name of names) {
        const model = modelOfRoot(vdoc, name, kinds.get(name))
        section(name).append(model ? drawNodes(model.nodes) : h('span', { class: 'muted' }, '(empty)'))
      }
      vdoc.destroy()
      legend.append(h('span', { class: 'muted' }, 'The document as it was at this version.'))
      return
    }
    const diffing = this.mode === 'diff'
    const answer = diffing
      ? await this.api.diff(this.doc, ...this.diffRange(seq), 'actor')
      : await this.api.blame(this.doc, seq, 'actor')
    if (token !== this._previewToken) return
    const authors = new Set()
    let inserted = 0
    let deleted = 0
    let moved = 0
    const drawn = names.map((name) => {
      const root = own(answer.roots, name)
      const nodes = !root ? [] : root.nodes ? root.nodes : [{ runs: root.runs || root.ops || [] }]
      for (const { node, run } of walkRuns(nodes)) {
        const it = node || run
        if (it.actor && (!diffing || (it.op && it.op !== 'equal'))) authors.add(it.actor)
        if (run && run.op === 'insert') inserted += charCount(run.text)
        if (run && run.op === 'delete') deleted += charCount(run.text)
        if (run && run.moved && run.op === 'insert') moved += charCount(run.text)
      }
      return [name, nodes]
    })
    // (marks once every author of the view is known: see authorMarks)
    const mark = authorMarks(authors)
    for (const [name, nodes] of drawn) {
      section(name).append(nodes.length ? drawNodes(nodes, diffing ? diffDeco(mark) : blameDeco(mark)) : h('span', { class: 'muted' }, '(empty)'))
    }
    legend.append(...(diffing
      ? this.diffLegend(answer, seq, inserted, deleted, authors, moved, mark)
      : [h('span', {}, `Who made and wrote each part of version #${seq}:`), authorChips(authors, mark)]))
  }

  /** what a diff shows: from which version to which, the counts, the authors */
  diffLegend (diff, seq, inserted, deleted, authors, moved, mark) {
    const [from, to] = this.diffRange(seq)
    const upTo = this.compareTo === null
      ? `the current version${diff.to !== undefined && diff.to !== null ? ` (#${diff.to})` : ''}`
      : this.versionName(diff.to ?? to)
    return [
      h('span', {}, `From ${this.versionName(diff.from ?? from)} to ${upTo}: `),
      h('span', { class: 'ins-sample' }, `+${inserted}`), ' ',
      h('span', { class: 'del-sample' }, `−${deleted}`), ' characters',
      moved ? h('span', { class: 'moved-sample' }, ` (${moved} moved)`) : null,
      authorChips(authors, mark)
    ].filter((part) => part !== null) // (append() writes a null out as "null")
  }

  /**
   * Restore the version on show, after asking when that would take out what others
   * wrote since (a dry run says what it would take out), and say what it took out.
   */
  async restore () {
    const seq = this.previewSeq
    if (seq === null) return
    const button = $('#restore-btn')
    button.disabled = true
    try {
      const would = await this.api.restore(this.doc, seq, { dryRun: true })
      if (would && !would.reason && changesNothing(would)) {
        // (said as the server says "already equal": not asked about, nor written)
        this.exitPreview()
        toast(`Version #${seq} is the same as the current text: nothing to restore`, { kind: 'info' })
        return
      }
      const others = (would && !would.reason && would.removed_others) || []
      if (others.length && !(await ask({
        title: `Restore version #${seq}?`,
        text: `This removes ${removedSummary(others)} since that version. Restore?`,
        yes: 'Restore'
      }))) return
      const data = would && would.reason ? would : await this.api.restore(this.doc, seq)
      const newSeq = data && data.seq
      this.exitPreview()
      if (!newSeq) {
        toast(`Version #${seq} is the same as the current text: nothing to restore`, { kind: 'info' })
        return
      }
      this.session.stepTaken?.() // (an undo step of the restorer's: Undo takes it back)
      const removed = data.removed_others || []
      const also = removed.length ? `. It removed ${removedList(removed)}; Undo brings them back` : ''
      toast(`Restored version #${seq} (as event #${newSeq})${also}`, {
        kind: 'ok',
        timeout: removed.length ? 12000 : 8000,
        action: { label: 'Undo', run: () => this.session.onUndo?.() }
      })
      this.refresh()
    } catch (err) {
      toast(`Could not restore: ${err.message}`, { kind: 'error' })
    } finally {
      button.disabled = false
    }
  }
}

/**
 * From the routes of a whole document (sessions, events, tags), whose only 404 that is
 * not a missing route is about the document: it has only a name, no events yet, or it
 * was deleted (410 where nothing has been written under its name since).
 */
function docNotFound (err) {
  return Boolean(err) && ((err.status === 404 && !err.unavailable) || Boolean(err.deleted))
}

/** a restore's dry run that would take out nothing and put in nothing */
function changesNothing (would) {
  const none = (n) => Boolean(n) && !n.characters && !n.items
  return none(would.removed) && none(would.added)
}

const graphemes = typeof Intl !== 'undefined' && Intl.Segmenter ? new Intl.Segmenter() : null

/** characters as people count them: 🎉 is one (String.length counts UTF-16 units: 2) */
function charCount (text) {
  if (!text) return 0
  if (/^[\x00-\x7f]*$/.test(text)) return text.length
  return graphemes ? Array.from(graphemes.segment(text)).length : [...text].length
}

/** "#3, #5–#9": seqs in order, consecutive ones as a range */
function seqList (seqs) {
  const sorted = [...new Set(seqs.map(Number))].sort((a, b) => a - b)
  const parts = []
  for (let i = 0; i < sorted.length; i++) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++
    parts.push(j === i ? `#${sorted[i]}` : `#${sorted[i]}–#${sorted[j]}`)
    i = j
  }
  return parts.join(', ')
}

// "undo_mark" events only end an undo group (no change to the text): not worth a row
function shown (e) {
  return e.kind !== 'undo_mark'
}

// what a session's head counts: the rows it lists, its events less the "undo_mark"
// ones (it said "7 events" over 5 rows); a server before "changes" counts them all
function changesOf (s) {
  return s.changes ?? s.events ?? 0
}

function sessionWhen (s) {
  const start = shortTime(s.start)
  const end = shortTime(s.end)
  if (!start) return ''
  if (!end || end === start) return start
  // a session within one day: its end's time of day alone ("Mar 3, 2025, 14:02–14:30")
  return `${start}–${sameDay(s.start, s.end) ? timeOfDay(s.end) : end}`
}

function textOf (roots, name) {
  const root = own(roots, name)
  if (!root) return h('span', { class: 'muted' }, '(empty)')
  const value = typeof root.value === 'string' ? root.value : JSON.stringify(root.value, null, 2)
  return value ? visibleText(value) : h('span', { class: 'muted' }, '(empty)')
}

/**
 * Join neighbouring ops of the same kind and author (typing makes one op per keystroke),
 * text moved (a line moved, Enter splitting a paragraph) never with text typed.
 */
function mergeOps (ops) {
  const out = []
  for (const op of ops) {
    const last = out[out.length - 1]
    if (last && last.op === op.op && (op.op === 'equal' || last.actor === op.actor) && !last.moved === !op.moved) {
      last.text += op.text
      if (op.seq !== undefined && op.seq !== null) {
        last.minSeq = Math.min(last.minSeq ?? op.seq, op.seq)
        last.maxSeq = Math.max(last.maxSeq ?? op.seq, op.seq)
      }
    } else {
      out.push({ ...op, minSeq: op.seq, maxSeq: op.seq })
    }
  }
  return out
}

function opSpan (op, mark) {
  if (op.op === 'equal') return visibleText(op.text)
  const verb = op.op === 'insert' ? (op.moved ? 'moved here' : 'added') : op.moved ? 'moved away' : 'deleted'
  const seqs = op.minSeq === undefined || op.minSeq === null
    ? ''
    : op.minSeq === op.maxSeq ? ` in #${op.minSeq}` : ` in #${op.minSeq}–#${op.maxSeq}`
  const who = `${verb} by ${op.actor || 'unknown'}${seqs}`
  return h(op.op === 'insert' ? 'ins' : 'del', {
    class: (op.op === 'insert' ? 'ins' : 'del') + (op.moved ? ' moved' : ''),
    style: authorStyle(op.actor),
    title: who,
    dataset: { actor: op.actor, seq: op.minSeq, mark: mark(op.actor), who }
  }, visibleText(op.text))
}

/**
 * The parts of a blame or a diff (each naming its author in data-who, which the style
 * sheet has a screen reader read before it, and shows over it on focus) as one Tab stop
 * the keyboard goes into and through with the arrow keys, Home and End: a title alone
 * told only a mouse's hover who wrote what.
 */
function partsReachable (body) {
  body.querySelectorAll('[data-who]').forEach((part, i) => { part.tabIndex = i === 0 ? 0 : -1 })
}

/**
 * The preview (a tabpanel) is a Tab stop of its own when it has no part to stop at (a
 * version's text): else the keyboard could not reach a long version, nor scroll it
 * (axe: scrollable-region-focusable). A diff's or blame's parts are its one stop.
 */
function scrollReachable (pane, body) {
  if (body.querySelector('[data-who]')) pane.removeAttribute('tabindex')
  else pane.tabIndex = 0
}

const STEPS = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }

function stepAmongParts (event) {
  const parts = [...event.currentTarget.querySelectorAll('[data-who]')]
  const at = parts.indexOf(event.target)
  if (at < 0 || event.altKey || event.ctrlKey || event.metaKey) return
  let to
  if (event.key === 'Home') to = 0
  else if (event.key === 'End') to = parts.length - 1
  else if (event.key in STEPS) to = Math.max(0, Math.min(parts.length - 1, at + STEPS[event.key]))
  else return
  event.preventDefault()
  parts[at].tabIndex = -1
  parts[to].tabIndex = 0
  parts[to].focus()
}

/** who wrote a part of the text, and in which versions: "written by ann in #3–#5" */
function writtenBy (actor, seqs) {
  return `written by ${actor || 'unknown'}${seqs ? ` in ${seqs}` : ''}`
}

function seqRange (first, last) {
  if (first === undefined || first === null) return ''
  return last === undefined || last === null || first === last ? `#${first}` : `#${first}–#${last}`
}


const authorStyle = (actor) => actor ? { '--author': colorFor(actor), '--author-light': lightColorFor(actor, 0x33) } : null

function nodeLabel (node) {
  if (node.element !== undefined) return node.element
  if (node.map !== undefined) return 'text node'
  return (node.attributes && node.attributes.__type) || 'text'
}

/** blame of a tree: each element by who made it, each run by who wrote it */
const blameDeco = (mark) => ({
  node: (node) => node.actor
    ? {
        class: 'made',
        style: authorStyle(node.actor),
        title: `${nodeLabel(node)} made by ${node.actor} · ${seqRange(node.seq)}`,
        dataset: { actor: node.actor, seq: node.seq }
      }
    : null,
  run: (run) => {
    const who = writtenBy(run.actor, seqRange(run.seq, run.last_seq))
    return {
      class: 'blame-run',
      style: { background: lightColorFor(run.actor, 0x30), '--author': colorFor(run.actor) },
      title: who,
      dataset: { actor: run.actor, seq: run.seq, mark: mark(run.actor), who }
    }
  }
})

const VERBS = { insert: 'added', delete: 'deleted', format: 'changed' }
const MOVED = { insert: 'moved here', delete: 'moved away' }

/** a diff of a tree: what each element and run became since, and who did it */
const diffDeco = (mark) => ({
  node: (node) => VERBS[node.op]
    ? {
        class: `node-${node.op}`,
        style: authorStyle(node.actor),
        title: `${nodeLabel(node)} ${VERBS[node.op]} by ${node.actor || 'unknown'}${node.seq ? ` in #${node.seq}` : ''}`,
        dataset: { actor: node.actor, seq: node.seq, op: node.op }
      }
    : null,
  wrap: (run) => run.op === 'insert' ? 'ins' : run.op === 'delete' ? 'del' : null,
  run: (run) => {
    if (!VERBS[run.op]) return null
    const verb = run.op === 'format' ? 'formatted' : run.moved ? MOVED[run.op] : VERBS[run.op]
    const who = `${verb} by ${run.actor || 'unknown'}${run.seq ? ` in #${run.seq}` : ''}`
    return {
      class: (run.op === 'insert' ? 'ins' : run.op === 'delete' ? 'del' : 'fmt') + (run.moved ? ' moved' : ''),
      style: authorStyle(run.actor),
      title: who,
      dataset: { actor: run.actor, seq: run.seq, op: run.op, mark: mark(run.actor), who }
    }
  }
})

/** the legend's authors, each name underlined as their text is: the chip of a look */
function authorChips (authors, mark) {
  return h('span', { class: 'author-chips' }, [...authors].sort().map((a) =>
    h('span', { class: 'author-chip', style: { '--author': colorFor(a) } },
      h('span', { class: 'dot', style: { background: colorFor(a) } }),
      h('span', { class: 'author-name', dataset: { mark: mark(a) } }, a))))
}
