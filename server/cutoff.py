"""A process cut off from the store while the others are not: its clients move.

While the store does not take this process's commits (it refuses them, or has not
answered one), edits are held: acknowledged to nobody, shown to nobody, committed in
order when it answers again (server.commit). That is right when the store is down for
every process: there is nowhere better to be. It is wrong for a process cut off alone (a
partition between it and PostgreSQL, a broken pool): its /readyz says 503, so a balancer
sends it nobody new, but the clients it has stay, see nobody else's edits, and their own
reach nobody, for as long as the cut lasts (45 s in a drill: 10 of 191 keystrokes seen
elsewhere).

The fan-out tells the two apart: events of other processes that keep arriving over
Redis were committed by them, so the store works for them. When commits here have
waited on the store for a while, and events of other processes have arrived for
``seconds`` (Settings.store_cutoff_seconds) since their wait began, this process closes
its websocket connections with 1013 ("this server cannot reach the store; reconnect")
and refuses new ones at the handshake (503) while the cut lasts: a client reconnects
through the balancer to a process that can commit. Nothing is lost: what it had sent
here was acknowledged to nobody, and a Yjs client re-sends what a server lacks in its
sync step 2, to whichever process it reaches. What this process holds is not logged a
second time when its store answers: before a held commit is tried again, and before the
edits queued behind it (whose connections have left) are committed, the room checks them
against the log once more, its document and the other processes' events it has queued
(Room._still_adding, known.still_adding): those whose items and deletions the re-sent
edits already brought add nothing, and are left out (an event that changes nothing is
never logged). What adds anything is logged, in order; when unsure, it is logged. One
exception: a statement that was on its way to the store when the cut began (held up in
the network, not failed) commits when it arrives, as it was sent, and may log the same
items twice (changing nothing the second time): nothing on this side can take it back.

With no fan-out, or no sign of other processes committing, nothing is closed: the store
is down for everyone (or this process is alone), and the hold is the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .lifecycle import Service, cancel_and_wait

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("palimpsest.cutoff")

#: the close of a connection whose process is cut off from the store
CLOSE_CODE = 1013
CLOSE_REASON = "this server cannot reach the store; reconnect"
#: other processes' events count as proof of their commits only when they arrive this
#: long after the wait here began (seconds): one committed just before the store went
#: down for everyone is published a moment later
MARGIN = 1.0


class StoreCutoff(Service):
    """Watches this process's wait on the store against the other processes' commits
    (``others_committed``: when the fan-out last brought events of another process,
    time.monotonic(), None before any)."""

    def __init__(self, backend: Backend, seconds: float) -> None:
        self.backend = backend
        self.seconds = seconds
        #: when events of another process last arrived (set by the fan-out)
        self.others_committed: float | None = None
        #: the wait on the store being watched (its start), and when other processes'
        #: commits were first seen during it
        self._wait: float | None = None
        self._others_from: float | None = None
        #: when this process was found cut off, None while it is not
        self.cut_off_since: float | None = None
        #: connections closed for it (palimpsest_store_cutoff_closes_total)
        self.closed = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="palimpsest-store-cutoff")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, log=log)
            self._task = None

    def peer_committed(self) -> None:
        self.others_committed = time.monotonic()

    async def _run(self) -> None:
        every = min(1.0, self.seconds / 4)
        while True:
            await asyncio.sleep(every)
            try:
                self.check()
            except Exception:  # a watch: never the end of it
                log.exception("watching for a cut from the store failed")

    def waiting_since(self) -> float | None:
        """Since when commits here wait on the store (a transaction unanswered or
        refused, or edits queued without a commit), None while they do not."""
        committer = self.backend.committer
        times = [t for t in (committer.waiting_since, committer.waiting().since) if t is not None]
        return min(times) if times else None

    def check(self) -> None:
        now = time.monotonic()
        since = self.waiting_since()
        if since is None:
            if self.cut_off_since is not None:
                log.info(
                    "the store takes this process's commits again: its clients may connect "
                    "again after %.1f s cut off",
                    now - self.cut_off_since,
                )
            self._wait = self._others_from = self.cut_off_since = None
            self.backend.store_cut_off = False
            return
        if since != self._wait:  # another wait (or a part of it that began later)
            self._wait, self._others_from = since, None
        others = self.others_committed
        if self._others_from is None:
            if others is None or others - since < MARGIN:
                return  # no sign of anyone committing while this process cannot
            self._others_from = others
        if now - self._others_from < self.seconds:
            return
        if self.cut_off_since is None:
            self.cut_off_since = now
            self.backend.store_cut_off = True
            waiting = self.backend.committer.waiting()
            log.warning(
                "the %s store has not taken this process's commits for %.1f s while other "
                "processes' commits keep arriving over the fan-out (for %.1f s): this "
                "process is cut off from it, not the store down. Closing its websocket "
                "connections with %d (%r) so that they reconnect to another process, and "
                "refusing new ones while the cut lasts; %s here are acknowledged to nobody "
                "and their clients re-send them where they reconnect",
                self.backend.store.name, now - since, now - self._others_from, CLOSE_CODE,
                CLOSE_REASON, waiting,
            )  # fmt: skip
        self.closed += self.backend.close_connections(None, None, CLOSE_CODE, CLOSE_REASON)


__all__ = ["CLOSE_CODE", "CLOSE_REASON", "StoreCutoff"]
