"""What one writer wrote, and what they changed (``?actor=`` on blame and diff,
history.by_actor): a real server, three writers typing into each other's lines, one
deleting another's text and undoing it; a Tiptap-shaped tree; the Python client and
``palimpsest cat --by``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from conftest import RunningServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Map, Text, XmlElement, XmlFragment, XmlText
from test_attribution_xml import _valid

from palimpsest import client
from palimpsest.client.cli import main
from palimpsest.history.by_actor import by_actors

Sessions = tuple[client.Session, client.Session, client.Session]


async def _same(sessions: Sessions, text: str) -> None:
    for s in sessions:
        await s.wait_for(lambda s=s: str(s.text()) == text, timeout=10)


@asynccontextmanager
async def _class(server: RunningServer, doc: str) -> AsyncIterator[Sessions]:
    async with (
        client.connect(server.ws_url, doc, user="ann") as ann,
        client.connect(server.ws_url, doc, user="bob") as bob,
        client.connect(server.ws_url, doc, user="cat") as cat,
    ):
        yield ann, bob, cat


async def _write_class(server: RunningServer, doc: str) -> dict[str, int]:
    """Ann, Bob and Cat write `doc`: each a line, Bob a word into Ann's line, Cat a
    character over a word of Ann's, Bob deletes Ann's first word of her last line and
    undoes it (his undo brings it back, hers in blame). The seqs of the steps, by name."""
    async with _class(server, doc) as all_three:
        ann, bob, cat = all_three
        ann.text().insert(0, "Ann one.\n")
        await ann.flush()
        await _same(all_three, "Ann one.\n")
        bob.text().insert(9, "Bob two.\n")
        await bob.flush()
        await _same(all_three, "Ann one.\nBob two.\n")
        ann.text().insert(18, "Ann three.")
        await ann.flush()
        await _same(all_three, "Ann one.\nBob two.\nAnn three.")
        await bob.close_group()  # (each of Bob's changes an undo step of its own)
        bob.text().insert(3, " and Bob")
        await bob.flush()
        await _same(all_three, "Ann and Bob one.\nBob two.\nAnn three.")
        cat.text().replace(30, 5, "3")  # one event: "three" deleted, "3" typed
        await cat.flush()
        await _same(all_three, "Ann and Bob one.\nBob two.\nAnn 3.")
        seqs = {"cat": await server.backend.store.head(doc)}
        await bob.close_group()
        bob.text().delete(26, 3)  # Ann's "Ann"
        await bob.flush()
        await _same(all_three, "Ann and Bob one.\nBob two.\n 3.")
        seqs["deleted"] = await server.backend.store.head(doc)
        assert (await bob.undo()).ok
        await _same(all_three, "Ann and Bob one.\nBob two.\nAnn 3.")
        seqs["undone"] = await server.backend.store.head(doc)
    return seqs


def _runs(runs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(text, actor) of each run, (text, omitted) of an omitted one; a diff's with its op."""
    return [
        ((r["op"],) if "op" in r else ())
        + ((r["text"], "omitted", r["omitted"]) if "omitted" in r else (r["text"], r["actor"]))
        for r in runs
    ]


