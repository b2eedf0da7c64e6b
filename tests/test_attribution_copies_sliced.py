"""A long copy (the undo of a restore that took out half a book) is matched with the text
it brings back in slices, the event loop turning between them, and to the same writers.

On a 1.26 M-character book, the background refresh of the attribution index after the
room unloaded matched the undo's 0.6 M copied characters with the deleted text in one
piece: 3-6 s during which no room was served (docs/history.md). The checks count turns
of the loop during the matching and compare blame, never time."""

from __future__ import annotations

import asyncio
import difflib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from pycrdt import Doc, Text, UndoManager
from test_attribution_copies import Log, _runs

from palimpsest.history import attribution
from palimpsest.history.attribution import AttributionIndex, Copies, TextTrack


def _long_undo() -> tuple[Log, str, int]:
    """ann and bob write WORDS words in turns, cy deletes most of it in three pieces
    (one event), and undoes it: a copy of ~100 KB. Returns the log, the text before the
    deletion and its seq."""
    doc: Doc[Any] = Doc()
    log = Log(doc)
    text = doc.get("t", type=Text)
    rng = random.Random(3)
    for i in range(3000):
        log.by("ann" if i % 7 < 4 else "bob")
        word = "".join(rng.choice("abcdefghij é") for _ in range(rng.randint(2, 40)))
        text.insert(len(text), word + " ")
    before, seq = str(text), len(log.events)
    log.by("cy")
    undo = UndoManager(scopes=[text], capture_timeout_millis=0)
    n = len(text)
    with doc.transaction():
        del text[n * 2 // 3 : n - 100]
        del text[n // 3 + 50 : n // 2]
        del text[10 : n // 3]
    log.by("cy", "undo", reverts=[seq + 1])
    undo.undo()
    assert str(text) == before
    return log, before, seq


@pytest.mark.parametrize("by_ids", [True, False])
async def test_a_long_copy_is_matched_in_slices_to_the_same_writers(
    monkeypatch: pytest.MonkeyPatch, by_ids: bool
) -> None:
    log, before, seq = _long_undo()
    whole = AttributionIndex("d", ["t"], by_ids=by_ids)
    whole.fold(log.events)  # (in one piece: the reference)
    expected = _runs(whole, "t", seq)
    assert "".join(t for t, _ in expected) == before
    assert {a for _, a in expected} == {"ann", "bob"}

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    turns: list[int] = []  # loop turns during each copy's matching
    match_steps = Copies.match_steps

    def spy(self: Copies, *args: Any) -> Iterator[None]:
        start = ticks
        yield from match_steps(self, *args)
        turns.append(ticks - start)

    monkeypatch.setattr(Copies, "match_steps", spy)
    monkeypatch.setattr(attribution, "SLICE_SECONDS", 0.0)  # a turn at every pause
    sliced = AttributionIndex("d", ["t"], by_ids=by_ids)
    task = asyncio.create_task(ticker())
    try:
        await sliced.fold_sliced(log.events)
    finally:
        task.cancel()
    assert sliced.seq == whole.seq and (sliced.by_ids > 0) == by_ids
    # the same writers as folded in one piece, and as before the deletion and its undo
    assert _runs(sliced, "t") == _runs(whole, "t") == expected
    assert sliced.blame("t", sliced.seq) == whole.blame("t", whole.seq)
    # the copy (three stretches, ~100 KB) was matched with the loop turning in between:
    # a pause at least every MATCH_STEP bytes
    assert max(turns) >= len(before.encode()) // 2 // attribution.MATCH_STEP


def _matched_before(new: bytes, old: bytes) -> list[tuple[int, int, int]]:
    """attribution._matched as it was in one piece (the model)."""
    part = old.find(new)
    if part >= 0:
        return [(0, part, len(new))]
    blocks: list[tuple[int, int, int]] = []
    bounds = [k for k in range(len(new)) if new[k] & 0xC0 != 0x80] + [len(new)]
    c = cursor = work = 0
    while c < len(bounds) - 1 and work < attribution.COPY_WORK * 16:
        i = bounds[c]
        lo, hi = c, len(bounds) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            work += len(old) - cursor
            if old.find(new[i : bounds[mid]], cursor) >= 0:
                lo = mid
            else:
                hi = mid - 1
        if lo == c:
            c += 1
            continue
        n = bounds[lo] - i
        at = old.find(new[i : i + n], cursor)
        blocks.append((i, at, n))
        cursor, c = at + n, lo
    if sum(n for _, _, n in blocks) == len(new):
        return blocks
    a, b = attribution._chars(new), attribution._chars(old)
    if len(a) * len(b) > attribution.COPY_WORK:
        return blocks
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    a_at, b_at = attribution._offsets(a), attribution._offsets(b)
    return [(a_at[i], b_at[j], a_at[i + n] - a_at[i]) for i, j, n in sm.get_matching_blocks() if n]


def test_matching_in_steps_finds_the_same_blocks() -> None:
    rng = random.Random(5)
    alphabets = ("ab", "abc xyz", "aé€🌍 b")
    for case in range(400):
        letters = alphabets[case % 3]
        old = "".join(rng.choice(letters) for _ in range(rng.randint(0, 300)))
        parts = []
        for _ in range(rng.randint(1, 5)):  # pieces of old, in order or not, and new text
            lo = rng.randint(0, len(old))
            parts.append(old[lo : lo + rng.randint(0, 80)])
            if rng.random() < 0.5:
                parts.append("".join(rng.choice(letters + "QZ") for _ in range(rng.randint(1, 9))))
        if case % 50 == 0:  # long ones: past COPY_WORK, the parts found are the answer
            old, parts = old * 40, [p * 30 for p in parts]
        new_b, old_b = "".join(parts).encode(), old.encode()
        steps = attribution._matched_steps(new_b, old_b)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                got = done.value
                break
        assert got == _matched_before(new_b, old_b) == attribution._matched(new_b, old_b)


def test_a_note_of_many_writers_in_steps_is_the_same() -> None:
    writers = [1] * 40_000 + [2] * 3 + [1] * 20_000
    a, b = TextTrack(), TextTrack()
    a.note_moved(100, writers, copy=True)
    steps = list(b.note_moved_steps(100, writers, copy=True))
    assert len(steps) >= len(writers) // attribution.MATCH_STEP
    assert a.moved == b.moved == [[100, 40_000, 1, 1], [40_100, 3, 2, 1], [40_103, 20_000, 1, 1]]
