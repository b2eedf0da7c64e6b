import { $, h } from './util.js'

/**
 * Show a short message at the bottom of the page.
 * @param {string} text
 * @param {{kind?: 'info'|'ok'|'error', timeout?: number, action?: {label: string, run: Function}}} [opts]
 */
export function toast (text, { kind = 'info', timeout = 4000, action } = {}) {
  const box = $('#toasts')
  const el = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', {}, text))
  const close = () => {
    el.classList.add('leaving')
    setTimeout(() => el.remove(), 200)
  }
  if (action) {
    el.append(h('button', { class: 'toast-action', onclick: () => { close(); action.run() } }, action.label))
  }
  el.append(h('button', { class: 'toast-close', 'aria-label': 'Dismiss', onclick: close }, '✕'))
  box.append(el)
  while (box.children.length > 4) box.firstChild.remove()
  if (timeout) setTimeout(close, timeout)
  return close
}