async def test_blame_and_diff_keep_what_one_writer_wrote_and_changed(
    server: RunningServer,
) -> None:
    """Blame with actor= keeps that writer's runs in document order, every stretch of
    others' text one omitted run holding its line breaks, so that the runs read as
    their text with the document's lines and positions still add up; a diff keeps
    what their events inserted and deleted (Bob's delete of Ann's word is Bob's; his
    undo's insert his too, while blame names Ann for the word it brought back)."""
    seqs = await _write_class(server, "class")
    async with httpx.AsyncClient(base_url=server.url, params={"user": "teacher"}) as c:

        async def blame(**q: Any) -> list[tuple[Any, ...]]:
            r = await c.get("/api/docs/class/blame", params=q)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body.get("actors") == (q.get("actor") and list(q["actor"]))
            return _runs(body["roots"]["content"]["runs"])

        everyone = await blame()
        assert everyone == [
            ("Ann", "ann"), (" and Bob", "bob"), (" one.\n", "ann"), ("Bob two.\n", "bob"),
            ("Ann ", "ann"), ("3", "cat"), (".", "ann"),
        ]  # fmt: skip
        assert await blame(actor=["ann"]) == [
            ("Ann", "ann"), ("", "omitted", 8), (" one.\n", "ann"), ("\n", "omitted", 9),
            ("Ann ", "ann"), ("", "omitted", 1), (".", "ann"),
        ]  # fmt: skip
        assert await blame(actor=["bob"]) == [
            ("", "omitted", 3), (" and Bob", "bob"), ("\n", "omitted", 6),
            ("Bob two.\n", "bob"), ("", "omitted", 6),
        ]  # fmt: skip
        assert await blame(actor=["cat"]) == [
            ("\n\n", "omitted", 30), ("3", "cat"), ("", "omitted", 1),
        ]  # fmt: skip
        assert await blame(actor=["ann", "bob"]) == [
            *everyone[:5], ("", "omitted", 1), (".", "ann"),
        ]  # fmt: skip
        assert await blame(actor=["dan"]) == []  # nothing of his
        # at an older version, and joined: the same filter, a run per writer
        assert await blame(actor=["ann"], seq=3) == [
            ("Ann one.\n", "ann"), ("\n", "omitted", 9), ("Ann three.", "ann"),
        ]  # fmt: skip
        r = await c.get("/api/docs/class/blame", params={"actor": "ann", "join": "actor"})
        runs = r.json()["roots"]["content"]["runs"]
        assert [(x["text"], x.get("last_seq")) for x in runs] == [
            ("Ann", 1), ("", None), (" one.\n", 1), ("\n", None), ("Ann ", 3), ("", None),
            (".", 3),
        ]  # fmt: skip

        async def diff(a: int, b: int, actor: str) -> list[tuple[Any, ...]]:
            r = await c.get("/api/docs/class/diff", params={"from": a, "to": b, "actor": actor})
            assert r.status_code == 200, r.text
            return _runs(r.json()["roots"]["content"]["ops"])

        undone, deleted = seqs["undone"], seqs["deleted"]
        # from the start: what each inserted; the word Bob's undo brought back is Ann's,
        # who wrote it after the start (as blame says: docs/history.md, diff by actor)
        assert await diff(0, undone, "ann") == [
            ("insert", "Ann", "ann"), ("omitted", "", "omitted", 8),
            ("insert", " one.\n", "ann"), ("omitted", "\n", "omitted", 9),
            ("insert", "Ann ", "ann"), ("omitted", "", "omitted", 1), ("insert", ".", "ann"),
        ]  # fmt: skip
        assert await diff(0, undone, "bob") == [
            ("omitted", "", "omitted", 3), ("insert", " and Bob", "bob"),
            ("omitted", "\n", "omitted", 6), ("insert", "Bob two.\n", "bob"),
            ("omitted", "", "omitted", 6),
        ]  # fmt: skip
        # Cat's replacement: her delete of Ann's word and her insert
        assert await diff(seqs["cat"] - 1, seqs["cat"], "cat") == [
            ("omitted", "\n\n", "omitted", 30), ("delete", "three", "cat"), ("insert", "3", "cat"),
            ("omitted", "", "omitted", 1),
        ]  # fmt: skip
        # Bob deleting Ann's text is Bob's delete (the omitted lengths are the later
        # version's: the deleted word is not in it)
        assert await diff(deleted - 1, deleted, "bob") == [
            ("omitted", "\n\n", "omitted", 26), ("delete", "Ann", "bob"),
            ("omitted", "", "omitted", 3),
        ]  # fmt: skip
        assert await diff(deleted - 1, deleted, "ann") == []
        assert await diff(deleted, undone, "bob") == [
            ("omitted", "\n\n", "omitted", 26), ("insert", "Ann", "bob"),
            ("omitted", "", "omitted", 3),
        ]  # fmt: skip
        # across the delete and its undo, nothing changed: nobody's
        assert await diff(deleted - 1, undone, "bob") == []

        # positions: a kept run's offset is the length of the runs before it
        r = await c.get("/api/docs/class/blame", params={"actor": "cat"})
        at = 0
        for run in r.json()["roots"]["content"]["runs"]:
            if "omitted" not in run:
                assert str(await _text(c, "class"))[at : at + len(run["text"])] == run["text"]
            at += run.get("omitted", len(run["text"]))

        r = await c.get("/api/docs/class/blame", params={"actor": "x" * 65})
        assert r.status_code == 400 and "at most 64 characters" in r.text, r.text

    async with client.History(server.url, user="teacher") as h:
        runs = await h.blame("class", actor="cat")
        assert [(b.text, b.actor, b.omitted) for b in runs] == [
            ("\n\n", None, 30), ("3", "cat", None), ("", None, 1),
        ]  # fmt: skip
        both = await h.blame("class", actor=["ann", "bob"], join="actor")
        assert "".join(b.text for b in both) == "Ann and Bob one.\nBob two.\nAnn ."
        d = await h.diff("class", seqs["deleted"] - 1, seqs["deleted"], actor="bob")
        assert [o["op"] for o in d["roots"]["content"]["ops"]] == ["omitted", "delete", "omitted"]
        assert await h.text_by("class", "ann") == "Ann one.\n\nAnn ."
        assert await h.text_by("class", "bob") == " and Bob\nBob two.\n"
        assert await h.text_by("class", "cat") == "3"
        assert await h.text_by("class", "dan") == ""


