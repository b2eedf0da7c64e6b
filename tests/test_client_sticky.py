"""client.Text.sticky: a position that stays at its place, in code points, for any text.

pycrdt 0.14.13's StickyIndex counts a text item's clocks (UTF-16 code units) as UTF-8
bytes: inside a run of non-ASCII text it anchored to the wrong character (a token
inserted at ``spot.index`` landed a place off after the next edit), and reading it, or
making it at the end of the text, panicked (``pyo3_runtime.PanicException: called
Option::unwrap() on a None value``, a BaseException): ``Text.sticky(pos, Assoc.BEFORE)``
after "é" was typed before "Intro", as docs/client.md shows it. The spot is now moved by
the text's own changes (their deltas), whoever made them.

The rule every test here checks (docs/client.md): text inserted at the spot goes before
it with ``Assoc.AFTER`` and after it with ``Assoc.BEFORE``; a deletion around it moves
it to where the deleted text was.
"""

from __future__ import annotations

import gc
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Assoc, Doc
from pycrdt import Text as YText
from serverproc import ServerProcess

from palimpsest import client
from palimpsest.client import Text

ALPHABET = "abc xyz\n" + "éü" + "✓→中文" + "🌍𝄞"  # 1-, 2-, 3- and 4-byte UTF-8
ASSOCS = [Assoc.AFTER, Assoc.BEFORE]


def text_of(doc: Doc[Any]) -> Text:
    return Text(doc.get("content", type=YText))


def moved(at: int, assoc: Assoc, pos: int, length: int, s: str) -> int:
    """Where a spot at `at` goes when `length` characters at `pos` are replaced by `s`."""
    if pos < at:
        at -= min(length, at - pos)
    if s and (pos < at or (pos == at and assoc == Assoc.AFTER)):
        at += len(s)
    return at


def sync(a: Doc[Any], b: Doc[Any]) -> None:
    """Exchange what each lacks of the other (both ways)."""
    ua = a.get_update(b.get_state())
    ub = b.get_update(a.get_state())
    b.apply_update(ua)
    a.apply_update(ub)


@pytest.mark.parametrize(
    ("first", "second", "pos"),
    [("Intro", "é", 2), ("Intro. Outro.", "ÄÖ ", 3), ("x", "中文字", 2), ("x", "a😀bc", 3)],
)
@pytest.mark.parametrize("assoc", ASSOCS)
def test_the_field_testers_cases_read_and_stay_put(
    first: str, second: str, pos: int, assoc: Assoc
) -> None:
    """The field tester's: "Intro", then "é" before it; a spot at 2 with BEFORE panicked
    as its index was read (AFTER at the end of such a text panicked as it was made)."""
    doc: Doc[Any] = Doc()
    t = text_of(doc)
    t.insert(0, first)
    t.insert(0, second)
    before = str(t)
    spots = {p: t.sticky(p, assoc) for p in range(len(before) + 1)}
    assert {p: s.index for p, s in spots.items()} == {p: p for p in spots}
    t.insert(pos, "X")
    assert str(t) == before[:pos] + "X" + before[pos:]
    for p, spot in spots.items():
        assert spot.index == moved(p, assoc, pos, 0, "X"), (p, str(t))


@pytest.mark.parametrize("assoc", ASSOCS)
def test_a_spot_in_one_run_of_non_ascii_text_anchors_to_its_own_character(
    assoc: Assoc,
) -> None:
    """Inside one item "aé中😀bc" (one insert), at every position: what is inserted at
    the spot goes on the side its assoc says, and one insertion at it after another
    stays in order (AFTER: a bot's tokens; BEFORE: each before the last)."""
    base = "aé中😀bc"
    for pos in range(len(base) + 1):
        doc: Doc[Any] = Doc()
        t = text_of(doc)
        t.insert(0, base)
        spot = t.sticky(pos, assoc)
        for tok in ("<1>", "<2>", "<3>"):
            t.insert(spot.index, tok)
        toks = "<1><2><3>" if assoc == Assoc.AFTER else "<3><2><1>"
        assert str(t) == base[:pos] + toks + base[pos:], pos
        assert spot.index == pos + (len(toks) if assoc == Assoc.AFTER else 0)


