"""Who wrote what in a Lexical document: a text root that holds shared types.

@lexical/yjs keeps its document in a Y.XmlText root, each paragraph a Y.XmlText
embedded in it and each text node's properties a Y.Map embedded before its characters.
The attribution index follows such a root as a tree (attribution_xml) from its first
embedded shared type: blame gives each paragraph and text node as a ``node`` of its
run, with who made it and who changed its properties, and each character's writer; a
diff gives the nodes' own diffs. The sessions come from real Yjs under Node
(tests/node/lexical_session.mjs; pycrdt cannot embed an XmlText in a text root).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, eventually
from indexhelp import restamped
from pycrdt import Array, Doc, Map, Text, XmlFragment, XmlText
from test_attribution_xml import _valid, cold_answers_as_warm
from yclient import two_people

from palimpsest.history import attribution_codec as codec
from palimpsest.history.attribution import AttributionIndex
from palimpsest.history.attribution_xml import XmlBroken, _embed_at
from palimpsest.history.render import TEXT, XML, jsonable
from palimpsest.store.base import Event

NODE_DIR = Path(__file__).resolve().parent / "node"
ROOT = "root"
#: who types which characters (tests/node/lexical_session.mjs)
OWNERS = {"ann": str.isupper, "bob": str.islower, "cy": str.isdigit}


def _node(*args: str) -> list[tuple[str, str]]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "yjs").is_dir():
        pytest.fail("Node.js or tests/node/node_modules missing (./scripts/test installs them)")
    out = subprocess.run(["node", "lexical_session.mjs", *args], cwd=NODE_DIR, check=True,
                         capture_output=True, timeout=120).stdout  # fmt: skip
    return [(str(a), str(h)) for a, h in json.loads(out)]


def lexical_session(seed: int, steps: int = 250) -> list[Event]:
    """Three people's concurrent edits of a Lexical-shaped document, as logged."""
    return [Event("lex", i + 1, 0, actor, "edit", bytes.fromhex(update), {})
            for i, (actor, update) in enumerate(_node(str(seed), str(steps)))]  # fmt: skip


def _versions(log: list[Event]) -> list[Doc[Any]]:
    """The document at every seq (index 0: empty)."""
    out: list[Doc[Any]] = [Doc()]
    for ev in log:
        d: Doc[Any] = Doc()
        d.apply_update(out[-1].get_update())
        d.apply_update(ev.update)
        out.append(d)
    return out


def _shape(real: Any) -> list[Any]:
    """A version's text as characters and nodes: ("text", attributes, shape) for an
    embedded XmlText, ("map", entries) for a Map."""
    out: list[Any] = []
    for value, _ in real.diff():
        if isinstance(value, str):
            if out and isinstance(out[-1], str):
                out[-1] += value
            else:
                out.append(value)
        elif isinstance(value, XmlText):
            attrs = {str(k): jsonable(v) for k, v in value.attributes}
            out.append(("text", attrs, _shape(value)))
        elif isinstance(value, Map):
            out.append(("map", {str(k): jsonable(v) for k, v in value.items()}))
        else:
            out.append(("embed",))
    return out


def _joined(parts: list[Any]) -> list[Any]:
    out: list[Any] = []
    for p in parts:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif p != "":
            out.append(p)
    return out


def _written_by(text: str, actor: str | None) -> bool:
    return actor is not None and all(OWNERS[actor](c) for c in text)


def _blame_shape(runs: list[dict[str, Any]]) -> list[Any]:
    """Blame runs spelled as :func:`_shape` spells a version, each name checked."""
    out: list[Any] = []
    for run in runs:
        node = run.get("node")
        if node is None:
            assert _written_by(run["text"], run["actor"]), run
            out.append(run["text"])
            continue
        assert run["text"] == "\ufffc" and (node["actor"], node["seq"]) == (
            run["actor"],
            run["seq"],
        )
        if "map" in node:
            values = node["map"]
            assert node["actor"] == values["by"], node
            if "fmt" in values:  # who set the format now in it (or made it with it)
                setter = node.get("changed", {}).get("__format", {"actor": node["actor"]})
                assert setter["actor"] == values["fmt"], node
            out.append(("map", values))
        else:
            attrs = node.get("attributes", {})
            assert node["actor"] == attrs["by"], node
            out.append(("text", attrs, _blame_shape(node["runs"])))
    return _joined(out)


