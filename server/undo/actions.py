"""Undo, redo, and opening and closing a step (an explicit group) on a live room, as
server changes."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycrdt import (
    Doc,
)

from ..closes import RELOADING
from ..errors import BadRequest, PalimpsestError, StoreError
from ..ranges import Ranges, subtract, to_b64
from ..removed import change_of_off_loop, removed_others
from ..room import Room
from ..store.base import Event
from .containers import Kept
from .recorder import ALREADY_RESTORED, MARK, REDO, UNDO, RoomUndo
from .stacks import GROUP_ID_MAX, Step

log = logging.getLogger("palimpsest.undo")

if TYPE_CHECKING:
    from ..backend import Backend


# --- the room pipeline side ----------------------------------------------------------------


def state_of(room: Room) -> RoomUndo:
    st = room.peek(RoomUndo)
    if st is None:
        raise BadRequest(f"undo is not tracked on document {room.name!r}")
    return st


@dataclass(slots=True)
class Outcome:
    """What an undo or a redo visibly did, for its answer (docs/undo.md): characters and
    items it took out and put in (as a restore's answer counts them: formatting marks
    are not counted), what of other users' it took out besides, per user
    (server/removed.py), and the seqs of each step above the one it reverted that had
    nothing left to revert (another user deleted, or moved, all that the step inserted:
    an editor's Enter, a cut and paste), skipped as Yjs skips them."""

    removed: tuple[int, int] = (0, 0)
    added: tuple[int, int] = (0, 0)
    removed_others: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[list[int]] = field(default_factory=list)
    #: the containers of the reverted step it kept, holding what others wrote (how many,
    #: and what of whose is in them: containers.py), or None
    kept: dict[str, Any] | None = None
    #: when it did nothing: why (docs/undo.md's table), for the answer
    reason: str | None = None
    #: "restored" when it reverted nothing because a restore had done its step already
    #: (the text it would bring back is there: the last of ``skipped``), else None
    already: str | None = None


async def perform(
    room: Room,
    actor: str,
    kind: str,
    backend: Backend | None = None,
    outcome: Outcome | None = None,
) -> Event | None:
    """Undo (kind "undo") or redo (kind "redo") actor's last step; None if nothing to.
    `outcome`, when given, gets what it visibly did (for the answer).

    If the CRDT library fails in the middle of it, the live doc may be damaged: the
    room is dropped (its connections get 1013 and re-sync) and reloaded from the log on
    next use, and the caller gets a StoreError."""
    if kind not in (UNDO, REDO):
        raise BadRequest(f"kind must be undo or redo, not {kind!r}")
    state = state_of(room)
    # Filled in by change() before the event is logged (Room.server_change)
    reverts: list[int] = []
    copies: list[list[str]] = []
    meta: dict[str, Any] = {"reverts": reverts, "copies": copies}
    picked: list[Step] = []
    #: what the change deleted, and what the step it reverted had inserted
    done: list[Ranges] = []
    skipped: list[list[int]] = []
    #: per step skipped: whether it inserts, and whether it restores, anything besides
    #: bookkeeping (what its revert would delete, and bring back), for the reason
    does: list[tuple[bool, bool]] = []
    kept: list[Kept] = []
    # The whole document read that the step on top may need for its map keys, made
    # before the room's turn (RoomUndo.read_keys): in it, only what came since is read
    top = _top(state, actor, kind)
    prepared = await state.read_keys(top) if top is not None else None

    def change(doc: Doc[Any]) -> None:
        st = state.get(actor)
        if st is None:
            return
        mark = state.pending()
        del skipped[:], does[:]
        del reverts[:]  # (run twice when extensions check it: on a copy, then live)
        meta.pop("already", None)
        # Steps above the first one with anything left to revert are dropped (as Yjs
        # does) when the event is recorded, so that the log alone decides the stacks.
        for step in reversed(st.undo if kind == UNDO else st.redo):
            del copies[:]  # what a step with nothing left to revert tried
            del kept[:]
            already: list[Ranges] = []
            top_read = prepared if step is top else None
            if state.revert(doc, step, copies, kept, top_read, already, room.deletions):
                reverts.extend(step.seqs)
                picked.append(step)
                _say_what_was_seen(meta, room, step)
                done[:] = [state.deleted_since(mark), step.ins]
                return
            if already:
                # nothing left of it because a restore brought its text back: the
                # restore did this undo (or redo), which stops here, changing nothing,
                # logged (an empty update) so that the step leaves the stack everywhere
                # (RoomUndo._record_inverse); it does not go on to the step below
                reverts.extend(step.seqs)
                meta["already"] = ALREADY_RESTORED
                _say_what_was_seen(meta, room, step)
                skipped.append(list(step.seqs))
                return
            if not state.bookkeeping_only(step):  # (not a step any more: no word of it)
                skipped.append(list(step.seqs))
                book = state.book.ids
                restores = subtract(subtract(step.dels, step.ins), book)
                does.append((bool(subtract(step.ins, book)), bool(restores)))

    ev = await _server_change(
        room, actor, kind, change, meta, backend, always=lambda: "already" in meta
    )
    if ev is not None and done and outcome is not None:
        deleted, own = done
        outcome.removed_others += removed_others(room.doc, room.owners, actor, deleted, own)
        got = await change_of_off_loop(room.doc, room.owners, ev.update)
        outcome.removed = (
            sum(c for c, _ in got.removed.values()),
            sum(i for _, i in got.removed.values()),
        )
        outcome.added = got.added
        outcome.skipped = list(skipped)
        if kept:
            outcome.kept = {
                "items": sum(k.containers for k in kept),
                "others": removed_others(room.doc, room.owners, actor, kept[0].inside),
            }
    elif ev is not None and outcome is not None and ev.meta.get("already"):
        outcome.skipped = list(skipped)
        outcome.already = str(ev.meta["already"])
    elif ev is None and outcome is not None:
        # nothing of any step was left to revert: which (the stack is left as it is)
        outcome.skipped = list(skipped)
        outcome.reason = _why_nothing(state, actor, kind, does)
    if ev is not None and picked and any(s is picked[0] for s in state.stacks(actor).undo):
        await _complete(room, state, actor, picked[0], ev, backend)
    if ev is not None and state.undone_grown():
        await state.trim_undone()
    return ev


#: why an undo or a redo did nothing although steps were there, none with anything
#: left: the usual case, and steps that had only one part (docs/undo.md's table)
NOTHING_LEFT = {
    UNDO: "nothing left to undo: others deleted or moved all that your changes inserted",
    REDO: "cannot redo: the place what it brings back was in is gone (deleted since)",
}
#: ... an undo of deletions alone (its steps inserted nothing): what it brings back had
#: nowhere to go
UNDO_NO_PLACE = "nothing left to undo: the place what it brings back was in is gone (deleted since)"
#: ... a redo of deletions alone (of an undo that brought text back, which someone else
#: deleted since: their undo of the typing it brought back, a deletion of theirs)
REDO_DELETED = "nothing left to redo: what it deletes was deleted by someone else since"


def _why_nothing(state: RoomUndo, actor: str, kind: str, does: list[tuple[bool, bool]]) -> str:
    """The reason an undo or a redo did nothing: `does` holds, per step skipped, whether
    it inserts and whether it restores anything (none skipped: the stack held no step,
    or bookkeeping alone)."""
    if not does:
        st = state.get(actor)
        if kind == UNDO and st is not None and st.past_limit:
            # (it said "nothing to undo" while the user's older text was there, theirs)
            return (
                "nothing left to undo: older changes are past the undo limit "
                f"(UNDO_MAX_DEPTH={state.max_depth})"
            )
        return f"nothing to {kind}"
    if kind == REDO and not any(restores for _, restores in does):
        return REDO_DELETED
    if kind == UNDO and not any(inserts for inserts, _ in does):
        return UNDO_NO_PLACE
    return NOTHING_LEFT[kind]


def _top(state: RoomUndo, actor: str, kind: str) -> Step | None:
    st = state.get(actor)
    stack = (st.undo if kind == UNDO else st.redo) if st is not None else []
    return stack[-1] if stack else None


def _say_what_was_seen(meta: dict[str, Any], room: Room, step: Step) -> None:
    """The seq the change is made at (``at``), and, when its step may still grow, the
    step's ranges: another process may log more of its actor's edits, which join it,
    before this event (server changes take turns, edits do not), and the recorder then
    takes only this part off the step (RoomUndo._take_reverted)."""
    meta["at"] = room.seq
    if step.open:
        meta["ins"], meta["dels"] = to_b64(step.ins), to_b64(step.dels)


async def _complete(
    room: Room, state: RoomUndo, actor: str, rest: Step, first: Event, backend: Backend | None
) -> None:
    """Undo the rest of the step that `first` undid in part: the actor's edits another
    process logged after `first` read the log and before it was logged, which joined
    the step. So the undo reverts the whole step, as on one process (where edits and
    server changes take turns), in two events; the second ``completes`` the first, and
    one redo brings both back."""
    copies: list[list[str]] = []
    meta: dict[str, Any] = {"reverts": list(rest.seqs), "copies": copies, "completes": first.seq}

    def change(doc: Doc[Any]) -> None:
        if any(s is rest for s in state.stacks(actor).undo):
            state.revert(doc, rest, copies, deleted=room.deletions)

    await _server_change(room, actor, UNDO, change, meta, backend)


async def _server_change(
    room: Room,
    actor: str,
    kind: str,
    change: Callable[[Doc[Any]], None],
    meta: dict[str, Any],
    backend: Backend | None,
    always: bool | Callable[[], bool] = False,
) -> Event | None:
    try:
        return await room.server_change(actor, kind, change, meta=meta, always=always)
    except PalimpsestError:
        raise
    except Exception as e:
        log.error("room %s: %s by %s failed (%r); reloading the room", room.name, kind, actor, e)
        for peer in list(room.peers.values()):
            peer.close(1013, f"{RELOADING}, reconnect")
        if backend is not None:
            await backend.rooms.discard(room.name)
        raise StoreError(f"{kind} failed ({e}); the document was reloaded, try again") from e


@dataclass(frozen=True, slots=True)
class GroupAnswer:
    """What opening or closing an explicit undo group did: the mark's seq (None when
    nothing was logged), the group's id, and how many steps it made (on close)."""

    seq: int | None
    group: str | None
    steps: int | None = None
    #: on open: the group's idle time (``GroupLimits.idle_ms``), for a client that keeps
    #: it open longer to renew it before (the Python client renews at a third of it)
    idle_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": True, "seq": self.seq}
        if self.group is not None:
            out["group"] = self.group
        if self.steps is not None:
            out["steps"] = self.steps
        if self.idle_ms is not None:
            out["idle_ms"] = self.idle_ms
        return out


#: what a group id may hold: any character but NUL (PostgreSQL stores no NUL in text) and
#: lone surrogates (a JSON body may carry one; no store could write it); the schema's
#: pattern (docs/openapi.yaml) says the same. The id is opaque: kept in the mark's meta
#: (JSON), compared, never shown as text
_GROUP_CHARS = re.compile("[^\\x00\\ud800-\\udfff]+")


def group_id(value: Any) -> str:
    """A client's undo group id: 1 to GROUP_ID_MAX characters, none NUL or a lone
    surrogate; a new one when it names none. (It was "printable characters", which
    refused what the API's schema allowed: schemathesis sent "\\x05".)"""
    if value is None:
        return uuid.uuid4().hex
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= GROUP_ID_MAX
        or not _GROUP_CHARS.fullmatch(value)
    ):
        raise BadRequest(
            f'"group" must be a string of 1 to {GROUP_ID_MAX} characters without NUL or '
            f"lone surrogates, not {str(value)[:80]!r}"
        )
    return value


