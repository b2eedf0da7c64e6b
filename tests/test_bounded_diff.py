"""The diffs behind restore, PUT /text and the structural diffs do bounded work, whatever
the input, and stay right: their opcodes turn one side into the other, and on ordinary
inputs they are difflib's own.

difflib alone was quadratic on some inputs: 80 kB of repeated lines, rewritten, took
70 s on the event loop's thread (and a 1 MB body hours). The guards below are pytest
timeouts, tens of times the time the bounded diff takes: a return to quadratic work
fails them; nothing here compares timings."""

from __future__ import annotations

import difflib
import random

import httpx
import pytest
from conftest import RunningServer
from hypothesis import given, settings
from hypothesis import strategies as st

from palimpsest.history.bounded_diff import SMALL, Budget, opcodes
from palimpsest.history.render import string_opcodes


def applies(
    a: str | list[str], b: str | list[str], ops: list[tuple[str, int, int, int, int]]
) -> None:
    """The opcodes cover both sides in order, and their equal spans are equal."""
    i = j = 0
    for tag, i1, i2, j1, j2 in ops:
        assert (i1, j1) == (i, j), ops
        assert tag in ("equal", "replace", "delete", "insert"), tag
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
        i, j = i2, j2
    assert (i, j) == (len(a), len(b)), ops


texts = st.text(alphabet="ab\nc", max_size=300)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(texts, texts)
def test_string_opcodes_turn_one_text_into_the_other(a: str, b: str) -> None:
    applies(a, b, string_opcodes(a, b))


def trimmed_difflib(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """What string_opcodes always did: the common prefix and suffix, and difflib's
    opcodes for the span between them."""
    pre = 0
    while pre < min(len(a), len(b)) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(len(a), len(b)) - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    am, bm = a[pre : len(a) - suf], b[pre : len(b) - suf]
    ops = [("equal", 0, pre, 0, pre)] if pre else []
    if am and bm:
        sm = difflib.SequenceMatcher(None, am, bm, autojunk=False)
        ops += [
            (t, i1 + pre, i2 + pre, j1 + pre, j2 + pre) for t, i1, i2, j1, j2 in sm.get_opcodes()
        ]
    elif am or bm:
        tag = "delete" if am else "insert"
        ops.append((tag, pre, pre + len(am), pre, pre + len(bm)))
    if suf:
        ops.append(("equal", len(a) - suf, len(a), len(b) - suf, len(b)))
    return ops


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.sampled_from("abcdefg"), max_size=400),
    st.lists(st.sampled_from("abcdefg"), max_size=400),
)
def test_within_the_budget_the_opcodes_are_difflibs(a: list[str], b: list[str]) -> None:
    assert len(a) + len(b) <= SMALL
    mine = opcodes(a, b)
    applies(a, b, mine)
    assert mine == trimmed_difflib(a, b)


def hostile_cases() -> dict[str, tuple[str, str]]:
    rng = random.Random(7)
    n = 20_000
    lines = 250_000
    return {
        "repeated lines swapped (80 kB: 70 s with difflib alone)": (
            "x\n" * n + "y\n" * n,
            "y\n" * n + "x\n" * n,
        ),
        "random lines (1 MB)": (
            "".join(f"{rng.randrange(10**6)}\n" for _ in range(lines)),
            "".join(f"{rng.randrange(10**6)}\n" for _ in range(lines)),
        ),
        "four kinds of line (1 MB)": (
            "".join(rng.choice("abcd") + "\n" for _ in range(lines)),
            "".join(rng.choice("abcd") + "\n" for _ in range(lines)),
        ),
        "alternating characters": ("ab" * 1000, "ba" * 1000),
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(hostile_cases()))
def test_hostile_texts_are_diffed_in_bounded_work(name: str) -> None:
    a, b = hostile_cases()[name]
    applies(a, b, string_opcodes(a, b))


def test_an_ordinary_large_edit_keeps_what_did_not_change() -> None:
    rng = random.Random(3)
    base = [f"line {i} of the text\n" for i in range(30_000)]
    changed = list(base)
    for k in range(300):
        changed[rng.randrange(len(changed))] = f"changed {k}\n"
    a, b = "".join(base), "".join(changed)
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    kept = sum(i2 - i1 for t, i1, i2, _, _ in ops if t == "equal")
    # every line that was not replaced stays (300 replaced lines are at most ~7,000
    # characters; the line diff anchors on the unique lines around them)
    assert kept >= len(a) - 300 * len("line 29999 of the text\n"), (kept, len(a))


def test_a_spent_budget_replaces_the_rest_whole() -> None:
    a, b = list("xyxyxyxy" * 100), list("yxyxyxyx" * 100)
    ops = opcodes(a, b, Budget(0))
    applies(a, b, ops)
    assert [t for t, *_ in ops] in (["replace"], ["replace", "equal"], ["equal", "replace"])


@pytest.mark.timeout(120)
async def test_a_hostile_put_text_completes_and_is_right(server: RunningServer) -> None:
    a, b = hostile_cases()["repeated lines swapped (80 kB: 70 s with difflib alone)"]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        r = await http.put("/api/docs/hostile/text", json={"text": a})
        assert r.status_code == 200, r.text
        r = await http.put("/api/docs/hostile/text", json={"text": b})
        assert r.status_code == 200, r.text
        v = (await http.get("/api/docs/hostile/versions/head")).json()
        assert v["roots"]["content"]["value"] == b
        r = await http.post("/api/docs/hostile/restore", json={"seq": 1})
        assert r.status_code == 200, r.text
        v = (await http.get("/api/docs/hostile/versions/head")).json()
        assert v["roots"]["content"]["value"] == a
