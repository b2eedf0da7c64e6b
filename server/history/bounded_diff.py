"""Sequence diffs whose work is bounded, whatever the input.

difflib's SequenceMatcher (``autojunk=False``, which keeps blank lines and common
characters matchable) does work that grows with the pairs of equal elements and with
how often it rescans the spans between its matches: a text of many repeated lines
rewritten took 70 s for 80 kB, and random short lines 3 s for 1 MB, on the event loop's
thread (a write of a text whole, a restore, a diff of an XML or array root). So:

- the common prefix and suffix are trimmed first (linear);
- difflib runs on what is left when it is small (``SMALL`` elements) and its pairs of
  equal elements fit the budget; it gives the result it always gave there;
- a longer span is cut at its anchors, elements that occur once in each side, in an
  order both sides share (the longest such run: patience diff), and each gap between
  anchors is diffed the same way;
- once the budget (``BUDGET`` element comparisons) is spent, or where no anchor is
  left, the differing span is replaced whole: the same content, with less of it kept
  as it was. The slowest input found on our 2-core test machine took 0.3 s (120,000
  lines a side, one in ten changed); 1 MB of random lines 0.06 s.

Texts (``text_opcodes``, behind render.string_opcodes) are diffed in levels, all out
of one budget, because at the level of characters almost no element is unique and a
text past a few kB was replaced whole: a typo fixed in each of 40 lines rewrote the
text, making the fixer the writer of all of it and, merged from an older version,
bringing back a line deleted meanwhile. By characters where difflib affords the whole;
else by lines, each changed run of lines by tokens (words), each changed run of tokens
by characters; a run of lines replaced by as many is diffed pair by pair where a line
kept more than half of itself (each pair looked at costs ``PAIR``). What each level does
besides is linear. On the loaded 2-core test machine the inputs above take 0.03-0.8 s
(0.03-1.05 s when the span was replaced whole; 1 MB of four kinds of line 0.19-0.38 s
against 0.08-0.16 s); a fix in each of 2,000 lines 46-80 ms.

A text's character diffs are then folded where difflib kept bits of words between
changes (``_folded``): a short kept run that holds no whole word becomes part of the
change around it, so a rewrite keeps no letters of the old words inside the new ones.

Opcodes are difflib's: ``(tag, i1, i2, j1, j2)`` with tag equal, replace, delete, insert.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

Opcode = tuple[str, int, int, int, int]

#: difflib runs on spans of at most this many elements (both sides together)
SMALL = 4000
#: the work one diff may do, in element comparisons (difflib's pairs of equal elements,
#: the elements each anchoring pass reads)
BUDGET = 250_000


class Budget:
    __slots__ = ("left",)

    def __init__(self, units: int = BUDGET) -> None:
        self.left = units

    def take(self, units: int) -> bool:
        if units > self.left:
            return False
        self.left -= units
        return True


def opcodes(
    a: Sequence[Hashable], b: Sequence[Hashable], budget: Budget | None = None
) -> list[Opcode]:
    out: list[Opcode] = []
    _diff(a, b, 0, len(a), 0, len(b), budget or Budget(), out)
    return _merged(out)


def _diff(
    a: Sequence[Hashable],
    b: Sequence[Hashable],
    alo: int,
    ahi: int,
    blo: int,
    bhi: int,
    budget: Budget,
    out: list[Opcode],
) -> None:
    pre = 0
    while alo + pre < ahi and blo + pre < bhi and a[alo + pre] == b[blo + pre]:
        pre += 1
    if pre:
        out.append(("equal", alo, alo + pre, blo, blo + pre))
        alo, blo = alo + pre, blo + pre
    suf = 0
    while alo < ahi - suf and blo < bhi - suf and a[ahi - 1 - suf] == b[bhi - 1 - suf]:
        suf += 1
    ahi, bhi = ahi - suf, bhi - suf
    n = (ahi - alo) + (bhi - blo)
    if alo == ahi or blo == bhi:
        _whole(alo, ahi, blo, bhi, out)
    elif n <= SMALL and budget.take(_pairs(a[alo:ahi], b[blo:bhi]) + n):
        sm = difflib.SequenceMatcher(None, a[alo:ahi], b[blo:bhi], autojunk=False)
        out.extend(
            (t, i1 + alo, i2 + alo, j1 + blo, j2 + blo) for t, i1, i2, j1, j2 in sm.get_opcodes()
        )
    elif budget.take(n) and (anchors := _anchors(a, b, alo, ahi, blo, bhi)):
        i, j = alo, blo
        for ai, bj in anchors:
            _diff(a, b, i, ai, j, bj, budget, out)
            out.append(("equal", ai, ai + 1, bj, bj + 1))
            i, j = ai + 1, bj + 1
        _diff(a, b, i, ahi, j, bhi, budget, out)
    else:
        _whole(alo, ahi, blo, bhi, out)
    if suf:
        out.append(("equal", ahi, ahi + suf, bhi, bhi + suf))


def _whole(alo: int, ahi: int, blo: int, bhi: int, out: list[Opcode]) -> None:
    if alo < ahi and blo < bhi:
        out.append(("replace", alo, ahi, blo, bhi))
    elif alo < ahi:
        out.append(("delete", alo, ahi, blo, blo))
    elif blo < bhi:
        out.append(("insert", alo, alo, blo, bhi))


def _pairs(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """How many pairs of equal elements the two hold: what difflib's matching walks."""
    counts = Counter(b)
    return sum(counts[x] for x in a)


