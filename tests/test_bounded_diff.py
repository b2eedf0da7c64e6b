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
from typing import Any

import httpx
import pytest
from conftest import RunningServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from palimpsest.history import bounded_diff
from palimpsest.history.bounded_diff import (
    BUDGET,
    PAIR,
    SMALL,
    Budget,
    coarsened,
    opcodes,
    text_opcodes,
)
from palimpsest.history.render import string_opcodes
from palimpsest.history.restore import CHANGE_COST, set_text


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


class Metered(Budget):
    """A budget that remembers what was taken of it."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    def take(self, units: int) -> bool:
        ok = super().take(units)
        self.taken += units if ok else 0
        return ok


@pytest.fixture
def difflib_work(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """What each difflib run of bounded_diff walks (its pairs of equal elements and its
    elements: what the budget charges for it); difflib itself runs as ever."""
    runs: list[int] = []

    class Counted(difflib.SequenceMatcher):  # type: ignore[type-arg]
        def __init__(self, junk: None, a: list[str], b: list[str], autojunk: bool) -> None:
            runs.append(bounded_diff._pairs(a, b) + len(a) + len(b))
            super().__init__(junk, a, b, autojunk=autojunk)

    monkeypatch.setattr(bounded_diff.difflib, "SequenceMatcher", Counted)
    return runs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(hostile_cases()))
def test_the_text_diff_levels_stay_within_the_budget(name: str, difflib_work: list[int]) -> None:
    """Lines, tokens, characters and the pairs of lines: every difflib run of every level
    was paid for out of the one budget, and no more pairs of lines were looked at than it
    pays for; what is left past it is replaced whole, in few opcodes."""
    a, b = hostile_cases()[name]
    budget = Metered()
    ops = text_opcodes(a, b, budget)
    applies(a, b, ops)
    assert budget.taken <= BUDGET
    assert sum(difflib_work) <= budget.taken, (sum(difflib_work), budget.taken)
    assert all(n <= 2 * SMALL + BUDGET for n in difflib_work)
    # each opcode but the first few comes from a difflib run or a pair of lines paid for
    assert len(ops) <= 8 + 3 * (budget.taken // PAIR), len(ops)


def test_a_spent_budget_replaces_a_text_whole() -> None:
    t = "".join(f"line {k}: teh text\n" for k in range(2000))
    ops = text_opcodes(t, t.replace("teh", "the"), Budget(0))
    assert [op[0] for op in ops] == ["replace"]


def typo_fix(n: int) -> tuple[str, str]:
    t = "".join(f"line {k}: teh human wrote this sentence carefully.\n" for k in range(n))
    return t, t.replace("teh", "the")


@pytest.mark.parametrize("n", [10, 40, 2000, 10_000])
def test_a_fix_in_every_line_changes_only_the_fixes(n: int, difflib_work: list[int]) -> None:
    a, b = typo_fix(n)
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    changed = sum(i2 - i1 for t, i1, i2, _, _ in ops if t != "equal")
    # difflib makes "teh" "the" by one inserted "h" and one deleted: two a line at most
    assert changed <= 2 * n, (changed, ops[:6])
    assert sum(difflib_work) <= BUDGET


@pytest.mark.parametrize(
    "case",
    ["one line", "by lines", "unaligned lines", "words in a line"],
)
def test_texts_past_a_few_kb_keep_what_did_not_change(case: str) -> None:
    paste = "the model says hi " * 417
    lines = [f"row {k} of {k * 7 % 13} things, say {k * k}\n" for k in range(3000)]
    if case == "one line":  # a long paste taken out of the middle of a line
        a, b = "Intro [[" + paste + "]] HUMAN: hA0hA1 end", "Intro [[]] HUMAN: end"
        gone = len(paste) + len("hA0hA1 ")
    elif case == "by lines":  # a line changed here and there, one line removed
        c = list(lines)
        for k in range(0, 3000, 7):
            c[k] = c[k].replace("things", "items")
        del c[1500]
        a, b = "".join(lines), "".join(c)
        gone = len(lines[1500]) + 2 * len("things") * (3000 // 7 + 1)
    elif case == "unaligned lines":  # each line edited, and a line added at the top
        a = "".join(lines[:200])
        b = "new first line\n" + a.replace("things", "thing")
        gone = len("new first line\n") + 200
    else:  # one line of 12,000 words, a word in ten changed
        words = [f"w{k}" for k in range(12_000)]
        c = [w + "x" if k % 10 == 0 else w for k, w in enumerate(words)]
        a, b = " ".join(words), " ".join(c)
        gone = 1200
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    changed = max(
        sum(i2 - i1 for t, i1, i2, _, _ in ops if t != "equal"),
        sum(j2 - j1 for t, _, _, j1, j2 in ops if t != "equal"),
    )
    assert changed <= gone, (changed, gone)


def test_coarsened_joins_across_the_shortest_kept_spans() -> None:
    # (a kept span of one character inside a word, between changes of one, would be
    # folded by the character diff itself: bounded_diff._folded; two characters stay)
    a = "x" * 10 + "a" + "yy" + "b" + "z" * 30 + "c" + "w" * 10
    b = "x" * 10 + "A" + "yy" + "B" + "z" * 30 + "C" + "w" * 10
    ops = text_opcodes(a, b)
    assert sum(op[0] != "equal" for op in ops) == 3
    assert coarsened(ops, 3) == ops
    two = coarsened(ops, 2)
    applies(a, b, two)
    # the two-character span went, the 30-character one stayed
    assert [op[0] for op in two] == ["equal", "replace", "equal", "replace", "equal"]
    assert two[1][1:3] == (10, 14) and two[2][2] - two[2][1] == 30
    one = coarsened(ops, 1)
    applies(a, b, one)
    assert [op[0] for op in one] == ["equal", "replace", "equal"]


def yjs_changes(n: int, every: int) -> tuple[str, str, int]:
    """set_text of a typo fix in one line in `every` of `n` on a real Yjs text: the
    text, what it became, and how many insertions and deletions it took."""
    t, _ = typo_fix(n)
    lines = t.splitlines(keepends=True)
    new = "".join(ln.replace("teh", "the") if k % every == 0 else ln for k, ln in enumerate(lines))
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    text += t
    deltas: list[Any] = []
    text.observe(lambda e: deltas.extend(e.delta))
    with doc.transaction():
        set_text(text, new)
    assert str(text) == new
    return t, new, sum(1 for d in deltas if "retain" not in d)


def test_set_text_makes_each_fix_of_a_large_text_by_itself() -> None:
    t, _, changes = yjs_changes(2000, 1)
    assert 2000 <= changes <= 4000  # ("teh" -> "the": an "h" in, an "h" out, or "eh" -> "he")


def test_set_text_joins_changes_past_its_cost() -> None:
    t, _, changes = yjs_changes(20_000, 1)
    assert changes <= 2 * (CHANGE_COST // len(t))  # (a joined change: a delete and an insert)
    t, _, changes = yjs_changes(20_000, 100)  # 200 fixes: within the cost
    assert 200 <= changes <= 400


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(alphabet="aé€😀\n b", max_size=40), st.text(alphabet="aé€😀\n b", max_size=40))
def test_set_text_makes_a_yjs_text_the_target(a: str, b: str) -> None:
    """The changes made from the start, their offsets (pycrdt's: UTF-8 bytes) moved by
    those before, on texts of characters of one to four bytes."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    text += a
    with doc.transaction():
        set_text(text, b)
    assert str(text) == b


def changes(a: str, b: str, ops: list[tuple[str, int, int, int, int]]) -> list[tuple[str, str]]:
    """What each opcode not equal takes out of `a` and puts in from `b`."""
    return [(a[i1:i2], b[j1:j2]) for t, i1, i2, j1, j2 in ops if t != "equal"]


def test_a_rewrite_keeps_no_scattered_letters_of_the_old_words() -> None:
    """difflib matched a, n, s, e, r of "answer" inside "changed at source": a PUT of the
    rewrite kept them as the old writer's items, and a revert of that writer took them
    out of the new sentence ("Q1chged at ourc")."""
    a, b = "Q1 answer", "Q1 changed at source"
    for ops in (text_opcodes(a, b), string_opcodes(a, b)):
        applies(a, b, ops)
        assert ops == [("equal", 0, 3, 0, 3), ("replace", 3, 9, 3, 20)], ops
    # a sentence written over: a word both have stays (with the "t" of "sat" and "met"
    # next to it: a kept run is kept whole), the letters kept inside changed words go
    a, b = "I sat at home all day", "we met at noon for lunch"
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    assert changes(a, b, ops) == [("I sa", "we me"), ("home all day", "noon for lunch")], ops


def test_a_long_match_between_two_changes_stays() -> None:
    """A restore of the version before s05 deleted their paragraph: s06's paragraph,
    kept, lies between an insert of 20 characters and a delete of 37. The rule of
    diff-match-patch's semantic cleanup (an equality no longer than the changes on both
    sides is folded) re-wrote it, taking it from s06 and counting it as removed."""
    a = "[s06] My dog is Rex.\n LATE SENTENCE BY s06.\n s07 was here."
    b = "[s05] I like trees.\n[s06] My dog is Rex.\n"
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    assert changes(a, b, ops) == [
        ("", "5] I like trees.\n[s0"),
        (" LATE SENTENCE BY s06.\n s07 was here.", ""),
    ], ops
    # a short word between two changes is a real match too
    a, b = "one two three four", "five six three seven eight"
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    assert ("equal", 7, 14, 8, 15) in ops and a[7:14] == " three ", ops


def test_small_edits_stay_small() -> None:
    # a typo fix in a long sentence changes only inside the word
    a = "The quick brown fox jumps over teh lazy dog near the river bank today."
    b = a.replace("teh", "the")
    for ops in (text_opcodes(a, b), string_opcodes(a, b)):
        applies(a, b, ops)
        k = a.index("teh")
        assert all(k <= i1 and i2 <= k + 3 for t, i1, i2, _, _ in ops if t != "equal"), ops
    # two typos in a sentence: the words between them stay
    a, b = "Teh cat sat on teh mat.", "The cat sat on the mat."
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    assert any(t == "equal" and i1 <= 3 and 15 <= i2 for t, i1, i2, _, _ in ops), ops
    # a word changed at its end keeps its stem, a word inside a rewrite that is alike
    # keeps what it shares
    assert changes(
        "walked home", "walking home", string_opcodes("walked home", "walking home")
    ) == [("ed", "ing")]
    a, b = "a colour and a shape", "the color and the form"
    ops = string_opcodes(a, b)
    applies(a, b, ops)
    assert ("u", "") in changes(a, b, ops), ops
    # one character inserted: one insert
    assert text_opcodes("hello world", "hello, world") == [
        ("equal", 0, 5, 0, 5),
        ("insert", 5, 5, 5, 6),
        ("equal", 5, 11, 6, 12),
    ]
    # an equality longer than the changes on one side stays
    assert text_opcodes("xx abcdef yy", "zz abcdef ww") == [
        ("replace", 0, 2, 0, 2),
        ("equal", 2, 10, 2, 10),
        ("replace", 10, 12, 10, 12),
    ]


words = st.lists(
    st.sampled_from(["a", "b", "ab", "ba", " ", "\n", "abc", "é", "🙂", ".", "cab "]), max_size=80
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(words, words)
def test_folded_opcodes_still_turn_one_text_into_the_other(a: list[str], b: list[str]) -> None:
    """The character opcodes after the fold: contiguous, covering both texts, their equal
    spans equal; and no equality left between two changes that holds no whole word and
    is no longer than the changes on each side of it (each side counted as the larger of
    deleted and inserted)."""
    x, y = "".join(a), "".join(b)
    for ops in (text_opcodes(x, y), string_opcodes(x, y)):
        applies(x, y, ops)
        for k in range(1, len(ops) - 1):
            tag, i1, i2, j1, j2 = ops[k]
            if tag == "equal":
                left, right = ops[k - 1], ops[k + 1]
                assert left[0] != "equal" and right[0] != "equal", ops
                side = lambda op: max(op[2] - op[1], op[4] - op[3])  # noqa: E731
                short = i2 - i1 <= side(left) and i2 - i1 <= side(right)
                assert not short or bounded_diff._holds_word(
                    x, y, i1, i2, j1, j2, bounded_diff.is_word
                ), ops
