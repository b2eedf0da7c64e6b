"""Waking the readers of the log when something was committed.

Followers (SSE streams, webhook deliverers) never queue events: each keeps a cursor and
reads the store after it. When a read finds nothing, the follower takes a *ticket*
(before the read, so that a commit landing between the read and the wait is not missed)
and waits on it. A commit sets the tickets of its document and the global one, whoever
made it: this process (``on_logged``), another process (a fan-out message on Redis),
or anyone at all (a poller that reads the store's last position every few seconds, the
safety net for lost messages and for writers that publish nothing).
"""

from __future__ import annotations

import asyncio
import contextlib

#: the ticket of "any document" (the global stream and the webhooks)
ANY: None = None


class Wakeup:
    """One asyncio.Event per document somebody waits on, replaced each time it fires."""

    def __init__(self) -> None:
        self._events: dict[str | None, asyncio.Event] = {}
        #: how many times a commit woke the waiters (for tests and metrics)
        self.fired = 0

    def ticket(self, doc: str | None = ANY) -> asyncio.Event:
        """Take this before reading the store; wait on it after a read found nothing."""
        ev = self._events.get(doc)
        if ev is None:
            ev = self._events[doc] = asyncio.Event()
        return ev

    def notify(self, doc: str) -> None:
        """Events of `doc` were committed: wake its followers and the global ones."""
        for key in (doc, ANY):
            ev = self._events.pop(key, None)
            if ev is not None:
                ev.set()
                self.fired += 1

    def notify_all(self) -> None:
        """Something was committed somewhere (or may have been): wake everyone. Also
        drops the tickets nobody waits on any more."""
        events, self._events = self._events, {}
        for ev in events.values():
            ev.set()
        self.fired += 1

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float) -> bool:
        """True when woken, False after `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await ticket.wait()
            return True
        return False


__all__ = ["ANY", "Wakeup"]
