// Each line of the editor laid out in its own direction, taken from its first strong
// character (dir="auto"), as the history's views do (unicode-bidi: plaintext in the
// style sheet): an Arabic or Hebrew paragraph right to left and aligned right, an
// English one left to right, in one document. CodeMirror reads every line's direction
// (perLineTextDirection) for its cursor motion and selection only when told to.

import { Decoration, EditorView, ViewPlugin } from '@codemirror/view'
import { RangeSetBuilder } from '@codemirror/state'

const auto = Decoration.line({ attributes: { dir: 'auto' } })

function linesAuto (view) {
  const builder = new RangeSetBuilder()
  for (const { from, to } of view.visibleRanges) {
    for (let pos = from; pos <= to;) {
      const line = view.state.doc.lineAt(pos)
      builder.add(line.from, line.from, auto)
      pos = line.to + 1
    }
  }
  return builder.finish()
}

export const lineDirection = [
  EditorView.perLineTextDirection.of(true),
  ViewPlugin.fromClass(class {
    constructor (view) { this.decorations = linesAuto(view) }
    update (update) {
      if (update.docChanged || update.viewportChanged) this.decorations = linesAuto(update.view)
    }
  }, { decorations: (plugin) => plugin.decorations })
]
