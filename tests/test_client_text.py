"""client.Text: code-point positions over pycrdt's UTF-8 byte offsets."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import Doc
from pycrdt import Text as YText

from palimpsest.client import Text

ALPHABET = "abc xyz\n" + "éü" + "✓→" + "🌍𝄞"  # 1-, 2-, 3- and 4-byte UTF-8


def test_random_edits_match_a_python_string() -> None:
    rng = random.Random(7)
    doc: Doc[Any] = Doc()
    text = Text(doc.get("content", type=YText))
    model = ""
    for step in range(3000):
        pos = rng.randint(0, len(model))
        op = rng.random()
        if op < 0.5 or not model:
            s = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4)))
            if step < 1000:
                s = s.encode("ascii", "ignore").decode() or "a"  # an ASCII phase first
            text.insert(pos, s)
            model = model[:pos] + s + model[pos:]
        elif op < 0.8:
            n = rng.randint(0, len(model) - pos)
            text.delete(pos, n)
            model = model[:pos] + model[pos + n :]
        else:
            n = rng.randint(0, len(model) - pos)
            s = rng.choice(ALPHABET)
            text.replace(pos, n, s)
            model = model[:pos] + s + model[pos + n :]
        if step % 97 == 0:
            assert str(text) == model and len(text) == len(model)
    assert str(doc.get("content", type=YText)) == model == str(text)


def test_changes_made_elsewhere_are_seen() -> None:
    a: Doc[Any] = Doc()
    b: Doc[Any] = Doc()
    ta = Text(a.get("content", type=YText))
    tb = Text(b.get("content", type=YText))
    ta.insert(0, "hello")
    assert len(tb) == 0
    b.apply_update(a.get_update())
    assert tb == "hello" and len(tb) == 5
    raw = b.get("content", type=YText)
    raw.insert(0, "é")  # a direct pycrdt edit (byte offsets)
    assert tb == "éhello" and len(tb) == 6
    tb.insert(6, "!")
    assert str(raw) == "éhello!"


def test_set_keeps_unchanged_characters_and_checks_ranges() -> None:
    doc: Doc[Any] = Doc()
    text = Text(doc.get("content", type=YText))
    text.insert(0, "the quick brown fox")
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    assert 2 <= text.set("the quick red fox 🦊") <= 3
    assert text == "the quick red fox 🦊" and len(updates) == 1  # one transaction
    assert text.set("the quick red fox 🦊") == 0
    with pytest.raises(IndexError):
        text.delete(18, 5)
    with pytest.raises(IndexError):
        text.insert(-1, "x")
