"""Who wrote what in an XML root (attribution_xml): Tiptap's, ProseMirror's documents.

Three clients edit one XmlFragment at once and see each other late. Each types only
characters of its own (capitals, small letters, digits) and stamps each element it makes
with its name, so every blame and diff can be checked against the truth character by
character: blame at every seq is the version's tree, each run named for the client whose
characters it holds, each element for the client that made it; a diff of random pairs
of versions spells both versions' trees, inserts named for who wrote them. Then the
stored index, and the server over HTTP with two pycrdt clients.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from conftest import RunningServer, eventually
from indexhelp import restamped
from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText
from serverproc import REPO_ROOT
from test_attribution_ids import _bounds, session
from test_diff_rich import _spelled, assert_formats_named
from yclient import connect, two_people

from palimpsest import client
from palimpsest.backend import Backend
from palimpsest.history import attribution_codec as codec
from palimpsest.history import history_of
from palimpsest.history.attribution import AttributionIndex
from palimpsest.history.attribution_xml import MAX_DEPTH, XmlTrack, XNode, _pairs, observe_trees
from palimpsest.history.render import XML, text_delta
from palimpsest.history.rich_diff import attribute_formats, replay_marks, runs_of
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent

ROOT = "default"
SCHEMAS = yaml.safe_load((REPO_ROOT / "docs" / "openapi.yaml").read_text())["components"]


def _valid(nodes: list[dict[str, Any]], schema: str) -> None:
    """`nodes` as the API's contract says."""
    tree = {"type": "array", "items": {"$ref": f"#/components/schemas/{schema}"}}
    jsonschema.validate(nodes, {**tree, "components": SCHEMAS})


#: the characters each client types: who wrote a character is told by the character
LETTERS = ["ABCDEFGH", "abcdefgh", "0123456"]


def _nodes(node: Any) -> list[Any]:
    """Every element and text under `node` (itself included), in document order."""
    out = [node]
    if not isinstance(node, XmlText):
        for kid in node.children:
            out += _nodes(kid)
    return out


def _word(rng: random.Random, i: int) -> str:
    return "".join(rng.choice(LETTERS[i]) for _ in range(rng.randint(1, 4)))


def _xml_edit(rng: random.Random, doc: Doc[Any], i: int) -> None:
    """An editor's edit of the tree: a paragraph or heading (perhaps inside a quote),
    typing, deleting, bold, a heading's level, an element taken out."""
    root = doc.get(ROOT, type=XmlFragment)
    nodes = _nodes(root)
    texts = [n for n in nodes if isinstance(n, XmlText)]
    elements = [n for n in nodes if isinstance(n, XmlElement)]
    parents = [root, *(e for e in elements if e.tag in ("blockquote", "paragraph"))]
    by = {"by": f"u{i}"}
    r = rng.random()
    if r < 0.2 or not texts:
        parent = rng.choice(parents)
        at = rng.randint(0, len(list(parent.children)))
        kind = rng.random()
        if kind < 0.5:
            parent.children.insert(at, XmlElement("paragraph", by, [XmlText(_word(rng, i))]))
        elif kind < 0.7:
            level = {**by, "level": rng.randint(1, 3)}
            parent.children.insert(at, XmlElement("heading", level, [XmlText(_word(rng, i))]))
        elif kind < 0.85:
            inner = XmlElement("paragraph", by, [XmlText(_word(rng, i))])
            parent.children.insert(at, XmlElement("blockquote", by, [inner]))
        elif kind < 0.95:  # an empty paragraph: text goes into it later, by a children delta
            parent.children.insert(at, XmlElement("paragraph", by))
        else:  # a paragraph typed into as it is made
            parent.children.insert(at, XmlElement("paragraph", by, [XmlText(_word(rng, i))]))
            list(parent.children)[at].children[0].insert(0, _word(rng, i))
    elif r < 0.3:
        empty = [e for e in elements if not list(e.children)]
        if empty:
            rng.choice(empty).children.append(XmlText(_word(rng, i)))
    elif r < 0.55:
        t = rng.choice(texts)
        b = _bounds(t)
        t.insert(b[rng.randint(0, len(b) - 1)], _word(rng, i))
    elif r < 0.75:
        t = rng.choice(texts)
        b = _bounds(t)
        if len(b) > 1:
            k = rng.randrange(len(b) - 1)
            del t[b[k] : b[min(len(b) - 1, k + rng.randint(1, 3))]]
    elif r < 0.85:
        t = rng.choice(texts)
        b = _bounds(t)
        if len(b) > 1:
            k = rng.randrange(len(b) - 1)
            bold = {"bold": f"u{i}"} if rng.random() < 0.7 else {"bold": None}
            t.format(b[k], b[min(len(b) - 1, k + rng.randint(1, 4))], bold)
    elif r < 0.93:
        heads = [e for e in elements if e.tag == "heading"]
        if heads:  # stamped with who set it, as elements with who made them
            head = rng.choice(heads)
            with doc.transaction():
                head.attributes["level"] = rng.randint(1, 3)
                head.attributes["levelby"] = f"u{i}"
    else:
        parent = rng.choice(parents)
        n = len(list(parent.children))
        if n:
            del parent.children[rng.randrange(n)]


