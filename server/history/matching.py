"""Pairing a tree diff's deleted nodes with its inserted ones by content.

Yjs cannot revive a deleted item: an undo, a redo or a restore that brings a node back
inserts a new one (new ids) beside the deleted original. The tree diff
(attribution_xml) pairs nodes by identity first; between two siblings it paired, the
nodes only deleted and the nodes only inserted are then paired here, in order on both
sides (so that each side still spells its version):

- :func:`in_order`: by their content's digest (the same type, attributes, children and
  text with its marks): common ends first, then each deleted node with the next
  inserted one of its digest. Linear in the nodes, whatever their order: a document of
  3,000 paragraphs deleted and inserted again is one pass, never 3,000 × 3,000.
- :func:`alike`: what is left, by kind (tag and attributes) in order, and kept where
  their texts are alike (:func:`similar`): a paragraph an undo brought back that was
  edited since. Bounded (MATCH_PAIRS): past it nothing more is paired.
- :func:`by_content`: both, and (`order`) what is still left by kind in order: which
  deleted node a node an undo or a restore made copies, for blame
  (attribution_xml.copy_children).
- :func:`text_ops`: the character diff of two paired texts, each character with the
  event that deleted it (old) or that wrote it (new).
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

#: at most this many (deleted × inserted) signatures are given to difflib per stretch
MATCH_PAIRS = 1 << 16
#: texts whose lengths multiply past this are compared by their characters' counts
#: (difflib's quick_ratio), and diffed as their common ends and one replaced middle
TEXT_WORK = 1 << 20
#: two texts are alike when at least this share of their characters match
ALIKE = 0.5


def common_ends(left: Sequence[Any], right: Sequence[Any]) -> tuple[int, int]:
    """(lo, hi): how many items `left` and `right` share at their start, and then at
    their end (the two never overlap)."""
    n, m = len(left), len(right)
    lo = 0
    while lo < n and lo < m and left[lo] == right[lo]:
        lo += 1
    hi = 0
    while hi < n - lo and hi < m - lo and left[n - 1 - hi] == right[m - 1 - hi]:
        hi += 1
    return lo, hi


def in_order(left: Sequence[Hashable], right: Sequence[Hashable]) -> list[tuple[int, int]]:
    """(i, j) pairs with left[i] == right[j], increasing in both: the common prefix and
    suffix, then, greedily, each left key with the next right one of the same key."""
    n, m = len(left), len(right)
    lo, hi = common_ends(left, right)
    pairs = [(k, k) for k in range(lo)]
    where: dict[Hashable, deque[int]] = {}
    for j in range(lo, m - hi):
        where.setdefault(right[j], deque()).append(j)
    last = lo - 1
    for i in range(lo, n - hi):
        q = where.get(left[i])
        while q and q[0] <= last:  # (each index leaves its queue once)
            q.popleft()
        if q:
            last = q.popleft()
            pairs.append((i, last))
    pairs += [(n - hi + k, m - hi + k) for k in range(hi)]
    return pairs


def alike(
    left: Sequence[Hashable | None],
    right: Sequence[Hashable | None],
    similar: Callable[[int, int], bool],
) -> list[tuple[int, int]]:
    """(i, j) pairs of equal signatures (None: never paired), increasing in both, where
    `similar(i, j)`; nothing when the stretch is too long to compare (MATCH_PAIRS)."""
    if not left or not right or len(left) * len(right) > MATCH_PAIRS:
        return []
    # (None never equals another None: each is a key of its own)
    a = [x if x is not None else ("", i) for i, x in enumerate(left)]
    b = [x if x is not None else ("", -1 - j) for j, x in enumerate(right)]
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [
        (i + k, j + k)
        for i, j, size in sm.get_matching_blocks()
        for k in range(size)
        if similar(i + k, j + k)
    ]


def by_content(
    left: Sequence[Hashable],
    right: Sequence[Hashable],
    left_kinds: Sequence[Hashable | None],
    right_kinds: Sequence[Hashable | None],
    similar: Callable[[int, int], bool],
    *,
    order: bool = False,
) -> list[tuple[int, int]]:
    """(i, j) pairs, increasing in both: by content digest (`left`, `right`, see
    :func:`in_order`), then between those by kind where `similar(i, j)` (:func:`alike`),
    then (`order`) between those by kind alone, in order, as a last resort."""
    out: list[tuple[int, int]] = []

    def stretch(i0: int, i1: int, j0: int, j1: int, step: int) -> None:
        # the pairs between (i0, j0) and (i1, j1), both excluded, by step 1 (alike) or 2
        if i1 - i0 < 2 or j1 - j0 < 2 or step > 2 or (step == 2 and not order):
            return
        kl, kr = left_kinds[i0 + 1 : i1], right_kinds[j0 + 1 : j1]
        if step == 1:
            got = alike(kl, kr, lambda i, j: similar(i0 + 1 + i, j0 + 1 + j))
        else:
            got = alike(kl, kr, lambda i, j: True)
        got = [(i0 + 1 + i, j0 + 1 + j) for i, j in got]
        for (a0, b0), (a1, b1) in zip([(i0, j0), *got], [*got, (i1, j1)], strict=True):
            stretch(a0, a1, b0, b1, step + 1)
            if (a1, b1) != (i1, j1):
                out.append((a1, b1))

    exact = in_order(left, right)
    for (i0, j0), (i1, j1) in zip([(-1, -1), *exact], [*exact, (len(left), len(right))],
                                  strict=True):  # fmt: skip
        stretch(i0, i1, j0, j1, 1)
        if i1 < len(left):
            out.append((i1, j1))
    return out


def similar(x: str, y: str) -> bool:
    """Whether texts `x` and `y` are alike (ALIKE of their characters match)."""
    if x == y:
        return True
    sm = difflib.SequenceMatcher(None, x, y, autojunk=False)
    if sm.real_quick_ratio() < ALIKE or sm.quick_ratio() < ALIKE:
        return False
    return len(x) * len(y) > TEXT_WORK or sm.ratio() >= ALIKE


def text_ops(
    old: str,
    old_seqs: Sequence[int],
    new: str,
    new_seqs: Sequence[int],
    actor: Callable[[int], str | None],
) -> list[dict[str, Any]]:
    """The ops from text `old` to text `new` (one seq per character: who deleted each
    of old's, who wrote each of new's): ``equal`` ops name nobody, ``delete`` and
    ``insert`` ops their characters' events, each replaced stretch its deletes first."""
    out: list[dict[str, Any]] = []

    def put(kind: str, text: str, seqs: Sequence[int]) -> None:
        start = 0
        while start < len(text):
            s = seqs[start] if kind != "equal" else 0
            end = start + 1 if kind != "equal" else len(text)
            while end < len(text) and seqs[end] == s:
                end += 1
            last = out[-1] if out else None
            if last is not None and last["op"] == kind and (last["seq"] or 0) == s:
                last["text"] += text[start:end]
            else:
                out.append({"op": kind, "text": text[start:end], "actor": actor(s) if s else None,
                            "seq": s or None})  # fmt: skip
            start = end

    if old == new:
        put("equal", old, ())
        return out
    n, m = len(old), len(new)
    lo, hi = common_ends(old, new)
    put("equal", old[:lo], ())
    x, y = old[lo : n - hi], new[lo : m - hi]
    codes: Sequence[tuple[str, int, int, int, int]]
    if len(x) * len(y) > TEXT_WORK:
        codes = [("replace", 0, len(x), 0, len(y))]
    else:
        codes = difflib.SequenceMatcher(None, x, y, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in codes:
        if tag == "equal":
            put("equal", x[i1:i2], ())
            continue
        put("delete", x[i1:i2], old_seqs[lo + i1 : lo + i2])
        put("insert", y[j1:j2], new_seqs[lo + j1 : lo + j2])
    put("equal", old[n - hi :], ())
    return out


__all__ = [
    "ALIKE",
    "MATCH_PAIRS",
    "TEXT_WORK",
    "alike",
    "by_content",
    "in_order",
    "similar",
    "text_ops",
]
