"""Revert one writer's changes over a range of the log, and nobody else's.

A teacher with forty students in one document takes out what one of them did since a
version: their insertions removed, the text they deleted brought back, everybody
else's later work kept. A restore cannot do it (it makes the whole document equal to
the version, so it takes out everyone's later text), and the writer's own undo reaches
only their last steps, and only for them.

What writer W's events in (since, until] did, in Yjs terms, is read from the log: the
document at the seq before W's first event there is loaded (nearest snapshot + events)
and the events up to `until` are replayed onto it, each observed as the live room's
undo recorder observes it (server/undo/recorder.py): the IDs it inserted (its before
and after state vectors) and the IDs it deleted that were alive (the transaction's
delete set). What W inserted includes the copies that later undos, redos, reverts and
restores (anyone's) made of it (``Did.follow_copies``): text of W's that a restore took
out and an undo of the restore brought back is W's, as blame names it and as W's own
undo takes it out; so is text of W's that someone deleted and a restore wrote again
(its meta ``copies``: history/restore.Copying). W's events (any kind) make one undo
step, less each undo or redo of W's with the change it reverted when both are in the
range (together they did nothing: see
``Did.net``), and the room's undo machinery inverts it on the live document as it
inverts any step (:meth:`RoomUndo.revert`): what is left of W's insertions is deleted,
what W deleted is brought back where it was, and other writers' items are left alone,
also inside a container W made (a paragraph W's Enter made, with the words others typed
in it since): the container stays with their words, less W's, as with an undo
(containers.py), and the answer says so (``kept_containers``).

The change is one event of kind ``revert`` by the reverting user (meta: ``writer``,
``since``, ``until``, ``reverts``: W's seqs, ``ins`` and ``dels``: what they did, as
base64 ID sets, ``copies``: see below), made through
:meth:`Room.server_change`: durable before anyone sees it, broadcast to open
clients, and recorded by the undo extension as a step of the reverting user's own, on
its own (as a restore is): their undo takes the revert back. The recorder also drops
W's undo and redo steps whose every event the revert reverted (W's undo would find
nothing left of them, or after a reload bring back a second copy of what the revert
brought back; a step the range cuts keeps the rest, less ``ins`` and ``dels``), and
gives the copies the revert made of deleted text to the steps that inserted the
originals, as an undo's (meta ``copies``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, TransactionEvent, merge_updates

from .. import cpu_account
from ..errors import StoreError
from ..ranges import (
    Ranges,
    decode_ranges,
    from_b64,
    inserted,
    intersect,
    may_overlap,
    subtract,
    to_b64,
    union,
    union_into,
)
from ..removed import Change, change_of, removed_others
from ..room import Room, replay
from ..snapshots import load
from ..store.base import Event, EventStore
from ..updates import decode_update_meta
from .containers import Kept
from .recorder import MARK, REDO, RESTORE, REVERT, UNDO, Deletions, RoomUndo
from .stacks import Step

if TYPE_CHECKING:
    from ..backend import Backend

#: events read from the log at a time while replaying the range
PAGE = 5000


@dataclass(slots=True)
class Did:
    """What one writer's events in a range of the log did: their seqs, and the Yjs IDs
    they inserted and deleted (ID sets, server/ranges.py)."""

    seqs: list[int] = field(default_factory=list)
    ins: Ranges = field(default_factory=dict)
    dels: Ranges = field(default_factory=dict)
    #: per event, while replaying: (seq, the seqs it reverts if an undo or a redo, what
    #: it inserted, what it deleted); summed up by `net`
    each: list[tuple[int, list[int], Ranges, Ranges]] = field(default_factory=list)
    #: per event of anyone's, while replaying: what it inserted and deleted (an undo's or
    #: a redo's copies are of what the events it reverts deleted: `follow_copies`)
    done: dict[int, tuple[Ranges, Ranges]] = field(default_factory=dict)

    def follow_copies(self, kind: str, meta: dict[str, Any], ins: Ranges) -> None:
        """An undo, a redo, a revert or a restore (anyone's) that inserted `ins` brought back
        deleted items as copies: copies of the writer's insertions are theirs too, as
        the undo recorder gives them to the writer's step (``_give_copies``) and blame
        names the writer. Without it, text of the writer's that a restore took out and
        an undo of that restore brought back was blamed on the writer, yet a revert of
        them found nothing left of it (their items were deleted; the copies were
        nobody's). The pairs are the event's meta ``copies`` ([originals, copies]),
        else (an undo or a redo restored one part) what the events it reverts
        deleted, less what they inserted, and all it inserted. A part is the writer's
        when all its originals are (as the recorder's rule)."""
        pairs: list[tuple[Ranges, Ranges]] = []
        listed = meta.get("copies")
        if isinstance(listed, list) and listed:
            for pair in listed:
                if (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(isinstance(x, str) for x in pair)
                ):
                    pairs.append((from_b64(pair[0]), from_b64(pair[1])))
        elif kind in (UNDO, REDO) and ins:
            reverts = meta.get("reverts")
            gone: Ranges = {}
            made: Ranges = {}
            for s in reverts if isinstance(reverts, list) else ():
                if isinstance(s, int) and s in self.done:
                    union_into(made, self.done[s][0])
                    union_into(gone, self.done[s][1])
            pairs.append((subtract(gone, made), ins))
        for originals, copies in pairs:
            if not originals or not copies:
                continue
            owners = [e for e in self.each if may_overlap(e[2], originals)]
            held: Ranges = {}
            for e in owners:
                union_into(held, e[2])
            if owners and not subtract(originals, held):
                for e in owners:
                    union_into(e[2], copies)

    def net(self) -> None:
        """Sum up `each` into `ins` and `dels`, leaving out each undo or redo of the
        writer's with the change it reverted when both are in the range: together they
        did nothing. Counted in, the undo's copies of what the change deleted were
        deleted and the originals, which Yjs restores only once (their in-memory link
        leads to the copy), stayed deleted: a student's delete and Ctrl-Z, reverted,
        lost the text. (A redo of an undo left out this way stays in: it reverts what
        is alive, the undo's copies.)"""
        kept: dict[int, tuple[Ranges, Ranges]] = {}
        for seq, reverts, ins, dels in self.each:
            if reverts and all(s in kept for s in reverts):
                for s in reverts:
                    del kept[s]
                continue
            kept[seq] = (ins, dels)
        for ins, dels in kept.values():
            union_into(self.ins, ins)
            union_into(self.dels, dels)
        self.each = []
        self.done = {}


@dataclass(slots=True)
class Reverted:
    """A revert's answer: its event (None: nothing was done), the head a dry run was
    computed at, what the writer's events did, and what the change took out and put in."""

    event: Event | None
    head: int
    did: Did
    change: Change | None = None
    #: per user other than the reverting one, what it took out besides the writer's own
    #: insertions (server/removed.py: text others wrote inside what the writer made)
    others: list[dict[str, Any]] = field(default_factory=list)
    #: the writer's containers it kept, holding what others wrote (as an undo's
    #: ``kept_containers``: containers.py), or None
    kept: dict[str, Any] | None = None

    def answer(self, by: str) -> dict[str, Any]:
        """``removed`` and ``added`` in all (as a restore's), ``removed_others`` when it
        took out what someone other than the writer and `by` wrote."""
        if self.change is None:
            return {}
        out = self.change.answer(by)
        out.pop("removed_others", None)
        if self.others:
            out["removed_others"] = self.others
        if self.kept:
            out["kept_containers"] = self.kept
        return out


async def what_they_did(store: EventStore, doc: str, writer: str, since: int, until: int) -> Did:
    """What `writer`'s events with since < seq <= until did (see the module's doc)."""
    first = await store.query(doc, after=since, limit=1, actor=writer)
    if not first or first[0].seq > until:
        return Did()
    start = first[0].seq - 1
    loaded = await load(store, doc, upto=start)
    if loaded.seq != start:
        raise StoreError(f"{doc!r} cannot be read at seq {start} (its log ends at {loaded.seq})")
    did = Did()
    at = start
    while at < until:
        events = await store.read(doc, after=at, upto=until, limit=PAGE)
        if not events:
            break
        await cpu_account.to_thread(_observe, loaded.doc, events, writer, did)
        at = events[-1].seq
    did.net()
    if did.dels:
        did.dels = subtract(did.dels, await _brought_back(store, doc, start, did.dels))
    return did


async def _brought_back(store: EventStore, doc: str, after: int, dels: Ranges) -> Ranges:
    """What of `dels` a server change after seq `after` brought back already, as the
    ``copies`` of its meta say (a revert's always, an undo's or a redo's when they
    restored parts of several steps): Yjs restores a deleted item once (its in-memory
    ``redone`` link leads to the copy), and a revert done again after a reload, when
    those links are gone, brought the writer's deletions back a second time."""
    out: Ranges = {}
    while True:
        page = await store.query(doc, after=after, limit=PAGE, kinds=[REVERT, UNDO, REDO])
        for ev in page:
            for pair in ev.meta.get("copies") or ():
                if isinstance(pair, list) and pair and isinstance(pair[0], str):
                    originals = from_b64(pair[0])
                    if may_overlap(originals, dels):
                        union_into(out, intersect(originals, dels))
        if len(page) < PAGE:
            return out
        after = page[-1].seq


def _observe(doc: Doc[Any], events: list[Event], writer: str, did: Did) -> None:
    """Replay `events` onto `doc`, adding what `writer`'s did to `did`."""
    seen: list[tuple[Ranges, Ranges]] = []

    def on_transaction(e: TransactionEvent) -> None:
        ev: Any = e  # (pycrdt's stubs lack the state vectors and delete set it carries)
        ins = inserted(ev.before_state, ev.after_state)
        dels = decode_ranges(ev.delete_set) if ev.delete_set != b"\x00" else {}
        if ins or dels:
            seen.append((ins, dels))

    def before(_ev: Event) -> None:
        seen.clear()

    def after(ev: Event) -> None:
        ins: Ranges = {}
        dels: Ranges = {}
        for i, d in seen:
            union_into(ins, i)
            union_into(dels, d)
        if ev.kind in (UNDO, REDO, REVERT, RESTORE):
            did.follow_copies(ev.kind, ev.meta, ins)
        if ins or dels:
            did.done[ev.seq] = (ins, dels)
        if ev.actor != writer or ev.kind == MARK:
            return
        did.seqs.append(ev.seq)
        reverts = ev.meta.get("reverts") if ev.kind in (UNDO, REDO) else None
        if not isinstance(reverts, list) or not all(isinstance(s, int) for s in reverts):
            reverts = []
        # (its own copy: `follow_copies` adds to it what later copies of its items)
        did.each.append((ev.seq, reverts, union({}, ins), dels))

    sub = doc.observe(on_transaction)
    try:
        replay(doc, events, after, before)
    finally:
        doc.unobserve(sub)


def _undo_state(room: Room, skip_roots: tuple[str, ...]) -> tuple[RoomUndo, Callable[[], None]]:
    """The room's undo state, or (undo not served) one for this change alone, and what
    to call when done with it. `skip_roots`: settings.undo_skip_roots."""
    state = room.peek(RoomUndo)
    if state is not None:
        return state, lambda: None
    temp = RoomUndo(room, 0, 1, skip_roots=skip_roots)
    return temp, temp.close


def _invert(
    state: RoomUndo,
    doc: Doc[Any],
    did: Did,
    copies: list[list[str]],
    kept: list[Kept],
    deleted: Deletions | None = None,
) -> bool:
    """Invert what `did` says on `doc` (the live document or a copy of it); False when
    nothing of it is left to invert. `copies` gets [originals, copies] (base64 ID sets)
    for what it brought back, for the recorder (see the module's doc). `deleted`: what
    is deleted in `doc`, when known (RoomUndo.revert)."""
    step = Step(list(did.seqs), did.ins, did.dels)
    before = doc.get_state()
    mark = len(copies)
    del kept[:]
    changed = state.revert(doc, step, copies, kept, deleted=deleted)
    if changed and len(copies) == mark:
        # one run restored every deletion at once (RoomUndo.revert): all it made are copies
        made = inserted(before, doc.get_state())
        originals = subtract(did.dels, did.ins)
        if made and originals:
            copies.append([to_b64(originals), to_b64(made)])
    return changed


def _what_changed(
    doc: Doc[Any], room: Room, by: str, writer: str, did: Did, update: bytes, kept: list[Kept]
) -> Reverted:
    change = change_of(doc, room.owners, update)
    deleted = decode_update_meta(update).deletes
    others = removed_others(doc, room.owners, by, deleted, did.ins, writer)
    held = None
    if kept:
        inside = removed_others(doc, room.owners, by, kept[0].inside)
        held = {"items": kept[0].containers, "others": inside}
    return Reverted(None, room.seq, did, change, others, held)


async def revert(
    backend: Backend, doc: str, by: str, writer: str, since: int, until: int
) -> Reverted:
    """Revert `writer`'s changes in (since, until] on the live document, as one event of
    kind ``revert`` by `by` (none when the writer did nothing there, or nothing of it is
    left to revert)."""
    did = await what_they_did(backend.store, doc, writer, since, until)
    if not did.seqs:
        return Reverted(None, 0, did)
    room = await backend.rooms.get(doc)
    state, done = _undo_state(room, backend.settings.undo_skip_roots)
    try:
        copies: list[list[str]] = []
        kept: list[Kept] = []
        meta: dict[str, Any] = {"writer": writer, "since": since, "until": until,
                                "reverts": did.seqs, "copies": copies,
                                "ins": to_b64(did.ins), "dels": to_b64(did.dels)}  # fmt: skip
        ev = await room.server_change(
            by,
            REVERT,
            lambda live: _invert(state, live, did, copies, kept, room.deletions),
            meta=meta,
        )
        if ev is None:
            return Reverted(None, room.seq, did)
        got = _what_changed(room.doc, room, by, writer, did, ev.update, kept)
        got.event = ev
        return got
    finally:
        done()
        backend.rooms.release(room)


async def preview(
    backend: Backend, doc: str, by: str, writer: str, since: int, until: int
) -> Reverted:
    """What revert() would do now (a dry run), made on a copy of the live document:
    nothing is written. ``change`` None: nothing to revert."""
    did = await what_they_did(backend.store, doc, writer, since, until)
    room = await backend.rooms.get(doc)
    state, done = _undo_state(room, backend.settings.undo_skip_roots)
    try:
        head = room.seq
        if not did.seqs:
            return Reverted(None, head, did)
        copy: Doc[Any] = Doc(skip_gc=True, client_id=room.doc.client_id)
        copy.apply_update(room.doc.get_update())
        captured: list[bytes] = []
        sub = copy.observe(lambda e: captured.append(e.update))
        kept: list[Kept] = []
        try:
            # (outside the room's turn: a server change's append awaited now has its
            # deletions in the document, not yet in the room's union, so they are read)
            _invert(state, copy, did, [], kept)
        finally:
            copy.unobserve(sub)
        if not captured:
            return Reverted(None, head, did)
        update = captured[0] if len(captured) == 1 else merge_updates(*captured)
        got = _what_changed(copy, room, by, writer, did, update, kept)
        got.head = head
        return got
    finally:
        done()
        backend.rooms.release(room)


__all__ = ["Did", "Reverted", "preview", "revert", "what_they_did"]
