"""The map keys whose value an undo takes back, and what each holds after it
(docs/undo.md, "A map key two users set at once").

Every set of a Y.Map key (or an XML element's attribute) is an item of that key's
chain; the rightmost item is the key's value, and Yjs deletes any other. Two users who
set a key at once each insert an item after the one they saw; the writer the CRDT
orders last wins, and every peer deletes the other's item as it integrates it. On the
server that deletion lands in the winner's transaction: the recorder (recorder.py) took
it as a deletion of the winner's step, and the winner's undo "restored" the other
user's concurrent value, a stale one they had moved past (their later sets were made
after theirs lost), or restored nothing (Yjs's UndoManager restores a value only when
every newer item of the key is going: the other user's later ones were not), and the
key was left missing.

So a key whose value the step holds is not left to Yjs (``value_after``): after the
undo it holds the rightmost item of its chain that is neither the step's own (its sets,
the copies an undo gave it) nor ``undone`` (an item of a step its writer undid, or a
revert took out: it does not come back through someone else's undo), provided that
item was set over and not deleted (a key someone deleted, then the step set, goes
again). That is the latest value anyone else set when someone did (concurrently or
after), and the value from before the step when nobody did; none: the key goes. An
undo's or a redo's own step (``Step.inverse``) brings back exactly what that server
change replaced.

The order of a chain is Yjs's (YATA's: an item goes right after its origin, concurrent
items with the same origin by client id), rebuilt from the document's items in causal
order. The whole document is read for it only when the step holds a live value whose
key is named or whose origin is deleted (``_may_hold_a_key``, from the step's own items
and the document's delete set: text, and a paragraph or an array value appended after
a live one, are not), and someone else set that key since the step began (``_alone``,
from what was written since): else Yjs's pick is right.

That whole read is done before the undo's turn in the room, not in it (``read_whole``,
in a worker thread, on yrs's encoding of the document taken on the loop): a key's
items cannot be had from yrs but by encoding the document, nor told from others but by
following every item's origins to its key, so its cost is the document's. In the
room's turn only what was written since that encoding is read and followed on from
where the whole read left off (``chains_held``'s `prepared`), so the chains are those
of the document as the undo changes it, whatever came in meanwhile. A drag's undo on a
board of 50,000 shapes when someone else dragged the shape too held the room about
0.9 s (every user of the document waited); now the room waits for the encoding alone
(bench/undo_mapkeys_bench.py, docs/undo.md).

``undone`` (RoomUndo.undone, in the snapshot's meta) is trimmed of what no undo can
look at any more (``forgettable``): the undone items of a key left of a value that is
neither undone nor any step's on a stack, and undone items that are no key's value.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc

from .. import protocol as P
from ..history import yupdate
from ..ranges import Ranges, subtract
from .containers import Parents

log = logging.getLogger("palimpsest.undo")

_ID = tuple[int, int]
#: the kinds of content a map entry holds (a value, a shared type, a subdocument)
_VALUES = (yupdate.JSON, yupdate.BINARY, yupdate.ANY, yupdate.TYPE, yupdate.SUBDOC)


def _has(ranges: Ranges, ident: _ID) -> bool:
    spans = ranges.get(ident[0])
    if not spans:
        return False
    i = bisect.bisect_right(spans, (ident[1], float("inf"))) - 1
    return i >= 0 and spans[i][0] <= ident[1] < spans[i][1]


@dataclass(slots=True)
class KeyChain:
    """One map key's items (by id, one per clock unit), left to right: the last is its
    value when it is not deleted."""

    items: list[_ID]
    origins: dict[_ID, _ID | None]


def _rindex(chain: list[_ID], ident: _ID) -> int:
    for i in range(len(chain) - 1, -1, -1):
        if chain[i] == ident:
            return i
    raise ValueError(ident)


def _integrate(key: KeyChain, ident: _ID, origin: _ID | None) -> None:
    """Place `ident` as Yjs's Item.integrate does for a map entry (no right origin)."""
    chain, origins = key.items, key.origins
    origins[ident] = origin
    if origin is not None and chain and chain[-1] == origin:
        chain.append(ident)  # the usual case: set over the value it saw
        return
    left = _rindex(chain, origin) if origin is not None else -1
    at = left + 1
    conflicting: set[_ID] = set()
    before_origin: set[_ID] = set()
    o = at
    while o < len(chain):
        other = chain[o]
        before_origin.add(other)
        conflicting.add(other)
        other_origin = origins[other]
        if other_origin == origin:
            if other[0] < ident[0]:
                at = o + 1
                conflicting.clear()
            else:
                break  # the same (absent) right origin
        elif other_origin is not None and other_origin in before_origin:
            if other_origin not in conflicting:
                at = o + 1
                conflicting.clear()
        else:
            break
        o += 1
    chain.insert(at, ident)