def _tree_edit(rng: random.Random, doc: Doc[Any]) -> None:
    """One client's edit (test_attribution_ids.session's clients are numbered by their
    client id's last digits), a quarter of the time several in one transaction: one
    event that edits several of the tree's types."""
    i = doc.client_id % 1000
    if rng.random() < 0.25:
        with doc.transaction():
            for _ in range(rng.randint(2, 4)):
                _xml_edit(rng, doc, i)
    else:
        _xml_edit(rng, doc, i)


def xml_session(seed: int, steps: int = 300) -> list[Event]:
    """Three clients editing one XML root at once through a server, each seeing the
    others' updates late: the server's log, in the order updates reached it."""
    return session(seed, steps, _tree_edit)[0]


def _versions(log: list[Event]) -> list[Doc[Any]]:
    out = []
    for seq in range(len(log) + 1):
        d: Doc[Any] = Doc()
        for ev in log[:seq]:
            d.apply_update(ev.update)
        out.append(d)
    return out


def _tree(node: Any) -> list[Any]:
    """A version's tree: (tag, attributes, children) and text deltas."""
    out: list[Any] = []
    for kid in node.children:
        if isinstance(kid, XmlText):
            out.append(text_delta(kid.diff()))
        else:
            out.append((kid.tag, _attrs(kid), _tree(kid)))
    return out


def _attrs(element: Any) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, float) else v for k, v in element.attributes}


def _who(text: str) -> set[str]:
    return {f"u{i}" for i, letters in enumerate(LETTERS) for ch in text if ch in letters}


def _check_blame(nodes: list[dict[str, Any]], version: Any) -> None:
    """`nodes` is the version's tree, each run and element named for its maker."""
    kids = list(version.children)
    assert len(nodes) == len(kids)
    for node, kid in zip(nodes, kids, strict=True):
        if isinstance(kid, XmlText):
            runs = node["runs"]
            pieces = [(r.get("embed", r["text"]), r.get("attributes")) for r in runs]
            assert text_delta(pieces) == text_delta(kid.diff())
            for run in runs:
                assert _who(run["text"]) == {run["actor"]}, run
        else:
            assert node["element"] == kid.tag and node["attributes"] == _attrs(kid)
            assert node["actor"] == _attrs(kid)["by"]
            _check_blame(node["children"], kid)


def _side(nodes: list[dict[str, Any]], side: str) -> list[Any]:
    """The tree a diff's nodes spell for the earlier version ("a") or the later ("b")."""
    gone = "insert" if side == "a" else "delete"
    out: list[Any] = []
    for n in nodes:
        if n["op"] == gone:
            continue
        if "ops" in n:
            out.append(_spelled(n["ops"], side))
        else:
            attrs = n.get("was", n["attributes"]) if side == "a" else n["attributes"]
            out.append((n["element"], attrs, _side(n["children"], side)))
    return out


