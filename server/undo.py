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
originals when the undo happens; when several steps did, the undo restores them one
part at a time and its meta (``"copies"``) says which copies are whose (see
``RoomUndo.revert``).
"""

from __future__ import annotations

import base64
import bisect
import logging
from collections.abc import Iterable, Mapping, Sequence
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
from starlette.routing import BaseRoute

from . import protocol as P
from .commit import Committer
from .errors import BadRequest, Forbidden, PalimpsestError, StoreError
from .extensions import Extension, OpContext, Operation
from .origins import Origin, ServerOrigin
from .room import Room
from .settings import Settings
from .snapshots import Loaded, load
from .store.base import Event, EventStore, Snapshot, now_ms

if TYPE_CHECKING:
    from .backend import Backend
    from .settings import Settings

log = logging.getLogger("palimpsest.undo")

#: kinds that are not a new change by their actor
UNDO, REDO, MARK = "undo", "redo", "undo_mark"
META_KEY = "undo"

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
    union_into(out, b)
    return out


def union_into(target: Ranges, b: Ranges) -> None:
    """Add b's ranges to target, in place.

    On the path of every edit, and a step can hold thousands of them: a range at or past
    the end of a client's list (every insertion: Yjs clocks only grow) is appended or
    merged in O(1); any other (a deletion in the middle) is placed by bisection."""
    for c, rs in b.items():
        cur = target.get(c)
        if cur is None:
            cur = target[c] = []
        for start, end in rs:
            if end <= start:
                continue
            if not cur or start > cur[-1][1]:
                cur.append((start, end))
            elif start >= cur[-1][0]:
                if end > cur[-1][1]:
                    cur[-1] = (cur[-1][0], end)
            else:
                i = bisect.bisect_left(cur, (start, end))
                lo = i - 1 if i > 0 and cur[i - 1][1] >= start else i
                hi = i
                while hi < len(cur) and cur[hi][0] <= end:
                    hi += 1
                if lo < hi:
                    start = min(start, cur[lo][0])
                    end = max(end, cur[hi - 1][1])
                cur[lo:hi] = [(start, end)]
        if not cur:
            del target[c]


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


def _may_overlap(a: Ranges, b: Ranges) -> bool:
    """False when a and b surely share no ID (cheap: per client, the overall bounds)."""
    for c, ra in a.items():
        rb = b.get(c)
        if rb and ra[0][0] < rb[-1][1] and rb[0][0] < ra[-1][1]:
            return True
    return False


def _b64(a: Ranges) -> str:
    return base64.b64encode(encode_ranges(a)).decode()


def _unb64(s: str) -> Ranges:
    return decode_ranges(base64.b64decode(s))


def inserted(before: bytes, after: bytes) -> Ranges:
    """The IDs a transaction created, from its before/after state vectors."""
    b, a = P.decode_state_vector(before), P.decode_state_vector(after)
    return {c: [(b.get(c, 0), clock)] for c, clock in a.items() if clock > b.get(c, 0)}


# --- steps and stacks ---------------------------------------------------------------------


def _runs(seqs: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7, 8] -> [[1, 3], [7, 8]]: a step's seqs, compact in snapshot meta."""
    out: list[list[int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@dataclass
class Step:
    """One undoable unit: the seqs of its events and the IDs they inserted and deleted."""

    seqs: list[int]
    ins: Ranges
    dels: Ranges
    #: to_json() of an unchanged step, reused by every snapshot; touch() forgets it
    _json: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def touch(self) -> None:
        self._json = None

    def to_json(self) -> dict[str, Any]:
        if self._json is None:
            self._json = {
                "runs": _runs(self.seqs),
                "ins": base64.b64encode(encode_ranges(self.ins)).decode(),
                "dels": base64.b64encode(encode_ranges(self.dels)).decode(),
            }
        return self._json

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        seqs = (
            [s for a, b in d["runs"] for s in range(int(a), int(b) + 1)]
            if "runs" in d
            else [int(s) for s in d["seqs"]]
        )
        return cls(
            seqs,
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

    def __init__(
        self, room: Room, capture_ms: int, max_depth: int, max_group: int = 1000
    ) -> None:
        self.room = room
        self.capture_ms = int(capture_ms)
        self.max_depth = max(1, int(max_depth))
        #: events in one step at most: typing that never pauses still makes steps
        self.max_group = max(1, int(max_group))
        self.actors: dict[str, Stacks] = {}
        #: stacks from a snapshot's meta, decoded when their actor is first needed:
        #: loading a document costs nothing for the stacks of people who are not around
        self._raw: dict[str, dict[str, Any]] = {}
        self._sv_bytes = b""
        self._sv: dict[int, int] = {}
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

    def record(self, ev: Event, ins: Ranges, dels: Ranges) -> None:
        """Update the stacks with one applied event and what it did."""
        self.last_seq = max(self.last_seq, ev.seq)
        st = self.get(ev.actor)
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
        if (
            st.open
            and st.undo
            and 0 <= ev.ts - st.last_ts < self.capture_ms
            and len(st.undo[-1].seqs) < self.max_group
        ):
            top = st.undo[-1]
            top.touch()
            top.seqs.append(ev.seq)
            union_into(top.ins, ins)
            union_into(top.dels, dels)
        else:
            st.undo.append(Step([ev.seq], union({}, ins), union({}, dels)))
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
        elif ev.meta.get("copies"):
            for of, made in ev.meta["copies"]:
                self._give_copies(_unb64(of), _unb64(made))
        elif ins:
            self._give_copies(subtract(reverted.dels, reverted.ins), ins)
        target.append(Step([ev.seq], ins, dels))
        del target[: -self.max_depth]
        st.open = False  # the next change starts a new step (Yjs: stopCapturing)

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
                    _may_overlap(step.ins, originals)
                    and size(intersect(step.ins, originals)) == whole
                ):
                    step.ins = union(step.ins, copies)
                    step.touch()

    # --- persistence -------------------------------------------------------------------

    def to_meta(self) -> dict[str, Any]:
        return {
            "seq": self.last_seq,
            "actors": {
                **self._raw,
                **{a: st.to_json() for a, st in self.actors.items() if st.undo or st.redo},
            },
        }

    def load_meta(self, meta: dict[str, Any] | None) -> None:
        if not meta:
            return
        try:
            self._raw = dict(meta.get("actors", {}))
            self.actors = {}
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

    def revert(
        self, doc: Doc[Any], step: Step, copies: list[list[str]] | None = None
    ) -> bool:
        """Revert one step on the live doc; False when nothing of it is left to revert.

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
        too."""
        scopes = self.scopes(doc)
        if not scopes:
            return False
        layers: list[Ranges] = [{}]
        for client, ranges in step.ins.items():
            for i, r in enumerate(ranges):
                while len(layers) <= i:
                    layers.append({})
                layers[i][client] = [r]
        dels = subtract(step.dels, step.ins)
        groups = self._owned(step, dels) if dels else []
        # A map entry is restored only when every newer value of its key is going too:
        # yrs looks for those in the item's insertions or in the deletions of the
        # manager's stacks. A redo stack that "deletes" all of the step's insertions
        # (never popped) shows it every layer's.
        going: list[StackItem[Any]] = [
            StackItem(doc._doc, IdSet.decode(encode_ranges(step.ins)), IdSet.decode(b"\x00"))
        ]
        room = self.room
        changed = False

        def run(deletions: Ranges, insertions: Ranges) -> bool:
            item: StackItem[Any] = StackItem(
                doc._doc,
                IdSet.decode(encode_ranges(deletions)),
                IdSet.decode(encode_ranges(insertions)),
            )
            um = UndoManager(
                scopes=scopes,
                capture_timeout_millis=0,
                timestamp=lambda: int(room.current_ts),
                undo_stack=[item],
                redo_stack=going,
            )
            return bool(um.undo())

        if len(groups) <= 1:
            # one owner (the common case): restore and delete in one run, as Yjs does
            changed = run(dels, layers[0])
            layers = layers[1:]
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
                copies.append([_b64(group), _b64(made)])
        for layer in layers:
            if layer:
                changed = run({}, layer) or changed
        return changed

    def _owned(self, step: Step, dels: Ranges) -> list[Ranges]:
        """dels split so that each part lies wholly inside or wholly outside every other
        step's insertions (anyone's, either stack): the copies of a part then belong to
        exactly the steps that inserted all of it. What no step inserted comes last."""
        self.materialize()
        # (part, whether some step inserted all of it): a part inside a step stays
        # inside it when later steps split it further
        parts: list[tuple[Ranges, bool]] = [(dels, False)]
        for st in self.actors.values():
            for other in (*st.undo, *st.redo):
                if other is step or not _may_overlap(other.ins, dels):
                    continue
                split: list[tuple[Ranges, bool]] = []
                for part, owned in parts:
                    inside = intersect(other.ins, part) if _may_overlap(other.ins, part) else {}
                    if not inside:
                        split.append((part, owned))
                    elif size(inside) == size(part):
                        split.append((part, True))
                    else:
                        split += [(inside, True), (subtract(part, other.ins), owned)]
                parts = split
        rest: Ranges = {}
        for part, owned in parts:
            if not owned:
                union_into(rest, part)
        return [p for p, owned in parts if owned] + ([rest] if rest else [])

    def stacks(self, actor: str) -> Stacks:
        return self.get(actor) or Stacks()

    def get(self, actor: str) -> Stacks | None:
        """The actor's stacks, decoding them from the snapshot's meta on first use."""
        st = self.actors.get(actor)
        if st is None and actor in self._raw:
            raw = self._raw.pop(actor)
            try:
                st = self.actors[actor] = Stacks.from_json(raw)
            except Exception as e:  # a damaged entry costs the undo history, never the doc
                log.warning("room %s: undo stacks of %r unreadable: %r", self.room.name, actor, e)
        return st

    def materialize(self) -> None:
        for actor in list(self._raw):
            self.get(actor)


async def fold(
    store: EventStore, name: str, upto: int, settings: Settings
) -> tuple[Loaded, dict[str, Any]]:
    """The document at `upto` and the undo stacks a snapshot there would carry.

    For a compaction base (``palimpsest compact``): the stacks are ranges of Yjs IDs,
    which folding events into a snapshot keeps, so steps of folded events stay undoable.
    The stacks are rebuilt exactly as a room loading the same snapshot and events does."""
    holder: dict[str, RoomUndo] = {}

    def before_replay(doc: Doc[Any], snap: Snapshot | None) -> None:
        # a room that is never started (nor its committer): RoomUndo records what
        # its doc does
        room = Room(name, doc, snap.seq if snap else 0, committer=Committer(store), reader=store)
        state = RoomUndo(
            room, settings.undo_capture_ms, settings.undo_max_depth, settings.undo_max_group
        )
        state.load_meta(snap.meta.get(META_KEY) if snap is not None else None)
        holder["undo"] = state

    def on_event(ev: Event) -> None:
        state = holder["undo"]
        state.room.seq = ev.seq
        state.room.current_ts = ev.ts
        state.record(ev, *state.take())

    loaded = await load(store, name, upto=upto, before_replay=before_replay, on_event=on_event)
    state = holder["undo"]
    state.close()
    return loaded, state.to_meta()


# --- the room pipeline side ----------------------------------------------------------------


def state_of(room: Room) -> RoomUndo:
    st = room.peek(RoomUndo)
    if st is None:
        raise BadRequest(f"undo is not tracked on document {room.name!r}")
    return st


async def perform(
    room: Room, actor: str, kind: str, backend: Backend | None = None
) -> Event | None:
    """Undo (kind "undo") or redo (kind "redo") actor's last step; None if nothing to.

    If the CRDT library fails in the middle of it, the live doc may be damaged: the
    room is dropped (its connections get 1013 and re-sync) and reloaded from the log on
    next use, and the caller gets a StoreError."""
    if kind not in (UNDO, REDO):
        raise BadRequest(f"kind must be undo or redo, not {kind!r}")
    state = state_of(room)
    # Filled in by change() before the event is logged: the shallow copies the room
    # makes of meta share this list.
    reverts: list[int] = []
    copies: list[list[str]] = []

    def change(doc: Doc[Any]) -> None:
        st = state.get(actor)
        if st is None:
            return
        # Steps above the first one with anything left to revert are dropped (as Yjs
        # does) when the event is recorded, so that the log alone decides the stacks.
        for step in reversed(st.undo if kind == UNDO else st.redo):
            del copies[:]  # what a step with nothing left to revert tried
            if state.revert(doc, step, copies):
                reverts.extend(step.seqs)
                return

    try:
        meta = {"reverts": reverts, "copies": copies}
        return await room.server_change(actor, kind, change, meta=meta)
    except PalimpsestError:
        raise
    except Exception as e:
        log.error("room %s: %s by %s failed (%r); reloading the room", room.name, kind, actor, e)
        for peer in list(room.peers.values()):
            peer.close(1013, "the document is being reloaded, reconnect")
        if backend is not None:
            await backend.rooms.discard(room.name)
        raise StoreError(f"{kind} failed ({e}); the document was reloaded, try again") from e


async def close_group(room: Room, actor: str) -> int | None:
    """End actor's current step: their next change starts a new one. Logged (kind
    undo_mark, empty update) so that grouping is the same after a restart; None when
    no step was open."""
    state = state_of(room)
    st = state.get(actor)
    if st is None or not st.open or now_ms() - st.last_ts >= state.capture_ms:
        if st is not None:
            st.open = False
        return None
    st.open = False
    ev = await room.server_change(actor, MARK, lambda _doc: None, always=True)
    return ev.seq if ev is not None else None


# --- the extension ---------------------------------------------------------------------------


def _answer(ev: Event | None, kind: str) -> dict[str, Any]:
    if ev is None:
        return {"ok": False, "reason": f"nothing to {kind}"}
    return {"ok": True, "seq": ev.seq, "reverts": list(ev.meta.get("reverts", []))}


class Undo(Extension):
    """Per-user undo and redo: the stacks of every live room (typed room state, persisted
    in snapshot meta), the websocket operations undo / redo / close_group and the HTTP
    routes POST /api/docs/{doc}/undo, /redo, /undo/close."""

    def __init__(self, capture_ms: int = 500, max_depth: int = 200, max_group: int = 1000) -> None:
        self.capture_ms = capture_ms
        self.max_depth = max_depth
        self.max_group = max_group

    @classmethod
    def from_settings(cls, settings: Settings) -> Undo:
        return cls(settings.undo_capture_ms, settings.undo_max_depth, settings.undo_max_group)

    def setup(self, backend: Backend) -> None:
        self.backend = backend

    def state(self, room: Room) -> RoomUndo:
        """The room's undo state, made (from the snapshot's meta) on first use."""
        return room.state(RoomUndo, self._new_state)

    def _new_state(self, room: Room) -> RoomUndo:
        state = RoomUndo(room, self.capture_ms, self.max_depth, self.max_group)
        state.load_meta(room.snapshot_meta.get(META_KEY))
        return state

    # --- hooks ---------------------------------------------------------------------------

    async def on_load(self, room: Room) -> None:
        self.state(room)  # replay made it already unless no event came after the snapshot

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        # what the doc's transactions record from here on is this event's
        room.state(RoomUndo, self._new_state).mark()

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        state = room.state(RoomUndo, self._new_state)
        if isinstance(origin, ServerOrigin):
            # a server change: made on the live doc before its event was logged
            state.record(event, *state.take())
        elif origin.tracked:
            state.record(event, *state.take(state._mark))

    def on_unload(self, room: Room) -> None:
        state = room.peek(RoomUndo)
        if state is not None:
            state.close()

    def snapshot_meta(self, room: Room) -> Mapping[str, Any]:
        return {META_KEY: self.state(room).to_meta()}

    # --- websocket operations -------------------------------------------------------------

    def operations(self) -> Mapping[str, Operation]:
        return {UNDO: self._op_undo, REDO: self._op_redo, "close_group": self._op_close_group}

    async def _op(self, ctx: OpContext, kind: str) -> dict[str, Any]:
        if not ctx.client.identity.can_write:
            raise Forbidden(f"read-only: you cannot {kind}")
        ev = await perform(ctx.room, ctx.client.user, kind, self.backend)
        if ev is not None:
            ctx.charge(len(ev.update))  # an undo appends as much as the edit it reverts
        return _answer(ev, kind)

    async def _op_undo(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        return await self._op(ctx, UNDO)

    async def _op_redo(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        return await self._op(ctx, REDO)

    async def _op_close_group(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        if not ctx.client.identity.can_write:
            raise Forbidden("read-only: you cannot close an undo step")
        # edits this connection sent before the request are still in the pipeline: they
        # belong to the group being closed
        await ctx.flush()
        return {"ok": True, "seq": await close_group(ctx.room, ctx.client.user)}

    # --- HTTP -------------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        from .routes.undo import routes

        return routes


__all__ = [
    "RoomUndo",
    "Stacks",
    "Step",
    "Undo",
    "close_group",
    "fold",
    "perform",
    "state_of",
]