def _anchors(
    a: Sequence[Hashable], b: Sequence[Hashable], alo: int, ahi: int, blo: int, bhi: int
) -> list[tuple[int, int]]:
    """The longest run of elements unique on both sides, in the same order on both."""
    ca = Counter(a[alo:ahi])
    cb = Counter(b[blo:bhi])
    where = {b[j]: j for j in range(blo, bhi) if cb[b[j]] == 1 and ca[b[j]] == 1}
    pairs = [(i, where[a[i]]) for i in range(alo, ahi) if a[i] in where]
    if not pairs:
        return []
    # longest increasing subsequence of the b positions (patience sorting)
    tops: list[int] = []  # the smallest b position ending a run of each length
    ends: list[int] = []  # index into pairs of that run's last element
    back: list[int] = [-1] * len(pairs)
    for k, (_, j) in enumerate(pairs):
        at = bisect.bisect_left(tops, j)
        back[k] = ends[at - 1] if at else -1
        if at == len(tops):
            tops.append(j)
            ends.append(k)
        else:
            tops[at], ends[at] = j, k
    run: list[tuple[int, int]] = []
    k = ends[-1]
    while k >= 0:
        run.append(pairs[k])
        k = back[k]
    run.reverse()
    return run


def _merged(ops: list[Opcode]) -> list[Opcode]:
    """Adjacent opcodes of one tag as one (equal runs meet where the pieces join)."""
    out: list[Opcode] = []
    for op in ops:
        if op[1] == op[2] and op[3] == op[4]:
            continue
        if out and out[-1][0] == op[0] and out[-1][2] == op[1] and out[-1][4] == op[3]:
            last = out[-1]
            out[-1] = (op[0], last[1], op[2], last[3], op[4])
        else:
            out.append(op)
    return out


# --- texts: by lines, then tokens, then characters -----------------------------------

#: a character of a word (what ``\w`` matches: letters, digits, "_")
_WORD_CHAR = re.compile(r"\w")
#: what tells the characters of words (``is_word``; a caller that diffs stand-ins for
#: characters, restore's one code point per character and writer, gives its own)
WordTest = Callable[[str], bool]


def is_word(ch: str) -> bool:
    """Whether `ch` is a character of a word (what the regular expression `\\w` matches)."""
    return _WORD_CHAR.match(ch) is not None


