"""The containers an undo keeps: an element (or any shared type) that the step being
reverted inserted, which now holds what was written since by others (anything alive in
it that the step did not insert), is not deleted with the rest of the step; only the
step's own content inside it goes (docs/undo.md, "What others wrote inside what you made
stays").

Yjs's own UndoManager deletes such a container with everything in it. In an editor whose
whole document sits in one element (BlockNote's root ``blockGroup``, made by the first
user's first keystroke) that took out every other user's text at once, and every tab
then re-created the root, the undoer's tab in the undoer's name, which cleared the
undoer's redo: the others' text was left for a restore to bring back.

How: the live document's items are read (``history.yupdate``), each item's parent
resolved from its origins, and from every live item the step did not insert (formatting
marks aside) the chain of its ancestors is walked: the step's containers on it are
kept, with the keyed entries the step set on a kept container: an element's attributes
(a blockContainer's id, a heading's level), a map's keys (a notebook cell's id,
cell_type, source, metadata); a shared type such an entry holds is kept with it. The
walk is done only when the step inserted a shared type at all, and each ancestor is
walked once.

A Lexical text node's Y.Map, embedded in its paragraph's Y.XmlText before the node's
characters, is kept likewise while characters of others that follow it stay (they are
the node's: without it every Lexical tab drops them), found by their chain of left
origins (``Leads``).

What is read: when the step knows the document's clocks before its first event (its
``floor``, a lower bound of them: RoomUndo keeps it for the steps it records, and in the
snapshot's meta for the steps it restores after a restart or an unload), only the
items from there on. Anything inside a container the step made came after it, and each
writer's clocks only grow: all of it is there, and an item whose origin lies below the
floor lies in a type older than the step, which none of its containers is an ancestor
of. Reading the whole document (what a step from a meta written before floors were kept
there still costs) held the event loop 0.3 s on a 3,000-paragraph document, every other
document on the server frozen meanwhile (bench/undo_containers_bench.py).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc

from .. import protocol as P
from ..history import yupdate
from ..ranges import Ranges, intersect, may_overlap, subtract, union_into

log = logging.getLogger("palimpsest.undo")

_ID = tuple[int, int]


@dataclass(slots=True)
class Kept:
    """What a revert kept: the step's containers (`ids`: their items and the attributes
    set on them), how many containers, and the live items of others inside them; and
    how many structs of the document were read to tell (`read`: its cost)."""

    ids: Ranges = field(default_factory=dict)
    containers: int = 0
    inside: Ranges = field(default_factory=dict)
    read: int = field(default=0, compare=False)


_TEXT, _MAP, _EMBED = 0, 1, 2
_YMAP = 1  # a Y.Map's type ref


class Leads:
    """The live Y.Map embedded before each text item: the first live embed (a shared
    type or an embed) on its chain of left origins, deleted ones passed over, when it
    is a Y.Map; None for another embed, or when the chain ends first or goes below what
    was read. Followed in causal order.

    @lexical/yjs keeps a paragraph as a Y.XmlText holding, for each text node, a Y.Map
    of the node's properties embedded before the node's characters; the characters up
    to the next embed are the node's, and characters with no text node's map before
    them are dropped by every Lexical tab (CollabElementNode's "dangling text"). So the
    embed before another writer's characters that stay must stay too, as a container
    holding them does. Bob typing at the end of alice's text node inserts right of her
    last character, whose chain leads to her node's map; splitting a node (a bold
    word) deletes its characters and inserts a new map and a copy of them after it,
    whose chain leads to the new map. Items inserted later between an embed and
    characters it led (another writer's embed right of the same origin) are not seen:
    the embed is then kept with nothing of the others' after it, which an editor reads
    as an empty text node, rather than taken out before their characters."""

    __slots__ = ("_deleted", "_of", "_starts")

    def __init__(self, deleted: Ranges) -> None:
        self._deleted = deleted
        self._starts: dict[int, list[int]] = {}
        #: per client, each struct's length, what embed it is (_TEXT, _MAP, _EMBED)
        #: and its lead
        self._of: dict[int, list[tuple[int, int, _ID | None]]] = {}

    def _at(self, ref: _ID) -> _ID | None:
        starts = self._starts.get(ref[0])
        if not starts:
            return None
        at = bisect.bisect_right(starts, ref[1]) - 1
        if at < 0:
            return None
        length, embed, lead = self._of[ref[0]][at]
        if ref[1] >= starts[at] + length:
            return None
        if embed == _TEXT or _has(self._deleted, ref[0], ref[1]):
            return lead
        return ref if embed == _MAP else None

    def follow(self, s: yupdate.Struct) -> _ID | None:
        """`s`'s lead (the next struct in causal order)."""
        lead = self._at(s.origin) if s.origin is not None else None
        embed = _TEXT
        if s.kind == yupdate.TYPE:
            embed = _MAP if s.type_ref == _YMAP else _EMBED
        elif s.kind == yupdate.EMBED:
            embed = _EMBED
        self._starts.setdefault(s.client, []).append(s.clock)
        self._of.setdefault(s.client, []).append((s.length, embed, lead))
        return lead


def _has(ranges: Ranges, client: int, clock: int) -> bool:
    spans = ranges.get(client)
    if not spans:
        return False
    i = bisect.bisect_right(spans, (clock, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= clock < spans[i][1]


class Parents:
    """Each struct's parent and key (a map entry's, an attribute's), followed in causal
    order: a struct that names none (an item written right of or below another) has
    that one's."""

    __slots__ = ("_of", "_starts")

    def __init__(self) -> None:
        self._starts: dict[int, list[int]] = {}
        #: per client, each struct's parent and key
        self._of: dict[int, list[tuple[str | _ID | None, str | None]]] = {}

    def follow(self, s: yupdate.Struct) -> tuple[str | _ID | None, str | None]:
        """`s`'s parent and key (the next struct in causal order)."""
        parent, sub = s.parent, s.sub
        ref = s.origin or s.right
        if parent is None and ref is not None and ref[0] in self._starts:
            at = bisect.bisect_right(self._starts[ref[0]], ref[1]) - 1
            if at >= 0:
                parent, sub = self._of[ref[0]][at]
        self._starts.setdefault(s.client, []).append(s.clock)
        self._of.setdefault(s.client, []).append((parent, sub))
        return parent, sub


def _inserts_a_type(structs: list[yupdate.Struct], ins: Ranges) -> bool:
    return any(
        s.kind == yupdate.TYPE and s.client in ins and _has(ins, s.client, s.clock) for s in structs
    )


def _read_from(doc: Doc[Any], sv: dict[int, int]) -> bytes:
    return doc.get_update(P.encode_state_vector(sv))


def kept_containers(doc: Doc[Any], ins: Ranges, floor: dict[int, int] | None = None) -> Kept | None:
    """The containers in `ins` (a step's insertions) that hold live items of others on
    `doc`; None when there are none (or the document cannot be read: then nothing is
    kept, as before). `floor`: the document's clocks before the step (or lower), from
    which on its items are read; None: the whole document is read, when the step
    inserted a shared type (its clients' items from its first clock on tell)."""
    if not ins:
        return None
    starts_at = {client: spans[0][0] for client, spans in ins.items()}
    if floor is not None:
        # what the step's clients wrote from its first insertion on is read in any case
        sv = dict(floor)
        for client, clock in starts_at.items():
            sv[client] = min(clock, sv.get(client, clock))
        try:
            structs, deletes = yupdate.decode(_read_from(doc, sv))
            if not _inserts_a_type(structs, ins):
                return None
            structs = yupdate.in_causal_order(structs, sv)
        except yupdate.Unsupported as e:
            log.warning("cannot tell the containers an undo keeps: %s", e)
            return None
        # the deletions of items below the floor, not read, do not matter
        deletes = [d for d in deletes if d[1] + d[2] > sv.get(d[0], 0)]
        return _fold(structs, deletes, ins)
    sv = P.decode_state_vector(doc.get_state())
    for client, clock in starts_at.items():
        sv[client] = min(clock, sv.get(client, clock))
    try:
        mine, _ = yupdate.decode(_read_from(doc, sv))
        if not _inserts_a_type(mine, ins):
            return None
    except yupdate.Unsupported:
        pass  # the full read below tells
    try:
        structs, deletes = yupdate.decode_causal(doc.get_update())
    except yupdate.Unsupported as e:
        log.warning("cannot tell the containers an undo keeps: %s", e)
        return None
    return _fold(structs, deletes, ins)


def _fold(
    structs: list[yupdate.Struct], deletes: list[tuple[int, int, int]], ins: Ranges
) -> Kept | None:
    """The kept containers, from the document's items (in causal order) and delete set."""
    deleted: Ranges = {}
    for client, clock, length in deletes:
        union_into(deleted, {client: [(clock, clock + length)]})
    parents = Parents()
    leads = Leads(deleted)
    #: each live container the step inserted; each shared type's parent
    mine: set[_ID] = set()
    type_parent: dict[_ID, str | _ID | None] = {}
    live_others: list[tuple[_ID, Ranges]] = []
    #: others' live characters and the live embed before them (Leads)
    led: list[tuple[_ID, Ranges]] = []
    attributes: list[tuple[_ID, _ID]] = []  # (entry, its element) of the step's entries
    for s in structs:
        parent, sub = parents.follow(s)
        lead = leads.follow(s)
        ident = (s.client, s.clock)
        in_step = _has(ins, s.client, s.clock)
        if s.kind == yupdate.TYPE:
            type_parent[ident] = parent
            if in_step and not _has(deleted, s.client, s.clock):
                mine.add(ident)
        if s.kind in (yupdate.DELETED, yupdate.FORMAT) or not isinstance(parent, tuple):
            continue
        if in_step and sub is not None:
            attributes.append((ident, parent))
        span: Ranges = {s.client: [(s.clock, s.clock + s.length)]}
        if s.client in deleted:
            span = subtract(span, deleted)
        if span and may_overlap(span, ins):
            span = subtract(span, ins)
        if span:
            live_others.append((parent, span))
            if s.kind == yupdate.STRING and lead is not None:
                led.append((lead, span))
    if not mine:
        return None
    keep: set[_ID] = set()
    # per shared type walked: whether one of the step's containers is on its chain
    under: dict[_ID, bool] = {}
    kept = Kept(read=len(structs))
    for parent, span in live_others:
        chain: list[_ID] = []
        p: str | _ID | None = parent
        found = False
        while isinstance(p, tuple):
            if p in under:
                found = under[p]
                break
            chain.append(p)
            p = type_parent.get(p)
        for node in reversed(chain):
            if node in mine:
                keep.add(node)
                found = True
            under[node] = found
        if isinstance(parent, tuple) and under.get(parent, False):
            union_into(kept.inside, span)
    # A text node's embed (a Lexical text node's Y.Map) the step inserted stays while
    # characters of others that follow it stay: without it they are dangling, and the
    # editor drops them (Leads).
    for lead, span in led:
        if lead in mine:
            keep.add(lead)
            union_into(kept.inside, span)
    if not keep:
        return None
    # The keyed entries the step set on a kept container are its attributes and stay
    # with it: an element's (a block's id, a heading's level), a map's (a notebook
    # cell's id, cell_type, source, metadata, outputs). An entry holding a shared type
    # keeps that type too, with its own entries: a cell's metadata map keeps its keys,
    # and its source text stays (with what others typed in it; the step's own text
    # goes, as in any kept container). In causal order, a type before its entries.
    for ident, element in attributes:
        if element in keep:
            union_into(kept.ids, {ident[0]: [(ident[1], ident[1] + 1)]})
            if ident in mine:
                keep.add(ident)
    for client, clock in keep:
        union_into(kept.ids, {client: [(clock, clock + 1)]})
    kept.ids = intersect(kept.ids, ins)
    kept.containers = len(keep)
    return kept


__all__ = ["Kept", "kept_containers"]