def _deleted(deletes: list[tuple[int, int, int]]) -> Ranges:
    out: Ranges = {}
    for client, clock, length in sorted(deletes):
        spans = out.setdefault(client, [])
        if spans and spans[-1][1] >= clock:
            spans[-1] = (spans[-1][0], max(spans[-1][1], clock + length))
        else:
            spans.append((clock, clock + length))
    return out


def _may_hold_a_key(doc: Doc[Any], ins: Ranges) -> bool:
    """Whether one of `ins` may be a map key's value, read from the step's clients' first
    clocks on and the document's delete set, not the whole document: a live value with
    nothing on its right, whose key is named (its first value) or whose origin (the
    value it replaced) is deleted, as every value of a key but the last is. A paragraph
    or an array's value appended after a live one is not."""
    sv = P.decode_state_vector(doc.get_state())
    deleted = _deleted(yupdate.decode(doc.get_update(P.encode_state_vector(sv)))[1])
    for client, spans in ins.items():
        sv[client] = min(spans[0][0], sv.get(client, spans[0][0]))
    structs, _ = yupdate.decode(doc.get_update(P.encode_state_vector(sv)))
    for s in structs:
        if s.right is not None or s.kind not in _VALUES or s.client not in ins:
            continue
        origin = s.origin
        for clock in range(s.clock, s.clock + s.length):
            ident = (s.client, clock)
            if _has(ins, ident) and not _has(deleted, ident):
                if origin is None or _has(deleted, origin):
                    return True
            origin = ident
    return False


def _alone(doc: Doc[Any], ins: Ranges, dels: Ranges, floor: dict[int, int]) -> bool:
    """Whether nobody but the step set a key whose value the step holds since the
    step's `floor` (RoomUndo.floor), and the step set it over the value it had then
    (in `dels`, its deletions): Yjs's pick is that value. What was written since is
    read, not the whole document. Each value's key is followed through its origins as
    far as they were written since; one that leads below the floor is not known, and a
    value of another's whose key is not known may be of the step's key, unless the
    step's keys are all known (made since the floor: an older value is not of them).
    A step that set a key over an older value than the one it had (made offline, or
    whose deletions are nobody's: a sync step 2 that relayed others' client ids) is
    not alone: another user's value came between."""
    sv = dict(floor)
    for client, spans in ins.items():
        sv[client] = min(spans[0][0], sv.get(client, spans[0][0]))
    structs, deletes = yupdate.decode(doc.get_update(P.encode_state_vector(sv)))
    structs = yupdate.in_causal_order(structs, sv)
    deleted = _deleted(deletes)
    starts: dict[int, list[int]] = {}
    labels: dict[int, list[tuple[Any, ...]]] = {}
    mine: set[tuple[Any, ...]] = set()
    others: set[tuple[Any, ...]] = set()
    for s in structs:
        label: tuple[Any, ...] | None = None
        if s.parent is not None:
            label = (s.parent, s.sub)
        else:
            ref = s.origin or s.right
            if ref is not None and ref[0] in starts:
                at = bisect.bisect_right(starts[ref[0]], ref[1]) - 1
                if at >= 0:
                    label = labels[ref[0]][at]
            if label is None:
                label = ("below", ref)  # its key is older than the floor: not known
        starts.setdefault(s.client, []).append(s.clock)
        labels.setdefault(s.client, []).append(label)
        if s.right is not None or (s.kind not in _VALUES and s.kind != yupdate.DELETED):
            continue
        for clock in range(s.clock, s.clock + s.length):
            if not _has(ins, (s.client, clock)):
                others.add(label)
            elif s.kind in _VALUES and not _has(deleted, (s.client, clock)):
                mine.add(label)
    if mine & others:
        return False
    below = [m[1] for m in mine if m[0] == "below"]
    if any(ref is None or not _has(dels, ref) for ref in below):
        return False
    return not below or not any(o[0] == "below" for o in others)


_Key = tuple[str | _ID, str]


@dataclass(slots=True)
class WholeRead:
    """The whole document as yrs encoded it at state vector `sv`, read for the keys whose
    value is one of `ins` (``read_whole``): each struct's parent and key so far
    (`parents`, followed on from there by what is written since) and the structs of
    those keys (`entries`, in causal order). `failed`: the encoding was not one this
    reader follows (the keys are not told: Yjs's UndoManager decides alone)."""

    ins: Ranges
    sv: dict[int, int]
    parents: Parents
    entries: dict[_Key, list[yupdate.Struct]]
    #: the document's delete set then
    deleted: Ranges
    failed: bool = False
    #: followed on once already (by ``chains_held``): not again
    used: bool = False


