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
Before held appends are tried again, the store makes sure that none of those that got
no answer can still commit (EventStore.end_unanswered_appends: PostgreSQL ends their
backends, a stalled statement included), then the log is searched for them: one that
committed after all is answered from there, so no edit is logged twice. Then the caller
of a held append may take back what other processes logged meanwhile (``recheck``): a
process cut off from the store alone holds edits that its clients re-send to another
process (server/cutoff.py), and those would be logged a second time, as events that
change nothing. An append left with no events is answered [] without a transaction.

``refusing`` is the error of the last failed transaction, None once one succeeds:
readiness (/readyz) reads it. ``waiting_since`` dates the stretch in which commits wait
on the store: from the start of the first transaction that did not commit, which for a
store that hangs (a stopped database, a lost route) is long before it fails (asyncpg
gives up after its command_timeout, and the pool waits as long again for the cancel).
A stretch past WAIT_WARN seconds is logged as a warning at once, whatever the store's
own timeouts; its end, whenever the stretch was logged, says how long it lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import FATAL, DeletedMeanwhile, HeadMoved, StoreError, StoreUnavailable
from .hook_timing import CLOCK
from .lifecycle import Service
from .store.base import (
    EVENT_CLOCK,
    Event,
    EventStore,
    NewEvent,
    append_takes,
)

log = logging.getLogger("palimpsest.commit")

BatchObserver = Callable[[int, float], None]
#: a held append's events -> those of them still to log (a sub-sequence, in order)
Recheck = Callable[[Sequence[NewEvent]], Sequence[NewEvent]]

#: first and longest pause between retries of a refused transaction (seconds)
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: while the store refuses, the cause is logged again at most this often (seconds)
LOG_EVERY = 10.0
#: commits waiting this long on the store (no answer, no error yet) are logged (seconds)
WAIT_WARN = 5.0
#: how often the rooms' waiting edits are looked at (seconds; see ``_watch``)
WATCH_EVERY = 1.0
#: appends of at most this many events join the next transaction before larger ones
#: queued ahead of them (``_take``): a room's batch is up to Room.max_batch (1024) edits
SMALL_APPEND = 64