#: a word or any other one character, with the white space before it
_TOKEN = re.compile(r"\s*(?:\w+|.)", re.DOTALL)
#: what looking at one pair of lines (of runs of lines replaced by as many) costs
PAIR = 16


def text_opcodes(
    a: str, b: str, budget: Budget | None = None, word: WordTest | None = None
) -> list[Opcode]:
    """Opcodes over the code points of two texts that stay minimal for ordinary edits
    at any size, within the same budget: a character diff where difflib affords it
    (what it always gave), else a line diff (lines are nearly all unique, so anchors
    hold), each changed run of lines diffed by tokens (words, with the white space
    before them, and other characters), each changed run of tokens by characters. In a
    run of lines replaced by as many (a fix in every line), a line that kept more than
    half of itself (its common prefix and suffix) is diffed with its counterpart alone;
    the others, by runs, as above. Each level goes through ``opcodes`` and its budget,
    and each pair of lines looked at costs ``PAIR``; what each level does besides
    (splitting, offsets, prefixes) is linear in the span. Each character diff then has
    its short kept runs that hold no whole word folded into the changes around them
    (``_folded``: no letters of old words kept scattered through a rewrite); `word`
    tells the characters of words (``is_word`` unless given)."""
    budget = budget or Budget()
    word = word or is_word
    out: list[Opcode] = []
    if _affords(a, b, budget):
        _chars(a, b, 0, 0, budget, word, out)
    else:
        _lines(a, b, 0, 0, budget, word, out)
    return _merged(out)


def _affords(a: Sequence[Hashable], b: Sequence[Hashable], budget: Budget) -> bool:
    """Whether difflib runs on the two whole (what ``opcodes`` then takes of the budget);
    the budget is not spent."""
    n = len(a) + len(b)
    return n <= SMALL and _pairs(a, b) + n <= budget.left


def _chars(
    a: str, b: str, i0: int, j0: int, budget: Budget, word: WordTest, out: list[Opcode]
) -> None:
    ops = _folded(a, b, opcodes(a, b, budget), word)
    out.extend((t, i1 + i0, i2 + i0, j1 + j0, j2 + j0) for t, i1, i2, j1, j2 in ops)


def _folded(a: str, b: str, ops: list[Opcode], word: WordTest) -> list[Opcode]:
    """Character opcodes of `a` to `b` with each short equality that holds no word (bits
    of rewritten words, a space between them) folded into the changes around it: an
    equality between two changes that holds no whole word of both texts (``_holds_word``)
    and is no longer than the
    changes on its left and no longer than those on its right (each side counted as
    max(characters deleted, characters inserted) over the run of changes between it and
    the next equality, as diff-match-patch's ``diff_cleanupSemantic`` counts) becomes,
    with both, one change; the equality before is looked at again, until none is left.

    difflib kept the a, n, s, e, r of "answer" as equal inside "changed at source": a
    PUT /text of that rewrite kept them as the old writer's items, and a revert of that
    writer took them out of the new sentence ("Q1chged at ourc"). DMP's rule alone also
    folds long real matches: a restore that kept a paragraph ("6] My dog is Rex.", 18
    characters between an insert of 20 and a delete of 37) re-wrote it, taking it from
    its writer; an equality holding a whole word is a real match and stays, whatever its
    length. A typo fix ("teh" -> "the") still changes only inside its word. One pass over
    a stack, each equality folded once: linear in the opcodes and the equalities'
    characters. The result covers `a` and `b` in order, as `ops` did."""
    # the stack alternates equalities and changes, each as [i1, i2, j1, j2]
    stack: list[tuple[bool, list[int]]] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            stack.append((True, [i1, i2, j1, j2]))
            continue
        if stack and not stack[-1][0]:  # changes next to each other: one run
            stack[-1][1][1], stack[-1][1][3] = i2, j2
            continue
        stack.append((False, [i1, i2, j1, j2]))
        # fold while the equality before the change on top is short and no word
        while len(stack) >= 3 and stack[-2][0] and not stack[-3][0]:
            left, eq, right = stack[-3][1], stack[-2][1], stack[-1][1]
            n = eq[1] - eq[0]
            if n > max(left[1] - left[0], left[3] - left[2]):
                break
            if n > max(right[1] - right[0], right[3] - right[2]):
                break
            if _holds_word(a, b, eq[0], eq[1], eq[2], eq[3], word):
                break
            del stack[-2:]
            left[1], left[3] = right[1], right[3]
    return [_op(is_eq, span) for is_eq, span in stack]