@pytest.mark.parametrize("assoc", ASSOCS)
def test_random_edits_by_two_writers_move_spots_as_the_rule_says(assoc: Assoc) -> None:
    """Non-ASCII text typed, deleted and replaced at random, here (through Text) and by
    another writer whose updates come in (one at a time: each lands where it was
    typed); spots at random places, each read after every edit, never off."""
    rng = random.Random(11 + int(assoc))
    here: Doc[Any] = Doc()
    there: Doc[Any] = Doc()
    t, other = text_of(here), text_of(there)
    t.insert(0, "Intro é 中文 🌍 end")
    sync(here, there)
    model = str(t)
    spots: list[tuple[Any, int]] = []
    for step in range(1500):
        if len(spots) < 8 and rng.random() < 0.05:
            at = rng.randint(0, len(model))
            spots.append((t.sticky(at, assoc), at))
        pos = rng.randint(0, len(model))
        length = rng.randint(0, min(3, len(model) - pos)) if rng.random() < 0.4 else 0
        s = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4)))
        if not length and not s:
            s = "é"
        if rng.random() < 0.5:
            t.replace(pos, length, s)
        else:
            sync(here, there)  # (what it has not seen yet of ours)
            other.replace(pos, length, s)
            sync(here, there)
        model = model[:pos] + s + model[pos + length :]
        spots = [(spot, moved(at, assoc, pos, length, s)) for spot, at in spots]
        assert str(t) == model
        for spot, at in spots:
            assert spot.index == at, (step, at, spot.index, pos, length, s, model)


@pytest.mark.parametrize("assoc", ASSOCS)
@pytest.mark.parametrize("first", ["here", "there"])
def test_concurrent_inserts_at_the_spot_stay_on_their_side(assoc: Assoc, first: str) -> None:
    """Two writers insert at the spot's place before either sees the other's: whatever
    order Yjs gives them, an AFTER spot ends right before the character it was before,
    a BEFORE spot right after the one it was after."""
    base = "aé中😀bc"
    for pos in range(len(base) + 1):
        here: Doc[Any] = Doc()
        there: Doc[Any] = Doc()
        t, other = text_of(here), text_of(there)
        t.insert(0, base)
        sync(here, there)
        spot = t.sticky(pos, assoc)
        at = pos
        for _ in range(2):  # (the second time among the first ones)
            if first == "here":
                t.insert(at, "L")
                other.insert(at, "RR")
            else:
                other.insert(at, "RR")
                t.insert(at, "L")
            sync(here, there)
            merged = str(t)
            assert str(other) == merged
            if assoc == Assoc.AFTER:
                want = merged.index(base[pos]) if pos < len(base) else len(merged)
            else:
                want = merged.index(base[pos - 1]) + 1 if pos else 0
            assert spot.index == want, (pos, merged, spot.index)
            at = spot.index


def test_the_character_next_to_it_deleted() -> None:
    """The character a spot sticks to deleted (here or by another writer): the spot is
    where it was, and stays on its side of what is inserted there then; at 0 a BEFORE
    spot stays first, at the end an AFTER spot stays last."""
    here: Doc[Any] = Doc()
    there: Doc[Any] = Doc()
    t, other = text_of(here), text_of(there)
    t.insert(0, "aé中😀bc")
    sync(here, there)
    after, before = t.sticky(3, Assoc.AFTER), t.sticky(3, Assoc.BEFORE)  # around 😀
    first, last = t.sticky(0, Assoc.BEFORE), t.sticky(len(t), Assoc.AFTER)
    other.delete(2, 2)  # 中😀, by the other writer
    sync(here, there)
    assert str(t) == "aébc" and after.index == before.index == 2
    t.insert(2, "Z")
    assert (before.index, after.index) == (2, 3)
    t.insert(0, "é")
    t.append("🌍")
    assert str(t) == "éaéZbc🌍"
    assert (first.index, before.index, after.index, last.index) == (0, 3, 4, 7)
    t.delete(0, len(t))
    assert {s.index for s in (first, before, after, last)} == {0}
    t.insert(0, "中")
    assert (first.index, before.index, after.index, last.index) == (0, 0, 1, 1)