class Queues(Protocol):
    """What the committer reads of a room: the client edits it has received and not yet
    committed (queued in the room, held here, or in a transaction in flight), and what
    the room's task awaits (in words)."""

    def awaiting(self) -> str: ...

    @property
    def queued_edits(self) -> int: ...

    @property
    def queued_bytes(self) -> int: ...

    @property
    def queued_since(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Waiting:
    """Client edits received and not committed yet, over all rooms: how many, their
    bytes, in how many documents, and since when the oldest stretch of them has seen no
    commit (time.monotonic(), None when none waits)."""

    edits: int = 0
    bytes: int = 0
    docs: int = 0
    since: float | None = None

    def __str__(self) -> str:
        return (
            f"{self.edits} edits ({self.bytes} bytes) of {self.docs} "
            f"document{'' if self.docs == 1 else 's'}"
        )


@dataclass(slots=True)
class _Append:
    doc: str
    events: Sequence[NewEvent]
    future: asyncio.Future[list[Event]]
    hold: Callable[[], bool] | None
    #: the head the document must have at least (the room's seq before the batch):
    #: EventStore.append's floor
    floor: int = 0
    #: the document's generation the room loaded (DocInfo.generation; None: not
    #: checked): EventStore.append's generation
    generation: int | None = None
    #: a transaction with it failed before: it may have committed all the same
    tried: bool = False
    #: asked before it is tried again (Committer.append's `recheck`)
    recheck: Recheck | None = None
    #: the head must be the floor itself (EventStore.append's exact)
    exact: bool = False


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
        #: commit attempts the store failed or refused (a transaction, or the look in the
        #: log for held ones that may have committed): palimpsest_commit_failures_total
        self.failures = 0
        #: a transaction is in flight (run by the writer task or by a caller's task)
        self._busy = False
        #: when a transaction last committed (time.monotonic()): background work that
        #: would slow edits down waits for a pause (server.history.attribution_cache)
        self.last_commit = 0.0
        self._created = time.monotonic()
        #: the loaded rooms, by document (the backend's Rooms.loaded): their queued edits
        #: are what waits for the store, besides what is queued here (``waiting``)
        self.rooms: Mapping[str, Queues] = {}
        #: the store's error while it refuses transactions (None once one succeeds)
        self.refusing: StoreError | None = None
        #: when the first transaction that has not committed yet began (time.monotonic()),
        #: None while commits go through; and the appends held by a refusal
        self.waiting_since: float | None = None
        self.held = 0
        #: the events of those held appends (each a room's batch of edits)
        self.held_events = 0
        #: when the refusal was last logged: at most every LOG_EVERY seconds while the
        #: store refuses, whatever its error says (each retry's may differ: the append's,
        #: then the look in the log's; a reset, then a closed connection)
        self._last_log = -LOG_EVERY
        #: the appends of the transaction in flight; the timer of the wait's warning, and
        #: whether this stretch of waiting was logged (its end is, then)
        self._in_flight: list[_Append] = []
        self._wait_timer: asyncio.TimerHandle | None = None
        self._wait_said = False
        #: the watch of the rooms' waiting edits (``_watch``): when it last said they
        #: wait, None while they do not (or it has not said so)
        self._watch_task: asyncio.Task[None] | None = None
        self._rooms_said: float | None = None
        self._rooms_from = 0.0
        #: documents whose rooms have work queued that their task has not taken up yet,
        #: each with the room that announced it (Room._push announces, the room's task
        #: withdraws as it takes the work up): the appends that may come in this turn of
        #: the loop, see ``append``
        self.coming: dict[str, object] = {}
        #: the store's append function, and whether it takes floors (``_takes_floors``)
        self._append_fn: object = None
        self._floors = False
        self._generations = False
        self._exact = False

    async def start(self) -> None:
        # A stopped committer starts again, on this event loop: an embedding app's test
        # starts one app per test, each on a loop of its own (TestClient,
        # pytest-asyncio), and an asyncio.Event waited on binds to the loop it was
        # waited on (the second start's writer task died at once: "bound to a different
        # event loop", every write a 503). So the loop-bound state is made here, and the
        # per-run state begins afresh (the last run's stop committed its queue).
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closing = False
        self._busy = False
        self.coming.clear()
        self._wait_timer = None
        self._wait_said = False
        self._rooms_said = None
        self.refusing = None
        self.waiting_since = None
        self.held = self.held_events = 0
        self._task = asyncio.create_task(self._run(), name="palimpsest-committer")
        self._watch_task = asyncio.create_task(self._watch(), name="palimpsest-commit-watch")

    async def stop(self) -> None:
        """Commit what is queued, then stop (nothing is held any more: one last try)."""
        self._closing = True
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None

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
        """Events queued for the next transaction (held ones included); not those of the
        transaction in flight, nor the edits rooms have queued: see ``waiting``."""
        return sum(len(a.events) for a in self._queue)

    def waiting(self) -> Waiting:
        """The client edits received and not committed yet, wherever they wait: queued in
        their room (behind the commit in flight, or whatever else the room's task
        awaits), held here after a refusal, or in a transaction in flight."""
        edits = size = docs = 0
        since: float | None = None
        for room in self.rooms.values():
            n = room.queued_edits
            if n:
                edits, size, docs = edits + n, size + room.queued_bytes, docs + 1
                t = room.queued_since
                if t is not None and (since is None or t < since):
                    since = t
        return Waiting(edits, size, docs, since)

    def stalled(self) -> bool:
        """The store refuses commits (the last one failed), or has not answered one for
        WAIT_WARN seconds, or edits have waited that long without a commit (behind
        whatever their room awaits: a read of the log, a server change's turn)."""
        if self.refusing is not None:
            return True
        now = time.monotonic()
        since = self.waiting_since
        if since is not None and now - since >= WAIT_WARN:
            return True
        since = self.waiting().since
        return since is not None and now - since >= WAIT_WARN

    def since_commit(self) -> float:
        """Seconds since a transaction last committed (since the committer was made,
        before the first)."""
        return time.monotonic() - (self.last_commit or self._created)

    async def append(
        self,
        doc: str,
        events: Sequence[NewEvent],
        *,
        hold: Callable[[], bool] | None = None,
        floor: int = 0,
        generation: int | None = None,
        recheck: Recheck | None = None,
        exact: bool = False,
    ) -> list[Event]:
        """Append durably; returns the stored events. With ``hold``, a transient refusal
        of the store is waited out (see the module docstring) while hold() is True.

        `recheck`: with ``hold``, called before each retry of the held append (once the
        log was searched for its last try, which did not commit) with its events, and
        returns those still to log, in order (the others add nothing to the log any
        more: their caller, a room, found them in other processes' events). Only those
        are stored, and returned: fewer than `events`, none when it keeps none (then no
        transaction). A recheck that raises keeps them all.

        `generation`: the generation of `doc` the caller loaded (DocInfo.generation),
        checked as the floor is, in the same transaction: a new document of the name
        already past `floor` is another generation, and refuses it the same way. (A
        store whose append takes no generations, store.base.append_takes: not
        checked.)

        `floor`: the seq the caller (a room) has seen of `doc`. The store appends only
        while the document's head is at least that, in the same transaction (other
        processes' appends only raise it); a head below it was deleted under the room,
        and the append raises DeletedMeanwhile (410) without writing anything, rather
        than make the document again from the room's copy of the deleted one. The other
        appends of the transaction commit. (A store whose append takes no floors,
        store.base.append_takes, checks nothing.)

        `exact`: the head must be `floor` itself, in the same transaction (a server
        change made on the document at that head); one that moved on raises HeadMoved
        without writing anything (the store does not say whether it moved on or was
        deleted: the caller reads the log to find out). A store whose append does not
        take it appends after whatever came, as before.

        When no transaction is in flight, the caller's own task runs the next one (with
        everything queued, its append included): a lone edit then reaches the store and
        comes back without waking the writer task, two task switches fewer on the
        latency of every edit typed alone. While a transaction is in flight, appends
        queue up and the writer task commits them together next (group commit)."""
        if self._task is None or self._task.done():
            raise StoreUnavailable("the committer is not running")
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        item = _Append(doc, events, fut, hold, floor, generation, recheck=recheck, exact=exact)
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
        stored = await fut
        if stored and events and stored[-1].ts > events[-1].ts:
            EVENT_CLOCK.observe(stored[-1].ts, doc)  # raised to its last: run on from it
        return stored

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
        take, n = self._take()
        self._waiting()
        self._in_flight = take
        try:
            return await self._commit(take, n)
        finally:
            self._in_flight = []

    def _take(self) -> tuple[list[_Append], int]:
        """Takes the next transaction's appends off the queue, and counts their events.

        The first in line always goes (alone when it is larger than batch_max). Then, in
        three passes over the queue, whatever still fits under batch_max: the held appends
        (tried before), then the small ones (SMALL_APPEND events at most: a quiet room's
        edits), then any. A pass skips an append that does not fit and takes later ones of
        other documents; it takes none of the skipped one's document after it, so each
        document's appends go in the order they came (a room has one append queued at a
        time, but a server change may queue behind it). The transaction carries them in
        queue order. Taking the queue's front only, as it did, a quiet room's one edit
        queued behind five rooms' 1024 waited one transaction or more per 4096 events
        before it (up to 0.7 s on PostgreSQL with eight flooding appends queued)."""
        queue = self._queue
        if not queue:
            return [], 0
        chosen = [True] + [False] * (len(queue) - 1)
        n = len(queue[0].events)
        passes: tuple[Callable[[_Append], bool], ...] = (
            lambda a: a.tried,
            lambda a: len(a.events) <= SMALL_APPEND,
            lambda a: True,
        )
        for wanted in passes:
            skipped: set[str] = set()  # documents with an append not taken in this pass
            for i, a in enumerate(queue):
                if chosen[i]:
                    continue  # (every earlier append of its document was taken too)
                if a.doc not in skipped and wanted(a) and n + len(a.events) <= self.batch_max:
                    chosen[i] = True
                    n += len(a.events)
                else:
                    skipped.add(a.doc)
        take = [a for a, c in zip(queue, chosen, strict=True) if c]
        self._queue[:] = [a for a, c in zip(queue, chosen, strict=True) if not c]
        return take, n

    async def _commit(self, take: list[_Append], n: int) -> bool:
        if any(a.tried for a in take):
            t0 = time.perf_counter()
            try:
                take = await self._settle(take)
            except StoreError as e:  # cannot tell yet whether they committed: held again
                return self._refused(e, take, time.perf_counter() - t0)
            if not take:  # they had committed: the store works
                self.recovered(f"{n} events held had committed: found in the log")
                return False
            # (after the search: it looks for the events of the last try, which may have
            # committed; only this try's events are fewer)
            take = self._rechecked(take)
            if not take:  # other processes logged it all: the store works for them
                self.recovered(f"{n} events held were logged by other processes meanwhile")
                return False
            n = sum(len(a.events) for a in take)
        t0 = time.perf_counter()
        try:
            batches = [(a.doc, a.events) for a in take]
            floors, generations = self._takes_floors()
            if generations and self._exact and any(a.exact for a in take):
                results = await self.store.append(
                    batches,
                    floors=[a.floor for a in take],
                    generations=[a.generation for a in take],
                    exact=[a.exact for a in take],
                )
            elif generations:
                results = await self.store.append(
                    batches,
                    floors=[a.floor for a in take],
                    generations=[a.generation for a in take],
                )
            elif floors:
                results = await self.store.append(batches, floors=[a.floor for a in take])
            else:
                results = await self.store.append(batches)
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
            return self._refused(err, take, time.perf_counter() - t0)
        if self.refusing is None and not self._wait_said:
            self.waiting_since = None  # the usual: nothing to say
        else:
            self.recovered(f"{n} events in the first batch")
        self.last_commit = time.monotonic()
        if self.on_batch is not None:
            self.on_batch(n, time.perf_counter() - t0)
        for a, stored in zip(take, results, strict=True):
            if a.future.done():
                continue
            if a.events and not stored and a.exact and self._exact:
                # past its floor, or below it: the room reads the log to tell
                a.future.set_exception(HeadMoved(a.doc))
            elif a.events and not stored:  # below its floor, or of another generation
                # the store does not say which: deleted, or replaced (copy --replace);
                # the room finds out (Room._deleted_or_replaced) and says it next
                log.warning(
                    "%s: an append of %d events was refused: the document's log is no "
                    "longer the one its room had seen up to seq %d (generation %s): "
                    "deleted or replaced under the room",
                    a.doc, len(a.events), a.floor, a.generation,
                )  # fmt: skip
                a.future.set_exception(DeletedMeanwhile(a.doc))
            else:
                a.future.set_result(stored)
        return False

    def _takes_floors(self) -> tuple[bool, bool]:
        """Whether the store's append takes floors, and generations
        (store.base.append_takes), asked again when its append is
        another (a wrapper set on the instance)."""
        fn = self.store.append
        key = getattr(fn, "__func__", fn)
        if key is not self._append_fn:
            self._append_fn = key
            self._floors = append_takes(fn, "floors")
            self._generations = append_takes(fn, "generations")
            self._exact = append_takes(fn, "exact")
        return self._floors, self._floors and self._generations

    def _refused(self, err: StoreError, take: list[_Append], took: float) -> bool:
        """Fail what cannot wait, put back (first in line) what holds. True if any held.
        `took`: how long the store took to refuse."""
        self.failures += 1
        now = time.monotonic()
        transient = isinstance(err, StoreUnavailable) and not self._closing
        keep = [
            a for a in take if transient and a.hold is not None and not a.future.done() and a.hold()
        ]
        kept = {id(a) for a in keep}
        for a in take:
            if id(a) not in kept and not a.future.done():
                a.future.set_exception(err)
        if self.refusing is None:  # a new stretch of refusals: said at once
            self._last_log = -LOG_EVERY
        self.refusing = err
        self.held = len(keep)
        self.held_events = sum(len(a.events) for a in keep)
        for a in keep:
            a.tried = True
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            # what the room's batches held here stand for: every edit their rooms have
            # queued behind them waits too (the batch is one room's, up to max_batch)
            waiting = self.waiting()
            log.error(
                "the %s store refuses commits: %s%s%s; %s",
                self.store.name,
                err,
                f" (cause: {err.__cause__!r})" if err.__cause__ is not None else "",
                f", after waiting {took:.1f} s for its answer" if took >= 1 else "",
                f"holding {self.held_events} events of {self.held} appends, retrying with "
                f"back-off; {waiting} wait for the store in all"
                if keep
                else f"{len(take)} appends failed",
            )
        if keep:
            self._queue[:0] = keep
        return bool(keep)

    async def _settle(self, take: list[_Append]) -> list[_Append]:
        """Resolve the appends that a failed transaction committed after all (a lost
        connection can fail a COMMIT that took effect, and a statement held up on its way
        commits when it arrives, after its caller gave up); returns the others. Retrying
        those would log every edit twice, so first the store makes sure that none can
        still commit (end_unanswered_appends), and the log read after that is final.
        Raises StoreError while the store cannot tell: then nothing is tried again."""
        await self.store.end_unanswered_appends()
        rest = []
        for a in take:
            found = await self._find(a) if a.tried and a.events else None
            if found is None:
                rest.append(a)
            elif not a.future.done():
                a.future.set_result(found)
        return rest

    def _rechecked(self, take: list[_Append]) -> list[_Append]:
        """Held appends with what their callers still want logged (``recheck``); those
        left with no events are answered [] and not returned."""
        rest = []
        for a in take:
            if a.tried and a.recheck is not None and a.events and not a.future.done():
                try:
                    kept = list(a.recheck(a.events))
                except FATAL:
                    raise
                except Exception:  # (when unsure, everything is logged: a no-op is harmless)
                    log.exception("%s: re-checking held events failed; logging them all", a.doc)
                    kept = list(a.events)
                if len(kept) < len(a.events):
                    log.info(
                        "%s: %d of %d held events add nothing to the log any more (other "
                        "processes logged their changes meanwhile): not logged again",
                        a.doc, len(a.events) - len(kept), len(a.events),
                    )  # fmt: skip
                    a.events = kept
                if not kept:
                    a.future.set_result([])
                    continue
            rest.append(a)
        return rest

    async def _find(self, a: _Append) -> list[Event] | None:
        """The events of `a` in the log (after its floor), if its last try committed.
        Their ts may be later than the try's: an append raises each event's to the
        document's last (EventStore.append), and a statement held up on its way commits
        after other processes' appends, stamped by their clocks (a process cut off from
        the store: its events were stamped when the cut began)."""
        evs = a.events
        lo = min(e.ts for e in evs)
        logged = await self.store.query(a.doc, after=a.floor, since_ts=lo, limit=len(evs) + 10_000)
        want = [(e.actor, e.kind, e.update) for e in evs]
        have = [(e.actor, e.kind, e.update) for e in logged]
        for i in range(len(have) - len(want) + 1):
            if have[i : i + len(want)] == want and all(
                got.ts >= e.ts for got, e in zip(logged[i : i + len(want)], evs, strict=True)
            ):
                return logged[i : i + len(want)]
        return None

    def _waiting(self) -> None:
        """A transaction begins: the first of a stretch dates it, and the warning is due
        WAIT_WARN seconds later unless the stretch ends first. (One timer goes on while
        transactions follow each other, rather than one per transaction.)"""
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
            if self._wait_timer is None:
                self._wait_timer = asyncio.get_running_loop().call_later(
                    WAIT_WARN, self._still_waiting
                )

    def _still_waiting(self) -> None:
        self._wait_timer = None
        since = self.waiting_since
        if since is None or self._wait_said:
            return
        waited = time.monotonic() - since
        if waited < WAIT_WARN:  # another stretch, begun since the timer was set
            self._wait_timer = asyncio.get_running_loop().call_later(
                WAIT_WARN - waited, self._still_waiting
            )
            return
        waiting = self._in_flight + self._queue
        if self.refusing is not None or not waiting:
            return  # its refusal was logged, as an error; or nothing waits
        self._wait_said = True
        events = [e for a in waiting for e in a.events]
        docs = len({a.doc for a in waiting})
        # a hook that held the loop meanwhile kept the store's answer from being read:
        # the store may have answered long ago (a field test's 10.3 s was a hook's)
        held = CLOCK.held_since(since)
        log.warning(
            "the %s store has not answered a commit for %.1f s: %d events of %d "
            "document%s (%d bytes) wait for it, acknowledged to nobody until it does%s",
            self.store.name,
            waited,
            len(events),
            docs,
            "" if docs == 1 else "s",
            sum(len(e.update) for e in events),
            f"; {held}: its answer may have waited for the event loop, not for the store"
            if held
            else "",
        )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY)
            try:
                self.watch_rooms()
            except Exception:  # a diagnostic: never the end of the watch
                log.exception("watching the edits that wait for the store failed")

    def watch_rooms(self) -> None:
        """Say when edits have waited WAIT_WARN seconds here without a commit, whatever
        they wait behind, then again every LOG_EVERY seconds while they do, and when they
        move again. The wait of a transaction in flight is said by ``_still_waiting``,
        but a room's edits also queue behind a read of the log that the store does not
        answer (events another process logged, read before its own are applied), with
        no commit of this process's in flight: a process held 400 edits for 40 s that
        way, and its log said nothing of them. A refusal says it in its own line."""
        now = time.monotonic()
        waiting = self.waiting()
        if waiting.since is None or now - waiting.since < WAIT_WARN:
            if self._rooms_said is not None:
                self._rooms_said = None
                if not self._wait_said:  # (then recovered() says it, when it commits)
                    log.info(
                        "the edits waiting here for the %s store move again after %.1f s",
                        self.store.name,
                        now - self._rooms_from,
                    )
            return
        if self.refusing is not None:
            return
        if self._rooms_said is None:
            self._rooms_from = waiting.since
            if self._wait_said:
                self._rooms_said = now  # said by _still_waiting: the repeats are ours
                return
        if self._rooms_said is not None and now - self._rooms_said < LOG_EVERY:
            return
        self._rooms_said = now
        behind = ""
        oldest = min(
            ((d, r) for d, r in self.rooms.items() if r.queued_since is not None),
            key=lambda dr: dr[1].queued_since or now,
            default=None,
        )
        if oldest is not None:
            behind = f"; those of {oldest[0]} wait behind {oldest[1].awaiting()}"
        held = CLOCK.held_since(waiting.since)
        if held:  # (then the store may have had nothing to do with it)
            behind += f"; {held}"
        log.warning(
            "edits have waited %.1f s here for the %s store: %s, acknowledged to nobody "
            "until it answers (%s)%s",
            now - waiting.since,
            self.store.name,
            waiting,
            "a commit is in flight"
            if self._in_flight
            else "no commit of this process's is in flight",
            behind,
        )

    def recovered(self, how: str) -> None:
        """The store took a write (a commit, or the readiness write check: `how`). When
        commits had been refused, or their wait logged, the log says how long it lasted."""
        if self.waiting_since is not None and (self.refusing is not None or self._wait_said):
            log.info(
                "the %s store takes commits again after %.1f s (%s)",
                self.store.name,
                time.monotonic() - self.waiting_since,
                how,
            )
        self.refusing = None
        self.waiting_since = None
        self._wait_said = False
        self.held = self.held_events = 0

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for: it can lose a cancel
                await self._stopping.wait()
