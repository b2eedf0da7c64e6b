// One colour per author, the same in every tab and for every viewer: cursors,
// presence, timeline, diff and blame all use it.

const PALETTE = [
  '#0891b2', // cyan
  '#dc2626', // red
  '#059669', // emerald
  '#65a30d', // lime
  '#c026d3', // fuchsia
  '#ea580c', // orange
  '#4f46e5', // indigo
  '#d97706', // amber
  '#db2777', // pink
  '#7c3aed', // violet
  '#0d9488', // teal
  '#2563eb' // blue
]

function fnv1a (s) {
  let hash = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    hash ^= s.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash
}

/** @param {string} name */
export function colorFor (name) {
  if (!name) return '#64748b'
  return PALETTE[fnv1a(String(name)) % PALETTE.length]
}

/** translucent variant for selections and highlighted text (#rrggbbaa) */
export function lightColorFor (name, alpha = 0x2e) {
  return colorFor(name) + alpha.toString(16).padStart(2, '0')
}

export function initials (name) {
  const parts = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean)
  if (parts.length === 0) return '?'
  if (parts.length === 1) return parts[0].slice(0, 2).toUpperCase()
  return (parts[0][0] + parts[1][0]).toUpperCase()
}
