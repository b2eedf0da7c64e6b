"""Subdocuments' options as their clients wrote them, put back into what yrs writes.

A Yjs subdocument (``map.set('x', new Y.Doc({meta}))``) is an item of content ContentDoc:
its guid, then its options as a lib0 ``any`` object. Yjs writes ``{gc?, autoLoad?,
meta?}``; yrs (pycrdt) keeps no ``meta``: every update it writes again (``get_update``,
``merge_updates``) carries ``{gc, autoLoad, encoding, shouldLoad}`` instead, so a client
that joined later, a version read as an update, a snapshot and a restore all lost the
``meta`` of every subdocument (the log keeps the clients' bytes, meta included).

So each document that was given a subdocument with ``meta`` keeps, per ContentDoc item
(its ID, and its guid for the copies undo and restore make), the options as logged, and
what the server writes from its pycrdt document gets them back (:func:`restored`).
Only ``meta`` is lost (yrs keeps ``gc`` and ``autoLoad``), and Yjs writes the key only
when there is a meta: an update without the bytes ``varString("meta")`` is passed over
at the cost of one ``in`` (every ordinary edit), and a document that has none at all
keeps its fast path (no map, nothing rewritten).

The map goes with each pycrdt ``Doc`` (weakly: it lives as long as the document) and
is filled from what is applied to it from the log or a snapshot (:func:`note`); the
snapshots the server writes carry the restored options, so a document loaded from one
knows them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

from pycrdt import Doc, merge_updates

from .protocol import Reader
from .updates import _DOC, _GC, _SKIP, _skip_content, skip_any, skip_item_header

#: what every ContentDoc with a meta carries (lib0 varString "meta"), Yjs writes it
#: only then
_META = b"\x04meta"

_ID = tuple[int, int]


class SubdocOptions:
    """The options of a document's subdocuments as logged: by item ID, and by guid."""

    __slots__ = ("by_guid", "by_id")

    def __init__(self) -> None:
        self.by_id: dict[_ID, bytes] = {}
        self.by_guid: dict[str, bytes] = {}

    def note(self, update: bytes) -> None:
        """Take the options of each ContentDoc of `update` (a v1 update)."""
        for item_id, guid, start, end in _contents(update):
            opts = update[start:end]
            self.by_id[item_id] = opts
            self.by_guid[guid] = opts

    def restore(self, update: bytes, *, by_guid: bool = False) -> bytes:
        """`update` with each ContentDoc's options as logged for its item (`by_guid`:
        for an item the log does not hold yet, those of its guid: undo's and restore's
        copies). Unchanged when none is known."""
        out: list[bytes] = []
        at = 0
        for item_id, guid, start, end in _contents(update):
            opts = self.by_id.get(item_id)
            if opts is None and by_guid:
                opts = self.by_guid.get(guid)
            if opts is None or update[start:end] == opts:
                continue
            out.append(update[at:start])
            out.append(opts)
            at = end
        if not out:
            return update
        out.append(update[at:])
        return b"".join(out)


_KNOWN: WeakKeyDictionary[Doc[Any], SubdocOptions] = WeakKeyDictionary()


def note(doc: Doc[Any], update: bytes) -> None:
    """`update` was applied to `doc` (from the log, a snapshot, a client): keep the
    options of its subdocuments that have a meta. Costs one ``in`` for any other."""
    if _META in update:
        got = _KNOWN.get(doc)
        if got is None:
            got = _KNOWN[doc] = SubdocOptions()
        got.note(update)


def note_all(doc: Doc[Any], updates: Iterable[bytes]) -> None:
    for update in updates:
        note(doc, update)


def restored(doc: Doc[Any], update: bytes, *, by_guid: bool = False) -> bytes:
    """`update`, written by yrs from `doc` (or merged from what was applied to it), with
    its subdocuments' options as their clients wrote them. The same bytes when `doc`
    never had a subdocument with a meta."""
    known = _KNOWN.get(doc)
    return update if known is None else known.restore(update, by_guid=by_guid)


def merge(*updates: bytes) -> bytes:
    """``merge_updates(*updates)`` with the subdocuments' options as `updates` have them
    (yrs writes its own). The same cost when none has a meta."""
    merged = merge_updates(*updates)
    if not any(_META in u for u in updates):
        return merged
    known = SubdocOptions()
    for u in updates:
        if _META in u:
            known.note(u)
    return known.restore(merged)


def share(source: Doc[Any], copy: Doc[Any]) -> None:
    """`copy` was made from `source`'s state: it knows the same options."""
    known = _KNOWN.get(source)
    if known is not None:
        mine = _KNOWN.setdefault(copy, SubdocOptions())
        mine.by_id.update(known.by_id)
        mine.by_guid.update(known.by_guid)


def _contents(update: bytes) -> list[tuple[_ID, str, int, int]]:
    """(item ID, guid, start, end offsets of the options) of each ContentDoc item of a
    well-formed v1 update."""
    r = Reader(update)
    uint = r.read_var_uint
    found: list[tuple[_ID, str, int, int]] = []
    for _ in range(uint("number of clients")):
        n = uint("number of structs")
        client = uint("client id")
        clock = uint("first clock")
        for _ in range(n):
            info = update[r.pos]
            r.pos += 1
            if info == _GC or info == _SKIP:
                clock += uint("struct length")
                continue
            skip_item_header(r, info)
            if info & 31 == _DOC:
                guid = r.read_var_string("subdocument guid")
                start = r.pos
                skip_any(r, 1)
                found.append(((client, clock), guid, start, r.pos))
                clock += 1
            else:
                clock += _skip_content(r, info)
    return found


__all__ = ["SubdocOptions", "merge", "note", "note_all", "restored", "share"]
