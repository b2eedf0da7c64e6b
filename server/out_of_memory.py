"""Out of memory: a MemoryError on the serving path stops `palimpsest serve`, which exits
with OUT_OF_MEMORY, so that its supervisor starts a fresh process.

Under a memory limit (`prlimit --as`, a container's), a server that met a burst of
MemoryErrors (a room's load, a log line, tasks whose exception was never retrieved)
stayed alive and never accepted another connection: its listen queue full, every
thread idle. Nothing in a process that ran out of memory half-way through its own
bookkeeping can be trusted to work again; a new one starts clean. Stopping loses
nothing acknowledged: an edit is acknowledged (broadcast) only once its commit is
durable, and the edits not yet committed are still on their senders, who send them
again when they reconnect.

A MemoryError is seen where it is logged (a logging filter on the server's handler: a
record whose exception is, or was caused by, a MemoryError; every boundary that catches
an error it does not handle logs it with its traceback), and where the event loop
reports it (its exception handler). The first one logs a critical line and asks the
server to stop as SIGTERM does (clients closed with 1001, rooms flushed, within the
shutdown's bound).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("palimpsest")

#: the exit status of `palimpsest serve` after a MemoryError
OUT_OF_MEMORY = 4


def is_memory_error(e: BaseException | None, depth: int = 0) -> bool:
    """Whether `e` is a MemoryError, or was raised from or while handling one (a
    StoreError or ExtensionFailed around it), or is a group holding one."""
    if e is None or depth > 8:
        return False
    if isinstance(e, MemoryError):
        return True
    if isinstance(e, BaseExceptionGroup) and any(
        is_memory_error(x, depth + 1) for x in e.exceptions
    ):
        return True
    return is_memory_error(e.__cause__, depth + 1) or is_memory_error(e.__context__, depth + 1)


class OutOfMemory(logging.Filter):
    """Watches for a MemoryError (:meth:`seen`, or as a logging filter) and calls
    `stop` once, on the first."""

    def __init__(self, stop: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.stop = stop
        #: where the first MemoryError was seen (None: none was)
        self.where: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.where is None and record.exc_info and is_memory_error(record.exc_info[1]):
            self.seen(f"{record.name}: {record.getMessage()[:200]}")
        return True

    def seen(self, where: str) -> None:
        if self.where is not None:
            return
        self.where = where
        try:
            log.critical(
                "out of memory (MemoryError, %s): stopping, to exit with status %d for a "
                "supervisor to start the server again (nothing acknowledged is lost: "
                "edits are acknowledged once durable; clients send the rest again)",
                where, OUT_OF_MEMORY,
            )  # fmt: skip
        except Exception:  # (the log line may fail for want of memory too)
            pass
        if self.stop is not None:
            self.stop()


__all__ = ["OUT_OF_MEMORY", "OutOfMemory", "is_memory_error"]
