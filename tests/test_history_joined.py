"""Blame runs and diff ops joined by who wrote them (``?join=actor``, history.joined):
a word typed key by key is one run, at every level of a tree, and nothing is lost."""

from __future__ import annotations

from typing import Any

from conftest import RunningServer, eventually
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText
from test_attribution_xml import _valid
from yclient import two_people

from palimpsest import client
from palimpsest.history.joined import join_node, join_roots, join_runs

_run = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["equal", "insert", "delete"]),
        "text": st.text(alphabet="abc", min_size=1, max_size=3),
        "actor": st.sampled_from(["ann", "bob", None]),
        "seq": st.one_of(st.none(), st.integers(1, 50)),
    },
    optional={
        "attributes": st.sampled_from([{}, {"bold": True}]),
        "embed": st.just({"image": "x"}),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_run, max_size=30))
def test_joined_runs_keep_the_text_and_cover_every_seq(runs: list[dict[str, Any]]) -> None:
    """The joined runs spell the same text; no two neighbours could be joined further;
    each run's seq lies in the range of the joined run that holds its text, and each
    joined run's range is that of its runs."""
    before = [dict(r) for r in runs]
    joined = join_runs(runs)
    assert runs == before  # (the answer is not changed in place)
    assert "".join(r["text"] for r in joined) == "".join(r["text"] for r in runs)
    same = ("op", "actor", "attributes", "was")
    for a, b in zip(joined, joined[1:], strict=False):
        mergeable = not ({"embed", "node"} & (a.keys() | b.keys()))
        mergeable &= (a["seq"] is None) == (b["seq"] is None)
        assert not (mergeable and all(a.get(k) == b.get(k) for k in same)), (a, b)
    i = 0
    for j in joined:
        n, seqs = 0, []
        while n < len(j["text"]):
            part = runs[i]
            assert all(part.get(k) == j.get(k) for k in same)
            n += len(part["text"])
            if part["seq"] is not None:
                seqs.append(part["seq"])
            i += 1
        assert n == len(j["text"])
        if seqs:
            assert (j["seq"], j["last_seq"]) == (min(seqs), max(seqs))
        else:
            assert j["seq"] is None and "last_seq" not in j
    assert i == len(runs)


def test_trees_are_joined_at_every_level_and_other_roots_left_alone() -> None:
    """An XML root's texts, a node inside a text's run, and a text root's ops are
    joined; a map root's changes and an XML root's string ops are as they were; a
    node's own seq (who made it) gets no range."""
    run = lambda t, a, s: {"text": t, "actor": a, "seq": s}  # noqa: E731
    node = {"embed": {}, "node": {"map": {}, "actor": "ann", "seq": 1}}
    keys = [run("H", "ann", 1), run("i", "ann", 2), run("!", "bob", 3), run("?", "bob", 4)]
    lexical = {"actor": "ann", "seq": 1, "runs": [run("\ufffc", "ann", 1) | node, *keys]}
    element = {"element": "p", "attributes": {}, "actor": "ann", "seq": 1, "children": [lexical]}
    roots = {
        "x": {"type": "xml", "nodes": [element], "ops": [{"op": "equal", "text": "a"}] * 2},
        "t": {"type": "text", "runs": [run("a", "ann", 5), run("b", "ann", 6)]},
        "m": {"type": "map", "changes": [{"key": "k", "op": "add"}] * 2},
    }
    out = join_roots(roots)
    (p,) = out["x"]["nodes"]
    assert "last_seq" not in p and "last_seq" not in p["children"][0]
    runs = p["children"][0]["runs"]
    assert [(r["text"], r["actor"], r["seq"], r.get("last_seq")) for r in runs] == [
        ("\ufffc", "ann", 1, 1), ("Hi", "ann", 1, 2), ("!?", "bob", 3, 4),
    ]  # fmt: skip
    assert out["x"]["ops"] == roots["x"]["ops"] and out["m"] == roots["m"]
    assert out["t"]["runs"] == [{"text": "ab", "actor": "ann", "seq": 5, "last_seq": 6}]
    assert join_node(element)["children"][0]["runs"] == p["children"][0]["runs"]


