// Small DOM and formatting helpers. Data from the server is only ever put in the
// page as text (textContent), never as HTML.

/**
 * h('div', {class: 'x', onclick: fn}, 'text', child, ...)
 * @returns {HTMLElement}
 */
export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value)
    } else if (key === 'class') {
      el.className = value
    } else if (key === 'style' && typeof value === 'object') {
      for (const [prop, v] of Object.entries(value)) {
        if (prop.startsWith('--')) el.style.setProperty(prop, v)
        else el.style[prop] = v
      }
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value)
    } else if (value === true) {
      el.setAttribute(key, '')
    } else {
      el.setAttribute(key, String(value))
    }
  }
  append(el, children)
  return el
}

function append (el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue
    if (Array.isArray(child)) append(el, child)
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
}

export const $ = (sel, root = document) => root.querySelector(sel)

const TAB_STEPS = { ArrowLeft: -1, ArrowRight: 1 }

/**
 * A tablist as the ARIA tabs pattern has it: the selected tab is the list's one Tab
 * stop, and the arrow keys (round), Home and End move to another tab and select it
 * (`select(tab)`, which calls selectTab).
 */
export function tabKeys (list, select) {
  list.addEventListener('keydown', (event) => {
    const tabs = [...list.querySelectorAll('[role="tab"]')]
    const at = tabs.indexOf(event.target)
    if (at < 0 || event.altKey || event.ctrlKey || event.metaKey) return
    let to
    if (event.key === 'Home') to = 0
    else if (event.key === 'End') to = tabs.length - 1
    else if (event.key in TAB_STEPS) to = (at + TAB_STEPS[event.key] + tabs.length) % tabs.length
    else return
    event.preventDefault()
    tabs[to].focus()
    select(tabs[to])
  })
}

/** `selected` is the selected one of `tabs`, and their one Tab stop */
export function selectTab (tabs, selected) {
  for (const tab of tabs) {
    tab.setAttribute('aria-selected', String(tab === selected))
    tab.tabIndex = tab === selected ? 0 : -1
  }
}

/**
 * `object[key]` if it is the object's own: a name from a document (a root called
 * `constructor` or `toString`) never finds a member of Object.prototype.
 */
export function own (object, key) {
  return object && Object.prototype.hasOwnProperty.call(object, key) ? object[key] : undefined
}

/**
 * Put `content` (text and nodes) in the banner above the editor. A refusal is an alert,
 * which screen readers announce at once, not only the "Refused" of the status pill; an
 * `info` (read-only access) is a status, announced when the reader is idle.
 */
export function showBanner (content, kind = 'alert') {
  const banner = $('#banner')
  banner.className = kind === 'info' ? 'banner info' : 'banner'
  banner.setAttribute('role', kind === 'info' ? 'status' : 'alert')
  banner.replaceChildren(...content)
  banner.hidden = false
}

export function clear (el) {
  while (el.firstChild) el.removeChild(el.firstChild)
  return el
}

export function debounce (fn, ms) {
  let timer = null
  const wrapped = (...args) => {
    clearTimeout(timer)
    timer = setTimeout(() => fn(...args), ms)
  }
  wrapped.cancel = () => clearTimeout(timer)
  return wrapped
}

const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
// the tooltips' full time says its zone ("Dec 6, 2027, 7:52:00 PM GMT+1"): a time
// without one reads as another instant to a reader elsewhere
const dtf = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: 'numeric', minute: '2-digit', second: '2-digit', timeZoneName: 'short'
})
const tf = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' })
const df = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' })
const dfy = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' })
const tsf = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })

export function parseTime (ts) {
  if (ts === null || ts === undefined || ts === '') return null
  const d = typeof ts === 'number' ? new Date(ts > 1e12 ? ts : ts * 1000) : new Date(ts)
  return Number.isNaN(d.getTime()) ? null : d
}

/** "Mar 3" this year, "Mar 3, 2025" in another (a 2027 event was "Dec 6" in 2026) */
function dateOf (d) {
  return d.getFullYear() === new Date().getFullYear() ? df.format(d) : dfy.format(d)
}

/** "2027-12-06T19:52:00+01:00": the instant in this page's zone, with its offset */
export function isoTime (ts) {
  const d = parseTime(ts)
  if (!d) return ''
  const pad = (n, w = 2) => String(Math.abs(n)).padStart(w, '0')
  const off = -d.getTimezoneOffset()
  const zone = off === 0 ? 'Z' : `${off < 0 ? '-' : '+'}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${zone}`
}

/** "3 minutes ago" */
export function relativeTime (ts) {
  const d = parseTime(ts)
  if (!d) return ''
  const s = (d.getTime() - Date.now()) / 1000
  const abs = Math.abs(s)
  if (abs < 45) return 'just now'
  if (abs < 3600) return rtf.format(Math.round(s / 60), 'minute')
  if (abs < 86400) return rtf.format(Math.round(s / 3600), 'hour')
  if (abs < 86400 * 30) return rtf.format(Math.round(s / 86400), 'day')
  return dateOf(d)
}

/** "Dec 6, 2027, 7:52:00 PM GMT+1 (2027-12-06T19:52:00+01:00)": for tooltips */
export function absoluteTime (ts) {
  const d = parseTime(ts)
  return d ? `${dtf.format(d)} (${isoTime(d)})` : ''
}

/** "14:02" today, "Mar 3, 14:02" otherwise, "Mar 3, 2025, 14:02" in another year */
export function shortTime (ts) {
  const d = parseTime(ts)
  if (!d) return ''
  return sameDay(d, new Date()) ? tf.format(d) : `${dateOf(d)}, ${tf.format(d)}`
}

/** "14:02", whatever the day */
export function timeOfDay (ts) {
  const d = parseTime(ts)
  return d ? tf.format(d) : ''
}

/** whether two times are on the same day here (parsed as parseTime does) */
export function sameDay (a, b) {
  const x = parseTime(a)
  const y = parseTime(b)
  return Boolean(x && y) && x.toDateString() === y.toDateString()
}

export function formatBytes (n) {
  if (n === null || n === undefined || Number.isNaN(n)) return ''
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`
  return `${(n / 1024 / 1024).toFixed(1)} MB`
}

export function plural (n, one, many = one + 's') {
  return `${n} ${n === 1 ? one : many}`
}

/** "14:02:07" today, "Mar 3, 14:02:07" otherwise, "Mar 3, 2025, 14:02:07" in another year */
export function clockTime (ts) {
  const d = parseTime(ts)
  if (!d) return ''
  return sameDay(d, new Date()) ? tsf.format(d) : `${dateOf(d)}, ${tsf.format(d)}`
}

// Where Palimpsest is mounted (the page's <base>, e.g. https://app.example/collab/):
// every URL the page uses is relative to it, so the page works under any mount point.
export function mountUrl (path = '') {
  return new URL(path, document.baseURI).href
}

// The websocket base a WebsocketProvider wants (ws(s)://HOST/MOUNT/ws).
export function wsBase () {
  const url = new URL('ws', document.baseURI)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  return url.href
}
