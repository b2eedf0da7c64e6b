"""A tree diff matches nodes an undo or a restore made again by their content.

Yjs cannot revive a deleted item: a restore that brings back a bullet list, or the undo
of a restore that took it out, inserts a new list (new ids) beside the deleted one. The
tree diff pairs nodes by identity first; a deleted node and an inserted one left over
between the same two unchanged siblings are then paired by content: the same content is
unchanged, a partly different one shows only what differs inside, its text named for
who wrote it as blame names it. Nodes of other content, or moved past an unchanged
sibling, stay a delete and an insert.
"""

from __future__ import annotations

import random
from typing import Any

from conftest import RunningServer, eventually
from pycrdt import Doc, UndoManager, XmlElement, XmlFragment, XmlText
from test_attribution_copies import Log
from test_attribution_xml import _side, _tree, _valid
from yclient import two_people

from palimpsest.history import matching
from palimpsest.history.attribution import AttributionIndex
from palimpsest.history.render import XML
from palimpsest.history.restore import set_xml
from palimpsest.store.base import Event

ROOT = "default"


def _para(text: str, tag: str = "paragraph") -> XmlElement:
    return XmlElement(tag, {}, [XmlText(text)])


def _list(*items: str) -> XmlElement:
    return XmlElement("bulletList", {}, [XmlElement("listItem", {}, [_para(t)]) for t in items])


def _version(events: list[Event], seq: int) -> Doc[Any]:
    d: Doc[Any] = Doc()
    for ev in events[:seq]:
        d.apply_update(ev.update)
    return d


def _restore(log: Log, root: XmlFragment, seq: int, actor: str) -> None:
    """A restore of version `seq` as the server makes it (restore.make_equal's XML)."""
    log.by(actor, "restore", restores=seq)
    target = _version(log.events, seq)
    with root.doc.transaction():
        set_xml(root, target.get(ROOT, type=XmlFragment))


def _diff(events: list[Event], a: int, b: int) -> list[dict[str, Any]]:
    """The tree diff from a to b, checked against both versions."""
    index = AttributionIndex("d", {ROOT: XML})
    index.fold(events)
    track = index.xml[ROOT]
    assert track.failed is None
    fa, fb = (_version(events, s).get(ROOT, type=XmlFragment) for s in (a, b))
    nodes = track.diff(a, b, index.actor, fa, fb)
    assert _side(nodes, "a") == _tree(fa) and _side(nodes, "b") == _tree(fb)
    _valid(nodes, "XmlDiffNode")
    # a diff with no index yet folds just the range: the same answer
    ranged = AttributionIndex("d", {ROOT: XML}, by_ids=False)
    ranged.start_from(a, _version(events, a).get_update())
    ranged.fold(events[a:b])
    assert ranged.xml[ROOT].diff(a, b, ranged.actor, fa, fb) == nodes
    return nodes


def _shape(nodes: list[dict[str, Any]]) -> list[Any]:
    """Each node's op, and its text's ops as (op, text, actor)."""
    out: list[Any] = []
    for n in nodes:
        if "ops" in n:
            out.append([(o["op"], o["text"], o["actor"]) for o in n["ops"]])
        else:
            out.append((n["op"], n["element"], _shape(n["children"])))
    return out


def _all_equal(nodes: list[dict[str, Any]]) -> bool:
    return all(
        n["op"] == "equal"
        and all(o["op"] == "equal" for o in n.get("ops", []))
        and _all_equal(n.get("children", []))
        for n in nodes
    )


def test_a_restore_then_its_undo_diffs_as_unchanged() -> None:
    """Carol's bullet list (with a bold word) is taken out by Bob's restore of a version
    before it, and put back by his undo: a new list, the same content. From before the
    restore to after the undo, nothing changed; across each alone, the list goes and
    comes (the undo's, its text Carol's as blame says)."""
    doc: Doc[Any] = Doc()
    log = Log(doc)
    root = doc.get(ROOT, type=XmlFragment)
    root.children.append(_para("Minutes", "heading"))  # 1 ann
    log.by("carol")
    root.children.append(_list("first item", "second item"))  # 2
    root.children[1].children[0].children[0].children[0].format(0, 5, {"bold": {}})  # 3
    undo = UndoManager(scopes=[root], capture_timeout_millis=0)
    _restore(log, root, 1, "bob")  # 4
    assert str(root) == "<heading>Minutes</heading>"
    log.by("bob", "undo", reverts=[4])
    undo.undo()  # 5
    assert len(log.events) == 5

    nodes = _diff(log.events, 3, 5)
    assert _all_equal(nodes), nodes
    assert _shape(nodes)[1] == (
        "equal", "bulletList", [
            ("equal", "listItem", [("equal", "paragraph", [
                [("equal", "first", None), ("equal", " item", None)]])]),
            ("equal", "listItem", [("equal", "paragraph", [[("equal", "second item", None)]])]),
        ],
    )  # fmt: skip
    assert nodes[1]["children"][0]["children"][0]["children"][0]["ops"][0]["attributes"] == {
        "bold": {}
    }
    # across the restore alone: the list taken out; across the undo alone: put back
    assert [(n["op"], n["actor"]) for n in _diff(log.events, 3, 4)] == [
        ("equal", None),
        ("delete", "bob"),
    ]
    back = _diff(log.events, 4, 5)
    assert [(n["op"], n["actor"]) for n in back] == [("equal", None), ("insert", "bob")]


