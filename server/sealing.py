"""Sealing policy: runs of committed events move from the tail into compressed segments,
off the editing path.

The store does the work (``EventStore.seal_due``: each run in its own short transaction,
safe beside appends and other processes' sealers); this service only decides when. It
wakes once a run's worth of events has been committed by this process, and every
``interval`` seconds anyway (events appended by another process, or before a restart),
and seals every document that has a whole run waiting. When a document unloads (idle),
its shorter last run is sealed as well, if it has at least ``IDLE_REST`` events. A
failure is logged and tried again at the next wake: unsealed events are simply read from
the tail meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import FATAL
from .extensions import Extension
from .lifecycle import Service, cancel_and_wait
from .store.base import Event, EventStore
from .store.segments import SEGMENT_EVENTS

if TYPE_CHECKING:
    from .backend import Backend
    from .room import Room

log = logging.getLogger("palimpsest.sealing")

#: the shortest last run sealed when a document goes idle (fewer stay rows until more come)
IDLE_REST = 64
#: at most this long sealing idle documents when the server stops
STOP_SECONDS = 5.0


class Sealing(Extension, Service):
    """Seals every document's log ``run`` events at a time (an extension and its service)."""

    def __init__(self, run: int = SEGMENT_EVENTS, interval: float = 30.0) -> None:
        self.run = run
        self.interval = interval
        self._store: EventStore | None = None
        self._since = 0
        self._wake = asyncio.Event()
        self._idle: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        #: observable: events sealed by this process, passes made
        self.sealed = 0
        self.passes = 0

    def setup(self, backend: Backend) -> None:
        self._store = backend.store

    def services(self) -> Sequence[Service]:
        return [self]

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._wake.set()  # a first pass at start: whatever is due from before
        self._task = asyncio.create_task(self._loop(), name="sealing")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        # the documents that unloaded as the server stopped: their last runs, now (the
        # store stops after the extensions), within a bound so that shutdown stays quick
        idle, self._idle = self._idle, set()
        if idle and self._store is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_SECONDS):
                    for doc in sorted(idle):
                        await self.seal_idle(doc)

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        self._since += len(events)
        if self._since >= self.run:
            self._wake.set()

    def on_unload(self, room: Room) -> None:
        # a document gone idle: its shorter last run is sealed too (at least IDLE_REST
        # events), so that short documents are not kept as rows for good
        self._idle.add(room.name)
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that comes
            # in the turn the event is set (a room unloading as the server stops), and
            # stop() would then wait for the next interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            self._since = 0
            await self.seal_now()
            while self._idle:
                # taken out once sealed: stop() finishes what a cancelled pass left
                doc = min(self._idle)
                await self.seal_idle(doc)
                self._idle.discard(doc)

    async def seal_idle(self, doc: str) -> int:
        """Seal a document that went idle, its last shorter run included."""
        assert self._store is not None
        try:
            n = await self._store.seal(doc, run=self.run, rest=IDLE_REST)
        except FATAL:
            raise
        except Exception as e:
            log.warning("sealing %s failed (tried again later): %s", doc, e)
            return 0
        self.sealed += n
        return n

    async def seal_now(self) -> int:
        """One pass: seal every document with a whole run waiting; the events sealed."""
        assert self._store is not None
        try:
            n = await self._store.seal_due(run=self.run)
        except FATAL:
            raise
        except Exception as e:
            log.warning("sealing the log failed (tried again later): %s", e)
            return 0
        self.passes += 1
        self.sealed += n
        if n:
            log.debug("sealed %d events into segments", n)
        return n


__all__ = ["Sealing"]
