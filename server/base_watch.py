"""Rooms whose document was compacted under them by another process: reloaded.

A server learns of a purge (``compact --purge-deleted``, server.erasure) from the HTTP
route it serves, or from the fan-out when another process did it. ``palimpsest compact``
run on the store beside a server without fan-out (one process on SQLite, the default;
PostgreSQL without Redis) tells nobody, and a room open then holds the purged content:
it would send it to every new reader and write it into its next snapshot.

Each room keeps the compaction base it loaded from (``Room.base``: the base's seq and
the checksum of its row, ``store.base.BaseMark``), and:

- its snapshots are written only while the store's base is still that one, checked in
  the write's own transaction (``EventStore.put_snapshot(..., base=...)``); a refused
  one reloads the room at once (``SnapshotPolicy.on_stale``);
- every ``interval`` seconds this service reads the bases of all the documents with a
  room here (one read for all of them, off the editing path: no frame, join or commit
  waits for it) and reloads each room whose base changed.

A reload is the one a purge through the route or the fan-out makes
(:func:`server.erasure.reload_room`): the room's connections are closed with 1013 (the
providers reconnect at once with their Y.Doc and state vector, and what they typed
meanwhile arrives in their sync step 2), and it is dropped without a final snapshot;
the next connection loads it from the new base. A compaction without purge by another
process reloads the room too (its content is the same: the clients only reconnect);
one by this process through the route does not: its room takes the new base as its own,
and is not stale from the compaction's commit until then (``Rooms.adopting``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import erasure
from .errors import FATAL
from .extensions import Extension
from .lifecycle import Service, cancel_and_wait

if TYPE_CHECKING:
    from .backend import Backend
    from .room import Room

log = logging.getLogger("palimpsest.base_watch")

#: seconds between two WARNING lines of checks that keep failing (the others at DEBUG)
SAY_EVERY = 60.0


class BaseWatch(Extension, Service):
    """Reloads the rooms whose compaction base changed in the store (an extension and its
    service). `interval`: seconds between checks of all the rooms; 0 = only the
    snapshot writes notice (Settings.compaction_check_seconds)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._backend: Backend | None = None
        self._task: asyncio.Task[None] | None = None
        self._reloading: dict[str, asyncio.Task[int]] = {}
        #: observable: checks made (one read each while rooms are open), rooms reloaded
        self.checks = 0
        self.reloaded = 0

    def setup(self, backend: Backend) -> None:
        self._backend = backend
        backend.snapshots.on_stale = self.stale

    def services(self) -> Sequence[Service]:
        return [self]

    async def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._loop(), name="base watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        for reload in list(self._reloading.values()):
            await asyncio.gather(reload, return_exceptions=True)

    async def _loop(self) -> None:
        # checks failed in a row (a store down: one a second), since when, and when their
        # line was last said at WARNING: the first, then once a minute with the count
        failed, since, said = 0, 0.0, 0.0
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except FATAL:
                raise
            except Exception as e:  # the store says more on its writes; try again later
                now = time.monotonic()
                if not failed:
                    since = now
                failed += 1
                if failed == 1 or now - said >= SAY_EVERY:
                    said = now
                    log.warning("compaction bases not checked: %s%s", e,
                                f" ({failed} checks failed in {now - since:.0f} s; the "
                                "others at DEBUG)" if failed > 1 else "")  # fmt: skip
                else:
                    log.debug("compaction bases not checked: %s", e)
                continue
            if failed:
                log.info("compaction bases checked again after %d failed checks (%.0f s)",
                         failed, time.monotonic() - since)  # fmt: skip
                failed = 0

    async def check(self) -> int:
        """Compare the base of every room here with the store's; reload the rooms whose
        base changed. Returns how many."""
        self.checks += 1
        if self._backend is None:
            return 0
        # the rooms as they are before the read: a room loaded while it runs read its
        # own base after this read began, and is not compared with an older one
        rooms = list(self._backend.rooms.live.values())
        if not rooms:
            return 0
        marks = await self._backend.store.compaction_bases([r.name for r in rooms])
        adopting = self._backend.rooms.is_adopting  # compacted here: the same content
        stale = [r for r in rooms if marks.get(r.name, r.base) != r.base and not adopting(r.name)]
        for room in stale:
            self.stale(room)
        return len(stale)

    def stale(self, room: Room) -> None:
        """`room`'s document was compacted under it by someone else: reload it, once."""
        backend = self._backend
        name = room.name
        if backend is None or backend.rooms.get_loaded(name) is not room:
            return  # gone already, or loaded again (from the new base)
        if name in self._reloading or backend.rooms.is_adopting(name):
            return  # reloading already, or compacted here with the same content
        log.warning("reloading %s: its document was compacted by another process (the room "
                    "was loaded from the base @%d)", name, room.base[0])  # fmt: skip
        self.reloaded += 1
        task = asyncio.create_task(
            erasure.reload_room(backend, name, room=room, why="the document was compacted"),
            name=f"reload {name}",
        )
        self._reloading[name] = task
        task.add_done_callback(lambda _t: self._reloading.pop(name, None))


__all__ = ["BaseWatch"]
