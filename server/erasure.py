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
they are folded again from the purged base (:func:`refold_after`). The stored
attribution index is dropped by the compaction itself (``EventStore.compact``).

A live room holds the old content in memory (and would send it to a new reader, and
write it into its next snapshot): :func:`reload_room` closes its connections with 1013
(the providers reconnect at once, their Y.Doc and state vector unchanged, and send what
they typed meanwhile in their sync step 2) and drops it without a final snapshot; the
next connection loads it from the purged base. The HTTP route does it here before and
after the compaction, and the other processes do it when the fan-out tells them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pycrdt import Doc

from .closes import RELOADING
from .snapshots import load
from .store import EventStore

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("palimpsest.erasure")


def purge_deleted(state: bytes) -> bytes:
    """`state` (a Yjs v1 update of a whole document) with the content of its deleted
    items removed: applied to a document with garbage collection on, encoded again.
    Clocks are kept (the state vector is the same)."""
    gc: Doc[Any] = Doc(skip_gc=False)
    gc.apply_update(state)
    return gc.get_update()


async def refold_after(store: EventStore, doc: str, base: int) -> int:
    """Fold again, from the (purged) base at `base`, every snapshot of `doc` after it,
    keeping each one's meta (undo stacks and owners name Yjs IDs, which purging keeps);
    a rung stored as a difference is stored whole. Returns how many were rewritten."""
    after = sorted(s.seq for s in await store.snapshots(doc) if s.seq > base)
    metas: dict[int, dict[str, Any]] = {}
    for seq in after:
        snap = await store.latest_snapshot(doc, seq)
        if snap is not None and snap.seq == seq:
            metas[seq] = {k: v for k, v in snap.meta.items() if k != "delta_of"}
    # dropped first, so that each fold starts from the purged base or a rung already
    # folded from it, never from a rung that still holds the purged content
    await store.delete_snapshots(doc, after)
    for seq in after:
        if seq not in metas:
            continue  # damaged: stays dropped (a cache)
        loaded = await load(store, doc, upto=seq)
        if loaded.seq == seq and not loaded.failed:
            await store.put_snapshot(doc, seq, loaded.doc.get_update(), metas[seq])
    return len(metas)


async def reload_room(backend: Backend, doc: str) -> int:
    """Drop `doc`'s live room here, without a final snapshot (it would hold the purged
    content), after closing its connections with 1013 (reconnect); returns how many."""
    room = backend.rooms.get_loaded(doc)
    if room is None:
        return 0
    peers = list(room.peers.values())
    for peer in peers:
        peer.close(1013, f"{RELOADING}: deleted content was purged, reconnect")
    await backend.rooms.discard(doc)  # what is queued is still committed
    log.info("reloading %s: deleted content was purged (%d connections closed)", doc, len(peers))
    return len(peers)


__all__ = ["purge_deleted", "refold_after", "reload_room"]