def test_a_restore_of_recreated_paragraphs_shows_only_the_one_that_differs() -> None:
    """Ann's three paragraphs, Carol's words in the third, Dan's wipe and a heading of
    his, Bob's restore of the version with Carol's words: from Ann's version to the
    restored one only Carol's words are new (hers, as blame has them), and from the
    version restored nothing changed."""
    doc: Doc[Any] = Doc()
    log = Log(doc)
    root = doc.get(ROOT, type=XmlFragment)
    with doc.transaction():  # 1 ann
        for t in ("Alpha by ann", "Beta by ann", "Gamma by ann"):
            root.children.append(_para(t))
    log.by("carol")
    third = root.children[2].children[0]
    assert isinstance(third, XmlText)
    third.insert(6, "(carol) ")  # 2
    log.by("dan")
    del root.children[0:3]  # 3
    log.by("dan")
    root.children.append(_para("Dan was here", "heading"))  # 4
    _restore(log, root, 2, "bob")  # 5
    assert len(log.events) == 5
    assert str(root) == (
        "<paragraph>Alpha by ann</paragraph><paragraph>Beta by ann</paragraph>"
        "<paragraph>Gamma (carol) by ann</paragraph>"
    )
    assert _all_equal(_diff(log.events, 2, 5))
    nodes = _diff(log.events, 1, 5)
    assert _shape(nodes) == [
        ("equal", "paragraph", [[("equal", "Alpha by ann", None)]]),
        ("equal", "paragraph", [[("equal", "Beta by ann", None)]]),
        ("equal", "paragraph", [[
            ("equal", "Gamma ", None), ("insert", "(carol) ", "carol"), ("equal", "by ann", None),
        ]]),
    ]  # fmt: skip
    assert nodes[2]["children"][0]["ops"][1]["seq"] == 2
    # Erin restores Ann's version (seq 6, in place): from the version with Carol's
    # words, they are deleted, the rest unchanged (deleted with the paragraph they were
    # in, by Dan: the paragraph Erin took them out of is another)
    _restore(log, root, 1, "erin")  # 6
    assert _shape(_diff(log.events, 5, 6))[2] == (
        "equal", "paragraph", [[
            ("equal", "Gamma ", None), ("delete", "(carol) ", "erin"), ("equal", "by ann", None),
        ]],
    )  # fmt: skip
    assert _shape(_diff(log.events, 2, 6))[2] == (
        "equal", "paragraph", [[
            ("equal", "Gamma ", None), ("delete", "(carol) ", "dan"), ("equal", "by ann", None),
        ]],
    )  # fmt: skip
    assert _all_equal(_diff(log.events, 1, 6))


def test_other_content_and_moves_stay_a_delete_and_an_insert() -> None:
    """A paragraph replaced by another of other words, one moved past an unchanged
    sibling, one retyped as a heading: each a delete and an insert, as before."""
    doc: Doc[Any] = Doc()
    log = Log(doc)
    root = doc.get(ROOT, type=XmlFragment)
    with doc.transaction():  # 1
        for t in ("one", "two", "three", "four"):
            root.children.append(_para(t))
    log.by("bob")
    with doc.transaction():  # 2
        del root.children[3]
        root.children.insert(3, _para("something else entirely"))
        del root.children[0]  # "one" moved after "two"
        root.children.insert(1, _para("one"))
        del root.children[2]  # "three" made a heading
        root.children.insert(2, _para("three", "heading"))
    assert str(root) == (
        "<paragraph>two</paragraph><paragraph>one</paragraph><heading>three</heading>"
        "<paragraph>something else entirely</paragraph>"
    )
    nodes = _diff(log.events, 1, 2)
    assert [(n["op"], n["element"], n["children"][0]["ops"][0]["text"]) for n in nodes] == [
        ("delete", "paragraph", "one"),
        ("equal", "paragraph", "two"),
        ("insert", "paragraph", "one"),
        ("insert", "heading", "three"),
        ("insert", "paragraph", "something else entirely"),
        ("delete", "paragraph", "three"),
        ("delete", "paragraph", "four"),
    ]


