"""Text an editor moves keeps its writers in blame (attribution_xml._Moves).

y-prosemirror splits a paragraph on Enter by deleting the text after the caret and
inserting it in a new paragraph, and joins two on Backspace by deleting the second and
inserting its text in the first; @lexical/yjs also splits a text node that way when a
format changes part of it. Each is one transaction: text deleted and inserted again.
Blame names the text's writer, not whoever pressed Enter; typing over a selection is
not a move.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import eventually, run_server
from indexhelp import restamped
from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText
from yclient import connect

from palimpsest.history import attribution_codec as codec
from palimpsest.history.attribution import MOVE_PAIRS, AttributionIndex
from palimpsest.history.joined import join_runs
from palimpsest.history.render import XML
from palimpsest.settings import Settings
from palimpsest.store.base import Event

ROOT = "default"


class Session:
    """One document, edited as one person after another; its log and index."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.log: list[Event] = []
        self.actor = "ann"
        self.doc.observe(lambda e: self.log.append(
            Event("d", len(self.log) + 1, 0, self.actor, "edit", e.update, {})))  # fmt: skip
        self.root = self.doc.get(ROOT, type=XmlFragment)

    def para(self, i: int) -> XmlText:
        text = self.root.children[i].children[0]
        assert isinstance(text, XmlText)
        return text

    def blame(self, index: AttributionIndex | None = None) -> list[list[tuple[str, str | None]]]:
        """Each paragraph's runs as (text, who wrote it), after who made it."""
        if index is None:
            index = AttributionIndex("d", {ROOT: XML})
            index.fold(self.log)
        index.check_xml()
        tree = index.xml[ROOT]
        assert tree.failed is None
        nodes = tree.blame(index.seq, index.actors, index.first, self.root)
        out = []
        for n in nodes:  # (runs by the same writer joined: each event is a run)
            runs = join_runs([r for t in n["children"] for r in t["runs"]])
            out.append([("¶", n["actor"]), *((r["text"], r["actor"]) for r in runs)])
        return out


def _written() -> Session:
    s = Session()
    s.root.children.append(XmlElement("paragraph", {}, [XmlText("Hello ")]))
    s.para(0).insert(6, "world")  # ann's, two events
    s.actor = "bob"
    s.para(0).insert(11, " again")
    return s


def test_enter_keeps_the_writers_of_the_text_it_moves() -> None:
    """Cy presses Enter after "Hello ": the new paragraph is his, its text Ann's and
    Bob's as they wrote it; its seqs are theirs too."""
    s = _written()
    s.actor = "cy"
    with s.doc.transaction():  # as y-prosemirror splits a paragraph
        s.para(0).__delitem__(slice(6, 17))
        s.root.children.insert(1, XmlElement("paragraph", {}, [XmlText("world again")]))
    assert s.blame() == [
        [("¶", "ann"), ("Hello ", "ann")],
        [("¶", "cy"), ("world", "ann"), (" again", "bob")],
    ]
    index = AttributionIndex("d", {ROOT: XML})
    index.fold(s.log)
    nodes = index.xml[ROOT].blame(index.seq, index.actors, index.first, s.root)
    assert [r["seq"] for r in nodes[1]["children"][0]["runs"]] == [2, 3]
    # the moves are stored with the index, and read back
    at: Doc[Any] = Doc()
    at.apply_update(s.doc.get_update())
    back = codec.decode(codec.encode(index, "fp"), at)
    assert codec.header(codec.encode(index, "fp"))["xml_moved"]
    assert s.blame(back) == s.blame()
    # an index stored by version 5 or before knew no copies: the document is rebuilt
    with pytest.raises(ValueError, match="not an attribution index of this version"):
        codec.decode(restamped(codec.encode(index, "fp"), 3), at)


def test_backspace_joining_two_paragraphs_keeps_the_writers() -> None:
    """Bob's paragraph joined to Ann's by Cy's Backspace: its text stays Bob's."""
    s = _written()
    s.root.children.append(XmlElement("paragraph", {}, [XmlText("Bye")]))
    s.actor = "cy"
    with s.doc.transaction():  # as y-prosemirror joins two paragraphs
        del s.root.children[1]
        s.para(0).insert(17, "Bye")
    assert s.blame() == [[("¶", "ann"), ("Hello world", "ann"), (" againBye", "bob")]]


