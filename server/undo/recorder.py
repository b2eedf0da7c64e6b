"""Per-user, selective, server-side undo and redo, as inverse events in the log.

Every change applied to a live document is recorded as what it did in Yjs terms: the
IDs it inserted and the IDs it deleted (from each transaction's before/after state
vectors and delete set). Per actor, those records form undo steps (one step = the
actor's changes less than ``settings.undo_capture_ms`` apart, by the log's timestamps,
as in Yjs's UndoManager) on an undo stack and a redo stack, bounded by
``settings.undo_max_depth``.

Undo by A runs a throwaway pycrdt UndoManager holding just A's top step, on the live
document, inside :meth:`Room.server_change`: it deletes what remains of the step's
insertions and brings back its deletions at their place, keeping everybody else's
edits. What that produced is logged as an event of kind ``undo`` (actor A, meta
``{"reverts": [seqs]}``) and broadcast like any edit; its own insertions/deletions
become the redo step. Redo is the same with the redo stack (kind ``redo``, reverting
the undo event). A new change by A clears A's redo stack.

Nothing lives only in memory: the stacks are a pure function of the log (each event's
kind, actor, ts and meta, and what it did when applied), rebuilt by replaying the
events after the snapshot, and persisted in each snapshot's meta (``"undo"``) for the
events before it. An explicit "close the group" is an event too (kind ``undo_mark``,
empty update), so grouping is the same after a restart; and so is opening an explicit
group (meta ``{"open": id}``), inside which the actor's changes make one step whatever
their pauses, up to ``GroupLimits`` (``close_group`` or its idle time ends it).

Yjs remembers, per deleted item, the copy an undo made of it (``item.redone``), so
that undoing an older insertion deletes the copy. That link lives only in memory;
to survive a reload this module gives the copies to the step that inserted the
originals when the undo happens; when several steps did, the undo restores them one
part at a time and its meta (``"copies"``) says which copies are whose (see
``RoomUndo.revert``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pycrdt import (
    Array,
    Doc,
    IdSet,
    Map,
    StackItem,
    Text,
    TransactionEvent,
    UndoManager,
    XmlElement,
    XmlFragment,
    XmlText,
)

from .. import cpu_account
from .. import protocol as P
from ..bookkeeping import BookkeepingIds, bookkeeping_roots
from ..commit import Committer
from ..errors import FATAL
from ..history.render import ARRAY, MAP, TEXT, XML, jsonable, xml_string
from ..history.render import infer_root_types as guess_root_types
from ..known import KnownDeletions
from ..ownership import META_KEY as OWNERS_KEY
from ..ownership import map_of_log
from ..room import IMPORT_KIND, Room
from ..settings import Settings
from ..snapshots import Loaded, load
from ..store.base import Event, EventStore, Snapshot
from ..updates import decode_update_meta, format_clocks, marks_and_end, read_delete_set

if TYPE_CHECKING:
    from ..settings import Settings
from ..ranges import (
    Ranges,
    decode_ranges,
    encode_ranges,
    from_b64,
    inserted,
    intersect,
    may_overlap,
    size,
    subtract,
    to_b64,
    union,
    union_into,
)
from .containers import Kept, kept_containers
from .mapkeys import (
    WholeRead,
    as_ranges,
    chains_held,
    forgettable,
    needs_whole,
    read_whole,
    value_after,
)
from .stacks import GroupLimits, Stacks, Step

log = logging.getLogger("palimpsest.undo")

#: what is deleted in a document, asked for when needed (Room.deletions: built on first use)
Deletions = Callable[[], KnownDeletions]

#: kinds that are not a new change by their actor
UNDO, REDO, MARK = "undo", "redo", "undo_mark"
#: a deliberate change, always an undo step of its own: neither the typing just before
#: it nor the typing just after joins it (undoing a restore took the restorer's last
#: words with it)
RESTORE = "restore"
#: one writer's changes over a range of the log taken out by someone (revert.py): a
#: deliberate change too, and the writer's steps it reverted whole go (see _reverted)
REVERT = "revert"
#: the kinds that are always an undo step of their own
DELIBERATE = (RESTORE, REVERT)
#: an undo's or a redo's meta ``already``: the step it ``reverts`` was done already by
#: a restore (all it would bring back is there as the restore's copies): the event has
#: an empty update, and the step leaves the stack for no other
ALREADY_RESTORED = "restored"
META_KEY = "undo"
#: the items in ``RoomUndo.undone`` from which on it is trimmed (see ``trim_undone``)
UNDONE_TRIM_AT = 256

_ROOT_TYPES: dict[str, Any] = {
    "Text": Text,
    "Map": Map,
    "Array": Array,
    "XmlFragment": XmlFragment,
}
_CLASS_NAMES = {TEXT: "Text", MAP: "Map", ARRAY: "Array", XML: "XmlFragment"}


def _rendered(doc: Doc[Any], kinds: dict[str, Any]) -> list[Any]:
    """What anyone sees of `doc`, formatting included, root by root (`kinds`: each root's
    type): a text's delta, an XML tree's markup (its marks are tags), a map's entries
    and an array's values, shared types inside them rendered alike."""
    return [(name, _seen(doc.get(name, type=kind))) for name, kind in sorted(kinds.items())]


def _seen(value: Any) -> Any:
    if isinstance(value, Text):
        return value.diff()
    if isinstance(value, Map):
        return sorted((k, _seen(v)) for k, v in value.items())
    if isinstance(value, Array):
        return [_seen(v) for v in value]
    if isinstance(value, XmlFragment | XmlElement | XmlText):
        return xml_string(value)
    return repr(jsonable(value))


def infer_root_types(doc: Doc[Any], names: Iterable[str]) -> dict[str, str]:
    """Guess the type of roots the server only knows from updates (pycrdt shows them as
    None), as the history does (render.infer_root_types), by pycrdt class name; a root
    with nothing visible left is Text: any type undoes the same."""
    return {n: _CLASS_NAMES[kind or TEXT] for n, kind in guess_root_types(doc, names).items()}