def needs_whole(doc: Doc[Any], ins: Ranges, dels: Ranges, floor: dict[int, int] | None) -> bool:
    """Whether telling the values of the keys `ins` holds reads the whole document (what
    ``chains_held`` does first, from what the step and those since it wrote): a step
    holding a key's value that someone else set since it began. True when that cannot
    be told (the whole read tells, or fails alike)."""
    if not ins:
        return False
    try:
        if not _may_hold_a_key(doc, ins):
            return False
        return floor is None or not _alone(doc, ins, dels, floor)
    except yupdate.Unsupported:
        return True


def read_whole(update: bytes, sv: dict[int, int], ins: Ranges) -> WholeRead:
    """The whole document's encoding (`update`, at `sv`) read for the keys whose value is
    one of `ins` (pure Python on bytes: a worker thread may run it)."""
    parents = Parents()
    try:
        structs, deletes = yupdate.decode_causal(update)
    except yupdate.Unsupported as e:
        log.warning("cannot tell the map keys an undo sets: %s", e)
        return WholeRead(ins, sv, parents, {}, {}, failed=True)
    deleted = _deleted(deletes)
    entries: list[tuple[yupdate.Struct, _Key]] = []
    held: set[_Key] = set()
    for s in structs:
        parent, sub = parents.follow(s)
        if sub is None or parent is None:
            continue
        entries.append((s, (parent, sub)))
        if s.client in ins and s.kind in _VALUES:
            for clock in range(s.clock, s.clock + s.length):
                if _has(ins, (s.client, clock)) and not _has(deleted, (s.client, clock)):
                    held.add((parent, sub))
    by_key: dict[_Key, list[yupdate.Struct]] = {k: [] for k in held}
    for s, k in entries:
        if k in held:
            by_key[k].append(s)
    return WholeRead(ins, sv, parents, by_key, deleted)


def _covers(read: WholeRead, doc: Doc[Any], ins: Ranges) -> bool:
    """Whether `read` may stand for `doc`'s whole read for a step inserting `ins`: it
    was read for all of them, and `doc` has all it read (written since, never less)."""
    if subtract(ins, read.ins):
        return False
    now = P.decode_state_vector(doc.get_state())
    return all(now.get(c, 0) >= k for c, k in read.sv.items())


def chains_held(
    doc: Doc[Any],
    ins: Ranges,
    dels: Ranges | None = None,
    floor: dict[int, int] | None = None,
    prepared: WholeRead | None = None,
) -> list[KeyChain] | None:
    """The chains of the keys whose value (a live item) is one of `ins`; None when the
    document cannot be read (then Yjs's UndoManager decides alone, as before). Also
    none when nobody else set those keys since the step's `floor` and the step set them
    over their values then (``_alone``; `dels`: its deletions): Yjs's pick is that
    value, which the caller checks is not undone. `prepared`: the whole document read
    before (``read_whole``), for `ins` or more: only what was written since is read
    (once: its parents are followed on; a second time, the whole document is read)."""
    if not ins:
        return []
    try:
        if not _may_hold_a_key(doc, ins):
            return []
        if floor is not None and dels is not None and _alone(doc, ins, dels, floor):
            return []
        if prepared is not None and not prepared.used and _covers(prepared, doc, ins):
            prepared.used = True
            if prepared.failed:
                return None
            since, deletes = yupdate.decode(doc.get_update(P.encode_state_vector(prepared.sv)))
            parents = prepared.parents
            by_key = prepared.entries
            for s in yupdate.in_causal_order(since, prepared.sv):
                parent, sub = parents.follow(s)
                if sub is not None and parent is not None and (parent, sub) in by_key:
                    by_key[(parent, sub)].append(s)
            deleted = _deleted(deletes)
        else:
            read = read_whole(doc.get_update(), {}, ins)
            if read.failed:
                return None
            by_key = read.entries
            deleted = read.deleted
    except yupdate.Unsupported as e:
        log.warning("cannot tell the map keys an undo sets: %s", e)
        return None
    chains: dict[_Key, KeyChain] = {}
    for k, structs in by_key.items():
        chain = chains[k] = KeyChain([], {})
        for s in structs:
            _add(chain, s)
    return [
        chain
        for chain in chains.values()
        if chain.items and _has(ins, chain.items[-1]) and not _has(deleted, chain.items[-1])
    ]