def test_typing_over_a_selection_is_not_a_move() -> None:
    """Cy selects "world" and types "w" (or "wor"): what he typed is his, though Ann's
    deleted word held it; pasting "world" itself over it keeps it Ann's."""
    for typed, want in [
        ("w", [("Hello ", "ann"), ("w", "cy"), (" again", "bob")]),
        ("wor", [("Hello ", "ann"), ("wor", "cy"), (" again", "bob")]),
        ("world", [("Hello world", "ann"), (" again", "bob")]),
    ]:
        s = _written()
        s.actor = "cy"
        with s.doc.transaction():
            s.para(0).__delitem__(slice(6, 11))
            s.para(0).insert(6, typed)
        assert s.blame() == [[("¶", "ann"), *want]], typed


def test_a_move_of_moved_text_keeps_its_first_writer() -> None:
    """Split twice and joined back, by three people: each character is still its
    writer's."""
    s = _written()
    s.actor = "cy"
    with s.doc.transaction():
        s.para(0).__delitem__(slice(6, 17))
        s.root.children.insert(1, XmlElement("paragraph", {}, [XmlText("world again")]))
    s.actor = "dan"
    with s.doc.transaction():
        s.para(1).__delitem__(slice(5, 11))
        s.root.children.insert(2, XmlElement("paragraph", {}, [XmlText(" again")]))
    s.actor = "eve"
    with s.doc.transaction():
        del s.root.children[2]
        del s.root.children[1]
        s.para(0).insert(6, "world again")
    assert s.blame() == [[("¶", "ann"), ("Hello world", "ann"), (" again", "bob")]]


def test_a_whole_document_pasted_over_is_not_searched_for_moves() -> None:
    """Past MOVE_PAIRS (deleted stretches times inserts) an event is not looked at for
    moves, so a paste over a long document costs no quadratic search: its text is the
    paster's. Under it, the same paste keeps the writers."""
    for paragraphs, who in [(40, "ann"), (80, "cy")]:
        assert (paragraphs**2 > MOVE_PAIRS) == (who == "cy")
        s = Session()
        words = [f"line {k}" for k in range(paragraphs)]
        with s.doc.transaction():
            for w in words:
                s.root.children.append(XmlElement("paragraph", {}, [XmlText(w)]))
        s.actor = "cy"
        with s.doc.transaction():  # select all, paste the same text
            del s.root.children[0:paragraphs]
            for w in words:
                s.root.children.append(XmlElement("paragraph", {}, [XmlText(w)]))
        blame = s.blame()
        assert {runs[1] for runs in blame} == {(w, who) for w in words}
        assert {runs[0] for runs in blame} == {("¶", "cy")}


def _text_session() -> tuple[Doc[Any], Text, list[Event], list[str]]:
    doc: Doc[Any] = Doc()
    log: list[Event] = []
    who = ["ann"]
    doc.observe(lambda e: log.append(Event("d", len(log) + 1, 0, who[0], "edit", e.update, {})))
    return doc, doc.get("content", type=Text), log, who


def test_a_line_moved_in_a_text_root_keeps_its_writer() -> None:
    """CodeMirror's and Monaco's line move (Alt+Up) is one transaction that deletes the
    line and inserts it again: folded by ids and by deltas, blame names the line's
    writer; the index stores it. An indent made deeper (four spaces made eight)
    keeps its old part's writer, and the spaces added are their typist's."""
    doc, text, log, who = _text_session()
    text.insert(0, "    line one\n")
    who[0] = "bob"
    text.insert(13, "line two\n")
    who[0] = "cy"
    with doc.transaction():  # bob's line moved above ann's
        del text[13:22]
        text.insert(0, "line two\n")
    with doc.transaction():  # ann's indent made deeper
        del text[9:13]
        text.insert(9, "        ")
    for by_ids in (True, False):
        index = AttributionIndex("d", ["content"], by_ids=by_ids)
        index.fold(log)
        assert index.by_ids == (len(log) if by_ids else 0) and index.verify()
        runs = join_runs(index.blame("content", len(log)))
        assert [(r["text"], r["actor"]) for r in runs] == [
            ("line two\n", "bob"), ("    ", "ann"), ("    ", "cy"), ("line one\n", "ann"),
        ], by_ids  # fmt: skip
        at: Doc[Any] = Doc()
        at.apply_update(doc.get_update())
        data = codec.encode(index, "fp")
        assert codec.header(data)["moved"] == {"content": [[22, 9, 2], [31, 4, 1]]}
        assert codec.decode(data, at).blame("content", len(log)) == index.blame("content", len(log))


