"""Undo, redo and closing a step on a live room, as server changes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pycrdt import (
    Doc,
)

from ..errors import BadRequest, PalimpsestError, StoreError
from ..room import Room
from ..store.base import Event, now_ms
from .recorder import MARK, REDO, UNDO, RoomUndo

log = logging.getLogger("palimpsest.undo")

if TYPE_CHECKING:
    from ..backend import Backend


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