def _check_diff(nodes: list[dict[str, Any]], a: int, b: int) -> None:
    """Who is named: an insert's writer by its characters or its stamp, an element's
    new attributes' setter by its stamp, a delete in the range; nothing inserted or
    deleted under a node that was."""
    for n in nodes:
        assert n["op"] in ("equal", "insert", "delete", "format")
        if n["op"] == "equal":
            assert n["actor"] is None and n["seq"] is None and "was" not in n
        else:
            assert a < n["seq"] <= b
        if n["op"] == "format":  # attributes changed: named for who set them last
            assert n["was"] != n["attributes"] and n["actor"] == n["attributes"]["levelby"]
        if n["op"] == "insert" and "element" in n:
            assert n["actor"] == n["attributes"]["by"]
        if "ops" in n:
            for op in n["ops"]:
                if op["op"] == "insert":
                    assert _who(op["text"]) == {op["actor"]}, op
                    assert a < op["seq"] <= b
                elif op["op"] == "delete":
                    assert a < op["seq"] <= b and op["actor"] is not None
                    assert n["op"] != "insert"
                if n["op"] == "delete":
                    assert op["op"] == "delete"
        else:
            if n["op"] in ("insert", "delete"):
                assert all(c["op"] == n["op"] for c in n["children"])
            _check_diff(n["children"], a, b)


def _root(version: Doc[Any]) -> XmlFragment:
    return version.get(ROOT, type=XmlFragment)


def _check_formats(
    track: XmlTrack,
    key: int,
    pairs: list[dict[int, Any]],
    a: int,
    b: int,
    ops: list[dict[str, Any]],
    actors: dict[int, str],
) -> None:
    """Each character of a text's format op names the last event between the versions
    that changed one of its attributes that differ between them, found by looking at
    every version in between: a character is known at every seq by its bytes' place in
    the text's track (test_diff_rich does the same for a text root)."""
    stack = [track.root]
    while stack:
        node = stack.pop()
        if id(node) == key:
            break
        stack += list((node.kids or {}).values())
    assert id(node) == key

    def chars(seq: int) -> dict[int, dict[str, Any]]:
        real = pairs[seq].get(key)
        if real is None:
            return {}
        ids = _ids_at(node, seq)
        attrs = [x for text, at_, _ in runs_of(real.diff()) for x in [at_ or {}] * len(text)]
        assert len(ids) == len(attrs)
        return dict(zip(ids, attrs, strict=True))

    attrs_at = {s: chars(s) for s in range(a, b + 1)}
    assert_formats_named(ops, _ids_at(node, b), attrs_at, a, b, actors)


def _ids_at(node: XNode, seq: int) -> list[int]:
    ids = []
    for run in node.track.runs():
        if run[1] and run[2] <= seq and not (run[3] and run[3] <= seq):
            at = run[0]
            for ch in bytes(node.track.content[at : at + run[1]]).decode():
                ids.append(at)
                at += len(ch.encode())
    return ids


@pytest.mark.parametrize("seed", range(12))
def test_concurrent_tree_edits_blame_and_diff_to_the_truth(seed: int) -> None:
    log = xml_session(seed)
    versions = _versions(log)
    index = AttributionIndex("d", {ROOT: XML})
    index.fold(log)
    track = index.xml[ROOT]
    assert track.failed is None and track.matches(versions[-1].get(ROOT, type=XmlFragment))
    for seq, version in enumerate(versions):
        fragment = version.get(ROOT, type=XmlFragment)
        _check_blame(track.blame(seq, index.actors, index.first, fragment), fragment)
    rng = random.Random(seed)
    formats = 0
    pairs: list[dict[int, Any]] = []  # each version's texts by node, when needed
    for _ in range(40):
        a, b = sorted(rng.sample(range(len(versions)), 2))
        fa, fb = (versions[s].get(ROOT, type=XmlFragment) for s in (a, b))
        found: list[tuple[dict[str, Any], int]] = []
        nodes = track.diff(a, b, index.actor, fa, fb, found)
        if found:  # who formatted, as the service names it
            marks = replay_marks(versions[a], log[a:b], [observe_trees({ROOT: track.frozen()})])
            actors = {ev.seq: ev.actor for ev in log[a:b]}
            pairs = pairs or [dict(_pairs(track.root, s, _root(v))) for s, v in enumerate(versions)]
            for entry, key in found:
                entry["ops"] = attribute_formats(entry["ops"], marks.get(key, []), actors)
                _check_formats(track, key, pairs, a, b, entry["ops"], actors)
            formats += 1
        assert _side(nodes, "a") == _tree(fa)
        assert _side(nodes, "b") == _tree(fb)
        _check_diff(nodes, a, b)
        # a diff with no index yet folds just the range, from version a: the same answer
        ranged = AttributionIndex("d", {ROOT: XML}, by_ids=False)
        ranged.start_from(a, versions[a].get_update())
        ranged.fold(log[a:b])
        if not found:
            assert ranged.xml[ROOT].diff(a, b, ranged.actor, fa, fb) == nodes
    assert formats  # each session has format ops to name


