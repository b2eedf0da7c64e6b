"""A value Yjs holds as `undefined` (an attribute set to undefined, a map entry) stays
undefined when the server writes it again: a restore copying an element back, an undo
bringing it back. pycrdt reads undefined and null both as None, and wrote None back as
null: Milkdown then refused an image whose `title` was null."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RunningServer
from nodehelp import scenario
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture

from palimpsest.settings import Settings


@pytest.fixture
def settings(db_path: Path) -> Settings:
    # every event its own undo step
    return Settings(db=str(db_path), unload_after_seconds=0.5, undo_capture_ms=0)


#: alice writes an image whose title is undefined (and a map entry, an XML text's
#: attribute, a figure's title), then deletes them (sets the figure's title); a restore
#: of that version (copies, and the figure's title set in place), its undo, and the undo
#: of her deletion each bring them back: what a Yjs client reads each time, and one
#: that joins after
UNDEFINED = scenario("""
const alice = connect('alice')
await alice.synced
const frag = alice.ydoc.getXmlFragment('prosemirror')
const meta = alice.ydoc.getMap('meta')
alice.ydoc.transact(() => {
  const img = new Y.XmlElement('image')
  img.setAttribute('src', 'a.png')
  img.setAttribute('title', undefined)
  const t = new Y.XmlText('caption')
  t.setAttribute('lang', undefined)
  const fig = new Y.XmlElement('figure')
  fig.setAttribute('title', undefined)
  frag.insert(0, [img, t, fig])
  meta.set('k', undefined)
  meta.set('n', null)
})
await logged(1)
alice.ydoc.transact(() => {
  frag.delete(0, 2)
  frag.get(0).setAttribute('title', 'x')
  meta.set('k', 'x')
  meta.set('n', 'y')
})
await logged(2)
const d = (v) => (v === undefined ? 'undefined' : v === null ? 'null' : v)
const read = () => {
  const img = frag.get(0)
  const t = frag.get(1)
  return {
    src: img && d(img.getAttribute('src')),
    title: img && d(img.getAttribute('title')),
    titleKept: img ? 'title' in img.getAttributes() : null,
    lang: t && d(t.getAttribute('lang')),
    figure: d(frag.get(frag.length - 1).getAttribute('title')),
    k: d(meta.get('k')),
    kKept: meta.has('k'),
    n: d(meta.get('n')),
  }
}
const out = {}
out.restore = (await post('restore?user=alice', { seq: 1 })).status
await logged(3)
await until('restored', () => frag.length === 3)
out.restored = read()
out.undo1 = (await post('undo?user=alice')).status
await logged(4)
await until('the restore undone', () => frag.length === 1)
out.figureBefore = d(frag.get(0).getAttribute('title'))
out.undo2 = (await post('undo?user=alice')).status
await logged(5)
await until('the deletion undone', () => frag.length === 3)
out.undone = read()
const late = connect('late')
await late.synced
const lf = late.ydoc.getXmlFragment('prosemirror')
out.late = {
  title: d(lf.get(0).getAttribute('title')),
  figure: d(lf.get(2).getAttribute('title')),
  k: d(late.ydoc.getMap('meta').get('k')),
}
alice.provider.destroy()
late.provider.destroy()
process.stdout.write(JSON.stringify(out))
process.exit(0)
""")

BACK = {
    "src": "a.png",
    "title": "undefined",
    "titleKept": True,
    "lang": "undefined",
    "figure": "undefined",
    "k": "undefined",
    "kKept": True,
    "n": "null",
}


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_undefined_stays_undefined_through_restore_and_undo(server: RunningServer) -> None:
    out = json.loads(await node_scenario(UNDEFINED, server.ws_url, server.url, "img"))
    assert out == {
        "restore": 200, "restored": BACK, "undo1": 200, "figureBefore": "x", "undo2": 200,
        "undone": BACK, "late": {"title": "undefined", "figure": "undefined", "k": "undefined"},
    }, json.dumps(out)  # fmt: skip
