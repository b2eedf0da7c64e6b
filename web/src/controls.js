// Characters a text holds that the read-only drawings (the history's text, diff and
// blame, and a Tiptap, Lexical or Quill document drawn live) show as marks, as the
// editor does (specialchars.js), instead of letting them act or vanish.

import { h } from './util.js'

/**
 * The bidi embeddings and overrides, by code point. An override reverses the
 * characters after it ("Pay the vendor <RLO>evil<PDF> now" reads "live"), an
 * embedding reorders them, and neither is needed to write Arabic or Hebrew, for which
 * the marks and isolates (ALM, LRM, RLM, LRI, RLI, FSI, PDI) suffice: they hide what a
 * text says ("Trojan Source"), so they are drawn, never applied.
 */
export const BIDI_CONTROLS = new Map([
  [0x202a, 'left-to-right embedding'],
  [0x202b, 'right-to-left embedding'],
  [0x202c, 'pop directional formatting'],
  [0x202d, 'left-to-right override'],
  [0x202e, 'right-to-left override']
])

// a \r that ends no line (a lone CR, not one of a CRLF), or a bidi embedding or override
const SHOWN = /(\r(?!\n)|[\u202a-\u202e])/

/**
 * A text for a read-only drawing, its characters all there (textContent is the text):
 * a lone \r, which a browser draws as nothing (the words on either side ran together),
 * is wrapped in a span the style sheet marks with ␍; a bidi embedding or override in a
 * span the style sheet marks with • and isolates, so that it acts on nothing past it.
 * @returns {Node}
 */
export function visibleText (text) {
  const parts = String(text).split(SHOWN)
  if (parts.length === 1) return document.createTextNode(String(text))
  const out = document.createDocumentFragment()
  parts.forEach((part, i) => {
    if (i % 2 === 0) {
      if (part) out.append(part)
    } else if (part === '\r') {
      out.append(h('span', { class: 'cr', title: 'carriage return (\\r)' }, part))
    } else {
      out.append(h('span', { class: 'bidi-control', title: controlName(part) }, part))
    }
  })
  return out
}

function controlName (char) {
  const code = char.codePointAt(0)
  return `${BIDI_CONTROLS.get(code)} (U+${code.toString(16).toUpperCase()}), shown, not applied`
}