def _typed_roots(doc: Doc[Any]) -> dict[str, Any]:
    """The roots of `doc`, those the server only knows from updates typed as guessed."""
    roots = dict(doc.items())
    untyped = [name for name, root in roots.items() if root is None]
    if untyped:
        for name, kind in infer_root_types(doc, untyped).items():
            roots[name] = doc.get(name, type=_ROOT_TYPES[kind])
    return roots


def _release(um: UndoManager) -> None:
    """Drop `um`'s yrs UndoManager now: on the document's thread, with no transaction
    open (its undo took and ended its own). Its drop takes a transaction on the document
    to unsubscribe from it, and panics when it cannot: freed in another thread while the
    event loop held one, or inside a transaction, it took the whole process down. What
    may keep `um` past this call (a frame of it sampled by sys._current_frames(), an
    exception's traceback, a reference cycle, which the collector frees in whatever
    thread allocates next) then keeps an empty wrapper."""
    del um._undo_manager


class RoomUndo:
    """The undo state of one live room: per-actor stacks, fed by every applied event."""

    def __init__(
        self,
        room: Room,
        capture_ms: int,
        max_depth: int,
        max_group: int = 1000,
        groups: GroupLimits | None = None,
        skip_roots: Iterable[str] = (),
    ) -> None:
        self.room = room
        self.capture_ms = int(capture_ms)
        self.max_depth = max(1, int(max_depth))
        #: events in one step at most: typing that never pauses still makes steps
        self.max_group = max(1, int(max_group))
        #: the bounds of a step of an explicit group (open_group ... close_group)
        self.groups = groups or GroupLimits()
        #: roots an undo leaves as they are (settings.undo_skip_roots), besides those that
        #: look like a Y.PermanentUserData's (server/bookkeeping.py)
        self.skip_roots = tuple(skip_roots)
        #: the items in those roots: a change made there alone is no step (bookkeeping.py)
        self.book = BookkeepingIds(self.skip_roots)
        self.actors: dict[str, Stacks] = {}
        #: stacks from a snapshot's meta, decoded when their actor is first needed:
        #: loading a document costs nothing for the stacks of people who are not around
        self._raw: dict[str, dict[str, Any]] = {}
        self._sv_bytes = b""
        self._sv: dict[int, int] = {}
        #: the items of every step an undo, a redo or a revert took back: a map key's
        #: value its writer undid, which nobody else's undo brings back (mapkeys.py);
        #: in the snapshot's meta (``undone``); trimmed (``trim_undone``) of what no undo
        #: looks at: not a pure function of the log, as the stacks are, but what a trim
        #: forgets changes no undo's result
        self.undone: Ranges = {}
        #: ``undone`` is trimmed (``trim_undone``) when it holds this many items and
        #: twice as many as the last trim kept
        self.undone_trim_at = UNDONE_TRIM_AT
        self._undone_kept = 0
        #: [originals, copies] of the deleted text restores wrote again (their meta
        #: ``copies``: history/restore.Copying), and of what undos and redos brought
        #: back of those copies since: an undo or a redo does not bring back originals
        #: with a live copy here (``_copied``); in the snapshot's meta (``restored``)
        self.restored: list[tuple[Ranges, Ranges]] = []
        #: what each transaction since the last recorded event did: (inserted, deleted)
        self._pending: list[tuple[Ranges, Ranges]] = []
        self._mark = 0
        #: the clocks of the document's formatting marks (updates.format_clocks: where a
        #: bold or a link starts and ends), kept up to date by every recorded event, and
        #: in the snapshot's meta; None: not known yet (see ``marks``). A document that
        #: starts empty has none, and every event from its first is recorded here
        self._marks: Ranges | None = {} if room.seq == 0 else None

        #: the seq of the last event recorded
        self.last_seq = room.seq
        #: the latest ts of the events recorded (0: none yet): the document's next
        #: event's ts is at least this (the store keeps ts from going back), whatever
        #: any clock says; close_group judges a step ended by its time with it
        self.last_ts = 0
        #: the document's state vector when this began, and the clocks each client's
        #: recorded events reached since: a new step's ``floor`` (see ``floor``)
        self._base = room.doc.get_state()
        self._base_text: str | None = None
        self._clocks: dict[int, int] = {}
        #: per base of a meta's stacks (RoomUndo.to_meta): {client: its clock at that
        #: base} for the clients whose clocks differ at ``_base`` (see ``_rebase``)
        self._moved: dict[str, dict[int, int]] = {}
        # muted by the room for a client's edit, whose change it hands over instead
        room.doc_observers.add(self._on_transaction)

    def close(self) -> None:
        self.room.doc_observers.remove(self._on_transaction)

    # --- recording -------------------------------------------------------------------

    def _on_transaction(self, e: TransactionEvent) -> None:
        ev: Any = e  # pycrdt's stubs lack the state vectors and delete set it carries
        before, after = ev.before_state, ev.after_state
        if before == after:
            ins: Ranges = {}
        else:
            # the previous transaction's after is usually this one's before: decode once
            b = self._sv if before == self._sv_bytes else P.decode_state_vector(before)
            a = P.decode_state_vector(after)
            self._sv_bytes, self._sv = after, a
            ins = {c: [(b.get(c, 0), k)] for c, k in a.items() if k > b.get(c, 0)}
        delete_set = ev.delete_set
        dels = decode_ranges(delete_set) if delete_set != b"\x00" else {}
        if ins or dels:
            self._pending.append((ins, dels))

    def mark(self) -> None:
        """Before an event is applied: what is pending belongs to something else."""
        self._mark = len(self._pending)

    def take(self, since: int = 0) -> tuple[Ranges, Ranges]:
        got, self._pending = self._pending[since:], self._pending[:since]
        self._mark = 0
        if len(got) == 1:
            return got[0]
        ins: Ranges = {}
        dels: Ranges = {}
        for i, d in got:
            union_into(ins, i)
            union_into(dels, d)
        return ins, dels

    def pending(self) -> int:
        """How many transactions wait to be recorded: a mark for ``deleted_since``."""
        return len(self._pending)

    def deleted_since(self, mark: int) -> Ranges:
        """What the transactions since `mark` (``pending``) deleted, not yet recorded:
        an undo's own deletions, for its answer (server/removed.py)."""
        out: Ranges = {}
        for _ins, dels in self._pending[mark:]:
            union_into(out, dels)
        return out

    def record(self, ev: Event, ins: Ranges, dels: Ranges) -> None:
        """Update the stacks with one applied event and what it did. (On the path of
        every edit: the common case, a keystroke joining the open step, is kept short.)"""
        if ev.seq > self.last_seq:
            self.last_seq = ev.seq
        if ev.ts > self.last_ts:
            self.last_ts = ev.ts
        for client, spans in ins.items():
            if spans[-1][1] > self._clocks.get(client, 0):
                self._clocks[client] = spans[-1][1]
        if ins:
            self.book.follow(self.room.doc, ev.update, _typed_roots)
        if ins and self._marks is not None:
            new_marks = format_clocks(ev.update)  # (a keystroke: one regex match)
            if new_marks:
                union_into(self._marks, new_marks)
        st = self.actors.get(ev.actor)
        if st is None:
            st = self.get(ev.actor)
        if ev.kind == MARK:
            self._record_mark(ev, st)
            return
        if ev.kind in (UNDO, REDO):
            if st is None:
                st = self.actors[ev.actor] = Stacks()
            self._record_inverse(ev, st, ins, dels)
            return
        if ev.kind == REVERT:
            self._reverted(ev)
        elif ev.kind == RESTORE and ev.meta.get("copies"):
            self._restored(ev)
        raw = ins
        relays = ev.meta.get("relays") if ev.kind != IMPORT_KIND else None
        if relays:
            ins, dels = self._senders_own(ev.actor, relays, ins), {}
        if self.book.only(ins, dels):
            # only bookkeeping written (a tab's new client id in PUD, a ds record): no
            # step, and the redo stack stays (a reload after an undo cleared it)
            return
        if not ins and (not dels or self._only_marks(dels)):
            # changed nothing anyone sees: not a step, and does not clear the redo stack.
            # Deleting only formatting marks is what every Yjs client does on its own
            # after someone else's change left a bold's or a link's start and end with
            # nothing between (yjs's cleanupYTextAfterTransaction): as a step, its user's
            # next undo did nothing visible and their redo was gone (an undo taking out
            # text another user had formatted made one, by whichever client was first)
            return
        if st is None:
            st = self.actors[ev.actor] = Stacks()
        if st.redo:
            st.redo.clear()
        # a pause (the actor's, or a session's) is none when the ts went back (a clock
        # stepped back: an older log's; a store keeps them rising now, EventStore.append)
        if st.group is not None and ev.ts - st.last_ts >= self.groups.idle_ms:
            st.group = None  # left idle too long: it ended, and this change is a new step
            st.close_steps()
        top = st.undo[-1] if st.undo else None
        grows: Step | None = None
        if ev.kind in DELIBERATE:
            st.close_steps()  # neither the typing before it joins it, nor that after
        elif st.group is not None:
            # an explicit group: of every session, no capture timeout, its own bounds
            if (
                top is not None
                and top.open
                and top.group == st.group
                and len(top.seqs) < self.groups.max_events
                and top.nbytes + len(ev.update) <= self.groups.max_bytes
            ):
                grows = top
        else:
            # the step of the session the change came through: two tabs (two devices)
            # typing at once make a step each, neither joining nor ending the other's
            conn = ev.meta.get("conn")
            grows = st.open_step(conn if isinstance(conn, str) else None)
            if grows is not None and not (
                ev.ts - grows.last_ts < self.capture_ms and len(grows.seqs) < self.max_group
            ):
                grows.close()
                grows = None
        if grows is not None:
            grows.touch()
            grows.seqs.append(ev.seq)
            if ins:
                union_into(grows.ins, ins)
            if dels:
                union_into(grows.dels, dels)
            if grows.group is not None:
                grows.nbytes += len(ev.update)
            grows.last_ts = ev.ts
            if grows is not top:
                # typed into last: the user's most recent step, the next undo's
                st.undo.remove(grows)
                st.undo.append(grows)
        else:
            step = Step([ev.seq], union({}, ins), union({}, dels), floor=self._floor(raw))
            if ev.kind not in DELIBERATE:
                step.open, step.last_ts = True, ev.ts
                if st.group is not None:
                    st.close_steps()  # (the group's step past its bounds, if any)
                    step.group, step.nbytes = st.group, len(ev.update)
                else:
                    conn = ev.meta.get("conn")
                    step.conn = conn if isinstance(conn, str) else None
                    for other in st.undo:  # other sessions' steps their pause ended
                        if other.open and ev.ts - other.last_ts >= self.capture_ms:
                            other.close()
            st.undo.append(step)
            self._bound(st)
        st.last_ts = ev.ts

    def _bound(self, st: Stacks) -> None:
        """Keep `st`'s undo stack ``max_depth`` deep: the oldest steps go, and the
        stacks say so (``Stacks.past_limit``: the undo after the last one left answers
        that older changes are past the limit, not "nothing to undo")."""
        if len(st.undo) > self.max_depth:
            del st.undo[: -self.max_depth]
            st.past_limit = True

    def _floor(self, ins: Ranges) -> dict[int, int]:
        """The clocks, as far as they moved since this began, before the event just
        recorded (`ins`: what it inserted, all of it, whoever's): a lower bound of the
        document's state vector then (a write nobody recorded only lowers it), kept
        with the step the event starts (``Step.floor``, with ``_base``)."""
        floor = dict(self._clocks)
        for client, spans in ins.items():
            floor[client] = min(spans[0][0], floor.get(client, spans[0][0]))
        return floor

    def floor(self, step: Step) -> dict[int, int] | None:
        """`step`'s floor as a whole state vector: the clocks from which on whatever was
        made inside what it inserted lies (containers.py); None when not known (a step
        from a snapshot's meta written before floors were kept there)."""
        if step.floor is None:
            return None
        sv = P.decode_state_vector(self._base)
        sv.update(step.floor)
        return sv

    def _senders_own(self, actor: str, relays: Iterable[Any], ins: Ranges) -> Ranges:
        """What of a sync step 2 that relayed client ids (`relays`, the event's meta:
        those it wrote without claiming them, ownership.py) is its sender's typing,
        `actor`'s undo step: its items under client ids that are `actor`'s, by
        ownership (the ones it claimed, and relayed ones `actor` owns: another tab of
        theirs). The rest it carried back for others (a restored backup's lost edits,
        everyone's: Alice's, the server's lost undos, a relayed tab's) is theirs:
        undoing the event as `actor`'s last step took out everyone's lines since the
        backup, in `actor`'s name. Its deletions are nobody's step: who made them the
        update does not say, nor what the server changes it carries brought back of
        them (an undo of a deletion, made after the backup: restoring the deletion too
        doubled the text)."""
        relayed = {c for c in relays if isinstance(c, int)}
        owners = self.room.owners

        def mine(client: int) -> bool:
            owner = owners.owners.get(client)
            if owner is None:
                owner = None if client in relayed else owners.claims.get(client, actor)
            return owner == actor and client != owners.server and client not in owners.former

        if all(mine(c) for c in ins):
            return ins
        return {c: r for c, r in ins.items() if mine(c)}

    def _record_mark(self, ev: Event, st: Stacks | None) -> None:
        """An ``undo_mark``: ``{"open": id}`` opens an explicit group (or renews the one
        open under that id, or takes up again the group's step when it is still the
        actor's latest: after an expiry, a reconnection, a restart); any other closes the
        actor's step and their group."""
        group = ev.meta.get("open")
        if not isinstance(group, str):
            if st is not None:
                # from a connection (meta ``session``): that session's step, and the
                # group; over HTTP: every step of the actor's
                conn = ev.meta.get("session")
                st.close_steps(conn if isinstance(conn, str) else None)
                st.group = None
            return
        if st is None:
            st = self.actors[ev.actor] = Stacks()
        if st.group != group:
            top = st.undo[-1] if st.undo else None
            st.close_steps()
            # the group's step is still the latest: it goes on; else the next change
            # starts the group's first step
            if top is not None and top.group == group:
                top.open = True
                top.touch()
            st.group = group
        st.last_ts = ev.ts

    def _reverted(self, ev: Event) -> None:
        """A revert of another writer's changes (revert.py): the copies it made of
        deleted text go to the steps that inserted the originals (as an undo's), and the
        writer's steps whose every event it reverted leave their stacks: nothing of them
        is left to undo or redo (an undo of one after a reload, when Yjs's in-memory
        link from the originals to the copies is gone, brought the text back twice)."""
        for of, made in ev.meta.get("copies") or ():
            self._give_copies(from_b64(of), from_b64(made))
        writer, reverts = ev.meta.get("writer"), ev.meta.get("reverts")
        ins, dels = ev.meta.get("ins"), ev.meta.get("dels")
        if isinstance(ins, str):
            union_into(self.undone, from_b64(ins))
        st = self.get(writer) if isinstance(writer, str) else None
        if st is None or not isinstance(reverts, list):
            return
        gone = {int(s) for s in reverts if isinstance(s, int)}
        parts = (
            (from_b64(ins), from_b64(dels))
            if isinstance(ins, str) and isinstance(dels, str)
            else None
        )
        for stack in (st.undo, st.redo):
            kept: list[Step] = []
            for step in stack:
                if gone.issuperset(step.seqs):
                    continue
                if parts is not None and not gone.isdisjoint(step.seqs):
                    # a step the range's first or last seq cuts: the rest of it stays
                    step.seqs = [s for s in step.seqs if s not in gone]
                    step.ins = subtract(step.ins, parts[0])
                    step.dels = subtract(step.dels, parts[1])
                    step.touch()
                kept.append(step)
            stack[:] = kept

    def _restored(self, ev: Event) -> None:
        """A restore that wrote again deleted text: its copies go to the steps that
        inserted the originals (as an undo's), and are kept (``restored``) for undos and
        redos to find (``_copied``). Yjs links an undo's copy to its original in memory
        (``item.redone``), so that no undo brings the original back beside it; a
        restore's new text had no such link, and an undo of a deletion the restore had
        brought back (a redo of typing it had) wrote the text a second time."""
        for pair in ev.meta.get("copies") or ():
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair):
                of, made = from_b64(pair[0]), from_b64(pair[1])
                if of and made:
                    self._give_copies(of, made)
                    self.restored.append((of, made))

    def _follow_restored(self, of: Ranges, made: Ranges) -> None:
        """An undo's or a redo's copies `made` of `of`: kept when `of` holds a restore's
        copies (or copies of those), which are then alive again as these."""
        if made and any(may_overlap(of, c) for _, c in self.restored):
            self.restored.append((of, made))

    def _copied(
        self, doc: Doc[Any], dels: Ranges, own: Ranges, deleted: Deletions | None = None
    ) -> Ranges:
        """What of `dels` a restore wrote again as copies (``restored``) of which one is
        alive in `doc`, itself or as a copy an undo or a redo made of it since, other
        than in `own` (what the step being reverted inserted, about to be deleted).
        `deleted`: gives what is deleted in `doc`, when the caller knows it (the room's
        union, Room.deletions); else `doc`'s whole delete set is read (2-3 ms at a
        640 kB state, each undo whose step's deletions meet a restore's copies)."""
        hits = [(of, made) for of, made in self.restored if may_overlap(of, dels)]
        if not hits:
            return {}
        known = deleted() if deleted is not None else None
        gone: Ranges = {}
        if known is None:
            # (read whole: an update is quicker to read than a union built of a snapshot)
            gone = decode_update_meta(doc.get_update(doc.get_state())).deletes
        out: Ranges = {}
        for of, made in hits:
            seen: set[int] = set()
            stack = [made]
            while stack:
                copies = stack.pop()
                alive = subtract(copies, own)
                if known.missing(alive) if known is not None else subtract(alive, gone):
                    union_into(out, intersect(of, dels))
                    break
                for i, (older, newer) in enumerate(self.restored):
                    if i not in seen and may_overlap(older, copies):
                        seen.add(i)
                        stack.append(newer)
        return out

    def _only_marks(self, dels: Ranges) -> bool:
        """Whether `dels` deletes only formatting marks, and changes nothing anyone sees:
        a client's clean-up of marks left with nothing between them, or of marks that
        repeat what is in force. (Turning bold off over exactly a bold range deletes only
        its two marks too, and is a change: the document is rendered, formatting
        included, with and without the deletion, once the cheap test has passed.)"""
        if self._marks is not None and subtract(dels, self._marks):
            return False
        doc = self.room.doc
        state = doc.get_update()
        # every mark of the document, read from it whole (``marks`` before its first)
        self._marks, at = marks_and_end(state)
        if subtract(dels, self._marks):
            return False
        r = P.Reader(state)
        r.pos = at
        before_dels = subtract(read_delete_set(r), dels)
        roots = dict(doc.items())
        kinds = {name: type(root) for name, root in roots.items() if root is not None}
        untyped = [name for name, root in roots.items() if root is None]
        if untyped:
            for name, kind in infer_root_types(doc, untyped).items():
                kinds[name] = _ROOT_TYPES[kind]
        before: Doc[Any] = Doc(skip_gc=True)
        try:
            before.apply_update(state[:at] + encode_ranges(before_dels))
            return _rendered(before, kinds) == _rendered(doc, kinds)
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one: then it counts, as before
            log.warning("room %s: cannot tell a formatting clean-up: %r", self.room.name, e)
            return False

    def marks(self) -> Ranges:
        """The clocks of every formatting mark of the document: from the snapshot's meta
        and each event recorded since; read from the whole document the first time when
        the snapshot has none (written before they were kept: once per such document)."""
        if self._marks is None:
            self._marks = format_clocks(self.room.doc.get_update())
        return self._marks

    def _record_inverse(self, ev: Event, st: Stacks, ins: Ranges, dels: Ranges) -> None:
        source, target = (st.undo, st.redo) if ev.kind == UNDO else (st.redo, st.undo)
        reverted = self._take_reverted(ev, source)
        if ev.meta.get("already") == ALREADY_RESTORED:
            # a step a restore did already (its text is back): it leaves the stack, and
            # goes to no other, the event changed nothing (docs/undo.md, "Text a restore
            # brought back already is not brought back again")
            st.close_steps()
            return
        if reverted is not None and reverted.ins:
            union_into(self.undone, reverted.ins)
        if self.book.only(ins, dels):
            # an undo by a release that reverted bookkeeping: of a step of it alone, whose
            # redo (as a step) now had nothing to revert, refused, and stayed on the stack
            st.close_steps()
            return
        if reverted is None:
            log.warning(
                "room %s: %s seq %d reverts %s, not on %s's stack (kept as it is)",
                self.room.name, ev.kind, ev.seq, ev.meta.get("reverts"), ev.actor,
            )  # fmt: skip
        elif ev.meta.get("copies"):
            for of, made in ev.meta["copies"]:
                self._give_copies(from_b64(of), from_b64(made))
                if self.restored:
                    self._follow_restored(from_b64(of), from_b64(made))
        elif ins:
            self._give_copies(subtract(reverted.dels, reverted.ins), ins)
            if self.restored:
                self._follow_restored(subtract(reverted.dels, reverted.ins), ins)
        completes = ev.meta.get("completes")
        if completes is None:
            target.append(Step([ev.seq], ins, dels, floor=self._floor(ins), inverse=True))
            if target is st.undo:
                self._bound(st)
            else:
                del target[: -self.max_depth]
        elif target and int(completes) in target[-1].seqs:
            # the rest of the step that undo reverted: one step to redo with it
            top = target[-1]
            top.seqs.append(ev.seq)
            union_into(top.ins, ins)
            union_into(top.dels, dels)
            top.touch()
        st.close_steps()  # the next change starts a new step (Yjs: stopCapturing)

    def _take_reverted(self, ev: Event, source: list[Step]) -> Step | None:
        """The step `ev` reverts, taken off `source` (None when no step there holds all
        of its seqs: the stack is left as it is).

        Steps above it that the undo saw (meta ``at``: the seq it was made at) had
        nothing left to revert and go too, as ``perform`` skipped them; any holding an
        event logged after that, by another process, stays. When the step has such
        events too, they joined it after the undo read the log: the step keeps them
        (its ranges less those of the part reverted, meta ``ins``/``dels``) and the
        part goes. An undo that ``completes`` another reverts that rest, wherever it
        is on the stack, and takes no step above it along."""
        reverts = {int(s) for s in ev.meta.get("reverts", [])}
        at = int(ev.meta.get("at", ev.seq - 1))
        for i in range(len(source) - 1, -1, -1):
            step = source[i]
            if not reverts or not reverts.issubset(step.seqs):
                continue
            above = source[i + 1 :]
            if ev.meta.get("completes") is None:
                above = [s for s in above if s.seqs[-1] > at]
            if len(reverts) == len(step.seqs):
                source[i:] = above
                return step
            part = self._part(ev, step, reverts)
            source[i + 1 :] = above
            if part is None:  # its ranges are not known: the whole step goes
                del source[i]
                return step
            return part
        return None

    def _part(self, ev: Event, step: Step, reverts: set[int]) -> Step | None:
        """The part of `step` that `ev` reverted, which `step` gives up (in place: an undo
        in progress follows the rest); None when the event does not say its ranges."""
        if "ins" not in ev.meta or "dels" not in ev.meta:
            log.warning(
                "room %s: %s seq %d reverts part of %s's step %d..%d without its ranges",
                self.room.name, ev.kind, ev.seq, ev.actor, step.seqs[0], step.seqs[-1],
            )  # fmt: skip
            return None
        part = Step(sorted(reverts), from_b64(ev.meta["ins"]), from_b64(ev.meta["dels"]))
        part.floor = step.floor
        step.seqs = [s for s in step.seqs if s not in reverts]
        step.ins = subtract(step.ins, part.ins)
        step.dels = subtract(step.dels, part.dels)
        step.touch()
        return part

    def _give_copies(self, originals: Ranges, copies: Ranges) -> None:
        """The items `copies` restore `originals`: a step that inserted all of them owns
        the copies too (Yjs's in-memory `redone` links, made persistent). An undo whose
        originals came from several steps restores them one part at a time and says
        which copies are whose in its meta (see `revert`)."""
        if not originals:
            return
        whole = size(originals)
        self.materialize()
        for st in self.actors.values():
            for step in (*st.undo, *st.redo):
                if (
                    may_overlap(step.ins, originals)
                    and size(intersect(step.ins, originals)) == whole
                ):
                    step.ins = union(step.ins, copies)
                    step.touch()

    # --- persistence -------------------------------------------------------------------

    def to_meta(self) -> dict[str, Any]:
        """The stacks for a snapshot's meta. Each step's floor is written as it is kept,
        relative to a base state vector (the clients whose clocks differ from it: those
        that wrote since the base was taken, up to the step), which its actor's entry
        names (``base``: an index into ``bases``). A decoded actor's base is this
        room's (``_base``); an entry still as the loaded meta had it keeps its own: a
        meta holds one base per generation of stacks nobody touched since, never one
        per step."""
        bases: dict[str, int] = {}

        def base(sv: str) -> int:
            return bases.setdefault(sv, len(bases))

        actors: dict[str, Any] = {}
        for actor, raw in self._raw.items():
            ref = raw.get("base")
            actors[actor] = {**raw, "base": base(ref)} if isinstance(ref, str) else raw
        for actor, st in self.actors.items():
            if st.undo or st.redo:
                actors[actor] = {**st.to_json(), "base": base(self._base_b64())}
        out = {
            "seq": self.last_seq,
            "actors": actors,
            "marks": to_b64(self.marks()),
            "bases": list(bases),
            "book": self.book.to_json(),
        }
        if self.undone:
            out["undone"] = to_b64(self.undone)
        if self.restored:
            out["restored"] = [[to_b64(of), to_b64(made)] for of, made in self.restored]
        return out

    def _base_b64(self) -> str:
        if self._base_text is None:
            self._base_text = base64.b64encode(self._base).decode()
        return self._base_text

    def load_meta(self, meta: dict[str, Any] | None) -> None:
        if not meta:
            return
        try:
            bases = meta.get("bases")
            bases = [b for b in bases if isinstance(b, str)] if isinstance(bases, list) else []
            self._raw = {}
            for actor, raw in dict(meta.get("actors", {})).items():
                ref = raw.get("base") if isinstance(raw, dict) else None
                if isinstance(ref, int) and 0 <= ref < len(bases):
                    # its base itself, not its index: the next meta has its own list
                    raw = {**raw, "base": bases[ref]}
                elif isinstance(raw, dict) and "base" in raw:
                    raw = {k: v for k, v in raw.items() if k != "base"}  # its floors unknown
                self._raw[actor] = raw
            self.actors = {}
            marks = meta.get("marks")
            self._marks = from_b64(marks) if isinstance(marks, str) else None
            undone = meta.get("undone")
            self.undone = from_b64(undone) if isinstance(undone, str) else {}
            restored = meta.get("restored")
            self.restored = [
                (from_b64(p[0]), from_b64(p[1]))
                for p in (restored if isinstance(restored, list) else ())
                if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            ]
            # (a meta written before trims: trimmed after the next undo or redo)
            self._undone_kept = size(self.undone) // 2
            self.book.load_json(meta.get("book"))
        except Exception as e:  # a damaged entry costs the undo history, never the doc
            log.warning("room %s: undo stacks in the snapshot unreadable: %r", self.room.name, e)
            self.actors = {}

    # --- performing --------------------------------------------------------------------

    def bookkeeping_only(self, step: Step) -> bool:
        """Whether `step` changed bookkeeping roots alone (a step recorded so before they
        were no step): undo and redo pass it over without a word."""
        self.book.follow(self.room.doc, None, _typed_roots)  # (found on a first use)
        return self.book.only(step.ins, step.dels)

    def scopes(self, doc: Doc[Any]) -> list[Any]:
        """The roots a revert may change: all but the bookkeeping ones (bookkeeping.py:
        a Y.PermanentUserData's map, the roots of ``skip_roots``), which Yjs's
        UndoManager, scoped to the types it tracks, never reverts either: what a step
        wrote there stays."""
        roots = _typed_roots(doc)
        skip = bookkeeping_roots(roots, self.skip_roots)
        return [r for name, r in roots.items() if r is not None and name not in skip]

    def revert(
        self,
        doc: Doc[Any],
        step: Step,
        copies: list[list[str]] | None = None,
        kept: list[Kept] | None = None,
        prepared: WholeRead | None = None,
        already: list[Ranges] | None = None,
        deleted: Deletions | None = None,
    ) -> bool:
        """Revert one step on the live doc; False when nothing of it is left to revert.
        `already` gets what of the step's deletions it left out as brought back already
        by a restore (``_copied``), when some: with False, the restore did the step's
        revert (``perform`` stops there). `deleted`: gives what is deleted in `doc`, when
        the caller knows it (Room.deletions, in the room's turn), for ``_copied``.

        yrs 0.28 panics (and leaves the doc broken) when an UndoManager's item holds
        two ranges of one client that fall in the same block, which the server's own
        client id (shared by every user's undos) makes common. So the insertions go
        in layers of at most one range per client, after the deletions: what the
        layers delete commutes.

        The deletions are restored in layers too, one more part at a time, when what
        they restore was inserted by several steps (any actor's, either stack; see
        `_owned`): each layer's new items are the copies of that part, and `copies`
        gets [originals, copies] per layer (encoded ranges, base64) for the event's
        meta, so that the owners take their copies along when undone, after a reload
        too.

        A container the step inserted that now holds what others wrote is kept, with
        what they wrote in it; the step's own content inside it goes (containers.py).
        `kept` gets what was kept, for the answer.

        A map key whose value the step holds gets the value mapkeys.py picks (the latest
        anyone else set, not undone; for an undo's or a redo's step, what it replaced),
        restored in a run of its own after the rest, which leaves the key's items alone;
        each such run's copies, and the first run's, go into `copies` as the layers'
        do. `prepared`: the whole document read for it beforehand (``read_keys``)."""
        scopes = self.scopes(doc)
        if not scopes:
            return False
        ins = step.ins
        held = kept_containers(doc, ins, self.floor(step)) if ins else None
        if held is not None:
            ins = subtract(ins, held.ids)
            if kept is not None:
                kept.append(held)
        layers: list[Ranges] = [{}]
        for client, ranges in ins.items():
            for i, r in enumerate(ranges):
                while len(layers) <= i:
                    layers.append({})
                layers[i][client] = [r]
        dels = subtract(step.dels, step.ins)
        if self.restored and dels:
            # brought back already by a restore: not a second time (``_restored``)
            copied = self._copied(doc, dels, step.ins, deleted)
            if copied:
                dels = subtract(dels, copied)
                if already is not None:
                    already.append(copied)
        # the keys whose value the step holds: what each holds after it, not Yjs's pick
        # (mapkeys.py: a concurrent set's loser in the step's deletions came back stale,
        # or nothing did and the key was left missing)
        # (when nobody else set them since the step began, Yjs picks right: the value
        # the step replaced, unless that was undone since)
        keys = chains_held(doc, ins, step.dels, self._keys_floor(step), prepared) if ins else []
        restores: list[tuple[Ranges, Ranges]] = []
        for key in keys or ():
            at = value_after(key, ins, step.dels, self.undone, step.inverse)
            dels = subtract(dels, as_ranges(key.items))
            if at >= 0:
                right = as_ranges(key.items[at + 1 :])
                restores.append((as_ranges(key.items[at : at + 1]), union(right, ins)))
        groups = self._owned(step, dels) if dels else []
        # A map entry is restored only when every newer value of its key is going too:
        # yrs looks for those in the item's insertions or in the deletions of the
        # manager's stacks. A redo stack that "deletes" all of the step's insertions
        # (never popped) shows it every layer's.
        going: list[StackItem[Any]] = [
            StackItem(doc._doc, IdSet.decode(encode_ranges(ins)), IdSet.decode(b"\x00"))
        ]
        ts = int(self.room.current_ts)  # (a value: the manager holds nothing of the room)
        changed = False

        def run(
            deletions: Ranges, insertions: Ranges, passing: list[StackItem[Any]] = going
        ) -> bool:
            item: StackItem[Any] = StackItem(
                doc._doc,
                IdSet.decode(encode_ranges(deletions)),
                IdSet.decode(encode_ranges(insertions)),
            )
            um = UndoManager(
                scopes=scopes,
                capture_timeout_millis=0,
                timestamp=lambda: ts,
                undo_stack=[item],
                redo_stack=passing,
            )
            try:
                return bool(um.undo())
            finally:
                _release(um)

        if len(groups) <= 1:
            # one owner (the common case): restore and delete in one run, as Yjs does
            sv = doc.get_state()
            changed = run(dels, layers[0])
            layers = layers[1:]
            made = inserted(sv, doc.get_state()) if restores and copies is not None else {}
            if made:
                # the keys' values below have their own copies: so has this run
                assert copies is not None
                copies.append([to_b64(dels), to_b64(made)])
        # several: cumulative runs, so that what an earlier run restored is not copied
        # again (Yjs follows its in-memory link), and a child whose parent's owner
        # comes later is restored with it
        upto: Ranges = {}
        for group in groups if len(groups) > 1 else []:
            union_into(upto, group)
            sv = doc.get_state()
            changed = run(upto, {}) or changed
            made = inserted(sv, doc.get_state())
            if copies is not None and made:
                copies.append([to_b64(group), to_b64(made)])
        for layer in layers:
            if layer:
                changed = run({}, layer) or changed
        for value, right in restores:
            # brought back as the key's value: every item right of it is shown going
            sv = doc.get_state()
            shown = IdSet.decode(encode_ranges(right))
            passing: list[StackItem[Any]] = [StackItem(doc._doc, shown, IdSet.decode(b"\x00"))]
            changed = run(value, {}, passing) or changed
            made = inserted(sv, doc.get_state())
            if copies is not None and made:
                copies.append([to_b64(value), to_b64(made)])
        return changed

    def _keys_floor(self, step: Step) -> dict[int, int] | None:
        """The floor from which on what was written tells whether anyone else set a key
        whose value `step` holds (mapkeys._alone); None: the whole document tells (the
        value the step replaced was undone since: Yjs's pick would bring it back)."""
        return None if may_overlap(step.dels, self.undone) else self.floor(step)

    async def read_keys(self, step: Step) -> WholeRead | None:
        """The whole document read for the map keys whose value `step` holds, when
        ``revert`` will need it (mapkeys.py: someone else set such a key since the step
        began), before the room's turn: yrs's encoding of the document is taken here, on
        the loop, and read in a worker thread while the room goes on; ``revert`` then
        reads only what was written since. None when not needed."""
        doc = self.room.doc
        if not step.ins or not needs_whole(doc, step.ins, step.dels, self._keys_floor(step)):
            return None
        update, sv = doc.get_update(), P.decode_state_vector(doc.get_state())
        return await cpu_account.to_thread(read_whole, update, sv, union({}, step.ins))

    def undone_grown(self) -> bool:
        """Whether ``undone`` grew enough since its last trim to be trimmed again."""
        return bool(self.undone) and size(self.undone) >= max(
            self.undone_trim_at, 2 * self._undone_kept
        )

    def _held(self) -> Ranges:
        """The insertions of every step on a stack (anyone's, either stack)."""
        self.materialize()
        held: Ranges = {}
        for st in self.actors.values():
            for step in (*st.undo, *st.redo):
                union_into(held, step.ins)
        return held

    async def trim_undone(self) -> int:
        """Forget what of ``undone`` no undo can look at any more (mapkeys.forgettable:
        an undone item of a key left of a value nobody can undo back past, and any that
        is no key's value), so that it does not grow for the life of the document;
        how many items it forgot. The whole document is read for it, in a worker
        thread (yrs's encoding taken on the loop), after an undo or a redo when
        ``undone`` doubled since the last trim. What came in meanwhile is checked: a
        value that let items go and is undone or a step's since keeps them all (the
        next trim tells)."""
        if not self.undone:
            return 0
        undone = union({}, self.undone)
        update = self.room.doc.get_update()
        try:
            forget, stoppers = await cpu_account.to_thread(
                forgettable, update, undone, self._held()
            )
        except FATAL:
            raise
        except Exception as e:  # (after the undo was made: it answers as made, untrimmed)
            log.warning("room %s: cannot trim the undone values: %r", self.room.name, e)
            forget, stoppers = {}, {}
        if stoppers and (intersect(stoppers, self.undone) or intersect(stoppers, self._held())):
            forget = {}
        before = size(self.undone)
        if forget:
            self.undone = subtract(self.undone, forget)
        self._undone_kept = size(self.undone)
        return before - self._undone_kept

    def _owned(self, step: Step, dels: Ranges) -> list[Ranges]:
        """dels split so that each part lies wholly inside or wholly outside every other
        step's insertions (anyone's, either stack): the copies of a part then belong to
        exactly the steps that inserted all of it. What no step inserted comes last."""
        self.materialize()
        others = [
            other
            for st in self.actors.values()
            for other in (*st.undo, *st.redo)
            if other is not step and may_overlap(other.ins, dels)
        ]
        # What some other step inserted is split below; the rest of `dels`, often nearly
        # all of it (an undo of a restore that took out half a book: 16,000 ranges),
        # is the last part as it stands. Splitting all of it by every step (600 on
        # such a book) held the event loop 2-3.5 s; the parts and their order are the
        # same (each point of `dels` goes by which steps hold it, inside before outside
        # step by step, and a point in none is the rest's).
        held: Ranges = {}
        for other in others:
            union_into(held, intersect(other.ins, dels))
        rest: Ranges = {}
        union_into(rest, subtract(dels, held) if held else dels)
        # each step splits every part it holds some but not all of: inside, then outside
        parts: list[Ranges] = [held] if held else []
        for other in others:
            split: list[Ranges] = []
            for part in parts:
                inside = intersect(other.ins, part) if may_overlap(other.ins, part) else {}
                if not inside or size(inside) == size(part):
                    split.append(part)
                else:
                    split += [inside, subtract(part, other.ins)]
            parts = split
        return parts + ([rest] if rest else [])

    def stacks(self, actor: str) -> Stacks:
        return self.get(actor) or Stacks()

    def get(self, actor: str) -> Stacks | None:
        """The actor's stacks, decoding them from the snapshot's meta on first use."""
        st = self.actors.get(actor)
        if st is None and actor in self._raw:
            raw = self._raw.pop(actor)
            try:
                st = Stacks.from_json(raw)
                self._rebase(st, raw.get("base"))
                self.actors[actor] = st
            except Exception as e:  # a damaged entry costs the undo history, never the doc
                log.warning("room %s: undo stacks of %r unreadable: %r", self.room.name, actor, e)
        return st

    def _rebase(self, st: Stacks, ref: Any) -> None:
        """Make the floors of `st`'s steps, relative to the base `ref` of the meta they
        came from (base64 of a state vector), relative to this room's ``_base``: the
        clients whose clocks moved from that base to this one (they wrote after those
        steps) are added at their clocks then. Without a base they are not known."""
        steps = [s for s in (*st.undo, *st.redo) if s.floor is not None]
        if not steps:
            return
        moved = self._moved.get(ref) if isinstance(ref, str) else None
        if moved is None and isinstance(ref, str):
            then = P.decode_state_vector(base64.b64decode(ref))
            now = P.decode_state_vector(self._base)
            moved = {
                c: then.get(c, 0)
                for c in now.keys() | then.keys()
                if now.get(c, 0) != then.get(c, 0)
            }
            self._moved[ref] = moved
        for step in steps:
            assert step.floor is not None
            step.floor = None if moved is None else {**moved, **step.floor}

    def materialize(self) -> None:
        for actor in list(self._raw):
            self.get(actor)


