"""Erasure: purge the content of deleted items from a document's history up to a base.

The server keeps deleted content (``skip_gc``): history, blame and undo need it. So a
secret typed and deleted is still in every snapshot and in every sync step 2 a new
reader gets. ``palimpsest compact DOC --before SEQ --purge-deleted`` (maintenance
``compact_doc(..., purge_deleted=True)``) writes the compaction base with Yjs garbage
collection applied, as yrs does with gc on: an item deleted at the base keeps its ID
and length (its clocks stay, so every client's state vector and every later update
still apply) and loses its content (``ContentDeleted``; the children of a deleted type
become GC structs). What is built from the base after that (every version at or after
it, the sync step 2, exports) holds no such content; text deleted after the base is
kept, with the events after it.

Snapshots after the base fold the old base's deleted content too: they are a cache, so
they are folded again from the purged base (:func:`refold_above`) and replaced in the
compaction's own transaction (``EventStore.compact(..., above=...)``): nobody ever reads
the purged base under a snapshot that still holds what it purged. The stored
attribution index is dropped by the compaction itself.

A live room holds the old content in memory (and would send it to a new reader, and
write it into its next snapshot): :func:`reload_room` closes its connections with 1013
(the providers reconnect at once, their Y.Doc and state vector unchanged, and send what
they typed meanwhile in their sync step 2) and drops it without a final snapshot; the
next connection loads it from the purged base. The HTTP route does it here before and
after the compaction, and the other processes do it when the fan-out tells them. A
server nobody tells (``palimpsest compact`` on the store beside it, no fan-out) notices
by itself (server.base_watch): each room keeps the compaction base it loaded from, its
snapshots are written only while that still holds (checked in the write's transaction),
and a background check of the bases reloads the rooms whose base changed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pycrdt import Doc

from . import subdoc_options
from .closes import RELOADING
from .snapshots import new_doc, replay_merged
from .store import EventStore

if TYPE_CHECKING:
    from .backend import Backend
    from .room import Room

log = logging.getLogger("palimpsest.erasure")


def purge_deleted(state: bytes) -> bytes:
    """`state` (a Yjs v1 update of a whole document) with the content of its deleted
    items removed: applied to a document with garbage collection on, encoded again.
    Clocks are kept (the state vector is the same), and so are the options of the
    subdocuments left (their ``meta``, which yrs does not write again: subdoc_options)."""
    gc: Doc[Any] = Doc(skip_gc=False)
    gc.apply_update(state)
    subdoc_options.note(gc, state)
    return subdoc_options.restored(gc, gc.get_update())


async def refold_above(
    store: EventStore, doc: str, base: int, state: bytes
) -> dict[int, tuple[bytes, dict[str, Any]]]:
    """Every snapshot of `doc` after `base`, folded again from `state` (the purged base)
    and the events after it, each with its meta (undo stacks and owners name Yjs IDs,
    which purging keeps), by seq, for ``EventStore.compact(..., above=...)``; a rung
    stored as a difference comes back whole. A damaged one is left out, and so is every
    one after an event the fold cannot apply (a cache: loading replays the log)."""
    metas: dict[int, dict[str, Any]] = {}
    for info in await store.snapshots(doc):
        if info.seq <= base:
            continue
        snap = await store.latest_snapshot(doc, info.seq)
        if snap is not None and snap.seq == info.seq:
            metas[info.seq] = {k: v for k, v in snap.meta.items() if k != "delta_of"}
    if not metas:
        return {}
    events = await store.read(doc, after=base, upto=max(metas))
    generation = await store.tombstone(doc)

    def fold() -> dict[int, tuple[bytes, dict[str, Any]]]:
        ydoc = new_doc(doc, generation, store.server_salt)
        ydoc.apply_update(state)
        # what yrs writes back has no subdocument meta: put back the logged options
        subdoc_options.note(ydoc, state)
        subdoc_options.note_all(ydoc, (ev.update for ev in events))
        out: dict[int, tuple[bytes, dict[str, Any]]] = {}
        i = 0
        for seq in sorted(metas):
            j = i
            while j < len(events) and events[j].seq <= seq:
                j += 1
            if events[i:j] and not replay_merged(ydoc, events[i:j]):
                break
            i = j
            if (events[j - 1].seq if j else base) == seq:  # no gap in the log before it
                out[seq] = (subdoc_options.restored(ydoc, ydoc.get_update()), metas[seq])
        return out

    return await asyncio.to_thread(fold)


async def reload_room(
    backend: Backend,
    doc: str,
    *,
    room: Room | None = None,
    why: str = "deleted content was purged",
) -> int:
    """Drop `doc`'s live room here, without a final snapshot (it would hold the purged
    content), after closing its connections with 1013 (reconnect); returns how many.
    `room`: only that one (a room loaded again since, from the new base, stays)."""
    live = backend.rooms.get_loaded(doc)
    if live is None or (room is not None and live is not room):
        return 0
    peers = list(live.peers.values())
    for peer in peers:
        peer.close(1013, f"{RELOADING}: {why}, reconnect")
    await backend.rooms.discard(doc)  # what is queued is still committed
    log.info("reloading %s: %s (%d connections closed)", doc, why, len(peers))
    return len(peers)


__all__ = ["purge_deleted", "refold_above", "reload_room"]
