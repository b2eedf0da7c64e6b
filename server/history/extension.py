"""History as an extension: the service of a backend, its HTTP routes, and keeping the
stored attribution index current when a document goes idle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from ..errors import NotFound
from ..extensions import Extension
from ..lifecycle import Service, cancel_and_wait
from ..room import Room
from .service import History

if TYPE_CHECKING:
    from ..backend import Backend

log = logging.getLogger("palimpsest.history")


class _Refresher(Service):
    """Background refreshes of stored attribution indexes: at most one queued per
    document, and one at work at a time (``turn``, first come first served); cancelled
    when the app stops (they are a cache: the next one catches up).

    One at a time because each is paced on its own (a fifth of a core while edits are
    being made, half of one otherwise: AttributionIndex.fold_sliced): four documents that
    unloaded during a stretch of typing, their refreshes deferred until it paused, took
    0.5-0.8 s of the event loop's CPU together during the two-writer replay that came
    next, which lasted about a second (bench/notes.md, 3 Dec 2026)."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.turn = asyncio.Lock()

    async def start(self) -> None:
        self.turn = asyncio.Lock()  # of this run's event loop (a lock binds to one)

    async def stop(self) -> None:
        await cancel_and_wait(*self.tasks.values(), log=log)


class HistoryExtension(Extension):
    """The history service of a backend and its HTTP routes (server.routes.history).

    `refresh_on_unload`: when a document's room unloads, bring its stored attribution
    index up to the head in the background (building the first one once the log has
    `build_from` events), so that blame on a cold server reads it instead of replaying
    the log. Ingest never waits for it."""

    def __init__(self, *, refresh_on_unload: bool = True, build_from: int = 2000) -> None:
        self.refresh_on_unload = refresh_on_unload
        self.build_from = build_from
        self._refresher = _Refresher()
        #: observable: refreshes started (one per unload of a document with events)
        self.refreshes = 0

    def setup(self, backend: Backend) -> None:
        self.service = History(backend)

    def routes(self) -> Sequence[BaseRoute]:
        from ..routes.history import routes

        return routes

    def services(self) -> Sequence[Service]:
        return (self._refresher,)

    def on_unload(self, room: Room) -> None:
        if not self.refresh_on_unload or room.name in self._refresher.tasks:
            return
        if room.seq == 0:
            # no event: nothing to attribute (a connection refused at its first frame
            # to a new name, a reader of an empty one), so nothing to look up either
            return
        doc = room.name
        self.refreshes += 1
        task = asyncio.create_task(self._refresh(doc))
        self._refresher.tasks[doc] = task

        def done(_: asyncio.Task[None]) -> None:
            self._refresher.tasks.pop(doc, None)

        task.add_done_callback(done)

    async def _refresh(self, doc: str) -> None:
        try:
            async with self._refresher.turn:
                await self.service.refresh_attribution(doc, self.build_from)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a cache: the next blame builds or extends it
            log.warning("attribution index of %s not refreshed: %s", doc, e)

    async def drain(self) -> None:
        """Wait for the refreshes under way (tests, the bench)."""
        tasks = list(self._refresher.tasks.values())
        await asyncio.gather(*tasks, return_exceptions=True)


def history_of(backend: Backend) -> History:
    """The backend's history service (its HistoryExtension's)."""
    ext = backend.extension(HistoryExtension)
    if ext is None:
        raise NotFound("history is not served here")
    return ext.service


__all__ = ["HistoryExtension", "history_of"]