def _side(ops: list[dict[str, Any]], side: str) -> list[Any]:
    """A diff's ops spelled as version a (`side` "a": all but inserts) or b."""
    out: list[Any] = []
    gone = "insert" if side == "a" else "delete"
    for op in ops:
        if op["op"] == gone:
            continue
        node = op.get("node")
        if node is None:
            out.append(op["text"])
            continue
        was = side == "a" and node["op"] == "format"
        if "map" in node:
            out.append(("map", node["was"] if was else node["map"]))
        else:
            attrs = node["was"] if was else node.get("attributes", {})
            out.append(("text", attrs, _side(node["ops"], side)))
    return _joined(out)


def _check_names(ops: list[dict[str, Any]]) -> int:
    """Inserts are named for their writers, changed properties for who changed them;
    how many nodes changed properties."""
    changed = 0
    for op in ops:
        node = op.get("node")
        if node is None:
            if op["op"] == "insert":
                assert _written_by(op["text"], op["actor"]), op
            continue
        values = node.get("map", node.get("attributes", {}))
        if node["op"] == "insert":
            assert node["actor"] == values["by"], node
        if node["op"] == "format":
            changed += 1
            stamp = "fmt" if "map" in node else "aby"
            assert node["actor"] == values[stamp], node
        if "ops" in node:
            changed += _check_names(node["ops"])
    return changed


def _fragment_shape(fragment: XmlFragment) -> list[Any]:
    """A Lexical root seen as the server sees it (an XML root): its paragraphs."""
    return [("text", {str(k): jsonable(v) for k, v in p.attributes}, _shape(p))
            for p in fragment.children]  # fmt: skip


