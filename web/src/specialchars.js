// Control characters drawn visibly (a \r as ␍, a zero-width space as •), as
// CodeMirror's highlightSpecialChars() draws them, without its bug: its MatchDecorator
// (@codemirror/view 6.43.15, still in 6.44.2) hands back the widgets it drew unmapped
// when the document changed only outside the viewport. Someone else's edit above the
// part of a long document on screen then left each ␍ where its \r had been, over
// another character or a line break: "Decorations that replace line breaks may not
// be specified via plugins" in the middle of a Yjs update, a view out of step with its
// state ("No tile at position …"), and the tab's next edit cut an emoji in two and was
// refused. Here the widgets are drawn again for the visible text on every change.

import { Decoration, MatchDecorator, ViewPlugin, WidgetType } from '@codemirror/view'
import { h } from './util.js'
import { BIDI_CONTROLS } from './controls.js'

// highlightSpecialChars' default set, less \n (the only line break: editor.js sets
// EditorState.lineSeparator to '\n', so a \r is a character of its line) and less the
// bidirectional marks and isolates (ALM, LRM, RLM, LRI, RLI, PDI): someone writing
// Arabic or Hebrew types them to order a line's runs, and they must do that, not be
// replaced by a bullet that orders nothing (the default set had PDI without FSI). The
// embeddings and overrides (LRE, RLE, PDF, LRO, RLO) stay drawn: they reorder or
// reverse the characters after them, which nobody needs to write a language and which
// hides what a text says ("Trojan Source"; controls.js, as the read-only views draw them)
const SPECIALS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u200b\u202a-\u202e\u2028\u2029\ufeff\ufff9-\ufffc]/gu

const NAMES = new Map([
  [0, 'null'],
  [7, 'bell'],
  [8, 'backspace'],
  [11, 'vertical tab'],
  [13, 'carriage return'],
  [27, 'escape'],
  [8203, 'zero width space'],
  [8204, 'zero width non-joiner'],
  [8205, 'zero width joiner'],
  [8232, 'line separator'],
  [8233, 'paragraph separator'],
  [65279, 'zero width no-break space'],
  [65532, 'object replacement'],
  ...BIDI_CONTROLS
])

class SpecialChar extends WidgetType {
  constructor (code) {
    super()
    this.code = code
  }

  eq (other) { return other.code === this.code }

  toDOM (view) {
    const name = NAMES.get(this.code) || `0x${this.code.toString(16)}`
    const label = `${view.state.phrase('Control character')} ${name}`
    // the Control Pictures block for ASCII controls (␍ for \r), a bullet for the others
    const shown = this.code < 32 ? String.fromCharCode(0x2400 + this.code) : '\u2022'
    return h('span', { class: 'cm-specialChar', title: label, 'aria-label': label }, shown)
  }

  ignoreEvent () { return false }
}

const widgets = new Map() // code -> its decoration
const matcher = new MatchDecorator({
  regexp: SPECIALS,
  decoration: (match) => {
    const code = match[0].codePointAt(0)
    if (!widgets.has(code)) widgets.set(code, Decoration.replace({ widget: new SpecialChar(code) }))
    return widgets.get(code)
  }
})

export const specialChars = ViewPlugin.fromClass(class {
  constructor (view) {
    this.decorations = matcher.createDeco(view)
  }

  update (update) {
    // drawn again rather than matcher.updateDeco(): that is the call that misses the
    // changes outside the viewport (the visible text is a few thousand characters)
    if (update.docChanged || update.viewportChanged) this.decorations = matcher.createDeco(update.view)
  }
}, { decorations: (plugin) => plugin.decorations })
