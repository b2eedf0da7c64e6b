"""The attribution index's run structure against a plain model, on random edits, and on
pycrdt's real text deltas (including non-ASCII text and several text roots)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import Doc, Text

import palimpsest.history.attribution as A
from palimpsest.store.base import Event


@pytest.mark.parametrize("block", [2, 64])
def test_runs_equal_a_plain_model_at_every_seq(block: int, monkeypatch: Any) -> None:
    monkeypatch.setattr(A, "BLOCK", block)  # tiny blocks: many splits and cross-block deletes
    rng = random.Random(block)
    track = A.TextTrack()
    model = ""
    history = [""]
    owner: list[int] = []  # seq that inserted each byte of the model
    owners = [[]]
    for seq in range(1, 600):
        if model and rng.random() < 0.35:
            p = rng.randrange(len(model))
            n = rng.randint(1, min(len(model) - p, 30))
            track.apply_delta([{"retain": p}, {"delete": n}], seq)
            model = model[:p] + model[p + n :]
            owner = owner[:p] + owner[p + n :]
        else:
            p = rng.randint(0, len(model))
            s = "".join(rng.choice("abcxyz") for _ in range(rng.randint(1, 8)))
            track.apply_delta([{"retain": p}, {"insert": s}] if p else [{"insert": s}], seq)
            model = model[:p] + s + model[p:]
            owner = owner[:p] + [seq] * len(s) + owner[p:]
        history.append(model)
        owners.append(list(owner))
    index = A.AttributionIndex("m", [])
    index.tracks["t"] = track
    for seq in range(0, len(history), 7):
        assert index.text_at("t", seq) == history[seq]
        runs = index.blame("t", seq)
        assert [s for r in runs for s in [r["seq"]] * len(r["text"])] == owners[seq]
    for a, b in [(0, 599), (100, 350), (598, 599), (300, 300)]:
        ops = index.diff("t", a, b)
        assert "".join(o["text"] for o in ops if o["op"] != "delete") == history[b]
        assert "".join(o["text"] for o in ops if o["op"] != "insert") == history[a]


def test_real_deltas_non_ascii_and_two_text_roots() -> None:
    src: Doc[Any] = Doc(client_id=7)
    t1, t2 = src.get("content", type=Text), src.get("notes", type=Text)
    updates: list[bytes] = []
    src.observe(lambda e: updates.append(e.update))
    t1.insert(0, "héllo")
    t2.insert(0, "→ one")
    t1.insert(len(t1), " wörld 🎉")
    del t1[0:3]  # "hé" is 3 bytes
    with src.transaction():
        t1.insert(0, "Ç")
        t2.insert(len(t2), " two")
    events = [Event("d", i + 1, 0, f"u{i % 2}", "edit", u, {}) for i, u in enumerate(updates)]
    index = A.AttributionIndex("d", ["content", "notes"])
    index.fold(events)
    assert index.text_at("content", 5) == str(t1)
    assert index.text_at("notes", 5) == str(t2)
    assert index.text_at("content", 3) == "héllo wörld 🎉"
    runs = index.blame("content", 5)
    assert runs == [
        {"text": "Ç", "actor": "u0", "seq": 5},
        {"text": "llo", "actor": "u0", "seq": 1},
        {"text": " wörld 🎉", "actor": "u0", "seq": 3},
    ]
    ops = index.diff("content", 3, 4)
    assert ops[0] == {"op": "delete", "text": "hé", "actor": "u1", "seq": 4}
