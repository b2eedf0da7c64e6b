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

Blame is laid over the same way, with the one version it is of (:func:`formatted_blame`).

A plain text's ops are unchanged: no key is added where there is nothing to say.

Who changed a format: the index folds characters, not formatting, so a ``format`` op is
attributed by replaying the events between the two versions onto the earlier one
(:func:`replay_marks`). Until an event formats something, only events that may (with
format items or deletions: an undo of a bold deletes its marks) have their text deltas
read; each range a delta formats is then moved along every later delta's inserts and
deletes. At the later version, each character of a format op goes to the last event that
changed an attribute that differs between the versions to its value in the later one,
and the op is split where that changes (``actor`` and ``seq`` stay null where no event
did, and past ``ATTRIBUTE_FORMATS_WORK``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from pycrdt import Doc, Text

from ..store.base import Event
from . import yupdate
from .attribution import gc_paused
from .render import joined_runs, jsonable

log = logging.getLogger(__name__)

EMBED_CHAR = "\ufffc"
_NO_EMBED = object()

#: a version's text as runs: (characters, attributes or None, embed value or _NO_EMBED)
Run = tuple[str, dict[str, Any] | None, Any]


def runs_of(diff: Any) -> list[Run]:
    """A version's runs, from pycrdt's ``Text.diff()`` (render.joined_runs): an embed is
    one character."""
    return [
        (EMBED_CHAR, a, jsonable(v)) if is_embed else (v, a, _NO_EMBED)
        for v, a, is_embed in joined_runs(diff)
    ]


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
                if op.get("moved"):
                    new["moved"] = True
                attrs = attrs_a if kind == "delete" else attrs_b
                if attrs:
                    new["attributes"] = attrs
            if embed is not _NO_EMBED:
                new["embed"] = embed
                if "node" in op:  # an embedded shared type's (attribution_xml)
                    new["node"] = op["node"]
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
    return all(x.get(k) == y.get(k) for k in ("op", "actor", "seq", "attributes", "was", "moved"))


def formatted_ops(
    doc: str, root: str, ops: list[dict[str, Any]], version_a: Doc[Any], version_b: Doc[Any]
) -> list[dict[str, Any]]:
    """:func:`with_formatting` of text `root` of two versions (scratch documents: the
    caller runs this in a worker thread); the plain ops, logged, if they do not match
    (the index would have failed its check first)."""
    try:
        with gc_paused():
            runs = [runs_of(v.get(root, type=Text).diff()) for v in (version_a, version_b)]
            return with_formatting(ops, runs[0], runs[1])
    except Mismatch as e:
        log.warning("diff of %s/%s without formatting: %s", doc, root, e)
        return ops


def formatted_blame(
    doc: str, root: str, runs: list[dict[str, Any]], version: Doc[Any]
) -> list[dict[str, Any]]:
    """Blame `runs` of text `root` with the `version`'s formatting and embeds laid over
    them, as a diff's inserts are (split where attributes change, an embed a run of its
    own); the plain runs, logged, if they do not match (in a worker thread, as
    :func:`formatted_ops`)."""
    try:
        with gc_paused():
            return laid_blame(runs, runs_of(version.get(root, type=Text).diff()))
    except Mismatch as e:
        log.warning("blame of %s/%s without formatting: %s", doc, root, e)
        return runs


def laid_blame(runs: list[dict[str, Any]], version: list[Run]) -> list[dict[str, Any]]:
    """Blame `runs` with a version's formatting and embeds (its :func:`runs_of`) laid
    over them, as a diff's inserts are (Mismatch if they do not match)."""
    laid = with_formatting([{"op": "insert", **run} for run in runs], [], version)
    return [{k: v for k, v in op.items() if k != "op"} for op in laid]


#: format ops are attributed while (b - a) * b is at most this: the events replayed
#: times what stands for the items each one's integration and delta may walk (about one
#: per event before it). Scratch replays of keystroke logs, with a bold every 100 events,
#: onto a version loaded as the server loads one (4 Dec 2026): 0.1-3.3 ns per unit; so
#: at most about half a second: a whole log of 12,000 events (0.42-0.44 s), the last
#: 7,500 of 20,000 (0.17 s), the last 1,500 of 100,000
ATTRIBUTE_FORMATS_WORK = 150_000_000

#: a range an event formatted: start, end (byte offsets, an embed one), seq, attributes
Mark = tuple[int, int, int, dict[str, Any]]


def may_format(update: bytes) -> bool:
    """Whether an update can change formatting: it inserts format items, or deletes
    (an undo of a bold deletes the bold's marks); one this reader cannot read, maybe."""
    try:
        structs, deletes = yupdate.decode(update)
    except yupdate.Unsupported:
        return True
    return bool(deletes) or any(s.kind == yupdate.FORMAT for s in structs)


#: what a replay's observers are given (:func:`replay_marks`): the seq of the event being
#: applied, or None while its deltas are not read; and `follow(key, delta)`, which moves
#: the ranges kept by `key` (one text's) along the delta and records those it formats
Seq = Callable[[], int | None]
Follow = Callable[[Any, list[dict[str, Any]]], None]
#: subscribes a replay's observers to its document, returning the subscriptions
Observe = Callable[[Doc[Any], Seq, Follow], list[Any]]


def replay_marks(
    version_a: Doc[Any], events: list[Event], observers: list[Observe]
) -> dict[Any, list[Mark]]:
    """Replay `events` (those after version a, up to version b) once onto a copy of
    `version_a`, with what each of `observers` subscribes (text roots:
    :func:`observe_texts`; XML roots' texts: attribution_xml.observe_trees): for each
    text, by the key its observer gives, the ranges of version b that each event
    formatted, and how (yrs's deltas may name more characters than changed: a bold
    taken off "new " was reported over "new world")."""
    doc: Doc[Any] = Doc(skip_gc=True)
    doc.apply_update(version_a.get_update())
    marks: dict[Any, list[list[Any]]] = {}
    cur: list[int | None] = [None]  # the seq being applied, while its deltas are read

    def follow(key: Any, delta: list[dict[str, Any]]) -> None:
        seq = cur[0]
        if seq is not None:
            follow_marks(delta, marks.setdefault(key, []), seq)

    subs = [sub for observe in observers for sub in observe(doc, lambda: cur[0], follow)]
    for ev in events:
        # a delta is read (yrs walks the text for it) once there are ranges to move
        # along, or when the event may format
        cur[0] = ev.seq if any(marks.values()) or may_format(ev.update) else None
        doc.apply_update(ev.update)
    del subs  # (the scratch document goes with them)
    return {k: [(s, e, q, a) for s, e, q, a in ms if e > s] for k, ms in marks.items()}


def observe_texts(roots: list[str]) -> Observe:
    """A replay's observers of text `roots`, keeping each root's ranges by its name."""

    def observe(doc: Doc[Any], seq: Seq, follow: Follow) -> list[Any]:
        return [
            doc.get(name, type=Text).integrated.observe(lambda e, n=name: follow(n, e.delta))
            for name in roots
        ]

    return observe


def follow_marks(delta: list[dict[str, Any]], marks: list[list[Any]], seq: int) -> None:
    """Move the ranges in `marks` ([start, end, seq, attributes], byte offsets) along
    one text delta, and add the ranges it formats."""
    pos = 0
    for op in delta:
        if "retain" in op:
            n = int(op["retain"])
            if op.get("attributes"):
                marks.append([pos, pos + n, seq, jsonable(op["attributes"])])
            pos += n
        elif "insert" in op:
            value = op["insert"]
            n = len(value.encode()) if isinstance(value, str) else 1
            for m in marks:
                if m[0] >= pos:
                    m[0] += n
                if m[1] > pos:
                    m[1] += n
            pos += n
        elif "delete" in op:
            n = int(op["delete"])
            end = pos + n
            gone = False
            for m in marks:
                for k in (0, 1):
                    x = m[k]
                    if x >= end:
                        m[k] = x - n
                    elif x > pos:
                        m[k] = pos
                gone = gone or m[1] <= m[0]
            if gone:  # ranges whose text is all deleted name nobody: not moved any more
                marks[:] = [m for m in marks if m[1] > m[0]]


def attribute_formats(
    ops: list[dict[str, Any]], ranges: list[Mark], actor: dict[int, str]
) -> list[dict[str, Any]]:
    """`ops` with each format op split by the last event that changed its characters'
    differing attributes (`ranges`: :func:`replay_marks`'s), named with its actor."""
    if not ranges:
        return ops
    out: list[dict[str, Any]] = []
    pos = 0  # in the later version, bytes (an embed one)
    for op in ops:
        kind = op["op"]
        if kind == "delete":
            out.append(op)
            continue
        size = 1 if "embed" in op else len(op["text"].encode())
        out += _split_by_seq(op, pos, ranges, actor) if kind == "format" else [op]
        pos += size
    return out


def _split_by_seq(
    op: dict[str, Any], pos: int, ranges: list[Mark], actor: dict[int, str]
) -> list[dict[str, Any]]:
    """A format op at byte `pos` of the later version, split where the last event that
    changed its characters' differing attributes changes.

    For each attribute that differs between the versions, the ranges that set it are
    followed in order from the earlier version's value; one that sets the value the
    character already has is no change (yrs's deltas name more characters than changed,
    and those extra ones always with the value they have)."""
    data = op["text"].encode() if "embed" not in op else b"\x1a"
    end = pos + len(data)
    now, was = op["attributes"], op["was"]
    differ = [k for k in {*now, *was} if now.get(k) != was.get(k)]
    over = sorted(
        (r for r in ranges if r[0] < end and r[1] > pos and any(k in r[3] for k in differ)),
        key=lambda r: r[2],
    )
    if not over:
        return [op]
    # (a cut inside a character, which Yjs's indexes never make, would split its bytes)
    inner = {x for a, b, _, _ in over for x in (a, b) if pos < x < end}
    cuts = sorted({pos, end} | {x for x in inner if not 0x80 <= data[x - pos] < 0xC0})
    out: list[dict[str, Any]] = []
    for c0, c1 in zip(cuts, cuts[1:], strict=False):
        seq = None
        for k in differ:
            value = was.get(k)
            for a, b, s, attrs in over:
                if a <= c0 and c1 <= b and k in attrs and attrs[k] != value:
                    value = attrs[k]
                    if value == now.get(k) and (seq is None or s > seq):
                        seq = s
        piece = op["text"] if "embed" in op else data[c0 - pos : c1 - pos].decode()
        last = out[-1] if out else None
        if last is not None and last["seq"] == seq:
            last["text"] += piece
        else:
            out.append({**op, "text": piece, "seq": seq, "actor": actor.get(seq) if seq else None})
    return out


__all__ = [
    "ATTRIBUTE_FORMATS_WORK",
    "EMBED_CHAR",
    "Mark",
    "Mismatch",
    "attribute_formats",
    "formatted_blame",
    "formatted_ops",
    "follow_marks",
    "laid_blame",
    "observe_texts",
    "replay_marks",
    "may_format",
    "runs_of",
    "with_formatting",
]
