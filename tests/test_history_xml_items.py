"""Roots that hold XML nodes beside other things (a kanban board's Y.Array of
Y.XmlFragments, a list of Y.XmlElements and values, a map holding an element): their
type, their versions and their restore, with real Yjs clients.

Before, a Y.Array root holding an XML element was taken for an XML fragment: its
version was neither JSON nor XML (``<li x="1"></li>plain{json: true}42[1, 2]``), an
array of two fragments and 'a', 'b' read "ab", and a restore answered "already equal"
and restored nothing.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conftest import RunningServer, run_server
from nodehelp import scenario
from pycrdt import Array, Doc, Map, XmlElement, XmlFragment, XmlText
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture

from palimpsest.backend import Backend
from palimpsest.history import attribution_codec as codec
from palimpsest.history import history_of
from palimpsest.history.render import ARRAY, MAP, TEXT, XML, held_root_types, infer_root_types
from palimpsest.history.restore import faithful, set_array
from palimpsest.settings import Settings

#: alice writes roots of every mix, then deletes some of what they hold; bob restores
#: the first version; what alice sees after it, each shared type by its class
SCENARIO = scenario("""
const { ydoc, provider, synced } = connect('alice')
await synced
const el = (tag, attrs, text) => {
  const e = new Y.XmlElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  if (text) e.insert(0, [new Y.XmlText(text)])
  return e
}
const frag = (text) => { const f = new Y.XmlFragment(); f.insert(0, [el('p', {}, text)]); return f }
const list = ydoc.getArray('list')
const board = ydoc.getArray('board')
const only = ydoc.getArray('only')
const nested = ydoc.getArray('nested')
const cells = ydoc.getMap('cells')
ydoc.transact(() => {
  list.push([el('li', { x: '1' }, 'one'), 'plain', { json: true }, 42, [1, 2], new Y.XmlText('t')])
  board.push([frag('todo'), 'a', 'b', frag('done')])
  only.push([el('p', {}, 'kept'), 'gone', el('p', {}, 'gone too')])
  nested.push([new Y.Array(), new Y.Array()])
  nested.get(0).push([1, 2])
  const m = new Y.Map()
  cells.set('c1', m)
  m.set('title', el('h1', { level: '1' }, 'Title'))
  m.set('note', new Y.XmlText('note'))
  cells.set('body', frag('body'))
  ydoc.getXmlFragment('prose').insert(0, [el('p', {}, 'prose')])
})
await logged(1)
ydoc.transact(() => {
  list.delete(0, 3)
  list.delete(list.length - 1, 1)
  board.delete(1, 1)
  only.delete(1, 2)
  nested.get(0).delete(0, 1)
  cells.get('c1').delete('title')
  cells.get('c1').delete('note')
})
await logged(2)
const restored = await post('restore?user=bob', { seq: 1 })
const xml = (v) => v instanceof Y.XmlElement || v instanceof Y.XmlText || v instanceof Y.XmlFragment
const seen = (v) => xml(v)
  ? `${v.constructor.name}:${v.toString()}`
  : v instanceof Y.Array ? v.toArray().map(seen)
  : v instanceof Y.Map ? Object.fromEntries([...v.entries()].sort().map(([k, x]) => [k, seen(x)]))
  : v