def test_an_index_with_an_xml_root_folds_by_deltas_and_tracks_texts_too() -> None:
    """A document with a text root beside its XML one (a title): both are followed,
    each event in its own transaction."""
    src: Doc[Any] = Doc()
    log: list[Event] = []
    src.observe(lambda e: log.append(Event("d", len(log) + 1, 0, "ann", "edit", e.update, {})))
    title = src.get("title", type=Text)  # a title beside the body, as some editors keep
    body = src.get(ROOT, type=XmlFragment)
    title.insert(0, "Plan")
    body.children.append(XmlElement("paragraph", {}, [XmlText("first")]))
    body.children[0].children[0].insert(5, " line")
    index = AttributionIndex("d", {ROOT: XML, "title": "text"})
    assert index._ids is None  # never by ids: the deep events need their transactions
    index.fold(log)
    assert index.roots() == {ROOT: XML, "title": "text"}
    assert [r["text"] for r in index.blame("title", 3)] == ["Plan"]
    fragment = src.get(ROOT, type=XmlFragment)
    nodes = index.xml[ROOT].blame(3, index.actors, index.first, fragment)
    runs = nodes[0]["children"][0]["runs"]
    assert [(r["text"], r["seq"]) for r in runs] == [("first", 2), (" line", 3)]


def test_the_stored_index_keeps_the_tree_and_folds_on() -> None:
    log = xml_session(3, steps=400)
    half = len(log) // 2
    whole = AttributionIndex("d", {ROOT: XML})
    whole.fold(log)
    first = AttributionIndex("d", {ROOT: XML})
    first.fold(log[:half])
    mid: Doc[Any] = Doc()
    for ev in log[:half]:
        mid.apply_update(ev.update)
    data = codec.encode(first, "fp")
    assert codec.header(data)["xml"][ROOT][0] == ""  # the root, then its nodes
    back = codec.decode(data, mid)
    assert back.roots() == {ROOT: XML} and back.xml[ROOT].failed is None
    back.fold(log[half:])
    final: Doc[Any] = Doc()
    for ev in log:
        final.apply_update(ev.update)
    fragment = final.get(ROOT, type=XmlFragment)
    seq = len(log)
    assert back.xml[ROOT].blame(seq, back.actors, back.first, fragment) == whole.xml[ROOT].blame(
        seq, whole.actors, whole.first, fragment
    )
    assert back.xml[ROOT].diff(0, seq, back.actor, Doc().get(ROOT, type=XmlFragment), fragment)
    # an index of text roots only marks an XML root seen, once it looked at it
    plain = AttributionIndex("d", {})
    plain.fold(log[:half])
    assert plain.new_roots() == {ROOT: XML}  # (and it marks the root seen)
    stored = codec.encode(plain, "fp")
    assert codec.decode(stored, mid).new_roots() == {}
    # one stored before XML was tracked (version 2) is refused, as is every version
    # before copies were (6): it is rebuilt
    for v in (2, 3, 5):
        with pytest.raises(ValueError, match="not an attribution index of this version"):
            codec.decode(restamped(stored, v), mid)
    # a tree that stopped following its document is stored as that: not served again
    first.xml[ROOT].failed = "a test"
    again = codec.decode(codec.encode(first, "fp"), mid)
    assert again.xml[ROOT].failed == "a test"