async def open_group(room: Room, actor: str, group: str) -> GroupAnswer:
    """Open an explicit undo group `group` for actor: their changes from the mark on
    make one step, pauses and the capture timeout notwithstanding, until they close it
    (``close_group``), or it stays idle ``GroupLimits.idle_ms``; past ``max_events`` or
    ``max_bytes`` it goes on in a new step. Logged (kind undo_mark, meta ``{"open":
    group}``) after the edits queued before the request, which stay out of it, so that
    every process and a restart agree. Opening the group that is open renews it;
    opening it again while its step is still the actor's latest goes on with that step
    (a client sends it again after reconnecting); any other group open ends there."""
    await room.flush()
    idle_ms = state_of(room).groups.idle_ms
    ev = await room.server_change(actor, MARK, lambda _doc: None, {"open": group}, always=True)
    return GroupAnswer(ev.seq if ev is not None else None, group, idle_ms=idle_ms)


async def close_group(
    room: Room, actor: str, group: str | None = None, session: str | None = None
) -> GroupAnswer:
    """End actor's current step: their next change starts a new one; and their explicit
    group, if one is open (when `group` is given: only if it is that one, else nothing
    is done). Logged (kind undo_mark, empty update) so that grouping is the same after a
    restart and on every process; seq None when nothing was open. `session`: the
    connection asking (the ``conn`` its edits are logged with), whose step alone ends,
    and the group (meta ``session``); None (HTTP): every step of the actor's.

    The edits queued before the request (the same connection's last keystrokes) are
    recorded first, and the step is closed when the mark is recorded, in the log's
    order, not at once: closed at once, an edit logged between the request and its mark
    began a step of its own here while every other process, reading the log, added it
    to the step the mark then closed; their stacks differed, and an undo made on one
    reverted on the other part of a step ("not on ann's stack").

    A step is left unlogged as ended by its time only when the log says so: the
    document's events since it are stamped ``undo_capture_ms`` or more after its last
    (its next event's ts is at least theirs). The wall clock cannot say: the next
    event may be stamped before it (the clock stepped back, another process's is
    behind), and would join the step wherever the stacks are rebuilt from the log,
    while here, ended in memory only, it began a new one."""
    await room.flush()
    state = state_of(room)
    st = state.get(actor)
    if group is not None and (st is None or st.group != group):
        # closed already (a retried close), ended by its idle time, or another one
        return GroupAnswer(None, group, st.group_steps(group) if st is not None else 0)
    if st is None:
        return GroupAnswer(None, None)
    if st.group is None:
        ending = [s for s in st.undo if s.open and (session is None or s.conn == session)]
        if all(state.last_ts - s.last_ts >= state.capture_ms for s in ending):
            for s in ending:
                s.close()
            return GroupAnswer(None, None)
    closing = st.group
    meta = {"session": session} if session is not None else None
    ev = await room.server_change(actor, MARK, lambda _doc: None, meta, always=True)
    steps = st.group_steps(closing) if closing is not None else None
    return GroupAnswer(ev.seq if ev is not None else None, closing, steps)
