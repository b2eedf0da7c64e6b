// How the page says what an undo, a redo or a restore took out that others wrote (the
// server's answers list it per user as `removed_others`: {user, characters, items};
// user null: a writer the server cannot name).
import { plural } from './util.js'

/** writers named in a list before "and N others" */
const NAMED = 3

/** "5 characters by bob", "1 item by carol" (an element, an embed, a value) */
export function removedBy ({ user, characters, items }) {
  return `${amount(characters, items)} by ${user ?? 'someone else'}`
}

/** "5 characters by bob, 2 items by carol and 12 characters by 3 others" */
export function removedList (removed) {
  const sorted = byMost(removed)
  const parts = sorted.slice(0, NAMED).map(removedBy)
  const rest = sorted.slice(NAMED)
  if (rest.length === 1) parts.push(removedBy(rest[0]))
  if (rest.length > 1) {
    parts.push(`${amount(sum(rest, 'characters'), sum(rest, 'items'))} by ${rest.length} others`)
  }
  return listed(parts)
}

/** "23 characters written by s06 and 2 others": the whole, naming who wrote most */
export function removedSummary (removed) {
  const sorted = byMost(removed)
  const others = sorted.length - 1
  const who = (sorted[0].user ?? 'someone else') + (others ? ` and ${plural(others, 'other')}` : '')
  return `${amount(sum(sorted, 'characters'), sum(sorted, 'items'))} written by ${who}`
}

/** "a", "a and b", "a, b and c" */
export function listed (parts) {
  return parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)}` : parts[0]
}

function amount (characters, items) {
  return [[characters, 'character'], [items, 'item']]
    .filter(([n]) => n > 0)
    .map(([n, unit]) => plural(n, unit))
    .join(' and ')
}

function sum (removed, key) {
  return removed.reduce((n, r) => n + (r[key] || 0), 0)
}

function byMost (removed) {
  return [...removed].sort((a, b) => (b.characters + b.items) - (a.characters + a.items))
}