def test_a_tree_that_differs_from_the_document_is_not_served() -> None:
    src: Doc[Any] = Doc()
    log: list[Event] = []
    src.observe(lambda e: log.append(Event("d", len(log) + 1, 0, "ann", "edit", e.update, {})))
    body = src.get(ROOT, type=XmlFragment)
    body.children.append(XmlElement("paragraph", {}, [XmlText("hello")]))
    index = AttributionIndex("d", {ROOT: XML})
    index.fold(log)
    index.check_xml()
    assert index.xml[ROOT].failed is None
    index.xml[ROOT].root.track.delete(0, 1, 1)  # the mirror loses its paragraph
    index.check_xml()  # (looked at once per seq)
    assert index.xml[ROOT].failed is None
    body.children.insert(0, XmlElement("paragraph", {}, [XmlText("first")]))
    index.fold(log[-1:])
    assert index.xml[ROOT].failed is None  # the fold itself saw nothing wrong
    index.check_xml()
    assert "differs from the document" in (index.xml[ROOT].failed or "")
    # and one whose events it cannot place stops folding instead of guessing
    broken = XmlTrack()

    class Event_:
        path = [3]
        delta = [{"insert": "x"}]

    broken.apply([Event_()], 1)
    assert broken.failed is not None and "past the children" in broken.failed

    # a tree nested deeper than the walks go (a hostile client's): not followed, said so
    deep: Doc[Any] = Doc()
    log.clear()
    deep.observe(lambda e: log.append(Event("d", len(log) + 1, 0, "eve", "edit", e.update, {})))
    inner = XmlElement("div", {}, [XmlText("bottom")])
    for _ in range(MAX_DEPTH + 5):
        inner = XmlElement("div", {}, [inner])
    deep.get(ROOT, type=XmlFragment).children.append(inner)
    index = AttributionIndex("d", {ROOT: XML})
    index.fold(log)
    assert "nested deeper than" in (index.xml[ROOT].failed or "")


