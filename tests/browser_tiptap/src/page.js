// What the Quill and Lexical pages share: their query, and the errors nobody catches
// (thrown inside provider or binding handlers), collected for a failing test to show.
//
//   PAGE.html?ws=ws://HOST:PORT/ws&doc=NAME[&user=NAME]
const q = new URLSearchParams(location.search)
export const wsBase = q.get('ws')
export const docName = q.get('doc')
export const user = q.get('user') || ''
if (!wsBase || !docName) throw new Error('the page needs ?ws=…&doc=…')

export const errors = []
window.addEventListener('error', (e) => errors.push(String(e.error || e.message)))
window.addEventListener('unhandledrejection', (e) => errors.push(String(e.reason)))