@pytest.mark.parametrize("trace", ["sveltecomponent", "rustcode"])
def test_an_editing_trace_blames_alike_folded_by_ids_and_by_deltas(trace: str) -> None:
    """The traces replace text as their editors did (re-indenting blocks, retyping a
    line), some of it with itself: the two folds cut an update into different pieces
    (structs, ops) and place its inserts in another order, and must still find the same
    moves and answer the same blame, every 500 events, and the same diff of those 500
    events (moved text marked where it went and where it was), as a warm index and one
    rebuilt must."""
    from test_snapshot_retention import bench

    new, _ = bench.trace_events(trace)
    log = [Event("d", i + 1, 0, e.actor, "edit", e.update, {}) for i, e in enumerate(new)]
    by_ids = AttributionIndex("d", ["content"])
    by_deltas = AttributionIndex("d", ["content"], by_ids=False)
    for k in range(0, len(log), 500):
        by_ids.fold(log[k : k + 500])
        by_deltas.fold(log[k : k + 500])
        seq = by_ids.seq
        assert by_ids.blame("content", seq) == by_deltas.blame("content", seq), seq
        assert by_ids.diff("content", k, seq) == by_deltas.diff("content", k, seq), seq
    assert by_ids.by_ids == len(log) and by_deltas.by_ids == 0
    assert len(by_ids.tracks["content"].moved) > 1000  # (it did find moves)
    assert len(by_ids.tracks["content"].moved_away) > 100


def test_text_taken_out_before_is_not_moved_again() -> None:
    """A quote of two paragraphs, the second taken out by Bob; Cy then replaces the
    quote with a paragraph of both texts at once. Only the text still there when he
    did was moved: "keep" stays Ann's, "gone" (which was gone) is Cy's."""
    s = Session()
    quote = XmlElement("blockquote", {}, [
        XmlElement("paragraph", {}, [XmlText("keep")]),
        XmlElement("paragraph", {}, [XmlText("gone")]),
    ])  # fmt: skip
    s.root.children.append(quote)
    s.actor = "bob"
    quote = s.root.children[0]
    assert isinstance(quote, XmlElement)
    del quote.children[1]
    s.actor = "cy"
    with s.doc.transaction():
        del s.root.children[0]
        s.root.children.append(XmlElement("paragraph", {}, [XmlText("keepgone")]))
    assert s.blame() == [[("¶", "cy"), ("keep", "ann"), ("gone", "cy")]]