def _add(chain: KeyChain, s: yupdate.Struct) -> None:
    origin = s.origin
    for clock in range(s.clock, s.clock + s.length):
        _integrate(chain, (s.client, clock), origin)
        origin = (s.client, clock)


def forgettable(update: bytes, undone: Ranges, held: Ranges) -> tuple[Ranges, Ranges]:
    """What of `undone` no undo can look at any more, read from the whole document's
    encoding (`update`; pure Python on bytes: a worker thread may run it), and what that
    rests on: (the items to forget, the items that let them be forgotten).

    ``value_after`` looks at a key's items from its last leftwards and stops at the
    first that is neither the step's nor undone. So an undone item is looked at only
    while it is an item of a key whose every item right of it is undone or may be: an
    item of a step on a stack (`held`: their insertions, anyone's, either stack), which
    its undo, its redo or a later step's may pass. An item right of it that is neither
    (a value nobody can undo back past: its step left the stacks) stops every look
    before it, now and later (new values go right of it, new steps hold new items):
    what lies left of it is forgotten. So is an undone item that is no key's value
    (text, an array's or an element's child: never in a chain). The items that stop
    the look are returned with them: the caller forgets only while they are still
    neither undone nor held (what came since the encoding was taken)."""
    if not undone:
        return {}, {}
    structs, _ = yupdate.decode_causal(update)
    parents = Parents()
    forget: list[_ID] = []
    by_key: dict[_Key, list[yupdate.Struct]] = {}
    keys_undone: set[_Key] = set()
    for s in structs:
        parent, sub = parents.follow(s)
        keyed = sub is not None and parent is not None and s.right is None
        hit = s.client in undone and any(
            _has(undone, (s.client, c)) for c in range(s.clock, s.clock + s.length)
        )
        if keyed:
            assert parent is not None and sub is not None
            by_key.setdefault((parent, sub), []).append(s)
            if hit:
                keys_undone.add((parent, sub))
        elif hit:
            forget += [
                (s.client, c)
                for c in range(s.clock, s.clock + s.length)
                if _has(undone, (s.client, c))
            ]
    stoppers: list[_ID] = []
    for k in keys_undone:
        chain = KeyChain([], {})
        for s in by_key[k]:
            _add(chain, s)
        items = chain.items
        for i in range(len(items) - 1, -1, -1):
            if not _has(undone, items[i]) and not _has(held, items[i]):
                stoppers.append(items[i])
                forget += [ident for ident in items[:i] if _has(undone, ident)]
                break
    return as_ranges(forget), as_ranges(stoppers)


def value_after(key: KeyChain, ins: Ranges, dels: Ranges, undone: Ranges, inverse: bool) -> int:
    """The index in `key` of the item the key holds after the step is taken back (`ins`,
    `dels`: what it inserted and deleted); -1: none, the key goes.

    An undo's or a redo's step (`inverse`), a change of the server's own, deleted
    exactly the value it replaced: that comes back, its copy or not (Yjs brings an item
    back once: an undone value's original, whose copy a redo took back, would not
    come back again), or none when it replaced none.

    Any other step: the rightmost item neither the step's nor undone, if it was a
    value that something set over, not one someone deleted before the step set the
    key: the step's set over it while it was the value (it is in `dels`), a set made at
    the same time (on its right, not made over it: it lost to that), or a later set by
    someone else, undone since."""
    items = key.items
    if inverse:
        for i in range(len(items) - 1, -1, -1):
            if _has(dels, items[i]) and not _has(ins, items[i]):
                return i
        return -1
    at = -1
    for i in range(len(items) - 1, -1, -1):
        if not _has(ins, items[i]) and not _has(undone, items[i]):
            at = i
            break
    if at < 0 or _has(dels, items[at]):
        return at
    place = {ident: i for i, ident in enumerate(items)}
    for ident in items[at + 1 :]:
        origin = key.origins[ident]
        if origin is None or place[origin] < at:
            return at  # set at the same time, not over it: it lost to that one
        if not _has(ins, ident):
            return at  # set over it by someone else, who undid it since
        # the step's own set over it, which found it deleted already (else it is in dels)
    return -1


def as_ranges(items: list[_ID]) -> Ranges:
    out: Ranges = {}
    for client, clock in sorted(items):
        spans = out.setdefault(client, [])
        if spans and spans[-1][1] == clock:
            spans[-1] = (spans[-1][0], clock + 1)
        else:
            spans.append((clock, clock + 1))
    return out


__all__ = [
    "KeyChain",
    "WholeRead",
    "as_ranges",
    "chains_held",
    "forgettable",
    "needs_whole",
    "read_whole",
    "value_after",
]