async def fold(
    store: EventStore, name: str, upto: int, settings: Settings
) -> tuple[Loaded, dict[str, Any]]:
    """The document at `upto`, and the meta a snapshot there carries: the undo stacks
    and the owners of its Yjs client ids (ownership.py).

    For a compaction base (``palimpsest compact``): the stacks are ranges of Yjs IDs,
    which folding events into a snapshot keeps, so steps of folded events stay undoable.
    The stacks are rebuilt exactly as a room loading the same snapshot and events does.
    The owners likewise: without them, a client id whose events were folded belonged to
    nobody, and anyone could write under an offline user's id (whose own edits, at the
    same clocks, were then dropped as known)."""
    holder: dict[str, RoomUndo] = {}

    def before_replay(doc: Doc[Any], snap: Snapshot | None) -> None:
        # a room that is never started (nor its committer): RoomUndo records what
        # its doc does
        room = Room(name, doc, snap.seq if snap else 0, committer=Committer(store), reader=store)
        state = RoomUndo(
            room,
            settings.undo_capture_ms,
            settings.undo_max_depth,
            settings.undo_max_group,
            GroupLimits.from_settings(settings),
            settings.undo_skip_roots,
        )
        state.load_meta(snap.meta.get(META_KEY) if snap is not None else None)
        room.owners.restore(snap.meta.get(OWNERS_KEY) if snap is not None else None)
        holder["undo"] = state

    def on_event(ev: Event) -> None:
        state = holder["undo"]
        state.room.seq = ev.seq
        state.room.current_ts = ev.ts
        state.record(ev, *state.take())
        state.room.owners.record(ev.actor, ev.update, relays=ev.meta.get("relays", ()))

    # in a worker thread, the hooks too (a room of its own nobody else sees): the replay
    # of a long history held every document's edits and requests (24 s for 200,000
    # events of a 1 MB book)
    loaded = await load(
        store, name, upto=upto, before_replay=before_replay, on_event=on_event,
        with_meta=True, off_loop=True,
    )  # fmt: skip
    state = holder["undo"]
    snap = loaded.snapshot
    if snap is not None and OWNERS_KEY not in snap.meta:
        # a snapshot written before the rule: its ids' owners are in the log up to it,
        # which the compaction is about to drop (ownership.map_of_log)
        owners = state.room.owners
        owners.restore(await map_of_log(store, name, snap.seq, owners.server))
    state.close()
    return loaded, {META_KEY: state.to_meta(), OWNERS_KEY: state.room.owners.to_meta()}


__all__ = [
    "ALREADY_RESTORED",
    "MARK",
    "META_KEY",
    "REDO",
    "RESTORE",
    "REVERT",
    "UNDO",
    "RoomUndo",
    "fold",
    "infer_root_types",
]
