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

/**
 * "611 characters written by alice and 530 by bob": the whole, each writer's share (the
 * most first, up to NAMED, then the rest together: "and 12 by 3 others"). It said "1141
 * characters written by alice and 1 other", which read as if all were alice's.
 */
export function removedSummary (removed) {
  const sorted = byMost(removed)
  const rest = sorted.slice(NAMED)
  const shares = sorted.slice(0, NAMED).map((r) => [r.characters, r.items, r.user ?? 'someone else'])
  if (rest.length === 1) shares.push([rest[0].characters, rest[0].items, rest[0].user ?? 'someone else'])
  if (rest.length > 1) shares.push([sum(rest, 'characters'), sum(rest, 'items'), plural(rest.length, 'other')])
  // the unit once, with the first share, where every share is of characters alone
  const bare = shares.every(([characters, items]) => !items && characters > 0)
  return listed(shares.map(([characters, items, who], i) => i === 0
    ? `${amount(characters, items)} written by ${who}`
    : `${bare ? characters : amount(characters, items)} by ${who}`))
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