await until('alice has the restore', () => list.length === 6)
const arrays = ['list', 'board', 'only', 'nested']
const alice = Object.fromEntries(arrays.map((n) => [n, seen(ydoc.getArray(n))]))
alice.cells = seen(cells)
process.stdout.write(JSON.stringify({ restored, alice }))
provider.destroy()
process.exit(0)
""")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_roots_holding_xml_nodes_beside_other_things_render_and_restore(
    server: RunningServer,
) -> None:
    out = json.loads(await node_scenario(SCENARIO, server.ws_url, server.url, "mixes"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        v1 = (await http.get("/api/docs/mixes/versions/1")).json()["roots"]
        v2 = (await http.get("/api/docs/mixes/versions/2")).json()["roots"]
        head = (await http.get("/api/docs/mixes/versions/head")).json()["roots"]
        diff = (await http.get("/api/docs/mixes/diff", params={"from": 1, "to": 2})).json()
    types = {name: root["type"] for name, root in v1.items()}
    assert types == {
        "board": ARRAY,
        "cells": MAP,
        "list": ARRAY,
        "nested": ARRAY,
        "only": ARRAY,  # (XML elements alone at seq 2: learnt at 1, kept)
        "prose": XML,
    }
    assert v1["list"]["value"] == ['<li x="1">one</li>', "plain", {"json": True}, 42, [1, 2], "t"]
    assert v1["board"]["value"] == ["<p>todo</p>", "a", "b", "<p>done</p>"]
    assert v1["cells"]["value"]["c1"] == {"note": "note", "title": '<h1 level="1">Title</h1>'}
    assert v2["only"] == {"type": ARRAY, "value": ["<p>kept</p>"]}
    assert diff["roots"]["list"]["ops"][0] == {
        "op": "delete",
        "index": 0,
        "values": ['<li x="1">one</li>', "plain", {"json": True}],
    }
    assert out["restored"]["status"] == 200, out
    assert isinstance(out["restored"]["body"]["seq"], int)
    # what alice's Yjs holds: the very kinds the version held, XML nodes as XML nodes
    assert out["alice"] == {
        "list": [
            'YXmlElement:<li x="1">one</li>',
            "plain",
            {"json": True},
            42,
            [1, 2],
            "YXmlText:t",
        ],
        "board": ["YXmlFragment:<p>todo</p>", "a", "b", "YXmlFragment:<p>done</p>"],
        "only": [
            "YXmlElement:<p>kept</p>",
            "gone",
            "YXmlElement:<p>gone too</p>",
        ],
        "nested": [[1, 2], []],
        "cells": {
            "body": "YXmlFragment:<p>body</p>",
            "c1": {"note": "YXmlText:note", "title": 'YXmlElement:<h1 level="1">Title</h1>'},
        },
    }
    assert head == {n: r for n, r in v1.items()}


def test_a_root_read_as_an_array_of_its_items_is_guessed_by_what_they_are() -> None:
    doc: Doc[Any] = Doc(skip_gc=True)
    frag = doc.get("f", type=XmlFragment)
    frag.children.append(XmlElement("p"))
    frag.children.append(XmlText("x"))
    doc.get("a", type=Array).append(XmlFragment())
    doc.get("m", type=Map)["k"] = XmlFragment()
    assert infer_root_types(doc, ["f", "a", "m"]) == {"f": XML, "a": ARRAY, "m": MAP}
    assert held_root_types(doc.get_update(), ["f", "a", "m"]) == {"f": XML, "a": ARRAY, "m": MAP}


def test_restore_puts_xml_elements_and_texts_back_into_an_array() -> None:
    """pycrdt refuses to insert them into an array (or a map); restore writes them as a
    Yjs client would. The version: a fragment's items read as an array's (pycrdt
    builds no XML element in an array)."""
    src: Doc[Any] = Doc(skip_gc=True)
    src_frag = src.get("x", type=XmlFragment)
    src_frag.children.append(XmlElement("li", {"n": "1"}, [XmlText("one")]))
    src_frag.children.append(XmlText("two"))
    src_frag.children[1].format(0, 3, {"bold": True})
    version: Doc[Any] = Doc(skip_gc=True)
    version.apply_update(src.get_update())
    want = version.get("x", type=Array)
    live: Doc[Any] = Doc(skip_gc=True)
    got = live.get("x", type=Array)
    got.extend(["stale", "values"])
    with live.transaction():
        set_array(got, want)
    assert faithful(got) == faithful(want)
    assert [type(v) for v in got] == [XmlElement, XmlText]
    # another replica of the document reads the same (the items are valid Yjs)
    replica: Doc[Any] = Doc()
    replica.apply_update(live.get_update())
    assert faithful(replica.get("x", type=Array)) == faithful(want)


#: alice writes a kanban board (a Y.Array of two XmlFragments and two strings) and a
#: text, then deletes the strings
BOARD = scenario("""
const { ydoc, provider, synced } = connect('alice')
await synced
const frag = (text) => {
  const f = new Y.XmlFragment()
  const p = new Y.XmlElement('p')
  p.insert(0, [new Y.XmlText(text)])
  f.insert(0, [p])
  return f
}
ydoc.transact(() => {
  ydoc.getArray('board').push([frag('todo'), 'a', 'b', frag('done')])
  ydoc.getText('t').insert(0, 'hello')
})
await logged(1)
ydoc.transact(() => {
  ydoc.getArray('board').delete(1, 2)
  ydoc.getText('t').insert(5, ' world')
})
await logged(2)
provider.destroy()
process.exit(0)
""")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_a_stored_index_that_took_an_array_for_xml_is_read_as_an_array(
    settings: Settings,
) -> None:
    """An attribution index stored before a root holding XML nodes beside other things
    was an array recorded that root as XML: a cold server that read it back showed the
    board as XML ('<p>todo</p>ab<p>done</p>') and its restore made the board 'equal' as
    XML, deleting the fragment and values it did not see. It is an array now."""
    async with run_server(settings) as srv:
        await node_scenario(BOARD, srv.ws_url, srv.url, "kanban")
    # the index as the code before stored it: the board tracked as an XML root
    async with Backend(settings) as backend:
        h = history_of(backend)
        info = await h.info("kanban")
        await h.attribution.get("kanban", info.head, {"board": XML, "t": TEXT})
        await h.attribution.drain()
        stored = await backend.store.derived("kanban", codec.KIND)
        assert stored is not None and "board" in codec.parse(stored[1]).header["xml"]
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        blame = (await http.get("/api/docs/kanban/blame")).json()  # reads the stored index
        # the board is blamed as the array it is (its nested texts, none here), not as XML
        assert set(blame["roots"]) == {"t", "board"}
        assert blame["roots"]["board"] == {"type": "array", "texts": []}
        assert history_of(srv.backend).attribution.restores  # (read back, not rebuilt)
        v1 = (await http.get("/api/docs/kanban/versions/1")).json()["roots"]
        assert v1["board"] == {"type": ARRAY, "value": ["<p>todo</p>", "a", "b", "<p>done</p>"]}
        r = await http.post("/api/docs/kanban/restore", params={"user": "bob"}, json={"seq": 1})
        assert r.status_code == 200 and r.json()["added"]["items"] == 2, r.json()
        head = (await http.get("/api/docs/kanban/versions/head")).json()["roots"]
        assert head == v1
