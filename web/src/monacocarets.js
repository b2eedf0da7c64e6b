// Carets shared with Monaco users. y-codemirror.next keeps a caret in the awareness
// field `cursor`, y-monaco in `selection` (both {anchor, head}, Y.RelativePosition), so
// neither saw the other's: the page drew no caret for a Monaco user and Monaco none for
// the page's. This extension draws the carets of remote users who publish only
// `selection` (someone with a `cursor` is drawn by y-codemirror.next, once), when their
// positions are in the Y.Text the page edits (a Monaco bound to another root: nothing),
// and keeps the page's own `selection` equal to its `cursor` so Monaco draws ours (y-monaco
// too draws only positions in its own Y.Text). The look is y-codemirror.next's: same
// classes, so its theme styles them.

import * as Y from 'yjs'
import { Annotation } from '@codemirror/state'
import { Decoration, ViewPlugin, WidgetType } from '@codemirror/view'
import { colorFor } from './colors.js'

const redraw = Annotation.define()

class CaretWidget extends WidgetType {
  constructor (color, name) {
    super()
    this.color = color
    this.name = name
  }

  toDOM () {
    const caret = document.createElement('span')
    caret.className = 'cm-ySelectionCaret'
    caret.style.backgroundColor = this.color
    caret.style.borderColor = this.color
    const dot = document.createElement('div')
    dot.className = 'cm-ySelectionCaretDot'
    const info = document.createElement('div')
    info.className = 'cm-ySelectionInfo'
    info.textContent = this.name
    caret.append('\u2060', dot, '\u2060', info, '\u2060')
    return caret
  }

  eq (other) { return other.color === this.color && other.name === this.name }
  get estimatedHeight () { return -1 }
  ignoreEvent () { return true }
}

const same = (a, b) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null)

/** Where `rel` (a Y.RelativePosition or its JSON) is in `ytext`, or null elsewhere. */
function indexIn (ytext, rel) {
  if (rel == null) return null
  const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(rel), ytext.doc)
  return abs !== null && abs.type === ytext ? abs.index : null
}

/** y-monaco's carets for a view bound to `ytext` by yCollab with `awareness`. */
export function monacoCarets (ytext, awareness) {
  return ViewPlugin.fromClass(class {
    constructor (view) {
      this.decorations = Decoration.none
      this.listener = ({ added, updated, removed }) => {
        const self = awareness.doc.clientID
        if (added.includes(self) || updated.includes(self)) {
          const local = awareness.getLocalState()
          if (local && !same(local.cursor, local.selection)) awareness.setLocalStateField('selection', local.cursor ?? null)
        }
        if ([...added, ...updated, ...removed].some((id) => id !== self)) view.dispatch({ annotations: redraw.of(true) })
      }
      awareness.on('change', this.listener)
      this.listener({ added: [awareness.doc.clientID], updated: [], removed: [] }) // (a caret already set)
    }

    update (update) {
      const length = update.state.doc.length
      const marks = []
      awareness.getStates().forEach((state, clientId) => {
        if (clientId === awareness.doc.clientID || state.cursor != null) return
        const sel = state.selection
        if (sel == null) return
        const anchor = indexIn(ytext, sel.anchor)
        const head = indexIn(ytext, sel.head)
        if (anchor === null || head === null || anchor > length || head > length) return
        const name = (state.user && state.user.name) || 'Anonymous'
        const color = (state.user && state.user.color) || colorFor(name)
        const light = (state.user && state.user.colorLight) || color + '33'
        const from = Math.min(anchor, head)
        const to = Math.max(anchor, head)
        if (from < to) {
          marks.push(Decoration.mark({ class: 'cm-ySelection', attributes: { style: `background-color: ${light}` } }).range(from, to))
        }
        marks.push(Decoration.widget({ side: head - anchor > 0 ? -1 : 1, widget: new CaretWidget(color, name) }).range(head))
      })
      this.decorations = Decoration.set(marks, true)
    }

    destroy () { awareness.off('change', this.listener) }
  }, { decorations: (v) => v.decorations })
}
