"""Formatting and embeds in a text root's diff (``GET /diff`` of a Quill document).

The attribution index diffs characters: which runs stayed, which were inserted and
deleted, and by whom. It does not hold formatting. For a text that ever had formatting
or embeds (the index notes it: ``TextTrack.rich``), the two versions' deltas are laid
over those character ops:

- ``equal`` runs whose attributes are the same in both versions stay ``equal``, with
  their ``attributes``; those whose attributes differ become ``format`` ops, with the
  version's ``attributes`` and the earlier version's as ``was`` (``{}`` for none);
- ``insert`` runs carry the later version's attributes, ``delete`` runs the earlier's;
- an embed (Quill's image) is an op of its own, its text U+FFFC, its value ``embed``.

A plain text's ops are unchanged: no key is added where there is nothing to say. Who
changed a format is not attributed (``actor`` and ``seq`` are null): the index does not
fold formatting; the events between the two versions say who did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pycrdt import Doc, Text

from .render import jsonable

log = logging.getLogger(__name__)

EMBED_CHAR = "\ufffc"
_NO_EMBED = object()

#: a version's text as runs: (characters, attributes or None, embed value or _NO_EMBED)
Run = tuple[str, dict[str, Any] | None, Any]


def runs_of(diff: Any) -> list[Run]:
    """A version's runs, from pycrdt's ``Text.diff()``: an embed is one character;
    adjacent strings with equal attributes joined, as :func:`render.text_delta` does
    (without building its dicts: a formatted megabyte is tens of thousands of runs)."""
    out: list[Run] = []
    for value, raw in diff:
        attrs = jsonable(raw) if raw else None
        if isinstance(value, str):
            if not value:
                continue
            if out and out[-1][2] is _NO_EMBED and out[-1][1] == attrs:
                last = out[-1]
                out[-1] = (last[0] + value, attrs, _NO_EMBED)
            else:
                out.append((value, attrs, _NO_EMBED))
        else:
            out.append((EMBED_CHAR, attrs, jsonable(value)))
    return out


class _Cursor:
    """Reads a version's runs a number of characters at a time."""

    __slots__ = ("runs", "i", "off")

    def __init__(self, runs: list[Run]) -> None:
        self.runs, self.i, self.off = runs, 0, 0

    def left(self) -> int:
        """Characters left in the current run (0 at the end)."""
        return len(self.runs[self.i][0]) - self.off if self.i < len(self.runs) else 0

    def take(self, n: int) -> tuple[str, dict[str, Any] | None, Any]:
        text, attrs, embed = self.runs[self.i]
        piece = text[self.off : self.off + n]
        self.off += n
        if self.off == len(text):
            self.i, self.off = self.i + 1, 0
        return piece, attrs, embed

    def done(self) -> bool:
        return self.i >= len(self.runs)


class Mismatch(Exception):
    """The character ops do not spell the versions' texts."""


def _pieces(op: dict[str, Any], a: _Cursor, b: _Cursor) -> Iterator[tuple[str, Any, Any, Any]]:
    """(text, attributes at a, attributes at b, embed) of one op, split where either
    version's run ends."""
    kind, text = op["op"], op["text"]
    pos = 0
    while pos < len(text):
        if kind == "equal":
            n = min(a.left(), b.left())
        else:
            n = (a if kind == "delete" else b).left()
        if n == 0:
            raise Mismatch(f"a version's text ends inside an {kind} op")
        n = min(n, len(text) - pos)
        want = text[pos : pos + n]
        got_a = a.take(n) if kind != "insert" else None
        got_b = b.take(n) if kind != "delete" else None
        for got in (got_a, got_b):
            if got is not None and got[0] != want:
                raise Mismatch(f"{kind} op {want[:20]!r} is {got[0][:20]!r} in the version")
        either = got_b if got_b is not None else got_a
        assert either is not None
        yield (
            want,
            got_a[1] if got_a else None,
            got_b[1] if got_b else None,
            either[2],
        )
        pos += n


def with_formatting(
    ops: list[dict[str, Any]], runs_a: list[Run], runs_b: list[Run]
) -> list[dict[str, Any]]:
    """`ops` (the index's character diff from version a to version b) with the versions'
    formatting and embeds, as the module says; Mismatch if the ops and the versions'
    texts differ."""
    a, b = _Cursor(runs_a), _Cursor(runs_b)
    out: list[dict[str, Any]] = []
    for op in ops:
        kind = op["op"]
        for text, attrs_a, attrs_b, embed in _pieces(op, a, b):
            new: dict[str, Any]
            if kind == "equal" and (attrs_a or None) != (attrs_b or None):
                new = {"op": "format", "text": text, "actor": None, "seq": None,
                       "attributes": attrs_b or {}, "was": attrs_a or {}}  # fmt: skip
            else:
                new = {"op": kind, "text": text, "actor": op["actor"], "seq": op["seq"]}
                attrs = attrs_a if kind == "delete" else attrs_b
                if attrs:
                    new["attributes"] = attrs
            if embed is not _NO_EMBED:
                new["embed"] = embed
                out.append(new)
                continue
            last = out[-1] if out else None
            if last is not None and "embed" not in last and _same(last, new):
                last["text"] += text
            else:
                out.append(new)
    if not (a.done() and b.done()):
        raise Mismatch("the versions' texts go on past the ops")
    return out


def _same(x: dict[str, Any], y: dict[str, Any]) -> bool:
    return all(x.get(k) == y.get(k) for k in ("op", "actor", "seq", "attributes", "was"))


def formatted_ops(
    doc: str, root: str, ops: list[dict[str, Any]], version_a: Doc[Any], version_b: Doc[Any]
) -> list[dict[str, Any]]:
    """:func:`with_formatting` of text `root` of two versions (scratch documents: the
    caller runs this in a worker thread); the plain ops, logged, if they do not match
    (the index would have failed its check first)."""
    try:
        runs = [runs_of(v.get(root, type=Text).diff()) for v in (version_a, version_b)]
        return with_formatting(ops, runs[0], runs[1])
    except Mismatch as e:
        log.warning("diff of %s/%s without formatting: %s", doc, root, e)
        return ops


__all__ = ["EMBED_CHAR", "Mismatch", "formatted_ops", "runs_of", "with_formatting"]
