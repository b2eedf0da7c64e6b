// A question the user answers before something they cannot see happens: the page's
// one confirmation dialog (#ask-dialog), in the page's own style, not the browser's
// confirm(), which blocks the page (and the editor's sync) while it is open.
import { $ } from './util.js'

/**
 * Ask, and resolve true when the user says yes (the `yes` button), false when they
 * cancel (the Cancel button, Esc). Focus starts on Cancel: Enter alone does not go on.
 * @param {{title: string, text: string, yes: string}} question
 * @returns {Promise<boolean>}
 */
export function ask ({ title, text, yes }) {
  const dialog = $('#ask-dialog')
  if (dialog.open) return Promise.resolve(false) // (one question at a time)
  $('#ask-title').textContent = title
  $('#ask-text').textContent = text
  $('#ask-yes').textContent = yes
  dialog.returnValue = ''
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true })
    dialog.showModal()
    $('#ask-cancel').focus()
  })
}
