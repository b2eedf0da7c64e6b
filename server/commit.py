"""Group commit: many appends from many rooms share one store transaction.

Callers ``await committer.append(doc, events)`` and get their stored events back once
they are durable. Everything queued while a transaction is in flight goes into the
next one, which one writer task runs, so under load the batch grows with the arrival
rate and the number of fsyncs per event falls; a lone edit commits at once, on its
caller's own task (no transaction in flight: the caller leads, see ``append``), with
whatever other rooms append in the same turn of the event loop when they have work
coming (``coming``).

When the store refuses a transaction for a reason that may pass (``StoreUnavailable``:
a full disk, an I/O error, a read-only file, the database unreachable), appends whose
caller said ``hold`` stay queued, first in line and in order, and the transaction is
retried with exponential back-off; their callers simply wait. An outage thus costs
editors latency, not their connections (a closed y-websocket connection comes back at
once and re-sends its whole state, again and again). ``hold()`` is asked after every
failure: when it says False (the caller's bound is exceeded) that append fails with
the store's error. Any other StoreError fails the transaction's appends at once.

``refusing`` is the error of the last failed transaction, None once one succeeds:
readiness (/readyz) reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import StoreError, StoreUnavailable
from .lifecycle import Service
from .store.base import Event, EventStore, NewEvent

log = logging.getLogger("palimpsest.commit")

BatchObserver = Callable[[int, float], None]

#: first and longest pause between retries of a refused transaction (seconds)
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: while the store refuses, the cause is logged again at most this often (seconds)
LOG_EVERY = 10.0


@dataclass(slots=True)
class _Append:
    doc: str
    events: Sequence[NewEvent]
    future: asyncio.Future[list[Event]]
    hold: Callable[[], bool] | None
    #: a transaction with it failed before: it may have committed all the same
    tried: bool = False


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
        self._queue: list[_Append] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: a transaction is in flight (run by the writer task or by a caller's task)
        self._busy = False
        #: when a transaction last committed (time.monotonic()): background work that
        #: would slow edits down waits for a pause (server.history.attribution_cache)
        self.last_commit = 0.0
        #: the store's error while it refuses transactions (None once one succeeds)
        self.refusing: StoreError | None = None
        #: when the current refusal began (time.monotonic()), and appends held by it
        self.refusing_since: float | None = None
        self.held = 0
        #: the events of those held appends (each a room's batch of edits)
        self.held_events = 0
        self._last_log = 0.0
        self._last_logged = ""
        #: documents whose rooms have work queued that their task has not taken up yet,
        #: each with the room that announced it (Room._push announces, the room's task
        #: withdraws as it takes the work up): the appends that may come in this turn of
        #: the loop, see ``append``
        self.coming: dict[str, object] = {}

    async def start(self) -> None:
        self._closing = False
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="palimpsest-committer")

    async def stop(self) -> None:
        """Commit what is queued, then stop (nothing is held any more: one last try)."""
        self._closing = True
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    def announce(self, doc: str, owner: object) -> None:
        """`owner` (a room) has work for `doc` queued that its task has not taken up."""
        self.coming[doc] = owner

    def withdraw(self, doc: str, owner: object) -> None:
        """`owner` took its work up, or ended. Only its own announcement goes: a room
        that replaced it under the same name (a reload) keeps its own."""
        if self.coming.get(doc) is owner:
            del self.coming[doc]

    @property
    def pending(self) -> int:
        return sum(len(a.events) for a in self._queue)

    async def append(
        self, doc: str, events: Sequence[NewEvent], *, hold: Callable[[], bool] | None = None
    ) -> list[Event]:
        """Append durably; returns the stored events. With ``hold``, a transient refusal
        of the store is waited out (see the module docstring) while hold() is True.

        When no transaction is in flight, the caller's own task runs the next one (with
        everything queued, its append included): a lone edit then reaches the store and
        comes back without waking the writer task, two task switches fewer on the
        latency of every edit typed alone. While a transaction is in flight, appends
        queue up and the writer task commits them together next (group commit)."""
        if self._task is None or self._task.done():
            raise StoreUnavailable("the committer is not running")
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        item = _Append(doc, events, fut, hold)
        self._queue.append(item)
        if (
            not self._busy
            and self.refusing is None
            and not self._closing
            and not self._queue[0].tried  # those are the writer task's to settle
        ):
            self._busy = True
            try:
                # When another room has work queued (``coming``), one turn of the loop
                # first: its task appends in that turn and joins this transaction. A
                # store may commit a small one on this very thread, without awaiting
                # anything (server.store.sqlite: INLINE_EVENTS), and then nothing else
                # would run and queue while it is in flight. When no other room has,
                # the turn would only read more frames before this commit, which delays
                # it and groups nothing (they join the next): the two-writer replay took
                # 0.88x the time without it (median of ten alternated pairs, bench/notes.md,
                # 4 Dec 2026).
                if len(self.coming) > (doc in self.coming):
                    try:
                        await asyncio.sleep(0)
                    except asyncio.CancelledError:
                        if item in self._queue:  # nothing was sent: withdrawn
                            self._queue.remove(item)
                        raise
                await self._commit_next()
            finally:
                self._busy = False
                if self._queue or self._closing:
                    # what came meanwhile is the writer task's turn; a stopping writer
                    # task waits for this transaction before it can finish
                    self._wake.set()
        else:
            self._wake.set()
        return await fut

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._queue or self._busy:
                if self._closing and not self._queue and not self._busy:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            self._busy = True
            try:
                held = await self._commit_next()
            finally:
                self._busy = False
            if held:  # refused, and held appends went back first in line
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX)
            elif self.refusing is None:
                delay = RETRY_FIRST

    async def _commit_next(self) -> bool:
        """One transaction with what is queued (up to batch_max events); resolves its
        appends. True when the store refused it and appends are held (queued again,
        first in line): the writer task pauses before the next try."""
        take: list[_Append] = []
        n = 0
        while self._queue and (not take or n + len(self._queue[0].events) <= self.batch_max):
            item = self._queue.pop(0)
            take.append(item)
            n += len(item.events)
        if any(a.tried for a in take):
            take = await self._settle(take)
            if not take:  # they had committed: the store works
                self.clear_refusal()
                return False
        t0 = time.perf_counter()
        try:
            results = await self.store.append([(a.doc, a.events) for a in take])
        except asyncio.CancelledError:
            # the caller that led this transaction was cancelled: the store may commit it
            # all the same, so the others' appends are settled (found in the log, or
            # tried again) by the writer task
            for a in take:
                a.tried = True
            self._queue[:0] = [a for a in take if not a.future.done()]
            self._wake.set()
            raise
        except Exception as e:
            if isinstance(e, StoreError):
                err = e
            else:  # a driver error the store failed to translate
                log.exception("store append failed")
                err = StoreError(f"store append failed: {e!r}")
                err.__cause__ = e
            return self._refused(err, take)
        if self.refusing is not None:
            self._recovered(n)
        self.last_commit = time.monotonic()
        if self.on_batch is not None:
            self.on_batch(n, time.perf_counter() - t0)
        for a, stored in zip(take, results, strict=True):
            if not a.future.done():
                a.future.set_result(stored)
        return False

    def _refused(self, err: StoreError, take: list[_Append]) -> bool:
        """Fail what cannot wait, put back (first in line) what holds. True if any held."""
        now = time.monotonic()
        transient = isinstance(err, StoreUnavailable) and not self._closing
        keep = [
            a for a in take if transient and a.hold is not None and not a.future.done() and a.hold()
        ]
        kept = {id(a) for a in keep}
        for a in take:
            if id(a) not in kept and not a.future.done():
                a.future.set_exception(err)
        if self.refusing is None:
            self.refusing_since = now
        if str(err) != self._last_logged:
            self._last_log = 0.0
        self.refusing = err
        self.held = len(keep)
        self.held_events = sum(len(a.events) for a in keep)
        for a in keep:
            a.tried = True
        if now - self._last_log >= LOG_EVERY:
            self._last_log, self._last_logged = now, str(err)
            log.error(
                "the %s store refuses commits: %s%s; %s",
                self.store.name,
                err,
                f" (cause: {err.__cause__!r})" if err.__cause__ is not None else "",
                f"holding {sum(len(a.events) for a in keep)} events, retrying with back-off"
                if keep
                else f"{len(take)} appends failed",
            )
        if keep:
            self._queue[:0] = keep
        return bool(keep)

    async def _settle(self, take: list[_Append]) -> list[_Append]:
        """Resolve the appends that a failed transaction committed after all (a lost
        connection can fail a COMMIT that took effect); returns the others. Retrying those
        would log every edit twice."""
        rest = []
        for a in take:
            found = None
            if a.tried and a.events:
                try:
                    found = await self._find(a)
                except StoreError:
                    found = None  # cannot tell yet: the append will fail and hold again
            if found is None:
                rest.append(a)
            elif not a.future.done():
                a.future.set_result(found)
        return rest

    async def _find(self, a: _Append) -> list[Event] | None:
        evs = a.events
        lo, hi = min(e.ts for e in evs), max(e.ts for e in evs)
        logged = await self.store.query(a.doc, since_ts=lo, until_ts=hi, limit=len(evs) + 10_000)
        want = [(e.ts, e.actor, e.kind, e.update) for e in evs]
        have = [(e.ts, e.actor, e.kind, e.update) for e in logged]
        for i in range(len(have) - len(want) + 1):
            if have[i : i + len(want)] == want:
                return logged[i : i + len(want)]
        return None

    def _recovered(self, n: int) -> None:
        since = self.refusing_since or time.monotonic()
        log.warning(
            "the %s store takes commits again after %.1f s (%d events in the first batch)",
            self.store.name,
            time.monotonic() - since,
            n,
        )
        self.clear_refusal()

    def clear_refusal(self) -> None:
        """The store took a write (a commit, or the readiness write check)."""
        self.refusing = None
        self.refusing_since = None
        self.held = self.held_events = 0

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for: it can lose a cancel
                await self._stopping.wait()
