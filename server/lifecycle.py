"""The one lifecycle of every long-lived service: start()/stop(), or ``async with``."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Self


class Service:
    """Subclasses implement start() and stop(); ``async with`` calls them."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def cancel_and_wait(*tasks: asyncio.Task[Any], log: logging.Logger | None = None) -> None:
    """Cancel `tasks` and wait until each has finished: what a service's stop() does with
    the tasks it started. Their own cancellation ends here. A cancel aimed at the caller
    while it waits is not theirs, and goes on up (the calling task is then cancelling:
    ``Task.cancelling()``); ``contextlib.suppress(CancelledError)`` around the wait would
    swallow it, and whoever cancelled the stop (a timeout, a shutdown) would wait on.

    A task that ended with an error raises it here, unless ``log`` is given: then it is
    logged there and the others are still waited for."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception as e:
            if log is None:
                raise
            log.warning("%s ended with an error as it stopped: %r", task.get_name(), e)
