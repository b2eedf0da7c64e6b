// One colour per author, the same in every tab and for every viewer: cursors,
// presence, timeline, diff and blame all use it. In the history (blame, diff, their
// legends, the timeline) an author also has a mark, the line drawn under their text and
// their name (authorMarks): twelve colours alone left a class of 40 in twelve looks.

// Each at least 4.5:1 against white (WCAG 1.4.3), for the white 11px initials on an
// avatar and a remote cursor's name: cyan, emerald, lime, orange, amber and teal are
// their 700 shades (the 600s were 3.1 to 3.8:1).
const PALETTE = [
  '#0e7490', // cyan
  '#dc2626', // red
  '#047857', // emerald
  '#4d7c0f', // lime
  '#c026d3', // fuchsia
  '#c2410c', // orange
  '#4f46e5', // indigo
  '#b45309', // amber
  '#db2777', // pink
  '#7c3aed', // violet
  '#0f766e', // teal
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

/**
 * The lines under an author's text and name (style.css [data-mark]): solid, dashed,
 * dotted, double, then thick solid, dashed and dotted. They are what tells authors
 * apart where colours cannot: two authors of one colour, and forced colours (Windows
 * High Contrast), where every line is in the one text colour but keeps its style.
 */
export const MARKS = 7

/** the mark an author has unless another of their colour in the view has it first */
function ownMark (name) {
  return Math.floor(fnv1a(String(name)) / PALETTE.length) % MARKS
}

/**
 * A mark for each of the `authors` of one view (a blame, a diff, the timeline), such
 * that authors of the same colour have different marks while there are no more than
 * MARKS of them: 84 looks in all. Each author keeps the mark their name hashes to (so
 * it is the same from view to view) unless an author of their colour whose name sorts
 * first has it; then they take the first mark free in their colour. Past MARKS authors
 * of one colour, the rest keep their own marks and so look like someone else: the
 * legend and each part's title and data-who still name them. Returns actor → mark
 * (0 to MARKS - 1; their own for an author not in `authors`, 0 for none).
 */
export function authorMarks (authors) {
  const byColor = new Map()
  for (const name of [...new Set(authors)].filter(Boolean).sort()) {
    const color = colorFor(name)
    if (!byColor.has(color)) byColor.set(color, [])
    byColor.get(color).push(name)
  }
  const marks = new Map()
  for (const names of byColor.values()) {
    const taken = new Set()
    const bumped = names.filter((name) => {
      const own = ownMark(name)
      if (taken.has(own)) return true
      taken.add(own)
      marks.set(name, own)
      return false
    })
    for (const name of bumped) {
      let mark = 0
      while (taken.has(mark)) mark++
      if (mark >= MARKS) mark = ownMark(name) // (all taken: a look twice)
      taken.add(mark)
      marks.set(name, mark)
    }
  }
  return (actor) => marks.get(actor) ?? (actor ? ownMark(actor) : 0)
}

/** translucent variant for selections and highlighted text (#rrggbbaa) */
export function lightColorFor (name, alpha = 0x2e) {
  return colorFor(name) + alpha.toString(16).padStart(2, '0')
}

/**
 * The text colour that reads on `color` (#rgb or #rrggbb): white, or near-black where
 * white would fall below 4.5:1, as on the light colours other apps give their users
 * (y-codemirror.next's default #30bced: 2.6:1).
 */
export function inkOn (color) {
  const hex = String(color).replace(/^#/, '')
  const full = hex.length === 3 ? hex.replace(/./g, '$&$&') : hex.slice(0, 6)
  if (!/^[0-9a-f]{6}$/i.test(full)) return '#fff'
  const channel = (i) => {
    const c = parseInt(full.slice(i, i + 2), 16) / 255
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4
  }
  const luminance = 0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4)
  return 1.05 / (luminance + 0.05) >= 4.5 ? '#fff' : '#1c1f23'
}

// Whole characters as a reader sees them: a UTF-16 slice cut "👩🏽‍💻 dev" to a lone
// surrogate (drawn as �) and "🇺🇦 Олена" to half a flag; NFC first, so a decomposed
// "Ávila" keeps its accent.
const graphemeSegmenter = typeof Intl !== 'undefined' && Intl.Segmenter
  ? new Intl.Segmenter(undefined, { granularity: 'grapheme' })
  : null

function graphemes (s) {
  return graphemeSegmenter ? Array.from(graphemeSegmenter.segment(s), (g) => g.segment) : Array.from(s)
}

export function initials (name) {
  const parts = String(name || '?').normalize('NFC').trim().split(/[\s._-]+/u).filter(Boolean)
  if (parts.length === 0) return '?'
  if (parts.length === 1) return graphemes(parts[0]).slice(0, 2).join('').toUpperCase()
  return (graphemes(parts[0])[0] + graphemes(parts[1])[0]).toUpperCase()
}