async def test_blame_and_diff_over_http_name_who_wrote_each_paragraph(
    server: RunningServer,
) -> None:
    """Ann writes a heading and a paragraph, Bob a word inside hers and a paragraph of
    his own, Ann takes his paragraph out: blame and diff say so, as Tiptap's tree."""
    async with two_people(server, "tiptap") as (ann, bob, c, head, logged):
        mine = ann.get(ROOT, type=XmlFragment)
        with ann.transaction():
            mine.children.append(XmlElement("heading", {"level": 1}, [XmlText("Minutes")]))
            mine.children.append(XmlElement("paragraph", {}, [XmlText("We met.")]))
        theirs = bob.get(ROOT, type=XmlFragment)
        await eventually(lambda: len(list(theirs.children)) == 2, what="bob has the tree")
        start = await head()
        theirs.children[1].children[0].insert(3, "all ")
        theirs.children.append(XmlElement("paragraph", {}, [XmlText("Bob's note")]))
        await eventually(lambda: logged(start + 2), what="bob's edits logged")
        await eventually(lambda: len(list(mine.children)) == 3, what="ann has bob's paragraph")
        del mine.children[2]
        await eventually(lambda: logged(start + 3), what="ann's deletion logged")
        end = await head()

        r = await c.get("/api/docs/tiptap/blame", params={"seq": start + 2})
        assert r.status_code == 200, r.text
        root = r.json()["roots"][ROOT]
        assert root["type"] == "xml"
        _valid(root["nodes"], "XmlBlameNode")
        heading, para, note = root["nodes"]
        assert (heading["element"], heading["attributes"], heading["actor"]) == (
            "heading",
            {"level": 1},
            "ann",
        )
        assert [(x["text"], x["actor"]) for x in para["children"][0]["runs"]] == [
            ("We ", "ann"),
            ("all ", "bob"),
            ("met.", "ann"),
        ]
        assert note["actor"] == "bob" and note["children"][0]["runs"][0]["actor"] == "bob"
        # at head, bob's paragraph is gone
        r = await c.get("/api/docs/tiptap/blame", params={"root": ROOT})
        assert len(r.json()["roots"][ROOT]["nodes"]) == 2

        r = await c.get("/api/docs/tiptap/diff", params={"from": start, "to": end})
        assert r.status_code == 200, r.text
        diff = r.json()["roots"][ROOT]
        assert diff["ops"]  # the XML string's character diff stays, for older readers
        _valid(diff["nodes"], "XmlDiffNode")
        # bob's paragraph came and went within the range: not in it
        heading, para = diff["nodes"]
        assert heading["op"] == "equal" and para["op"] == "equal"
        assert [(o["op"], o["text"], o["actor"]) for o in para["children"][0]["ops"]] == [
            ("equal", "We ", None),
            ("insert", "all ", "bob"),
            ("equal", "met.", None),
        ]
        # from when it was there: taken out by ann, its text with it
        r = await c.get("/api/docs/tiptap/diff", params={"from": start + 2, "root": ROOT})
        nodes = r.json()["roots"][ROOT]["nodes"]
        _valid(nodes, "XmlDiffNode")
        note = nodes[2]
        assert (note["op"], note["element"], note["actor"], note["seq"]) == (
            "delete",
            "paragraph",
            "ann",
            end,
        )
        assert note["children"] == [
            {"op": "delete", "actor": "ann", "seq": end, "ops": [
                {"op": "delete", "text": "Bob's note", "actor": "ann", "seq": end}
            ]}
        ]  # fmt: skip
        # bob makes the heading a level 2: a format op, his
        theirs.children[0].attributes["level"] = 2
        await eventually(lambda: logged(end + 1), what="bob's level logged")
        r = await c.get("/api/docs/tiptap/diff", params={"from": end, "root": ROOT})
        heading = r.json()["roots"][ROOT]["nodes"][0]
        assert {k: heading[k] for k in ("op", "actor", "seq", "attributes", "was")} == {
            "op": "format", "actor": "bob", "seq": end + 1,
            "attributes": {"level": 2}, "was": {"level": 1},
        }  # fmt: skip
        # and bolds "all": a format op in the paragraph's text, named for him
        theirs.children[1].children[0].format(3, 6, {"bold": {}})
        await eventually(lambda: logged(end + 2), what="bob's bold logged")
        r = await c.get("/api/docs/tiptap/diff", params={"from": end + 1, "root": ROOT})
        nodes = r.json()["roots"][ROOT]["nodes"]
        _valid(nodes, "XmlDiffNode")
        ops = nodes[1]["children"][0]["ops"]
        assert [(o["op"], o["text"], o["actor"]) for o in ops] == [
            ("equal", "We ", None), ("format", "all", "bob"), ("equal", " met.", None)
        ]  # fmt: skip
        assert (ops[1]["attributes"], ops[1]["was"], ops[1]["seq"]) == ({"bold": {}}, {}, end + 2)
        # a title (a text root) beside the tree: both formatted in one range, one replay
        # names each (ann's bold of the title, bob's italic of "We")
        ann.get("title", type=Text).insert(0, "Minutes")
        await eventually(lambda: logged(end + 3), what="the title logged")
        ann.get("title", type=Text).format(0, 3, {"bold": True})
        await eventually(lambda: logged(end + 4), what="ann's bold logged")
        await eventually(lambda: str(bob.get("title", type=Text)) == "Minutes", what="title")
        theirs.children[1].children[0].format(0, 2, {"italic": {}})
        await eventually(lambda: logged(end + 5), what="bob's italic logged")
        r = await c.get("/api/docs/tiptap/diff", params={"from": end + 3})
        got = r.json()["roots"]
        title = [(o["text"], o["actor"]) for o in got["title"]["ops"] if o["op"] == "format"]
        assert title == [("Min", "ann")]
        ops = got[ROOT]["nodes"][1]["children"][0]["ops"]
        assert [(o["text"], o["actor"]) for o in ops if o["op"] == "format"] == [("We", "bob")]

    # the Python client: the tree, and a clear error where runs are asked of it
    async with client.History(server.url, user="ann") as h:
        nodes = await h.blame_tree("tiptap", start + 2)
        assert [(n["element"], n["actor"]) for n in nodes] == [
            ("heading", "ann"), ("paragraph", "ann"), ("paragraph", "bob")
        ]  # fmt: skip
        with pytest.raises(ValueError, match="is XML: blame_tree"):
            await h.blame("tiptap", root=ROOT)
        assert await h.blame_tree("tiptap", root="nothing") == []


