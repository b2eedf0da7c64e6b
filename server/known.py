"""What a room's log already holds, for the no-op rule: an update that adds no item and
deletes nothing new is not an event (clients such as pycrdt's ``Provider`` echo back
every update they receive, and each sync step 2 carries the sender's whole delete set).

Decided from the update's struct ranges against the document's state vector, and from
its delete set against the union of every delete set the room has logged (taken from
the document once, then extended per event): per update, the cost is its own size times
a bisection, never a copy or a walk of the document.

When unsure it says "adds": a logged no-op is harmless, a dropped deletion is not. So
deletions of items the document does not hold yet (Yjs keeps them pending and applies
them when the items arrive) count as new until logged once, and an update that does not
parse counts as new.

:func:`still_adding` asks it again of updates admitted a while ago, against what the log
holds now beyond the document: other processes' events the room has not applied yet (a
process cut off from the store holds its clients' edits while they re-send them to
another process, server/cutoff.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from pycrdt import Doc, Snapshot, get_update

from . import protocol as P
from .errors import FATAL, ProtocolError
from .ranges import Ranges, union_into
from .updates import decode_update_meta, read_delete_set


class KnownDeletions:
    """The union of delete sets seen: {client: sorted disjoint [(start, end)]}."""

    __slots__ = ("ranges",)

    def __init__(self) -> None:
        self.ranges: Ranges = {}

    @classmethod
    def of_doc(cls, doc: Doc[Any]) -> KnownDeletions:
        """Everything deleted in `doc` (its snapshot: delete set, then state vector)."""
        known = cls()
        known.add(read_delete_set(P.Reader(Snapshot.from_doc(doc).encode())))
        return known

    def add(self, ranges: Ranges) -> None:
        union_into(self.ranges, ranges)

    def missing(self, ranges: Ranges) -> Ranges:
        """The parts of `ranges` not in the union yet: what a delete set deletes anew."""
        out: Ranges = {}
        for client, rs in ranges.items():
            cur = self.ranges.get(client, [])
            got: list[tuple[int, int]] = []
            for start, end in rs:
                i = max(0, bisect.bisect_right(cur, (start, float("inf"))) - 1)
                while start < end:
                    while i < len(cur) and cur[i][1] <= start:
                        i += 1
                    if i == len(cur) or cur[i][0] >= end:
                        got.append((start, end))
                        break
                    if cur[i][0] > start:
                        got.append((start, cur[i][0]))
                    start = cur[i][1]
            if got:
                out[client] = got
        return out

    def adds_to(self, deletes: Ranges) -> bool:
        """Whether a delete set deletes anything the union does not hold yet."""
        covers = self.covers
        return any(not covers(client, s, e) for client, rs in deletes.items() for s, e in rs)

    def overlaps(self, ranges: Ranges) -> bool:
        """Whether any part of `ranges` (sorted, disjoint) is in the union."""
        return any(self.missing({c: rs}).get(c, []) != rs for c, rs in ranges.items() if rs)

    def covers(self, client: int, start: int, end: int) -> bool:
        cur = self.ranges.get(client)
        if not cur:
            return end <= start
        i = bisect.bisect_right(cur, (start, float("inf"))) - 1
        return i >= 0 and cur[i][0] <= start and end <= cur[i][1]


def adds_anything(update: bytes, state: bytes, deleted: KnownDeletions) -> bool:
    """Whether `update` could change a document with state vector `state` (encoded) whose
    logged deletions are `deleted`: an item past the state vector, or a deletion not
    yet seen."""
    try:
        # yrs keeps only the structs past `state`, and the whole delete set: the cost is
        # the update's, and items pending in the document (missing dependencies) are past
        # its state vector, so re-sending them counts as adding
        diff = get_update(update, state)
    except FATAL:
        raise
    except BaseException:  # pyo3 PanicException is one: whatever it holds, log it
        return True
    if diff[:1] != b"\x00":
        return True
    r = P.Reader(diff)
    r.pos = 1
    try:
        deletes = read_delete_set(r)
        r.expect_end("the delete set")
    except ProtocolError:
        return True
    return deleted.adds_to(deletes)


def still_adding(
    changes: Sequence[tuple[Ranges, Ranges] | None],
    state: dict[int, int],
    deleted: KnownDeletions,
    logged: Iterable[bytes],
) -> list[tuple[bool, bool]]:
    """Whether each of the updates whose `changes` are given, to be logged in order,
    still adds anything to a log that holds the document (state vector `state`,
    decoded; logged deletions `deleted`, left as it is) and the updates `logged` (events
    the document lacks yet: other processes'). A change is the items an update may add
    (struct ranges per client: all of them, or those its admission found new) and its
    delete set, or None when unknown. It adds an item no event holds, or a deletion
    none logged; each one that adds counts as logged for those after it. Returns, per
    update, (whether it adds, whether some of its items are in `logged`: then what it
    inserts when applied is less than what its admission counted).

    When unsure it says "adds", as the rule does: an unknown change adds, and an update
    of `logged` that does not parse counts for nothing."""
    items = KnownDeletions()  # (a union of ranges: here, of item IDs)
    items.add({c: [(0, clock)] for c, clock in state.items() if clock > 0})
    theirs = KnownDeletions()  # the items of `logged`
    more = KnownDeletions()  # the deletions of `logged` and of the updates kept
    for update in logged:
        try:
            meta = decode_update_meta(update)
        except ProtocolError:
            continue
        theirs.add(meta.structs)
        more.add(meta.deletes)
    items.add(theirs.ranges)
    out = []
    for change in changes:
        if change is None:
            out.append((True, False))
            continue
        structs, deletes = change
        adds = items.adds_to(structs) or more.adds_to(deleted.missing(deletes))
        out.append((adds, adds and theirs.overlaps(structs)))
        if adds:
            items.add(structs)
            more.add(deletes)
    return out


def change_of(update: bytes) -> tuple[Ranges, Ranges] | None:
    """An update's struct ranges and delete set, for :func:`still_adding` (None when it
    does not parse)."""
    try:
        meta = decode_update_meta(update)
    except ProtocolError:
        return None
    return meta.structs, meta.deletes


def deletions_of(update: bytes) -> Ranges:
    """An update's delete set (empty if it does not parse: it did not apply either)."""
    if update[-1:] == b"\x00":
        # the last byte of a v1 update is 0 only when its delete set is empty (a range's
        # length is a varUint >= 1, which never ends in a 0 byte): most updates insert
        return {}
    try:
        return decode_update_meta(update).deletes
    except ProtocolError:
        return {}