def _op(is_eq: bool, span: list[int]) -> Opcode:
    i1, i2, j1, j2 = span
    return ("equal", i1, i2, j1, j2) if is_eq else _tagged(("replace", i1, i2, j1, j2))


def _holds_word(a: str, b: str, i1: int, i2: int, j1: int, j2: int, word: WordTest) -> bool:
    """Whether the equal spans a[i1:i2] and b[j1:j2] hold a word whole in both texts: a
    run of word characters (``word``) with no word character next to it in either text
    (the ends of `a` and `b` count as no word character: a span diffed alone may start or
    end inside a word of the whole text, and there the equality stays, as before).
    Linear in the span."""

    def edge(s: str, k: int) -> bool:  # no word character at s[k]
        return not 0 <= k < len(s) or not word(s[k])

    k = i1
    while k < i2:
        if not word(a[k]):
            k += 1
            continue
        start = k
        while k < i2 and word(a[k]):
            k += 1
        if (start > i1 or (edge(a, i1 - 1) and edge(b, j1 - 1))) and (
            k < i2 or (edge(a, i2) and edge(b, j2))
        ):
            return True
    return False


def _lines(
    a: str, b: str, i0: int, j0: int, budget: Budget, word: WordTest, out: list[Opcode]
) -> None:
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    if len(la) <= 1 and len(lb) <= 1:
        _tokens(a, b, i0, j0, budget, word, out)
        return
    offa = list(itertools.accumulate(map(len, la), initial=i0))
    offb = list(itertools.accumulate(map(len, lb), initial=j0))
    for tag, i1, i2, j1, j2 in opcodes(la, lb, budget):
        if tag == "replace" and i2 - i1 == j2 - j1:
            _paired(a, b, offa, offb, i0, j0, i1, i2, j1, budget, word, out)
        elif tag == "replace":
            x, y = a[offa[i1] - i0 : offa[i2] - i0], b[offb[j1] - j0 : offb[j2] - j0]
            _tokens(x, y, offa[i1], offb[j1], budget, word, out)
        else:
            _whole_or_equal(tag, offa[i1], offa[i2], offb[j1], offb[j2], out)


def _paired(
    a: str,
    b: str,
    offa: list[int],
    offb: list[int],
    i0: int,
    j0: int,
    i1: int,
    i2: int,
    j1: int,
    budget: Budget,
    word: WordTest,
    out: list[Opcode],
) -> None:
    """Lines i1..i2 of `a` replaced by as many of `b` from j1 (offa, offb: where each
    line starts, as offsets of the whole texts; i0, j0: where `a` and `b` start)."""
    run = i1  # the first line of the run of lines not paired yet

    def flush(end: int) -> None:
        x = a[offa[run] - i0 : offa[end] - i0]
        y = b[offb[j1 + run - i1] - j0 : offb[j1 + end - i1] - j0]
        _tokens(x, y, offa[run], offb[j1 + run - i1], budget, word, out)

    for k in range(i1, i2):
        if not budget.take(PAIR):
            _whole(offa[run], offa[i2], offb[j1 + run - i1], offb[j1 + i2 - i1], out)
            return
        x = a[offa[k] - i0 : offa[k + 1] - i0]
        y = b[offb[j1 + k - i1] - j0 : offb[j1 + k - i1 + 1] - j0]
        pre = _prefix(x, y)
        suf = _prefix(x[pre:][::-1], y[pre:][::-1])
        if 2 * (pre + suf) <= max(len(x), len(y)):
            continue
        if run < k:
            flush(k)
        at, bt = offa[k], offb[j1 + k - i1]
        out.append(("equal", at, at + pre, bt, bt + pre))
        _tokens(x[pre : len(x) - suf], y[pre : len(y) - suf], at + pre, bt + pre, budget, word, out)
        out.append(("equal", offa[k + 1] - suf, offa[k + 1], bt + len(y) - suf, bt + len(y)))
        run = k + 1
    if run < i2:
        flush(i2)