def test_a_diff_marks_the_text_a_move_inserted_and_deleted() -> None:
    """A diff shows a move as the log has it, the mover's delete and insert, and marks
    both `moved` (blame names who wrote the text), so that a history view can tell a
    line moved from a line typed and deleted: in a text root and in an XML tree's text,
    folded by ids, by deltas and from the diff's first version alone (what a server
    answers before it has an index), joined by actor or not, and as stored."""
    doc, text, log, who = _text_session()
    text.insert(0, "line one\n")
    who[0] = "bob"
    text.insert(9, "line two\n")
    who[0] = "cy"
    with doc.transaction():  # bob's line moved above ann's, and cy types after it
        del text[9:18]
        text.insert(0, "line two\n")
        text.insert(9, "new\n")
    who[0] = "dee"
    del text[13:15]  # a delete that is no move
    want = [
        ("delete", "li", "dee", False),
        ("insert", "line two\n", "cy", True),
        ("insert", "new\n", "cy", False),
        ("equal", "ne one\n", None, False),
        ("delete", "line two\n", "cy", True),
    ]
    at: Doc[Any] = Doc()
    at.apply_update(_state(log[:2]))
    for by_ids in (True, False, None):
        index = AttributionIndex("d", ["content"], by_ids=bool(by_ids))
        if by_ids is None:
            index.start_from(2, at.get_update())
            index.fold(log[2:])
        else:
            index.fold(log)
        stored = codec.decode(codec.encode(index, "fp"), doc) if by_ids is not None else index
        for ops in (
            index.diff("content", 2, 4),
            join_runs(index.diff("content", 2, 4)),
            stored.diff("content", 2, 4),
        ):
            got = [(o["op"], o["text"], o["actor"], o.get("moved", False)) for o in ops]
            assert got == want, (by_ids, got)

    s = _written()  # the same in a paragraph: Cy's Enter moves Ann's and Bob's words
    s.actor = "cy"
    with s.doc.transaction():
        s.para(0).__delitem__(slice(6, 17))
        s.root.children.insert(1, XmlElement("paragraph", {}, [XmlText("world again")]))
    index = AttributionIndex("d", {ROOT: XML})
    index.fold(s.log)

    def diff(a: int) -> list[tuple[str, str, str, bool]]:
        """(the paragraph's op, the text's op, its text, moved) from `a` to the head"""
        before = Doc()
        before.apply_update(_state(s.log[:a]))
        fragment = before.get(ROOT, type=XmlFragment)
        nodes = index.xml[ROOT].diff(a, len(s.log), index.actor, fragment, s.root)
        return [(n["op"], o["op"], o["text"], o.get("moved", False))
                for n in nodes for t in n["children"] for o in t["ops"]]  # fmt: skip

    assert diff(3) == [
        ("equal", "equal", "Hello ", False),
        ("equal", "delete", "world again", True),
        ("insert", "insert", "world again", True),
    ]
    # Backspace joins them again: the second paragraph's text, taken out with it, moved
    s.actor = "dee"
    with s.doc.transaction():
        del s.root.children[1]
        s.para(0).insert(6, "world again")
    index.fold(s.log[4:])
    assert diff(4) == [
        ("equal", "equal", "Hello ", False),
        ("equal", "insert", "world again", True),
        ("delete", "delete", "world again", True),
    ]
    # stored as version 4 (which knew no moved-from text), an index is rebuilt
    data = codec.encode(index, "fp")
    assert codec.header(data)["xml_moved_away"]
    with pytest.raises(ValueError, match="not an attribution index of this version"):
        codec.decode(restamped(data, 4, lambda header: header.pop("xml_moved_away")), s.doc)


def _state(events: list[Event]) -> bytes:
    doc: Doc[Any] = Doc()
    for e in events:
        doc.apply_update(e.update)
    return doc.get_update()


async def test_the_same_text_typed_over_itself_keeps_its_writer_and_diffs_equal(
    settings: Settings,
) -> None:
    """A field test: Ann types "hello world"; Bob, in one transaction, deletes "world"
    and types "world" again. By the move rule the word is still Ann's (the very same
    text over a selection keeps its writers, as a paste of it does), and a diff across
    it is one `equal` op: the two versions' text is the same there, which a diff shows
    unchanged before it looks for moves, so no `moved` op shows (docs/history.md said
    both that a move shows as a delete and an insert and that the same text is one
    `equal` op). The log still has Bob's edit, for an audit."""
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "retype", "ann") as a,
        connect(server.ws_url, "retype", "bob") as b,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        a.insert(0, "hello world")
        await eventually(lambda: b.content == "hello world")
        with b.doc.transaction():
            del b.text[6:11]
            b.text.insert(6, "world")

        async def head() -> bool:
            return (await c.get("/api/docs/retype/versions/head")).json()["seq"] == 2

        await eventually(head)
        blame = (await c.get("/api/docs/retype/blame")).json()["roots"]["content"]["runs"]
        assert [(r["text"], r["actor"], r["seq"]) for r in blame] == [("hello world", "ann", 1)]
        diff = (await c.get("/api/docs/retype/diff", params={"from": 1, "to": 2})).json()
        assert diff["roots"]["content"]["ops"] == [
            {"op": "equal", "text": "hello world", "actor": None, "seq": None}
        ]
        events = (await c.get("/api/docs/retype/events")).json()["events"]
        assert [(e["seq"], e["actor"], e["kind"]) for e in events] == [
            (1, "ann", "edit"),
            (2, "bob", "edit"),
        ]