def test_tokens_inserted_at_a_spot_inside_one_transaction_stay_in_order() -> None:
    """A bot that writes its tokens in one transaction of its own: each reads the spot
    moved by the ones before (the document's observers only run as it commits)."""
    doc: Doc[Any] = Doc()
    t = text_of(doc)
    t.insert(0, "é[]")
    spot = t.sticky(2)
    with doc.transaction():
        for tok in ("α", "β", "γ"):
            t.insert(spot.index, tok)
        inside = t.sticky(spot.index, Assoc.BEFORE)  # made inside: its edits before it
    assert str(t) == "é[αβγ]"
    assert (spot.index, inside.index) == (5, 5)
    t.insert(5, "!")
    assert (spot.index, inside.index) == (6, 5)


def test_a_spot_holds_nothing_of_its_text_alive() -> None:
    """Spots are moved by one observer per text that holds them weakly: a spot dropped is
    freed, and a detached text (its session closed) stops moving them."""
    doc: Doc[Any] = Doc()
    t = text_of(doc)
    t.insert(0, "ü")
    spot = t.sticky(1)
    t.insert(0, "é")
    assert spot.index == 2
    del spot
    gc.collect()
    t.insert(0, "x")  # (no spot left to move)
    kept = t.sticky(0, Assoc.BEFORE)
    t.detach()
    t.insert(0, "y")
    assert str(t) == "yxéü" and kept.index == 0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(tmp_path / "server") as srv:
        yield srv


async def test_sessions_typing_non_ascii_at_and_around_a_bots_spots(server: ServerProcess) -> None:
    """The field tester's script on a real server: a bot's session writes "Intro. Outro."
    then "ÄÖ " before it, makes a spot of each kind at 3 and types at them while another
    user's session types "é中🌍" before, at and after them; both spots follow, nothing
    panics, and both sessions end with the same text."""
    async with (
        client.connect(server.ws_url, "spot", user="bot") as bot,
        client.connect(server.ws_url, "spot", user="human") as human,
    ):
        t, h = bot.text(), human.text()
        t.insert(0, "Intro. Outro.")
        t.insert(0, "ÄÖ ")
        await bot.flush()
        await human.wait_for(lambda: str(h) == "ÄÖ Intro. Outro.")
        after, before = t.sticky(3, Assoc.AFTER), t.sticky(3, Assoc.BEFORE)
        for i in range(4):
            h.insert(0, "é")
            h.insert(str(h).index("Intro"), "中")  # at the spots' place
            h.append("🌍")
            t.insert(after.index, f"<{i}>")
            t.insert(before.index, f"[{i}]")
            await bot.flush()
            await human.flush()

            def done(s: client.Text, i: int = i) -> bool:
                text = str(s)
                return text.count("🌍") == i + 1 and f"[{i}]" in text and f"<{i}>" in text

            await bot.wait_for(lambda: done(t))
            await human.wait_for(lambda: done(h))
            assert str(t) == str(h)
            text = str(t)
            # the spots sit on either side of what was typed at them: BEFORE right after
            # "ÄÖ ", AFTER right before "Intro"
            assert text[: before.index].endswith("ÄÖ "), (before.index, text)
            assert text[after.index :].startswith("Intro"), (after.index, text)
            between = text[before.index : after.index].replace("中", "")
            tokens = "".join(f"[{j}]" for j in range(i, -1, -1))
            tokens += "".join(f"<{j}>" for j in range(i + 1))
            assert between == tokens, text
        text = str(t)
        assert text.replace("中", "").startswith("é" * 4 + "ÄÖ [3][2][1][0]<0>"), text
        assert text.replace("中", "").endswith("<3>Intro. Outro." + "🌍" * 4), text
        assert text.count("中") == 4, text
