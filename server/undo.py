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
empty update), so grouping is the same after a restart.

Yjs remembers, per deleted item, the copy an undo made of it (``item.redone``), so
that undoing an older insertion deletes the copy. That link lives only in memory;
to survive a reload this module gives the copies to the step that inserted the
originals when the undo happens (when one step inserted all of them; see
``RoomUndo._map_copies``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycrdt import (
    Array,
    Doc,
    IdSet,
    Map,
    StackItem,
    Subscription,
    Text,
    TransactionEvent,
    UndoManager,
    XmlFragment,
)

from . import protocol as P
from .errors import BadRequest, Forbidden
from .room import Room
from .store.base import Event, NewEvent, now_ms

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("palimpsest.undo")

#: kinds that are not a new change by their actor
UNDO, REDO, MARK = "undo", "redo", "undo_mark"
META_KEY = "undo"
EMPTY_UPDATE = b"\x00\x00"

# --- ID ranges (a Yjs IdSet as {client: [(start, end), ...]}, sorted, disjoint) --------

Ranges = dict[int, list[tuple[int, int]]]


def _normalize(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def union(a: Ranges, b: Ranges) -> Ranges:
    out = {c: list(r) for c, r in a.items()}
    for c, r in b.items():
        out[c] = _normalize(out.get(c, []) + r)
    return {c: r for c, r in out.items() if r}


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out: Ranges = {}
    for c, ra in a.items():
        rb = b.get(c)
        if not rb:
            continue
        got: list[tuple[int, int]] = []
        i = j = 0
        while i < len(ra) and j < len(rb):
            lo, hi = max(ra[i][0], rb[j][0]), min(ra[i][1], rb[j][1])
            if lo < hi:
                got.append((lo, hi))
            if ra[i][1] < rb[j][1]:
                i += 1
            else:
                j += 1
        if got:
            out[c] = got
    return out


def subtract(a: Ranges, b: Ranges) -> Ranges:
    out: Ranges = {}
    for c, ra in a.items():
        cuts = b.get(c, [])
        rest: list[tuple[int, int]] = []
        for start, end in ra:
            cur = start
            for cs, ce in cuts:
                if ce <= cur or cs >= end:
                    continue
                if cs > cur:
                    rest.append((cur, cs))
                cur = max(cur, ce)
            if cur < end:
                rest.append((cur, end))
        if rest:
            out[c] = rest
    return out


def size(a: Ranges) -> int:
    return sum(e - s for r in a.values() for s, e in r)


def encode_ranges(a: Ranges) -> bytes:
    """The Yjs v1 encoding of an IdSet (the delete-set format)."""
    out = bytearray(P.write_var_uint(len(a)))
    for client in sorted(a):
        out += P.write_var_uint(client) + P.write_var_uint(len(a[client]))
        for start, end in a[client]:
            out += P.write_var_uint(start) + P.write_var_uint(end - start)
    return bytes(out)


def decode_ranges(data: bytes) -> Ranges:
    r = P.Reader(data)
    out: Ranges = {}
    for _ in range(r.read_var_uint("IdSet clients")):
        client = r.read_var_uint("client")
        got = out.setdefault(client, [])
        for _ in range(r.read_var_uint("ranges")):
            start = r.read_var_uint("clock")
            got.append((start, start + r.read_var_uint("length")))
    return {c: _normalize(rs) for c, rs in out.items() if rs}


def inserted(before: bytes, after: bytes) -> Ranges:
    """The IDs a transaction created, from its before/after state vectors."""
    b, a = P.decode_state_vector(before), P.decode_state_vector(after)
    return {c: [(b.get(c, 0), clock)] for c, clock in a.items() if clock > b.get(c, 0)}


# --- steps and stacks ---------------------------------------------------------------------


@dataclass
class Step:
    """One undoable unit: the seqs of its events and the IDs they inserted and deleted."""

    seqs: list[int]
    ins: Ranges
    dels: Ranges

    def to_json(self) -> dict[str, Any]:
        return {
            "seqs": self.seqs,
            "ins": base64.b64encode(encode_ranges(self.ins)).decode(),
            "dels": base64.b64encode(encode_ranges(self.dels)).decode(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        return cls(
            [int(s) for s in d["seqs"]],
            decode_ranges(base64.b64decode(d["ins"])),
            decode_ranges(base64.b64decode(d["dels"])),
        )


@dataclass
class Stacks:
    """One actor's undo and redo stacks, and whether their last step may still grow."""

    undo: list[Step] = field(default_factory=list)
    redo: list[Step] = field(default_factory=list)
    last_ts: int = 0
    open: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "undo": [s.to_json() for s in self.undo],
            "redo": [s.to_json() for s in self.redo],
            "last_ts": self.last_ts,
            "open": self.open,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stacks:
        return cls(
            [Step.from_json(s) for s in d.get("undo", [])],
            [Step.from_json(s) for s in d.get("redo", [])],
            int(d.get("last_ts", 0)),
            bool(d.get("open", False)),
        )


_ROOT_TYPES: dict[str, Any] = {
    "Text": Text,
    "Map": Map,
    "Array": Array,
    "XmlFragment": XmlFragment,
}


def infer_root_types(doc: Doc[Any], names: Iterable[str]) -> dict[str, str]:
    """Guess the type of roots the server only knows from updates (pycrdt shows them as
    None), on a scratch copy, since asking for a root with a type fixes it."""
    scratch: Doc[Any] = Doc()
    scratch.apply_update(doc.get_update())
    out: dict[str, str] = {}
    for name in names:
        if len(scratch.get(name, type=Map)) > 0:
            out[name] = "Map"
        elif len(list(scratch.get(name, type=XmlFragment).children)) > 0:
            out[name] = "XmlFragment"
        elif str(scratch.get(name, type=Text)):
            out[name] = "Text"
        elif len(scratch.get(name, type=Array)) > 0:
            out[name] = "Array"
        else:
            out[name] = "Text"  # nothing visible left: any type undoes the same
    return out


class RoomUndo:
    """The undo state of one live room: per-actor stacks, fed by every applied event."""

    def __init__(self, room: Room, capture_ms: int, max_depth: int) -> None:
        self.room = room
        self.capture_ms = int(capture_ms)
        self.max_depth = max(1, int(max_depth))
        self.actors: dict[str, Stacks] = {}
        #: what each transaction since the last recorded event did: (inserted, deleted)
        self._pending: list[tuple[Ranges, Ranges]] = []
        self._mark = 0
        #: the seq of the last event recorded
        self.last_seq = room.seq
        self._sub: Subscription | None = room.doc.observe(self._on_transaction)

    def close(self) -> None:
        if self._sub is not None:
            try:
                self.room.doc.unobserve(self._sub)
            except Exception:  # the doc may already be gone
                pass
            self._sub = None

    # --- recording -------------------------------------------------------------------

    def _on_transaction(self, e: TransactionEvent) -> None:
        ev: Any = e  # pycrdt's stubs lack the state vectors and delete set it carries
        ins = inserted(ev.before_state, ev.after_state)
        dels = decode_ranges(ev.delete_set)
        if ins or dels:
            self._pending.append((ins, dels))

    def mark(self) -> None:
        """Before an event is applied: what is pending belongs to something else."""
        self._mark = len(self._pending)

    def take(self, since: int = 0) -> tuple[Ranges, Ranges]:
        got, self._pending = self._pending[since:], self._pending[:since]
        self._mark = 0
        ins: Ranges = {}
        dels: Ranges = {}
        for i, d in got:
            ins = union(ins, i)
            dels = union(dels, d)
        return ins, dels

    def record(self, ev: Event, ins: Ranges, dels: Ranges) -> None:
        """Update the stacks with one applied event and what it did."""
        self.last_seq = max(self.last_seq, ev.seq)
        st = self.actors.get(ev.actor)
        if ev.kind == MARK:
            if st is not None:
                st.open = False
            return
        if ev.kind in (UNDO, REDO):
            if st is None:
                st = self.actors[ev.actor] = Stacks()
            self._record_inverse(ev, st, ins, dels)
            return
        if not ins and not dels:
            return  # changed nothing: not a step, and does not clear the redo stack
        if st is None:
            st = self.actors[ev.actor] = Stacks()
        st.redo.clear()
        if st.open and st.undo and 0 <= ev.ts - st.last_ts < self.capture_ms:
            top = st.undo[-1]
            top.seqs.append(ev.seq)
            top.ins = union(top.ins, ins)
            top.dels = union(top.dels, dels)
        else:
            st.undo.append(Step([ev.seq], ins, dels))
            del st.undo[: -self.max_depth]
        st.last_ts = ev.ts
        st.open = True

    def _record_inverse(self, ev: Event, st: Stacks, ins: Ranges, dels: Ranges) -> None:
        source, target = (st.undo, st.redo) if ev.kind == UNDO else (st.redo, st.undo)
        reverts = [int(s) for s in ev.meta.get("reverts", [])]
        reverted: Step | None = None
        # steps with nothing left to revert were dropped when this one was found
        while source:
            step = source.pop()
            if step.seqs == reverts:
                reverted = step
                break
        if reverted is None:
            log.warning(
                "%s seq %d reverts %s, not on %s's stack", ev.kind, ev.seq, reverts, ev.actor
            )
        elif ins:
            self._map_copies(reverted, ins)
        target.append(Step([ev.seq], ins, dels))
        del target[: -self.max_depth]
        st.open = False  # the next change starts a new step (Yjs: stopCapturing)

    def _map_copies(self, reverted: Step, copies: Ranges) -> None:
        """The items `copies` restore those of reverted.dels: a step that inserted all
        of the originals owns the copies too (Yjs's in-memory `redone` links, made
        persistent). When the originals came from several steps, which copy is whose
        is not known here: those steps keep only the in-memory links (lost on reload)."""
        originals = subtract(reverted.dels, reverted.ins)
        if not originals:
            return
        whole = size(originals)
        for st in self.actors.values():
            for step in (*st.undo, *st.redo):
                if size(intersect(step.ins, originals)) == whole:
                    step.ins = union(step.ins, copies)

    # --- persistence -------------------------------------------------------------------

    def to_meta(self) -> dict[str, Any]:
        return {
            "seq": self.last_seq,
            "actors": {
                a: st.to_json() for a, st in self.actors.items() if st.undo or st.redo
            },
        }

    def load_meta(self, meta: dict[str, Any] | None) -> None:
        if not meta:
            return
        try:
            self.actors = {a: Stacks.from_json(d) for a, d in meta.get("actors", {}).items()}
        except Exception as e:  # a damaged entry costs the undo history, never the doc
            log.warning("room %s: undo stacks in the snapshot unreadable: %r", self.room.name, e)
            self.actors = {}

    # --- performing --------------------------------------------------------------------

    def scopes(self, doc: Doc[Any]) -> list[Any]:
        roots = dict(doc.items())
        untyped = [name for name, root in roots.items() if root is None]
        if untyped:
            for name, kind in infer_root_types(doc, untyped).items():
                roots[name] = doc.get(name, type=_ROOT_TYPES[kind])
        return [r for r in roots.values() if r is not None]

    def revert(self, doc: Doc[Any], step: Step) -> bool:
        """Revert one step on the live doc; False when nothing of it is left to revert."""
        scopes = self.scopes(doc)
        if not scopes:
            return False
        item: StackItem[Any] = StackItem(
            doc._doc,
            IdSet.decode(encode_ranges(step.dels)),
            IdSet.decode(encode_ranges(step.ins)),
        )
        room = self.room
        um = UndoManager(
            scopes=scopes,
            capture_timeout_millis=0,
            timestamp=lambda: int(room.current_ts),
            undo_stack=[item],
        )
        return um.undo()

    def stacks(self, actor: str) -> Stacks:
        return self.actors.get(actor) or Stacks()


# --- the room pipeline side ----------------------------------------------------------------

STATE_KEY = "undo"


def state_of(room: Room) -> RoomUndo:
    st = room.extra.get(STATE_KEY)
    if not isinstance(st, RoomUndo):
        raise BadRequest(f"undo is not tracked on document {room.name!r}")
    return st


async def perform(room: Room, actor: str, kind: str) -> Event | None:
    """Undo (kind "undo") or redo (kind "redo") actor's last step; None if nothing to."""
    if kind not in (UNDO, REDO):
        raise BadRequest(f"kind must be undo or redo, not {kind!r}")
    state = state_of(room)
    # Filled in by change() before the event is logged: the shallow copies the room
    # makes of meta share this list.
    reverts: list[int] = []

    def change(doc: Doc[Any]) -> None:
        st = state.actors.get(actor)
        if st is None:
            return
        # Steps above the first one with anything left to revert are dropped (as Yjs
        # does) when the event is recorded, so that the log alone decides the stacks.
        for step in reversed(st.undo if kind == UNDO else st.redo):
            if state.revert(doc, step):
                reverts.extend(step.seqs)
                return

    return await room.server_change(actor, kind, change, meta={"reverts": reverts})


async def close_group(backend: Backend, room: Room, actor: str) -> int | None:
    """End actor's current step: their next change starts a new one. Logged (kind
    undo_mark, empty update) so that grouping is the same after a restart; None when
    no step was open."""
    state = state_of(room)
    st = state.actors.get(actor)
    if st is None or not st.open or now_ms() - st.last_ts >= state.capture_ms:
        if st is not None:
            st.open = False
        return None
    st.open = False
    stored = await backend.committer.append(room.name, [NewEvent(actor, MARK, EMPTY_UPDATE, {})])
    room.receive_peer_events(stored)
    return stored[0].seq


# --- wiring ----------------------------------------------------------------------------------


def _answer(ev: Event | None, kind: str) -> dict[str, Any]:
    if ev is None:
        return {"ok": False, "reason": f"nothing to {kind}"}
    return {"ok": True, "seq": ev.seq, "reverts": list(ev.meta.get("reverts", []))}


def _ext(kind: str) -> Any:
    async def handler(
        backend: Backend, room: Room, conn: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        if not conn.identity.can_write:
            raise Forbidden(f"read-only: you cannot {kind}")
        return _answer(await perform(room, conn.actor, kind), kind)

    return handler


async def _ext_close_group(
    backend: Backend, room: Room, conn: Any, body: dict[str, Any]
) -> dict[str, Any]:
    seq = await close_group(backend, room, conn.actor)
    return {"ok": True, "seq": seq}


def install(backend: Backend) -> None:
    settings = backend.settings
    rooms = backend.rooms

    def on_load(room: Room) -> None:
        state = RoomUndo(room, settings.undo_capture_ms, settings.undo_max_depth)
        snapshot_meta = room.extra.get("snapshot_meta") or {}
        state.load_meta(snapshot_meta.get(META_KEY))
        room.extra[STATE_KEY] = state

    def on_replay(room: Room, ev: Event) -> None:
        state = room.extra.get(STATE_KEY)
        if isinstance(state, RoomUndo):
            state.record(ev, *state.take())

    def before_apply(room: Room, ev: Event) -> None:
        state = room.extra.get(STATE_KEY)
        if isinstance(state, RoomUndo):
            state.mark()

    def after_apply(room: Room, ev: Event) -> None:
        state = room.extra.get(STATE_KEY)
        if isinstance(state, RoomUndo):
            state.record(ev, *state.take(state._mark))

    def committed(room: Room, events: list[Event]) -> None:
        state = room.extra.get(STATE_KEY)
        if not isinstance(state, RoomUndo):
            return
        for ev in events:
            if ev.seq > state.last_seq:  # a server change: not applied through _apply
                state.record(ev, *state.take())

    def closed(room: Room) -> None:
        state = room.extra.get(STATE_KEY)
        if isinstance(state, RoomUndo):
            state.close()

    def meta_hook(room: Room) -> dict[str, Any]:
        state = room.extra.get(STATE_KEY)
        return {META_KEY: state.to_meta()} if isinstance(state, RoomUndo) else {}

    rooms.on_load.append(on_load)
    rooms.on_replay.append(on_replay)
    backend.hooks.before_apply.append(before_apply)
    backend.hooks.after_apply.append(after_apply)
    backend.hooks.committed.append(committed)
    backend.hooks.closed.append(closed)
    backend.snapshots.meta_hooks.append(meta_hook)
    backend.extensions[UNDO] = _ext(UNDO)
    backend.extensions[REDO] = _ext(REDO)
    backend.extensions["close_group"] = _ext_close_group


__all__ = [
    "RoomUndo",
    "Stacks",
    "Step",
    "close_group",
    "install",
    "perform",
    "state_of",
]
