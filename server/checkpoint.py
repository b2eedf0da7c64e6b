"""Snapshots of documents imported on the store directly (``palimpsest import``,
``palimpsest import-from``), written as a live room writes them.

An import on the store appends its events with no room: nothing takes a snapshot, and
the first load of a document imported from a YStore (one event per row) replayed every
row. After such an import, a document with at least ``snapshot_every`` events since its
newest snapshot a room loads from is loaded into a room of a Backend over the same store
(the server's built-in features, nothing listening, no fan-out), which is then unloaded
as an idle room is: the snapshot policy writes its last snapshot, with the features'
meta (the undo stacks, the owners of its Yjs client ids, with the imported ones left
unclaimed, the characters past U+FFFF), and prunes the older ones; the history feature
stores the attribution index, as after any unload of a long document. An import through
a live server (POST /api/docs/{doc}/updates) goes through its room, whose policy does this
already.
"""

from __future__ import annotations

import dataclasses
import logging
from types import TracebackType
from typing import TYPE_CHECKING

from .settings import Settings
from .store import EventStore

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("palimpsest.checkpoint")


async def events_since_snapshot(store: EventStore, doc: str) -> int:
    """Events of `doc` after its newest snapshot that a room loads from (valid, not a bare
    ladder rung: snapshots.load(with_meta=True)), or after the start of its log."""
    head = await store.head(doc)
    loadable = [s.seq for s in await store.snapshots(doc) if s.valid and not s.bare]
    return head - max(loadable, default=0)


class Checkpoints:
    """``async with Checkpoints(store, settings) as cp: await cp.after_import(doc)``:
    one Backend over `store` (started: the store, by the caller; its committer, here) for
    every document of a run."""

    def __init__(self, store: EventStore, settings: Settings) -> None:
        self.store = store
        self.settings = dataclasses.replace(settings, fanout=None)
        self._backend: Backend | None = None

    async def __aenter__(self) -> Checkpoints:
        return self

    async def __aexit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await backend.rooms.stop()
            await backend.committer.stop()

    async def _backend_started(self) -> Backend:
        if self._backend is None:
            from .backend import Backend

            backend = Backend(self.settings, store=self.store)
            await backend.committer.start()
            self._backend = backend
        return self._backend

    async def after_import(self, doc: str) -> int | None:
        """Write `doc`'s snapshot when the policy's count says one is due (the events since
        the newest loadable snapshot reach ``snapshot_every``). The seq of the snapshot
        written, or None: none was due, or it could not be written (logged; a snapshot
        is a cache, the import stands)."""
        if await events_since_snapshot(self.store, doc) < self.settings.snapshot_every:
            return None
        backend = await self._backend_started()
        room = await backend.rooms.get(doc)
        seq = room.seq
        await backend.rooms.unload(room)  # as an idle room: its final snapshot
        from .history.extension import HistoryExtension

        history = backend.extension(HistoryExtension)
        if history is not None:
            await history.drain()  # the attribution index stored on unload
        snap = await self.store.latest_snapshot(doc)
        if snap is None or snap.seq != seq:
            log.warning("%s: no snapshot was written at seq %d after the import", doc, seq)
            return None
        return seq


__all__ = ["Checkpoints", "events_since_snapshot"]
