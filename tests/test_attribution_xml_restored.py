"""A restore that changes one paragraph in place and makes the others again: blame pairs
each paragraph it made with the deleted one whose content it copies (attribution_xml's
copy_children, by content through matching: the same content, then alike, then order),
not the first deleted one of its tag in order, which named one writer's text for another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pycrdt import Doc, XmlFragment
from test_attribution_copies import Log
from test_diff_xml_recreated import ROOT, _para, _restore

from palimpsest.history import attribution, attribution_xml, matching
from palimpsest.history import attribution_codec as codec
from palimpsest.history.attribution import AttributionIndex
from palimpsest.history.render import XML


def _blame(log: Log, root: XmlFragment) -> list[tuple[str | None, list[tuple[str, str]]]]:
    """Each paragraph's maker and its text's runs (same writer joined), folded by ids
    and by deltas (the same answer), and after the index is encoded and decoded."""
    answers = []
    for by_ids in (True, False):
        index = AttributionIndex("d", {ROOT: XML}, by_ids=by_ids)
        index.fold(log.events)
        index.check_xml()
        assert index.xml[ROOT].failed is None
        nodes = index.xml[ROOT].blame(index.seq, index.actors, index.first, root)
        back = codec.decode(codec.encode(index, "fp"), root.doc)
        back.check_xml()
        assert back.xml[ROOT].blame(back.seq, back.actors, back.first, root) == nodes
        out = []
        for n in nodes:
            runs: list[tuple[str, str]] = []
            for r in n["children"][0]["runs"]:
                if runs and runs[-1][1] == r["actor"]:
                    runs[-1] = (runs[-1][0] + r["text"], r["actor"])
                else:
                    runs.append((r["text"], r["actor"]))
            out.append((n["actor"], runs))
        answers.append(out)
    assert answers[0] == answers[1]
    return answers[0]


def _three(doc: Doc[Any]) -> tuple[Log, XmlFragment]:
    log = Log(doc)
    root = doc.get(ROOT, type=XmlFragment)
    root.children.append(_para("Intro written by ann."))  # 1 ann
    log.by("bob")
    root.children.append(_para("Middle written by bob."))  # 2
    log.by("carol")
    root.children.append(_para("Ending written by carol."))  # 3
    return log, root


def test_paragraphs_a_restore_makes_again_keep_their_own_writers() -> None:
    """Dave replaces the three paragraphs with one of his; Eve restores version 3. The
    restore changes Dave's paragraph in place into Ann's and makes Bob's and Carol's
    again: by order they were paired with Ann's and Bob's (the first two deleted
    paragraphs), and Bob's text was named Ann's, Carol's Bob's."""
    doc: Doc[Any] = Doc()
    log, root = _three(doc)
    log.by("dave")
    with doc.transaction():  # 4
        del root.children[0:3]
        root.children.append(_para("Dave's whole new text."))
    _restore(log, root, 3, "eve")  # 5
    assert [str(p) for p in root.children] == [
        "<paragraph>Intro written by ann.</paragraph>",
        "<paragraph>Middle written by bob.</paragraph>",
        "<paragraph>Ending written by carol.</paragraph>",
    ]
    got = _blame(log, root)
    assert got[1:] == [
        ("eve", [("Middle written by bob.", "bob")]),
        ("eve", [("Ending written by carol.", "carol")]),
    ]
    assert got[0][0] == "dave"  # (changed in place: Dave's node)


def test_a_paragraph_made_again_after_two_changed_in_place_is_its_writers() -> None:
    """Dave writes two paragraphs in place of the three: the restore changes both in
    place and makes Carol's again, which order paired with Ann's."""
    doc: Doc[Any] = Doc()
    log, root = _three(doc)
    log.by("dave")
    with doc.transaction():  # 4
        del root.children[0:3]
        root.children.append(_para("One by dave."))
        root.children.append(_para("Two by dave."))
    _restore(log, root, 3, "eve")  # 5
    got = _blame(log, root)
    assert got[2] == ("eve", [("Ending written by carol.", "carol")])


def test_a_paragraph_removed_in_between_does_not_shift_the_pairing() -> None:
    """Frank deletes Bob's paragraph (version 4 lacks it); Dave rewrites what is left
    into one paragraph; Eve restores version 4: Dave's is changed into Ann's, Carol's
    made again (order paired it with Ann's). Then she restores version 3: Bob's is made
    again between them, among the deleted Ann's, Bob's and Carol's (order: Ann's)."""
    doc: Doc[Any] = Doc()
    log, root = _three(doc)
    log.by("frank")
    del root.children[1]  # 4
    log.by("dave")
    with doc.transaction():  # 5
        del root.children[0:2]
        root.children.append(_para("Dave's whole new text."))
    _restore(log, root, 4, "eve")  # 6
    assert _blame(log, root)[1] == ("eve", [("Ending written by carol.", "carol")])
    _restore(log, root, 3, "eve")  # 7
    assert [str(p) for p in root.children] == [
        "<paragraph>Intro written by ann.</paragraph>",
        "<paragraph>Middle written by bob.</paragraph>",
        "<paragraph>Ending written by carol.</paragraph>",
    ]
    assert _blame(log, root)[1:] == [
        ("eve", [("Middle written by bob.", "bob")]),
        ("eve", [("Ending written by carol.", "carol")]),
    ]


def test_by_content_pairs_by_digest_then_alike_then_order() -> None:
    kinds = ["p", "p", "p"]
    never = lambda i, j: False  # noqa: E731
    # the same content first, wherever order would put it
    got = matching.by_content(["b", "c"], ["a", "b", "c"], kinds[:2], kinds, never)
    assert got == [(0, 1), (1, 2)]
    # then alike texts of one kind, then (order) what is left of one kind in order
    only = {(1, 1)}
    left, right = ["x", "y"], ["u", "v", "w"]
    got = matching.by_content(left, right, kinds[:2], kinds, lambda i, j: (i, j) in only)
    assert got == [(1, 1)]
    got = matching.by_content(left, right, kinds[:2], kinds, never, order=True)
    assert got == [(0, 0), (1, 1)]
    # never nodes of another kind, nor those of none (None)
    assert matching.by_content(["x"], ["u"], ["p"], ["h"], never, order=True) == []
    assert matching.by_content(["x"], ["u"], [None], [None], never, order=True) == []


async def test_many_paragraphs_made_again_are_paired_in_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restore that makes 400 paragraphs again: each paired with its own (by order,
    past 256 x 256 pairs, none was: all were the restorer's), the event loop turning
    between them in a sliced fold, to the same blame as a fold in one piece."""
    doc: Doc[Any] = Doc()
    log = Log(doc)
    root = doc.get(ROOT, type=XmlFragment)
    for k in range(400):
        log.by(("ann", "bob", "carol")[k % 3])
        root.children.append(_para(f"Paragraph {k} by {log.actor}."))  # k + 1
    log.by("dave")
    with doc.transaction():  # 401
        del root.children[0:400]
        root.children.append(_para("Dave's."))
    _restore(log, root, 400, "eve")  # 402
    whole = AttributionIndex("d", {ROOT: XML})
    whole.fold(log.events)
    nodes = whole.xml[ROOT].blame(whole.seq, whole.actors, whole.first, root)
    for k, n in enumerate(nodes[1:], 1):
        assert n["children"][0]["runs"] == [
            {"text": f"Paragraph {k} by {('ann', 'bob', 'carol')[k % 3]}.",
             "actor": ("ann", "bob", "carol")[k % 3], "seq": k + 1}
        ]  # fmt: skip

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    turns: list[int] = []
    copy_children = attribution_xml.copy_children

    def spy(*args: Any) -> Iterator[None]:
        start = ticks
        yield from copy_children(*args)
        turns.append(ticks - start)

    monkeypatch.setattr(attribution_xml, "copy_children", spy)
    monkeypatch.setattr(attribution, "SLICE_SECONDS", 0.0)  # a turn at every pause
    sliced = AttributionIndex("d", {ROOT: XML})
    task = asyncio.create_task(ticker())
    try:
        await sliced.fold_sliced(log.events)
    finally:
        task.cancel()
    assert sliced.xml[ROOT].blame(sliced.seq, sliced.actors, sliced.first, root) == nodes
    assert turns and max(turns) >= 399