async def _typed(doc: Doc[Any], text: Text, at: int, word: str) -> None:
    for k, ch in enumerate(word):  # a transaction per key, as editors send them
        text.insert(at + k, ch)


async def test_blame_and_diff_joined_over_http(server: RunningServer) -> None:
    """Ann and Bob type key by key, each keystroke an event, and Bob bolds a word of
    Ann's: by default a run per keystroke; with join=actor a run per writer and
    formatting, with the range of their events, through the Python client too. An XML
    root's texts are joined the same way; a bad ?join= is a 400."""
    async with (
        two_people(server, "joined") as (ann, bob, c, _, logged),
        client.History(server.url, user="ann") as h,
    ):
        mine, theirs = ann.get("content", type=Text), bob.get("content", type=Text)
        await _typed(ann, mine, 0, "Hello")
        await eventually(lambda: logged(5), what="ann's keys logged")
        await eventually(lambda: str(theirs) == "Hello", what="bob has ann's word")
        await _typed(bob, theirs, 5, " world")
        await eventually(lambda: logged(11), what="bob's keys logged")
        theirs.format(0, 5, {"bold": True})
        await eventually(lambda: logged(12), what="bob's bold logged")

        r = await c.get("/api/docs/joined/blame", params={"root": "content"})
        assert len(r.json()["roots"]["content"]["runs"]) == 11  # a run per key
        r = await c.get("/api/docs/joined/blame", params={"root": "content", "join": "actor"})
        assert r.status_code == 200, r.text
        runs = r.json()["roots"]["content"]["runs"]
        assert [(x["text"], x["actor"], x["seq"], x["last_seq"], x.get("attributes"))
                for x in runs] == [
            ("Hello", "ann", 1, 5, {"bold": True}),
            (" world", "bob", 6, 11, None),
        ], runs  # fmt: skip
        joined = await h.blame("joined", join="actor")
        assert [(b.text, b.actor, b.seq, b.last_seq) for b in joined] == [
            ("Hello", "ann", 1, 5), (" world", "bob", 6, 11),
        ]  # fmt: skip
        assert (await h.blame("joined"))[1].last_seq is None  # (a run per event: no range)

        d = (await h.diff("joined", 0, join="actor"))["roots"]["content"]["ops"]
        assert [(o["op"], o["text"], o["actor"], o["seq"], o["last_seq"]) for o in d] == [
            ("insert", "Hello", "ann", 1, 5), ("insert", " world", "bob", 6, 11),
        ], d  # fmt: skip
        d = (await h.diff("joined", 11, join="actor"))["roots"]["content"]["ops"]
        assert [(o["op"], o["text"], o["actor"]) for o in d] == [
            ("format", "Hello", "bob"), ("equal", " world", None),
        ], d  # fmt: skip

        # an XML root's texts: key by key into Tiptap's shape
        tree = ann.get("default", type=XmlFragment)
        tree.children.append(XmlElement("paragraph", {}, [XmlText("")]))
        para = tree.children[0].children[0]
        assert isinstance(para, XmlText)
        for k, ch in enumerate("Minutes"):
            para.insert(k, ch)
        await eventually(lambda: logged(20), what="ann's paragraph logged")
        r = await c.get("/api/docs/joined/blame", params={"root": "default", "join": "actor"})
        nodes = r.json()["roots"]["default"]["nodes"]
        _valid(nodes, "XmlBlameNode")
        assert [(x["text"], x["seq"], x["last_seq"]) for x in nodes[0]["children"][0]["runs"]] == [
            ("Minutes", 14, 20)
        ], nodes  # fmt: skip
        r = await c.get("/api/docs/joined/diff", params={"from": 12, "join": "actor"})
        nodes = r.json()["roots"]["default"]["nodes"]
        _valid(nodes, "XmlDiffNode")
        assert [(o["op"], o["text"], o["actor"]) for o in nodes[0]["children"][0]["ops"]] == [
            ("insert", "Minutes", "ann")
        ], nodes  # fmt: skip

        for path in ("blame", "diff"):
            r = await c.get(f"/api/docs/joined/{path}", params={"join": "word"})
            assert r.status_code == 400 and "?join= is event or actor" in r.text, r.text