def _as_ops(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An XML root's diff (or blame) nodes as a text's ops (runs), each holding its node."""
    return [{"op": "equal" if n.get("op") == "format" else n.get("op"), "text": "\ufffc",
             "actor": n["actor"], "seq": n["seq"], "node": n} for n in nodes]  # fmt: skip


@pytest.mark.parametrize("kind", [XML, TEXT])
@pytest.mark.parametrize("seed", range(6))
def test_concurrent_lexical_edits_blame_and_diff_to_the_truth(seed: int, kind: str) -> None:
    """Three people add paragraphs and text nodes, type, delete, format text nodes,
    indent and remove paragraphs, at once: blame at every seq spells the version with
    each character, paragraph, text node and format named for whoever made it; diffs
    between random versions spell both, name their writers and formatters, and a diff
    folded from its first version alone is the same. The root followed as the server
    infers it (an XML root: its children are the paragraphs) and as a text root that
    holds shared types (a root first seen with characters of its own)."""
    log = lexical_session(seed)
    versions = _versions(log)
    index = AttributionIndex("lex", {ROOT: kind})
    index.fold(log)
    assert index.verify() and not index.failed
    index.check_xml()
    tree = index.trees[ROOT] if kind == TEXT else index.xml[ROOT]
    assert tree.failed is None
    assert index.by_ids < len(log)  # folded by deltas (from its first paragraph on)

    def blame(idx: AttributionIndex, seq: int) -> list[Any]:
        if kind == TEXT:
            root = versions[seq].get(ROOT, type=Text)
            return idx.trees[ROOT].text_blame(seq, idx.actors, idx.first, root)
        root = versions[seq].get(ROOT, type=XmlFragment)
        return _as_ops(idx.xml[ROOT].blame(seq, idx.actors, idx.first, root))

    def diff(idx: AttributionIndex, a: int, b: int) -> list[Any]:
        if kind == TEXT:
            ra, rb = (versions[s].get(ROOT, type=Text) for s in (a, b))
            return idx.trees[ROOT].text_diff(a, b, idx.actor, ra, rb)
        fa, fb = (versions[s].get(ROOT, type=XmlFragment) for s in (a, b))
        return _as_ops(idx.xml[ROOT].diff(a, b, idx.actor, fa, fb))

    def truth(seq: int) -> list[Any]:
        if kind == TEXT:
            return _shape(versions[seq].get(ROOT, type=Text))
        return _fragment_shape(versions[seq].get(ROOT, type=XmlFragment))

    nodes = 0
    for seq in range(1, len(log) + 1):
        runs = blame(index, seq)
        assert _blame_shape(runs) == truth(seq), seq
        nodes += sum("node" in r for r in runs)
    assert nodes > len(log)  # the runs did hold paragraphs
    rng = random.Random(seed)
    changed = 0
    for _ in range(25):
        a, b = sorted(rng.sample(range(len(log) + 1), 2))
        ops = diff(index, a, b)
        assert _side(ops, "a") == truth(a), (a, b)
        assert _side(ops, "b") == truth(b), (a, b)
        changed += _check_names(ops)
        if rng.random() < 0.3:  # a range diff's own index, folded from version a
            own = AttributionIndex("lex", {ROOT: kind}, by_ids=False)
            own.start_from(a, versions[a].get_update())
            own.fold(log[a:b])
            assert diff(own, a, b) == ops
    assert changed  # some formats and indents were in the ranges


def test_the_stored_index_keeps_the_tree_and_folds_on() -> None:
    """Encoded and read back at a seq, the tree answers as before, and folds on."""
    log = lexical_session(11, 200)
    versions = _versions(log)
    cut = 120
    index = AttributionIndex("lex", [ROOT])
    index.fold(log[:cut])
    at_cut: Doc[Any] = Doc()  # (the index folds on from it: a copy of the version)
    at_cut.apply_update(versions[cut].get_update())
    back = codec.decode(codec.encode(index, "fp"), at_cut)
    assert ROOT in back.trees and back.trees[ROOT].root.track is back.tracks[ROOT]
    index.fold(log[cut:])
    back.fold(log[cut:])
    back.check_xml()
    assert back.trees[ROOT].failed is None
    for seq in (10, cut, len(log)):
        root = versions[seq].get(ROOT, type=Text)
        want = index.trees[ROOT].text_blame(seq, index.actors, index.first, root)
        assert back.trees[ROOT].text_blame(seq, back.actors, back.first, root) == want
    a, b = 40, len(log)
    ra, rb = (versions[s].get(ROOT, type=Text) for s in (a, b))
    assert back.trees[ROOT].text_diff(a, b, back.actor, ra, rb) == index.trees[ROOT].text_diff(
        a, b, index.actor, ra, rb
    )
    # an index stored before trees (version 3) is refused: the document is rebuilt
    stored = codec.encode(index, "fp")
    old = _with_version(stored, 3)
    with pytest.raises(ValueError, match="not an attribution index of this version"):
        codec.decode(old, versions[-1])


def _with_version(data: bytes, v: int) -> bytes:
    """A stored index as an older version wrote it: header v, no "trees"."""
    return restamped(data, v, lambda header: header.pop("trees", None))


def test_a_plain_text_beside_types_elsewhere_still_folds_by_ids() -> None:
    """Shared types in other roots (a map's nested array), or made in the same update as
    a text's characters, leave a text root's fold by ids alone; one embedded in the
    text turns it into a tree."""
    src: Doc[Any] = Doc()
    log: list[Event] = []
    src.observe(lambda e: log.append(Event("d", len(log) + 1, 0, "ann", "edit", e.update, {})))
    text = src.get("body", type=Text)
    meta = src.get("meta", type=Map)
    with src.transaction():
        text.insert(0, "Hello")
        meta["tags"] = Array(["a"])
    text.insert(5, " world")
    index = AttributionIndex("d", ["body"])
    index.fold(log)
    assert index.by_ids == 2 and not index.trees
    text.insert_embed(5, Map({"by": "ann"}))
    text.insert(0, ">")
    index.fold(log[2:])
    assert index.by_ids == 2 and "body" in index.trees and index.verify()
    index.check_xml()
    runs = index.trees["body"].text_blame(4, index.actors, index.first, text)
    assert [(r["text"], "node" in r) for r in runs] == [
        (">", False), ("Hello", False), ("\ufffc", True), (" world", False),
    ]  # fmt: skip
    assert runs[2]["node"] == {"map": {"by": "ann"}, "actor": "ann", "seq": 3}

    # the type placed after characters of the same update (its origin not yet folded)
    src = Doc()
    log = []
    src.observe(lambda e: log.append(Event("d", len(log) + 1, 0, "bob", "edit", e.update, {})))
    text = src.get("body", type=Text)
    with src.transaction():
        text.insert(0, "ab")
        text.insert_embed(2, Map({"by": "bob"}))
    index = AttributionIndex("d", ["body"])
    index.fold(log)
    index.check_xml()
    assert index.by_ids == 0 and index.trees["body"].failed is None
    runs = index.trees["body"].text_blame(1, index.actors, index.first, text)
    assert [(r["text"], r.get("node", {}).get("map")) for r in runs] == [
        ("ab", None), ("\ufffc", {"by": "bob"}),
    ]  # fmt: skip


def test_a_map_after_astral_characters_is_found_by_its_utf16_offset() -> None:
    """A deep event's path counts UTF-16 units in a text (the tracks count bytes): a
    map after an emoji and accented letters is found, and its change named."""
    src: Doc[Any] = Doc()
    log: list[Event] = []
    actor = ["ann"]
    src.observe(lambda e: log.append(Event("d", len(log) + 1, 0, actor[0], "edit", e.update, {})))
    text = src.get("body", type=Text)
    text.insert(0, "😀é字x")
    text.insert_embed(len("😀é字x".encode()), Map({"__format": 0}))
    text.insert_embed(0, Map({"__format": 0}))  # (before the emoji: the other map)
    actor[0] = "bob"
    second = text.diff()[2][0]
    assert isinstance(second, Map)
    second["__format"] = 1
    index = AttributionIndex("d", ["body"])
    index.fold(log)
    index.check_xml()
    runs = index.trees["body"].text_blame(len(log), index.actors, index.first, text)
    maps = [r["node"] for r in runs if "node" in r]
    assert [m["map"] for m in maps] == [{"__format": 0}, {"__format": 1}]
    assert "changed" not in maps[0]
    assert maps[1]["changed"] == {"__format": {"actor": "bob", "seq": 4}}


def test_among_hundreds_of_embeds_each_is_found_through_the_blocks_as_by_a_walk() -> None:
    """In a text of ASCII and embeds only (a Lexical root: its paragraphs), a deep
    event's UTF-16 offset is a byte count, and its embed is found through the track's
    blocks: the walk of every run before it made each keystroke in paragraph N cost
    O(N) (400 µs a keystroke at 2,000 paragraphs). Over 300 maps in several blocks,
    some deleted, both ways find the same byte, and each change is named for its
    writer; after one non-ASCII character, the walk is what is used."""
    src: Doc[Any] = Doc()
    log: list[Event] = []
    actor = ["ann"]
    src.observe(lambda e: log.append(Event("d", len(log) + 1, 0, actor[0], "edit", e.update, {})))
    text = src.get("body", type=Text)
    n = 0
    for i in range(300):
        word = f"p{i} "
        text.insert(n, word)
        text.insert_embed(n + len(word), Map({"i": i}))
        n += len(word) + 1
    for at in (900, 500, 40):  # three stretches with maps in them
        del text[at : at + 25]
    actor[0] = "bob"
    maps = [v for v, _ in text.diff() if isinstance(v, Map)]
    rng = random.Random(5)
    changed = sorted(rng.sample(range(len(maps)), 25))
    for j in changed:
        maps[j]["by"] = "bob"
    index = AttributionIndex("d", ["body"])
    index.fold(log)
    index.check_xml()
    track = index.tracks["body"]
    assert len(track.blocks) > 3 and track.ascii()
    alive = "".join(track.content[r[0] : r[0] + r[1]].decode() for r in track.runs() if not r[3])
    embeds = [k for k, c in enumerate(alive) if c == "\x1a"]
    assert len(embeds) == len(maps)
    fast = [_embed_at(track, k) for k in embeds]
    track._ascii_upto = -1  # (as after a non-ASCII character: the walk)
    assert [_embed_at(track, k) for k in embeds] == fast
    track._ascii_upto = 0
    for k in (embeds[0] - 1, len(alive)):  # a character, and past the end
        with pytest.raises(XmlBroken, match="no embed"):
            _embed_at(track, k)
    runs = index.trees["body"].text_blame(len(log), index.actors, index.first, text)
    nodes = [r["node"] for r in runs if "node" in r]
    assert [m["map"]["i"] for m in nodes] == [m["i"] for m in maps]
    named = [j for j, m in enumerate(nodes) if "changed" in m]
    assert named == changed
    assert all(nodes[j]["changed"]["by"]["actor"] == "bob" for j in named)
    actor[0] = "cy"
    text.insert(0, "é")  # now the walk: a byte is no longer a unit
    maps[changed[0]]["by"] = "cy"
    index.fold(log[-2:])
    assert not track.ascii()
    runs = index.trees["body"].text_blame(len(log), index.actors, index.first, text)
    nodes = [r["node"] for r in runs if "node" in r]
    assert nodes[changed[0]]["changed"]["by"]["actor"] == "cy"
    assert [j for j, m in enumerate(nodes) if "changed" in m] == changed


def test_an_array_in_the_text_is_not_followed_and_breaks_nothing() -> None:
    """A shared type the tree does not follow (an array embedded in the text) is a plain
    embed; its own changes are passed over."""
    src: Doc[Any] = Doc()
    log: list[Event] = []
    src.observe(lambda e: log.append(Event("d", len(log) + 1, 0, "ann", "edit", e.update, {})))
    text = src.get("body", type=Text)
    text.insert(0, "ab")
    text.insert_embed(1, Map({"k": 1}))
    text.insert_embed(1, Array([1]))
    arr = text.diff()[1][0]
    assert isinstance(arr, Array)
    arr.append(2)
    text.insert(0, "z")
    index = AttributionIndex("d", ["body"])
    index.fold(log)
    index.check_xml()
    tree = index.trees["body"]
    assert tree.failed is None and index.verify()
    runs = tree.text_blame(len(log), index.actors, index.first, text)
    assert [(r["text"], r["seq"]) for r in runs] == [
        ("z", 5), ("a", 1), ("\ufffc", 3), ("\ufffc", 2), ("b", 1),
    ]  # fmt: skip
    assert "node" not in runs[2] and runs[3]["node"]["map"] == {"k": 1}


def test_a_tree_nested_too_deep_is_not_served_and_its_text_goes_on() -> None:
    """A hostile client's texts nested 250 deep: the tree stops (not served), and the
    root's own characters are still folded and blamed as plain runs."""
    log = [Event("deep", i + 1, 0, actor, "edit", bytes.fromhex(update), {})
           for i, (actor, update) in enumerate(_node("deep", "250"))]  # fmt: skip
    index = AttributionIndex("deep", [ROOT])
    index.fold(log)
    index.check_xml()
    assert index.trees[ROOT].failed is not None and "deeper" in index.trees[ROOT].failed
    assert index.verify()
    runs = index.blame(ROOT, len(log))
    assert [(r["text"], r["actor"]) for r in runs] == [
        ("more ", "ann"), ("\ufffc", "eve"), ("typed", "ann"),
    ]  # fmt: skip


async def test_blame_and_diff_through_the_service_and_a_cold_server(tmp_path: Path) -> None:
    """Through the history service: blame and diff of a Lexical root carry its nodes,
    the stored index keeps them, and a new process answers as the warm one did."""
    log = lexical_session(5, 200)
    expected, stored = await cold_answers_as_warm(tmp_path, "lex", log, len(log) - 20, ROOT, 40)
    described = codec.header(stored)["xml"][ROOT]  # paragraphs with text nodes
    assert any(isinstance(d, list) for d in described) and None in described
    last = expected[-2]
    assert last["type"] == "xml"  # (a root of paragraphs: the server sees an XML root)
    fragment = _versions(log)[-1].get(ROOT, type=XmlFragment)
    assert _blame_shape(_as_ops(last["nodes"])) == _fragment_shape(fragment)
    assert any("node" in op for n in expected[-1] for op in n["ops"])


async def test_two_people_over_websockets_and_http(server: RunningServer) -> None:
    """Ann's and Bob's Yjs edits of a Lexical root, sent by their own connections: the
    HTTP blame names Ann's paragraph and Bob's word and bold, the diff shows Bob's."""
    updates = {actor: bytes.fromhex(update) for actor, update in _node("pair")}
    async with two_people(server, "lexdoc") as (ann, bob, c, head, logged):
        ann.apply_update(updates["ann"])
        await eventually(lambda: logged(1), what="ann's paragraph logged")
        start = await head()
        await eventually(lambda: len(bob.get(ROOT, type=Text)) > 0, what="bob has it")
        bob.apply_update(updates["bob"])
        await eventually(lambda: logged(start + 1), what="bob's edit logged")

        r = await c.get("/api/docs/lexdoc/blame", params={"root": ROOT})
        assert r.status_code == 200, r.text
        root = r.json()["roots"][ROOT]
        assert root["type"] == "xml"
        _valid(root["nodes"], "XmlBlameNode")
        (para,) = root["nodes"]
        assert (para["actor"], para["attributes"]) == ("ann", {"__type": "paragraph"})
        shaped = [(x["node"]["map"]["__format"], x["node"]["actor"], x["node"].get("changed"))
                  if "node" in x else (x["text"], x["actor"]) for x in para["runs"]]  # fmt: skip
        assert shaped == [
            (0, "ann", None),
            ("Hello ", "ann"),
            (1, "bob", None),
            ("world", "bob"),
        ], shaped
        r = await c.get("/api/docs/lexdoc/diff", params={"from": start, "to": await head()})
        assert r.status_code == 200, r.text
        nodes = r.json()["roots"][ROOT]["nodes"]
        _valid(nodes, "XmlDiffNode")
        (para,) = nodes
        assert para["op"] == "equal" and para["attributes"] == {"__type": "paragraph"}
        inner = [(o["op"], o["actor"], o["node"]["map"] if "node" in o else o["text"])
                 for o in para["ops"]]  # fmt: skip
        assert inner == [
            ("equal", None, {"__type": "text", "__format": 0, "by": "ann"}),
            ("equal", None, "Hello "),
            ("insert", "bob", {"__type": "text", "__format": 1, "by": "bob"}),
            ("insert", "bob", "world"),
        ], inner
