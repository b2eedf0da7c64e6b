"""Group commit: many appends from many rooms share one store transaction.

Callers ``await committer.append(doc, events)`` and get their stored events back once
they are durable. One writer task drains everything queued while the previous
transaction was in flight into the next one, so under load the batch grows with the
arrival rate and the number of fsyncs per event falls, while a lone edit still
commits at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from .errors import StoreError, StoreUnavailable
from .lifecycle import Service
from .store.base import Event, EventStore, NewEvent

log = logging.getLogger("palimpsest.commit")

BatchObserver = Callable[[int, float], None]


class Committer(Service):
    def __init__(
        self,
        store: EventStore,
        *,
        batch_max: int = 4096,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.store = store
        self.batch_max = batch_max
        self.on_batch = on_batch
        self._queue: list[tuple[str, Sequence[NewEvent], asyncio.Future[list[Event]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="palimpsest-committer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def pending(self) -> int:
        return sum(len(evs) for _, evs, _ in self._queue)

    async def append(self, doc: str, events: Sequence[NewEvent]) -> list[Event]:
        if self._task is None or self._task.done():
            raise StoreUnavailable("the committer is not running")
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._queue.append((doc, events, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            take: list[tuple[str, Sequence[NewEvent], asyncio.Future[list[Event]]]] = []
            n = 0
            while self._queue and (not take or n + len(self._queue[0][1]) <= self.batch_max):
                item = self._queue.pop(0)
                take.append(item)
                n += len(item[1])
            t0 = time.perf_counter()
            try:
                results = await self.store.append([(doc, evs) for doc, evs, _ in take])
            except StoreError as e:
                for _, _, fut in take:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            except Exception as e:  # a driver error the store failed to translate
                log.exception("store append failed")
                err = StoreError(f"store append failed: {e!r}")
                for _, _, fut in take:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            if self.on_batch is not None:
                self.on_batch(n, time.perf_counter() - t0)
            for (_, _, fut), stored in zip(take, results, strict=True):
                if not fut.done():
                    fut.set_result(stored)