async def cold_answers_as_warm(
    tmp_path: Path, doc: str, log: list[Event], cut: int, root: str, snapshot_every: int
) -> tuple[list[Any], bytes]:
    """A server stores the attribution index of `log[:cut]` and answers blame and diff
    of `root` with the rest of `log` appended; a new process over the same store answers
    the same, reading the index back, building nothing. The answers (blame, and the
    diff or an XML root's diff nodes, for four seqs), and the stored index."""
    settings = Settings(db=str(tmp_path / "x.db"), snapshot_every=snapshot_every)
    new = [NewEvent(ev.actor, "edit", ev.update) for ev in log]

    async def answers(backend: Backend) -> list[Any]:
        h = history_of(backend)
        info = await h.info(doc)
        out = []
        for seq in (5, cut // 2, cut, len(log)):
            out.append((await h.blame(doc, seq, info, root))["roots"][root])
            diff = (await h.diff(doc, seq // 3, seq, info, root))["roots"][root]
            # (an XML root's string renders attributes in the process's hash order)
            out.append(diff["nodes"] if "nodes" in diff else diff)
        return out

    async with Backend(settings) as warm:
        await warm.store.append([(doc, new[:cut])])
        h = history_of(warm)
        await h.blame(doc, 1, await h.info(doc), None)  # builds and stores it
        await h.attribution.drain()
        stored = await warm.store.derived(doc, codec.KIND)
        assert stored is not None and stored[0] == cut
        await warm.store.append([(doc, new[cut:])])
        expected = await answers(warm)
    async with Backend(settings) as cold:
        h = history_of(cold)
        assert await answers(cold) == expected
        assert not h.attribution.builds
        assert [(d, s) for d, _, s in h.attribution.restores] == [(doc, cut)]
    return expected, stored[1]


async def test_a_cold_server_reads_the_tree_back_and_answers_as_a_warm_one(tmp_path: Path) -> None:
    """The stored index carries the tree: a new process over the same store answers
    blame and diff without folding the log from its start, as the warm one did, and
    the events logged since fold on from it."""
    log = xml_session(7, steps=500)
    expected, _ = await cold_answers_as_warm(tmp_path, "tree", log, len(log) - 15, ROOT, 50)
    assert expected[-2]["type"] == "xml" and expected[-1]
    _check_blame(expected[-2]["nodes"], _versions(log)[-1].get(ROOT, type=XmlFragment))


async def test_a_tree_too_deep_to_follow_is_served_unattributed(server: RunningServer) -> None:
    """A client nests elements deeper than the mirror follows: the document is kept
    and served as before (its XML string's diff), blame of that root says why it has
    no names, and the other documents' answers are unchanged."""
    eve: Doc[Any] = Doc()
    ann: Doc[Any] = Doc()
    async with (
        connect(server.ws_url, "deep", "eve", ydoc=eve),
        connect(server.ws_url, "flat", "ann", ydoc=ann),
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        inner = XmlElement("div", {}, [XmlText("bottom")])
        for _ in range(MAX_DEPTH + 5):
            inner = XmlElement("div", {}, [inner])
        eve.get(ROOT, type=XmlFragment).children.append(inner)
        ann.get(ROOT, type=XmlFragment).children.append(
            XmlElement("paragraph", {}, [XmlText("fine")])
        )

        async def logged() -> bool:
            store = server.backend.store
            return await store.head("deep") >= 1 and await store.head("flat") >= 1

        await eventually(logged, what="both documents logged")
        r = await c.get("/api/docs/deep/blame", params={"root": ROOT})
        assert r.status_code == 404 and "nested deeper than" in r.text, r.text
        r = await c.get("/api/docs/deep/diff", params={"root": ROOT})
        assert r.status_code == 200, r.text
        assert "nodes" not in r.json()["roots"][ROOT] and r.json()["roots"][ROOT]["ops"]
        r = await c.get("/api/docs/flat/blame", params={"root": ROOT})
        assert r.json()["roots"][ROOT]["nodes"][0]["actor"] == "ann"