async def _text(c: httpx.AsyncClient, doc: str) -> str:
    r = await c.get(f"/api/docs/{doc}/versions/head")
    return str(r.json()["roots"]["content"]["value"])


async def test_text_by_is_exactly_what_the_writer_wrote(server: RunningServer) -> None:
    """A bot's 3,000-character answer between a human's paragraphs: text_by gives those
    3,000 characters (it gave 3,001: a line break added at the end), its own line breaks
    at either end included; others' line breaks around it are not its text."""
    answer = "word " * 600
    lines = "\nits own first line\nand last line\n"
    async with client.connect(server.ws_url, "answer", user="alice") as alice:
        alice.text().insert(0, "Intro.\n\n[AI][/AI]\n\n[B][/B]\nOutro.\n")
        await alice.flush()
        async with client.connect(server.ws_url, "answer", user="bot") as bot:
            await bot.wait_for(lambda: "[/AI]" in str(bot.text()))
            bot.text().insert(str(bot.text()).index("[/AI]"), answer)
            await bot.flush()
        async with client.connect(server.ws_url, "answer", user="bot2") as bot2:
            await bot2.wait_for(lambda: "[/B]" in str(bot2.text()))
            bot2.text().insert(str(bot2.text()).index("[/B]"), lines)
            await bot2.flush()
    async with client.History(server.url, user="alice") as h:
        got = await h.text_by("answer", "bot")
        assert len(got) == 3000 and got == answer
        assert await h.text_by("answer", "bot2") == lines
        # paragraphs apart by one blank line, where others' text was between
        both = answer + "\n\n" + lines.lstrip("\n")
        assert await h.text_by("answer", ["bot", "bot2"]) == both
        assert await h.text_by("answer", "nobody") == ""


def _flat(nodes: list[dict[str, Any]]) -> list[Any]:
    """A tree as nested lists: an element's name and kids, a text's runs (ops)."""
    out: list[Any] = []
    for n in nodes:
        if "element" in n:
            out.append([n["element"], n.get("op"), n["actor"], _flat(n.get("children") or [])])
        else:
            out.append(_runs(n.get("runs") or n.get("ops") or []))
    return out


