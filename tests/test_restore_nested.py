"""Restore changes shared types nested in maps and arrays in place (a shape's key, a
label's characters, an element's attribute) instead of replacing them whole.

Before, a nested Y.Map (a whiteboard's shape) that differed in one key was deleted and
copied: what others wrote into it while the restore was on its way went with the
deleted map, and the restorer's undo deleted the copy, with every later edit of others
made in it, and brought the old map back (x=14 typed after the restore became x=1).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually
from hypothesis import given, settings
from hypothesis import strategies as st
from nodehelp import scenario
from pycrdt import Array, Assoc, Doc, Map, Text, XmlElement, XmlFragment
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from test_restore_rich import _updates
from yclient import connect, two_people

from palimpsest.history.restore import faithful, set_array, set_map


def _events(root: Map[Any] | Array[Any]) -> tuple[list[tuple[Any, ...]], Any]:
    """What observers of `root` see, per event: kind, path, keys or delta."""
    seen: list[tuple[Any, ...]] = []

    def on(events: list[Any]) -> None:
        for e in events:
            change = e.keys if type(e).__name__ in ("MapEvent", "XmlEvent") else e.delta
            seen.append((type(e).__name__, list(e.path), change))

    return seen, root.observe_deep(on)


def _ids(array: Array[Any]) -> list[tuple[int, int]]:
    """The Yjs ids of the items of `array`."""
    out = []
    for i in range(len(array)):
        item = array.sticky_index(i, Assoc.AFTER).to_json()["item"]
        out.append((item["client"], item["clock"]))
    return out


def _version(doc: Doc[Any]) -> Doc[Any]:
    """A copy of `doc` as it is now (a version, as the history rebuilds it from the log)."""
    copy: Doc[Any] = Doc()
    copy.apply_update(doc.get_update())
    return copy


def test_a_nested_map_that_differs_in_one_key_gets_that_key_set() -> None:
    live: Doc[Any] = Doc()
    shapes = live.get("shapes", type=Map)
    shapes["s0"] = Map({"x": 0, "y": 0, "label": Text("hello"), "pts": Array([1, 2])})
    target = _version(live)
    s0 = shapes["s0"]
    with live.transaction():
        s0["x"] = 1
        s0["label"].insert(5, " world")
        s0["pts"].append(3)
    seen, sub = _events(shapes)
    with live.transaction():
        set_map(shapes, target.get("shapes", type=Map))
    shapes.unobserve(sub)
    assert faithful(shapes) == faithful(target.get("shapes", type=Map))
    # the key, the characters and the item that differ; the shape itself stays
    assert sorted(seen, key=str) == sorted(
        [
            ("MapEvent", ["s0"], {"x": {"action": "update", "oldValue": 1.0, "newValue": 0.0}}),
            ("TextEvent", ["s0", "label"], [{"retain": 5}, {"delete": 6}]),
            ("ArrayEvent", ["s0", "pts"], [{"retain": 2}, {"delete": 1}]),
        ],
        key=str,
    )


def test_xml_in_a_map_keeps_its_elements_and_gets_their_attributes_set() -> None:
    live: Doc[Any] = Doc()
    root = live.get("m", type=Map)
    root["doc"] = XmlFragment()
    root["doc"].children.append(XmlElement("heading", {"level": "1"}))
    target = _version(live)
    (h,) = root["doc"].children
    h.attributes["level"] = "2"
    seen, sub = _events(root)
    with live.transaction():
        set_map(root, target.get("m", type=Map))
    root.unobserve(sub)
    assert faithful(root) == faithful(target.get("m", type=Map))
    assert seen == [
        ("XmlEvent", ["doc", 0], {"level": {"action": "update", "oldValue": "2", "newValue": "1"}})
    ]


def test_a_value_of_another_kind_is_replaced() -> None:
    live: Doc[Any] = Doc()
    root = live.get("m", type=Map)
    root["v"] = Map({"a": 1})
    target = _version(live)
    root["v"] = Array([1])
    with live.transaction():
        set_map(root, target.get("m", type=Map))
    assert faithful(root) == faithful(target.get("m", type=Map))


def test_array_items_that_are_the_same_shared_type_keep_their_identity() -> None:
    live: Doc[Any] = Doc()
    els = live.get("elements", type=Array)
    for i in range(6):
        els.append(Map({"id": f"e{i}", "x": i}))
    target = _version(live)
    before = _ids(els)
    with live.transaction():
        els[1]["x"] = 100  # changed
        del els[2]  # gone (its copy comes back)
        els[2]["x"] = 300  # (e3) changed, next to the gap
        els.insert(3, Map({"id": "new"}))  # added between changed ones
        els[5]["x"] = 500  # (e5) changed
    with live.transaction():
        set_array(els, target.get("elements", type=Array))
    assert faithful(els) == faithful(target.get("elements", type=Array))
    after = _ids(els)
    # e0, e1, e3, e4 and e5 are the very items they were; e2 is a copy
    assert [after[i] for i in (0, 1, 3, 4, 5)] == [before[i] for i in (0, 1, 3, 4, 5)]
    assert after[2] != before[2]
    # already equal: nothing written
    assert _updates(live, lambda: set_array(els, target.get("elements", type=Array))) == []


#: edits of a shape list: set a key of one, delete one, insert one, edit a label
EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 20), st.sampled_from("xy"), st.integers(0, 3)),
        st.tuples(st.just("del"), st.integers(0, 20)),
        st.tuples(st.just("add"), st.integers(0, 20), st.integers(0, 3)),
        st.tuples(st.just("label"), st.integers(0, 20), st.text("ab", max_size=3)),
    ),
    max_size=12,
)


def _shape(x: int) -> Map[Any]:
    return Map({"x": x, "y": 0, "label": Text("ab"), "tags": Array(["t"])})


def _edit(els: Array[Any], edits: list[tuple[Any, ...]]) -> None:
    for op in edits:
        n = len(els)
        if op[0] == "add":
            els.insert(op[1] % (n + 1), _shape(op[2]))
        elif n == 0:
            continue
        elif op[0] == "set":
            els[op[1] % n][op[2]] = op[3]
        elif op[0] == "del":
            del els[op[1] % n]
        else:
            label = els[op[1] % n]["label"]
            label.insert(len(label), op[2])


@settings(max_examples=150, deadline=None)
@given(EDITS, EDITS)
def test_nested_shapes_are_made_equal_and_then_left_alone(
    first: list[tuple[Any, ...]], then: list[tuple[Any, ...]]
) -> None:
    live: Doc[Any] = Doc()
    els = live.get("elements", type=Array)
    for i in range(4):
        els.append(_shape(i))
    _edit(els, first)
    target = _version(live)
    _edit(els, then)
    want = target.get("elements", type=Array)
    with live.transaction():
        set_array(els, want)
    assert faithful(els) == faithful(want)
    assert _updates(live, lambda: set_array(els, want)) == []


# --- end to end: a real server, real clients ---------------------------------------------


async def test_restore_over_http_changes_a_label_by_a_diff_and_keeps_writes_in_flight(
    server: RunningServer,
) -> None:
    async with two_people(server, "board", ("ann", "bob")) as p:
        shapes = p.ann.get("shapes", type=Map)
        shapes["s0"] = Map({"x": 0, "label": Text("hello")})
        await eventually(lambda: p.logged(1), what="ann's shape logged")
        bob_s0 = p.bob.get("shapes", type=Map)
        await eventually(lambda: "s0" in bob_s0, what="bob has the shape")
        with p.bob.transaction():
            bob_s0["s0"]["x"] = 1
            bob_s0["s0"]["label"].insert(5, " world")
        await eventually(lambda: p.logged(2), what="bob's edit logged")
        await eventually(lambda: str(shapes["s0"]["label"]) == "hello world", what="ann has it")

        # carol read the board, and drags the shape while the restore is on its way
        carol: Doc[Any] = Doc()
        async with connect(server.ws_url, "board", "carol", ydoc=carol):
            pass
        carol.get("shapes", type=Map)["s0"]["y"] = 7

        seen, sub = _events(shapes)
        r = await p.http.post("/api/docs/board/restore", params={"user": "bob"}, json={"seq": 1})
        assert r.status_code == 200, r.text
        await eventually(lambda: str(shapes["s0"]["label"]) == "hello", what="ann sees it")
        shapes.unobserve(sub)
        # ann saw the key and the characters that differ change, not a new shape
        assert sorted(seen, key=str) == [
            ("MapEvent", ["s0"], {"x": {"action": "update", "oldValue": 1.0, "newValue": 0.0}}),
            ("TextEvent", ["s0", "label"], [{"retain": 5}, {"delete": 6}]),
        ]

        async with connect(server.ws_url, "board", "carol", ydoc=carol):

            async def head() -> Any:
                v = (await p.http.get("/api/docs/board/versions/head")).json()
                return v["roots"]["shapes"]["value"]

            async def has_carols_drag() -> bool:
                return "y" in (await head())["s0"]

            await eventually(has_carols_drag, what="carol's drag logged")
            assert (await head()) == {"s0": {"x": 0, "y": 7, "label": "hello"}}
            await eventually(lambda: shapes["s0"].get("y") == 7, what="ann has carol's drag")


#: alice draws a shape, carol moves it, bob restores the first version while carol keeps
#: moving it, then bob undoes his restore (real y-websocket clients)
SCENARIO = scenario("""
const alice = connect('alice')
const carol = connect('carol')
await Promise.all([alice.synced, carol.synced])
alice.ydoc.transact(() => {
  const s = new Y.Map()
  s.set('x', 0)
  s.set('y', 0)
  alice.ydoc.getMap('shapes').set('s0', s)
})
const shapes = carol.ydoc.getMap('shapes')
await until('carol has the shape', () => shapes.has('s0'))
const s0 = shapes.get('s0')
carol.ydoc.transact(() => { s0.set('x', 1); s0.set('y', 1) })
await logged(2)
const restore = await post('restore?user=bob', { seq: 1 })
await until('carol has the restore', () => shapes.get('s0').get('y') === 0)
const same = shapes.get('s0') === s0
const deleted = s0._item.deleted
for (let x = 10; x < 15; x++) shapes.get('s0').set('x', x)
await until('carol logged', async () => (await head()).roots.shapes.value.s0.x === 14)
const undo = await post('undo?user=bob')
await until('carol has the undo', () => shapes.get('s0').get('y') === 1)
await until('alice has the undo', () => alice.ydoc.getMap('shapes').get('s0').get('y') === 1)
process.stdout.write(JSON.stringify({
  restore, undo, same, deleted,
  alice: alice.ydoc.getMap('shapes').toJSON(),
  carol: shapes.toJSON(),
  head: (await head()).roots.shapes.value,
}))
alice.provider.destroy()
carol.provider.destroy()
process.exit(0)
""")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_undo_of_a_restore_keeps_what_others_set_in_the_shape_after_it(
    server: RunningServer,
) -> None:
    out = await node_scenario(SCENARIO, server.ws_url, server.url, "shapes")
    got = json.loads(out)
    assert got["restore"]["status"] == 200, got
    # bob's undo reverts his restore's own change (y) and keeps carol's later x
    assert got["undo"]["status"] == 200, got
    assert got["undo"]["body"]["reverts"] == [got["restore"]["body"]["seq"]]
    want = {"s0": {"x": 14, "y": 1}}
    assert got["alice"] == got["carol"] == got["head"] == want
    # the shape carol holds is the one restored, changed in place
    assert got["same"] is True and got["deleted"] is False
    async with httpx.AsyncClient(base_url=server.url) as http:
        events = (await http.get("/api/docs/shapes/events", params={"limit": 100})).json()
    assert [e["kind"] for e in events["events"]][-1] == "undo"
