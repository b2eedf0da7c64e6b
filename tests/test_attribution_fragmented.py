"""One update that deletes every other character of a long text (a replace-all does the
like): blame and diff answer it right, at a cost linear in its ops, and the fold gives
the event loop its turns inside that one event.

It held the loop for seconds, on every diff: each op of the event's text delta found its
position by scanning its block's runs from the first (and every block from the first
after each block split), by ids each block split numbered every block again, and the
event was folded in one piece. The checks here count the runs looked at and the loop's
turns during the fold, never time."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
import websockets
from conftest import RunningServer, eventually
from pycrdt import Doc, Text

from palimpsest.history import history_of
from palimpsest.history.attribution import DELTA_STEP, AttributionIndex
from palimpsest.store.base import Event

N = 30_000


def _vu(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fragmenting_updates(n: int) -> tuple[bytes, bytes]:
    """An insert of n characters ("abab..."), and one update whose delete set takes out
    every other one (each "b": n/2 ranges of one)."""
    d: Doc[Any] = Doc()
    d.get("content", type=Text).insert(0, "ab" * (n // 2))
    ranges = b"".join(_vu(c) + _vu(1) for c in range(1, n, 2))
    return d.get_update(), _vu(0) + _vu(1) + _vu(d.client_id) + _vu(n // 2) + ranges


def _frame(update: bytes) -> bytes:  # y-websocket: sync message, update, its bytes
    return b"\x00\x02" + _vu(len(update)) + update


def _expected_diff(n: int) -> list[dict[str, Any]]:
    return [
        op
        for _ in range(n // 2)
        for op in (
            {"op": "equal", "text": "a", "actor": None, "seq": None},
            {"op": "delete", "text": "b", "actor": "mallory", "seq": 2},
        )
    ]


async def test_a_fragmenting_update_is_blamed_and_diffed_right_in_linear_work(
    server: RunningServer,
) -> None:
    doc = "fragmented"
    up1, up2 = fragmenting_updates(N)
    async with websockets.connect(f"{server.ws_url}/{doc}?user=mallory", max_size=None) as ws:
        await ws.send(_frame(up1))
        await ws.send(_frame(up2))
        store = server.backend.store

        async def logged() -> bool:
            info = await store.doc_info(doc)
            return info is not None and info.head == 2

        await eventually(logged, what="both updates logged")
    history = history_of(server.backend)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        # no index yet: the range diff folds event 2 on a version-1 document, by deltas
        r = await http.get(f"/api/docs/{doc}/diff", params={"from": 1, "to": 2})
        assert r.status_code == 200, r.text
        assert r.json()["roots"]["content"]["ops"] == _expected_diff(N)
        assert history.attribution.peek(doc) is None
        # blame builds the index (by ids), folding the event in slices
        r = await http.get(f"/api/docs/{doc}/blame")
        assert r.status_code == 200, r.text
        [run] = r.json()["roots"]["content"]["runs"]
        assert run == {"text": "a" * (N // 2), "actor": "mallory", "seq": 1}
        index = history.attribution.peek(doc)
        assert index is not None and index.seq == 2 and index.by_ids == 2
        # the loop had its turns inside the event: a pause every DELTA_STEP ranges
        assert index.slices >= N // 2 // DELTA_STEP
        r = await http.get(f"/api/docs/{doc}/diff", params={"from": 1, "to": 2})
        assert r.json()["roots"]["content"]["ops"] == _expected_diff(N)


def _events(n: int) -> list[Event]:
    up1, up2 = fragmenting_updates(n)
    return [
        Event(doc="d", seq=1, ts=0, actor="w", kind="edit", update=up1, meta={}),
        Event(doc="d", seq=2, ts=0, actor="w", kind="edit", update=up2, meta={}),
    ]


async def test_one_event_of_many_ops_is_folded_in_slices_in_linear_work() -> None:
    """By deltas (a range diff's fold, an index read back and extended): the runs
    looked at are a few per op (they were ~BLOCK per op, and every block after each block
    split), and the loop turns while the one event is half folded."""
    n = 20_000
    events = _events(n)
    for by_ids in (False, True):
        index = AttributionIndex("d", ["content"], by_ids=by_ids)
        index.fold(events[:1])
        folding = asyncio.create_task(index.fold_sliced(events[1:]))
        mid_event = 0  # the loop's turns while the one event is half folded
        while not folding.done():
            if index._cur == 2 and index.seq == 1:
                mid_event += 1
            await asyncio.sleep(0)
        await folding
        assert index.seq == 2 and index.text_at("content", 2) == "a" * (n // 2)
        assert index.text_at("content", 1) == "ab" * (n // 2)
        assert mid_event >= 2, (by_ids, mid_event)
        track = index.tracks["content"]
        if not by_ids:
            assert track.steps <= 8 * n, track.steps
        assert index.diff("content", 1, 2) == [
            {**op, "actor": "w" if op["actor"] else None} for op in _expected_diff(n)
        ]


def test_many_ops_per_delta_fold_as_the_document_has_them() -> None:
    """Transactions of many inserts and deletes in document order, folded by deltas and
    by ids: every version's text is the document's, and the two folds blame alike (the
    point each op is found at resumes from the last one's)."""
    rng = random.Random(7)
    d: Doc[Any] = Doc()
    t = d.get("content", type=Text)
    events, texts = [], {}
    seq = 0

    def on_update(e: Any) -> None:
        events.append(
            Event(
                doc="d", seq=seq, ts=0, actor=f"u{seq % 3}", kind="edit", update=e.update, meta={}
            )
        )

    sub = d.observe(on_update)
    for seq in range(1, 120):
        with d.transaction():
            pos = 0
            for _ in range(rng.randint(1, 60)):
                n = len(t)
                pos = rng.randint(min(pos, n), n) if n else 0
                if n and pos < n and rng.random() < 0.5:
                    del t[pos : pos + min(n - pos, rng.randint(1, 5))]
                else:
                    word = rng.choice(["x", "yz", "hello", "\n", "abc"])
                    t.insert(pos, word)
                    pos += len(word)
        texts[seq] = str(t)
    d.unobserve(sub)
    folds = []
    for by_ids in (False, True):
        index = AttributionIndex("d", ["content"], by_ids=by_ids)
        index.fold(events)
        for s, text in texts.items():
            assert index.text_at("content", s) == text, (by_ids, s)
        folds.append([index.blame("content", s) for s in (30, 80, 119)])
    assert folds[0] == folds[1]


async def test_the_copies_of_one_restore_are_matched_in_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restore (or an undo) that brings back many deleted stretches has each copy
    matched with the text it copies: a 1.3 MB manuscript's restore took 0.8 s of such
    matching in one piece on the event loop while a refresh extended its index. By
    deltas (an index read back and extended), the loop turns between the stretches,
    and the words brought back are still their writer's."""
    from palimpsest.history import attribution

    monkeypatch.setattr(attribution, "SLICE_SECONDS", 0.0)
    words = 300
    d: Doc[Any] = Doc(client_id=1)
    t = d.get("content", type=Text)
    updates: list[bytes] = []
    sub = d.observe(lambda e: updates.append(e.update))
    t += "".join(f"w{i:03d} " for i in range(words))
    with d.transaction():  # bob deletes every other word, from the end
        for i in reversed(range(0, words, 2)):
            del t[i * 5 : i * 5 + 5]
    back: Doc[Any] = Doc(client_id=2)  # the restore's, as the server makes it
    back.apply_update(d.get_update())
    d.unobserve(sub)
    tb = back.get("content", type=Text)
    sub = back.observe(lambda e: updates.append(e.update))
    with back.transaction():
        for i in range(0, words, 2):
            tb.insert(i * 5, f"w{i:03d} ")
    back.unobserve(sub)
    kinds = [("ann", "edit", {}), ("bob", "edit", {}), ("ed", "restore", {"restores": 1})]
    events = [
        Event(doc="d", seq=k + 1, ts=0, actor=a, kind=kind, update=u, meta=m)
        for k, ((a, kind, m), u) in enumerate(zip(kinds, updates, strict=True))
    ]
    index = AttributionIndex("d", ["content"], by_ids=False)
    index.fold(events[:2])
    folding = asyncio.create_task(index.fold_sliced(events[2:]))
    mid_event = 0  # the loop's turns while the restore is half folded
    while not folding.done():
        if index._cur == 3 and index.seq == 2:
            mid_event += 1
        await asyncio.sleep(0)
    await folding
    assert index.text_at("content", 3) == str(tb) == index.text_at("content", 1)
    assert mid_event >= words // 2, mid_event
    assert {(r["actor"], r["seq"]) for r in index.blame("content", 3)} == {("ann", 1)}
