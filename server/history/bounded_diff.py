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

Opcodes are difflib's: ``(tag, i1, i2, j1, j2)`` with tag equal, replace, delete, insert.
"""

from __future__ import annotations

import bisect
import difflib
from collections import Counter
from collections.abc import Hashable, Sequence

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


__all__ = ["BUDGET", "SMALL", "Budget", "Opcode", "opcodes"]
