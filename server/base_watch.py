"""Rooms whose document was compacted under them by another process: reloaded; rooms
whose document was deleted or replaced under them by a process that told nobody: dropped.

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

The same check reads the documents' generations (``EventStore.generations``, one read):
a room whose document has another generation now, or none, was replaced (``palimpsest
copy --replace``) or deleted (``palimpsest delete``) beside a server without fan-out. It
is dropped as a commit refused for that reason drops it (deletion.replaced_elsewhere:
4409; deletion.deleted_elsewhere: 4404), without a final snapshot: before, only its next
commit noticed, and a room whose clients only watched served the old document to every
new joiner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import deletion, erasure
from .errors import FATAL, deleted_reason
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
        #: rooms dropped: their document deleted or replaced in the store under them
        self.dropped = 0

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
        names = [r.name for r in rooms]
        store = self._backend.store
        marks = await store.compaction_bases(names)
        # and the documents deleted or replaced under their room (another generation, or
        # none): a command on the store beside a server without fan-out told nobody
        gens = await store.generations(names)
        gone = [
            r
            for r in rooms
            if r.generation is not None and gens.get(r.name, r.generation) != r.generation
        ]
        for room in gone:
            self.gone(room)
        adopting = self._backend.rooms.is_adopting  # compacted here: the same content
        stale = [
            r for r in rooms
            if r not in gone and marks.get(r.name, r.base) != r.base and not adopting(r.name)
        ]  # fmt: skip
        for room in stale:
            self.stale(room)
        return len(stale) + len(gone)

    def gone(self, room: Room) -> None:
        """`room`'s document was deleted or replaced in the store by someone who told no
        one (``palimpsest delete`` or ``copy --replace`` beside a server without
        fan-out): drop the room as its next commit would have (4404 deleted, 4409
        replaced), once, without a final snapshot. A room that commits nothing (its
        clients only watch) kept serving the old document to new joiners until then."""
        backend = self._backend
        name = room.name
        if backend is None or backend.rooms.get_loaded(name) is not room:
            return
        if name in self._reloading:
            return

        async def drop() -> int:
            assert backend is not None
            replaced = await deletion.was_replaced(backend.store, room)
            if backend.rooms.get_loaded(name) is not room:
                return 0  # dropped meanwhile (its commit was refused), or loaded anew
            n = len(room.peers)
            if replaced:
                await deletion.replaced_elsewhere(backend, name, room)
            else:
                await deletion.deleted_elsewhere(backend, name, deleted_reason(name))
            return n

        log.info("%s: its document was deleted or replaced in the store (the room had "
                 "generation %s); dropping the room", name, room.generation)  # fmt: skip
        self.dropped += 1
        task = asyncio.create_task(drop(), name=f"drop {name}")
        self._reloading[name] = task
        task.add_done_callback(lambda _t: self._reloading.pop(name, None))

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