def _prefix(x: str, y: str) -> int:
    """The length of the common prefix of `x` and `y` (by slices: in C, not per character)."""
    n = min(len(x), len(y))
    if n == 0 or x[0] != y[0]:
        return 0
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if x[:mid] == y[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tokens(
    a: str, b: str, i0: int, j0: int, budget: Budget, word: WordTest, out: list[Opcode]
) -> None:
    if _affords(a, b, budget):
        _chars(a, b, i0, j0, budget, word, out)
        return
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    offa = list(itertools.accumulate(map(len, ta), initial=0))
    offb = list(itertools.accumulate(map(len, tb), initial=0))
    for tag, i1, i2, j1, j2 in opcodes(ta, tb, budget):
        at, bt = i0 + offa[i1], j0 + offb[j1]
        x, y = a[offa[i1] : offa[i2]], b[offb[j1] : offb[j2]]
        if tag == "replace":
            _chars(x, y, at, bt, budget, word, out)
        else:
            _whole_or_equal(tag, at, at + len(x), bt, bt + len(y), out)


def _whole_or_equal(tag: str, alo: int, ahi: int, blo: int, bhi: int, out: list[Opcode]) -> None:
    if tag == "equal":
        out.append(("equal", alo, ahi, blo, bhi))
    else:
        _whole(alo, ahi, blo, bhi, out)


def coarsened(ops: list[Opcode], limit: int) -> list[Opcode]:
    """`ops` with at most `limit` changes (opcodes not equal), where more: the changes
    separated by the shortest equal spans joined into one replace, those spans with
    them, so that the longest stretches kept stay kept. For the caller that applies the
    changes one by one to a Yjs text, where each costs more the more there were before
    it (pycrdt: 8,000 one-character changes of a 400 kB text took 5 s)."""
    changes = sum(1 for op in ops if op[0] != "equal")
    if changes <= limit:
        return ops
    inner = sorted(
        op[2] - op[1] for k, op in enumerate(ops) if op[0] == "equal" and 0 < k < len(ops) - 1
    )
    if not inner:
        return ops
    # join across every equal span up to this long (each join takes one change away)
    longest = inner[changes - limit - 1] if changes - limit <= len(inner) else inner[-1]
    out: list[Opcode] = []
    for k, op in enumerate(ops):
        joins = op[0] == "equal" and 0 < k < len(ops) - 1 and op[2] - op[1] <= longest
        if op[0] == "equal" and not joins:
            out.append(op)
        elif out and out[-1][0] != "equal":
            last = out[-1]
            out[-1] = ("replace", last[1], op[2], last[3], op[4])
        else:
            out.append(("replace", op[1], op[2], op[3], op[4]) if joins else op)
    return _merged([_tagged(op) for op in out])


def _tagged(op: Opcode) -> Opcode:
    tag, i1, i2, j1, j2 = op
    if tag == "equal":
        return op
    return ("replace" if i1 < i2 and j1 < j2 else "delete" if i1 < i2 else "insert", i1, i2, j1, j2)


__all__ = [
    "BUDGET",
    "PAIR",
    "SMALL",
    "Budget",
    "Opcode",
    "WordTest",
    "coarsened",
    "is_word",
    "opcodes",
    "text_opcodes",
]