def test_three_thousand_paragraphs_made_again_are_matched_in_one_pass() -> None:
    """A document of 3,000 paragraphs deleted and inserted again in one transaction, a
    few of them changed, one dropped, one added: unchanged ones equal, changed ones
    their change only (hashed once, paired through a dict: no pairwise comparison)."""
    doc: Doc[Any] = Doc()
    log = Log(doc)
    root = doc.get(ROOT, type=XmlFragment)
    words = [f"paragraph {i} by ann" for i in range(3000)]
    with doc.transaction():  # 1
        for t in words:
            root.children.append(_para(t))
    log.by("bob")
    again = list(words)
    again[10] = "paragraph 10 by ann and bob"
    again[2000] = "paragraph 2000 by bob"
    del again[1500]
    again.insert(2500, "a new one")
    with doc.transaction():  # 2
        del root.children[0:3000]
        for t in again:
            root.children.append(_para(t))
    nodes = _diff(log.events, 1, 2)
    changed = [(n["op"], _shape([n])) for n in nodes if not _all_equal([n])]
    assert changed == [
        ("equal", [("equal", "paragraph", [[
            ("equal", "paragraph 10 by ann", None), ("insert", " and bob", "bob")]])]),
        ("delete", [("delete", "paragraph", [[("delete", "paragraph 1500 by ann", "bob")]])]),
        ("equal", [("equal", "paragraph", [[
            ("equal", "paragraph 2000 by ", None), ("delete", "ann", "bob"),
            ("insert", "bob", "bob")]])]),
        ("insert", [("insert", "paragraph", [[("insert", "a new one", "bob")]])]),
    ]  # fmt: skip


def test_pairing_in_order_is_linear_and_keeps_order() -> None:
    """Keys paired in order: common ends first, then each left key with the next right
    one of its key; 200,000 keys reversed (the worst order) in one pass."""
    assert matching.in_order(list("abcde"), list("abxde")) == [(0, 0), (1, 1), (3, 3), (4, 4)]
    assert matching.in_order(list("ab"), list("ba")) == [(0, 1)]
    n = 200_000
    keys = [str(i) for i in range(n)]
    assert len(matching.in_order(keys, keys[::-1])) == 1
    rng = random.Random(1)
    for _ in range(200):
        left = [rng.choice("abc") for _ in range(rng.randint(0, 8))]
        right = [rng.choice("abc") for _ in range(rng.randint(0, 8))]
        pairs = matching.in_order(left, right)
        assert all(left[i] == right[j] for i, j in pairs)
        steps = zip(pairs, pairs[1:], strict=False)
        assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in steps)


async def test_over_http_the_undo_of_a_restore_diffs_as_unchanged(server: RunningServer) -> None:
    """The field report: Bob restores a version before Carol's list and undoes it; the
    diff from before his restore to after his undo is all equal, the XML string's too."""
    async with two_people(server, "recreated", ("ann", "carol")) as (ann, carol, c, head, logged):
        mine = ann.get(ROOT, type=XmlFragment)
        mine.children.append(_para("Minutes", "heading"))
        await eventually(lambda: logged(1), what="ann's heading logged")
        theirs = carol.get(ROOT, type=XmlFragment)
        await eventually(lambda: len(list(theirs.children)) == 1, what="carol has it")
        theirs.children.append(_list("first item", "second item"))
        await eventually(lambda: logged(2), what="carol's list logged")
        r = await c.post("/api/docs/recreated/restore", json={"seq": 1}, params={"user": "bob"})
        assert r.status_code == 200, r.text
        r = await c.post("/api/docs/recreated/undo", params={"user": "bob"})
        assert r.status_code == 200 and r.json()["seq"] == 4, r.text
        await eventually(lambda: len(list(mine.children)) == 2, what="the list back")
        r = await c.get("/api/docs/recreated/diff", params={"from": 2, "to": 4})
        got = r.json()["roots"][ROOT]
        assert [o["op"] for o in got["ops"]] == ["equal"]
        _valid(got["nodes"], "XmlDiffNode")
        assert _all_equal(got["nodes"]), got["nodes"]
        blame = (await c.get("/api/docs/recreated/blame")).json()["roots"][ROOT]["nodes"]
        para = blame[1]["children"][0]["children"][0]
        assert para["children"][0]["runs"][0]["actor"] == "carol"