async def test_a_tree_keeps_the_paragraphs_with_a_writers_text(server: RunningServer) -> None:
    """Tiptap's shape: Ann's heading and paragraph, Bob's word in it and a paragraph of
    his, Cat deletes a word of Ann's and types into Bob's paragraph. Filtered, each
    text's runs collapse as a text root's, and only the elements with something of the
    writer's in them stay (blame: what they wrote; diff: what they changed)."""
    async with _class(server, "tiptap") as (ann, bob, cat):

        def tree(s: client.Session) -> XmlFragment:
            fragment: XmlFragment = s.doc.get("default", type=XmlFragment)
            return fragment

        def text(s: client.Session, i: int) -> XmlText:
            node = tree(s).children[i].children[0]
            assert isinstance(node, XmlText)
            return node

        async def seen(n: int, what: str) -> None:
            for s in (ann, bob, cat):
                await s.wait_for(
                    lambda s=s: what in str(tree(s)) and len(list(tree(s).children)) == n
                )

        with ann.doc.transaction():
            tree(ann).children.append(XmlElement("heading", {"level": 1}, [XmlText("Minutes")]))
            tree(ann).children.append(XmlElement("paragraph", {}, [XmlText("We met.")]))
        await ann.flush()
        await seen(2, "We met.")
        start = await server.backend.store.head("tiptap")
        text(bob, 1).insert(3, "all ")
        await bob.flush()
        tree(bob).children.append(XmlElement("paragraph", {}, [XmlText("Bob's note")]))
        await bob.flush()
        await seen(3, "Bob's note")
        text(cat, 1).__delitem__(slice(7, 10))  # Ann's "met"
        text(cat, 2).insert(0, "Cat: ")
        await cat.flush()
        await seen(3, "Cat: Bob's note")

    async with httpx.AsyncClient(base_url=server.url, params={"user": "teacher"}) as c:

        async def blame(actor: str) -> list[Any]:
            r = await c.get("/api/docs/tiptap/blame", params={"actor": actor})
            assert r.status_code == 200, r.text
            nodes = r.json()["roots"]["default"]["nodes"]
            _valid(nodes, "XmlBlameNode")
            return _flat(nodes)

        assert await blame("ann") == [
            ["heading", None, "ann", [[("Minutes", "ann")]]],
            ["paragraph", None, "ann", [[("We ", "ann"), ("", "omitted", 4), (".", "ann")]]],
        ]
        assert await blame("bob") == [
            ["paragraph", None, "ann", [[("", "omitted", 3), ("all ", "bob"), ("", "omitted", 1)]]],
            ["paragraph", None, "bob", [[("", "omitted", 5), ("Bob's note", "bob")]]],
        ]
        assert await blame("cat") == [
            ["paragraph", None, "bob", [[("Cat: ", "cat"), ("", "omitted", 10)]]],
        ]
        assert await blame("dan") == []

        async def diff(actor: str) -> list[Any]:
            r = await c.get("/api/docs/tiptap/diff", params={"from": start, "actor": actor})
            assert r.status_code == 200, r.text
            root = r.json()["roots"]["default"]
            assert "ops" not in root  # (the XML string's character diff: nobody's)
            _valid(root["nodes"], "XmlDiffNode")
            return _flat(root["nodes"])

        # (a diff lists a gap's deletions before its insertions: "met", then "all ")
        assert await diff("cat") == [
            ["paragraph", "equal", None, [[("omitted", "", "omitted", 3),
                                           ("delete", "met", "cat"),
                                           ("omitted", "", "omitted", 5)]]],
            ["paragraph", "insert", "bob", [[("insert", "Cat: ", "cat"),
                                             ("omitted", "", "omitted", 10)]]],
        ]  # fmt: skip
        assert await diff("bob") == [
            ["paragraph", "equal", None, [[("omitted", "", "omitted", 3),
                                           ("insert", "all ", "bob"),
                                           ("omitted", "", "omitted", 1)]]],
            ["paragraph", "insert", "bob", [[("omitted", "", "omitted", 5),
                                             ("insert", "Bob's note", "bob")]]],
        ]  # fmt: skip
        assert await diff("ann") == []

    async with client.History(server.url, user="teacher") as h:
        assert await h.text_by("tiptap", "bob", root="default") == "all \nBob's note"
        nodes = await h.blame_tree("tiptap", actor=["ann", "cat"], join="actor")
        assert [n["element"] for n in nodes] == ["heading", "paragraph", "paragraph"]


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_cat_by_prints_what_a_writer_wrote(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`palimpsest cat DOC --by USER` (or --actor): their text still there, in document
    order, a blank line where others' lines were; several users, a version, an XML
    tree; a user who never wrote is an error, a root blame cannot attribute refused."""
    seqs = await _write_class(server, "class")
    url = ("--url", server.url, "--user", "teacher")
    cases = [
        (("--by", "ann"), "Ann one.\n\nAnn .\n"),
        (("--actor", "bob"), " and Bob\nBob two.\n"),
        (("--by", "cat"), "3\n"),
        (("--by", "ann", "--by", "bob"), "Ann and Bob one.\nBob two.\nAnn .\n"),
        (("--by", "ann", "--seq", "3"), "Ann one.\n\nAnn three.\n"),
        (("--by", "ann", "--seq", str(seqs["deleted"])), "Ann one.\n\n .\n"),
    ]
    for args, out in cases:
        assert await _cli("cat", "class", *args, *url) == 0, args
        assert capsys.readouterr().out == out, args
    assert await _cli("cat", "class", "--by", "dan", *url) == 1
    assert "'dan' never changed 'class'" in capsys.readouterr().err

    async with client.connect(server.ws_url, "tree", user="eve") as eve:
        fragment = eve.doc.get("default", type=XmlFragment)
        fragment.children.append(XmlElement("paragraph", {}, [XmlText("Eve's lines")]))
        fragment.children.append(XmlElement("paragraph", {}, [XmlText("and more")]))
        await eve.flush()
        eve.doc.get("meta", type=Map)["title"] = "T"
        await eve.flush()
    assert await _cli("cat", "tree", "--by", "eve", "--root", "default", *url) == 0
    assert capsys.readouterr().out == "Eve's lines\nand more\n"
    assert await _cli("cat", "tree", "--by", "eve", "--root", "meta", *url) == 2
    assert "only a text or an XML tree says who wrote what" in capsys.readouterr().err


_run = st.fixed_dictionaries(
    {
        "text": st.text(alphabet="ab\n", min_size=1, max_size=4),
        "actor": st.sampled_from(["ann", "bob", "cat", None]),
        "seq": st.integers(1, 9),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_run, max_size=20), st.sets(st.sampled_from(["ann", "bob", "dan"])))
def test_filtered_runs_keep_the_lines_and_the_positions(
    runs: list[dict[str, Any]], actors: set[str]
) -> None:
    """The actors' runs, in order, each where the text has it (counting omitted runs by
    their length); an omitted run between every two that were not neighbours, none
    next to another, holding the line breaks of what it stands for; nothing when no
    run is theirs."""
    text = "".join(r["text"] for r in runs)
    out = by_actors({"t": {"type": "text", "runs": runs}}, actors, diff=False)["t"]["runs"]
    theirs = [r for r in runs if r["actor"] in actors]
    if not theirs:
        assert out == []
        return
    assert [r for r in out if "omitted" not in r] == theirs
    at = 0
    for a, b in zip(out, out[1:], strict=False):
        assert not ("omitted" in a and "omitted" in b)
    for r in out:
        n = r.get("omitted", len(r["text"]))
        if "omitted" in r:
            assert r["text"] == re.sub(r"[^\n]", "", text[at : at + n]) and n > 0
        else:
            assert text[at : at + n] == r["text"]
        at += n
    assert at == len(text)


async def test_a_formatted_text_keeps_a_writers_embeds_and_formatting(
    server: RunningServer,
) -> None:
    """Quill's shape: Ann's text, Bob bolds a word of hers, Cat puts an image in. Cat's
    blame is her embed, with its value; Bob's diff is his format op; the runs keep their
    attributes."""
    async with _class(server, "quill") as (ann, bob, cat):

        def quill(s: client.Session) -> Text:
            text: Text = s.doc.get("quill", type=Text)
            return text

        async def seen(chunks: int) -> None:  # (str() of a text leaves its embeds out)
            for s in (ann, bob, cat):
                await s.wait_for(lambda s=s: len(quill(s).diff()) == chunks)

        quill(ann).insert(0, "Hello world\n")
        await ann.flush()
        await seen(1)
        start = await server.backend.store.head("quill")
        quill(bob).format(6, 11, {"bold": True})
        await bob.flush()
        quill(cat).insert_embed(5, {"image": "cat.png"})
        await cat.flush()
        await seen(5)

    async with httpx.AsyncClient(base_url=server.url, params={"user": "teacher"}) as c:
        r = await c.get("/api/docs/quill/blame", params={"actor": "cat", "root": "quill"})
        runs = r.json()["roots"]["quill"]["runs"]
        assert [{k: v for k, v in x.items() if k != "seq"} for x in runs] == [
            {"text": "", "actor": None, "omitted": 5},
            {"text": "\ufffc", "actor": "cat", "embed": {"image": "cat.png"}},
            {"text": "\n", "actor": None, "omitted": 7},
        ]
        r = await c.get("/api/docs/quill/blame", params={"actor": "ann", "root": "quill"})
        runs = r.json()["roots"]["quill"]["runs"]
        assert [(x["text"], x.get("attributes"), x.get("omitted")) for x in runs] == [
            ("Hello", None, None), ("", None, 1), (" ", None, None),
            ("world", {"bold": True}, None), ("\n", None, None),
        ]  # fmt: skip
        r = await c.get("/api/docs/quill/diff", params={"from": start, "actor": "bob"})
        ops = r.json()["roots"]["quill"]["ops"]
        got = [(o["op"], o["text"], o["actor"], o.get("attributes"), o.get("was")) for o in ops]
        assert got == [
            ("omitted", "", None, None, None),
            ("format", "world", "bob", {"bold": True}, {}),
            ("omitted", "\n", None, None, None),
        ]  # fmt: skip


async def test_an_elements_attributes_are_each_their_setters(server: RunningServer) -> None:
    """A field tester's heading: Ann sets its level 1 -> 2, then Bob its align left ->
    right. The diff's one format op named Bob for both, and `?actor=ann` kept that op, Bob's
    name on it. Now each attribute that differs names who last set it (`changed`), and a
    writer's diff keeps only their attributes' change, named for them; Cat, who only typed
    in the heading, sees it as an equal node holding her word."""
    async with (
        client.connect(server.ws_url, "heading", user="ann") as ann,
        client.connect(server.ws_url, "heading", user="bob") as bob,
        client.connect(server.ws_url, "heading", user="cat") as cat,
    ):

        def heading(s: client.Session) -> XmlElement:
            node = s.doc.get("default", type=XmlFragment).children[0]
            assert isinstance(node, XmlElement)
            return node

        ann.doc.get("default", type=XmlFragment).children.append(
            XmlElement("heading", {"level": "1", "align": "left"}, [XmlText("Title")])
        )
        await ann.flush()
        await bob.wait_for(lambda: "Title" in str(bob.doc.get("default", type=XmlFragment)))
        start = await server.backend.store.head("heading")
        heading(ann).attributes["level"] = "2"
        await ann.flush()
        level = await server.backend.store.head("heading")
        await bob.wait_for(lambda: heading(bob).attributes.get("level") == "2")
        heading(bob).attributes["align"] = "right"
        await bob.flush()
        align = await server.backend.store.head("heading")
        await cat.wait_for(lambda: heading(cat).attributes.get("align") == "right")
        title = heading(cat).children[0]
        assert isinstance(title, XmlText)
        title.insert(5, "!")
        await cat.flush()
        await ann.wait_for(lambda: "Title!" in str(heading(ann)))
    assert start < level < align

    async with httpx.AsyncClient(base_url=server.url, params={"user": "teacher"}) as c:

        async def diff(**actor: str) -> list[dict[str, Any]]:
            r = await c.get("/api/docs/heading/diff", params={"from": start, **actor})
            assert r.status_code == 200, r.text
            nodes: list[dict[str, Any]] = r.json()["roots"]["default"]["nodes"]
            _valid(nodes, "XmlDiffNode")
            return nodes

        def shape(node: dict[str, Any]) -> dict[str, Any]:
            keys = ("op", "element", "actor", "seq", "attributes", "was", "changed")
            return {k: node.get(k) for k in keys}

        now = {"level": "2", "align": "right"}
        [node] = await diff()
        # one op, as before (its actor the last setter), each attribute's setter beside
        assert shape(node) == {
            "op": "format", "element": "heading", "actor": "bob", "seq": align,
            "attributes": now, "was": {"level": "1", "align": "left"},
            "changed": {"align": {"actor": "bob", "seq": align},
                        "level": {"actor": "ann", "seq": level}},
        }  # fmt: skip
        [node] = await diff(actor="ann")
        assert shape(node) == {
            "op": "format", "element": "heading", "actor": "ann", "seq": level,
            "attributes": now, "was": {"level": "1", "align": "right"},
            "changed": {"level": {"actor": "ann", "seq": level}},
        }  # fmt: skip
        assert node["children"] == []  # (the text is nobody's change)
        [node] = await diff(actor="bob")
        assert shape(node) == {
            "op": "format", "element": "heading", "actor": "bob", "seq": align,
            "attributes": now, "was": {"level": "2", "align": "left"},
            "changed": {"align": {"actor": "bob", "seq": align}},
        }  # fmt: skip
        [node] = await diff(actor="cat")
        assert shape(node) == {
            "op": "equal", "element": "heading", "actor": None, "seq": None,
            "attributes": now, "was": None, "changed": None,
        }  # fmt: skip
        assert [(o["op"], o["text"], o["actor"]) for o in node["children"][0]["ops"]] == [
            ("omitted", "", None), ("insert", "!", "cat")
        ]  # fmt: skip
        assert await diff(actor="dan") == []
        # both named: the change of each
        [node] = await diff(actor=["ann", "bob"])  # type: ignore[arg-type]
        assert (node["actor"], node["was"], sorted(node["changed"])) == (
            "bob", {"level": "1", "align": "left"}, ["align", "level"]
        )  # fmt: skip
