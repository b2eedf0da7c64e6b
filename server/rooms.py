"""Get-or-load rooms (one load per document even when many connect at once), and
unload them when idle, once their events and a final snapshot are flushed."""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from pycrdt import Doc

from .errors import (
    DeletedMeanwhile,
    HookWroteDocument,
    LogDamaged,
    ReplacedMeanwhile,
    SeededMeanwhile,
)
from .log_damage import check_loaded
from .origins import ReplayOrigin
from .repeat_logs import FailedLines
from .room import PRESENCE_BATCH, PRESENCE_TIMEOUT, LoadInfo, Room, RoomObserver
from .snapshots import SnapshotPolicy, load
from .store.base import MAX_AHEAD_MS, Event, EventStore, Snapshot, now_ms
from .util import iso

log = logging.getLogger("palimpsest.rooms")


#: a load that spent this long (s) outside reading and applying the snapshot and the log
#: (waiting for the store, in the reads before them) says how much of it those took
_WAITED = 0.1


class Rooms:
    def __init__(
        self,
        store: EventStore,
        committer: Any,
        snapshots: SnapshotPolicy,
        *,
        observer: RoomObserver | None = None,
        on_load: Callable[[Room], Awaitable[None]] | None = None,
        unload_after: float = 5.0,
        presence_timeout: float = PRESENCE_TIMEOUT,
        presence_batch: int = PRESENCE_BATCH,
    ) -> None:
        self.store = store
        self.committer = committer
        self.snapshots = snapshots
        self.observer = observer
        #: called with each room once it is loaded, before anyone joins
        self._on_load = on_load
        self.unload_after = unload_after
        self.presence_timeout = presence_timeout
        self.presence_batch = presence_batch
        #: until when (time.monotonic()) a sync step 2 may carry other users' items
        #: the store lacks (Backend.start; ownership.py)
        self.relay_until = 0.0
        self._rooms: dict[str, Room] = {}
        #: the loaded rooms, a live read-only view (``loaded`` copies)
        self.live: Mapping[str, Room] = MappingProxyType(self._rooms)
        self._loading: dict[str, asyncio.Task[Room]] = {}
        #: documents this process is compacting without purge, with how many at once
        self._adopting: dict[str, int] = {}
        self._unload_timers: dict[str, asyncio.TimerHandle] = {}
        self._unloading: dict[str, asyncio.Task[None]] = {}
        #: the generation reads of new documents' rooms that failed (a store that is
        #: down), said once a minute with a count (room._learn_generation)
        self._generation_failures = FailedLines(
            logging.getLogger("palimpsest.room"), "generation reads failed", "generations read"
        )
        #: documents refused for a damaged log (log_damage.py), said once each
        self._damaged: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._rooms

    def get_loaded(self, name: str) -> Room | None:
        return self._rooms.get(name)

    @property
    def loaded(self) -> dict[str, Room]:
        return dict(self._rooms)

    async def get(self, name: str) -> Room:
        """The live room of a document, loading it once however many ask at once."""
        timer = self._unload_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        unloading = self._unloading.get(name)
        if unloading is not None:
            await asyncio.shield(unloading)
        room = self._rooms.get(name)
        if room is not None and room.broken is None:
            return room
        task = self._loading.get(name)
        if task is None:
            task = asyncio.create_task(self._load(name), name=f"load:{name}")
            self._loading[name] = task
            task.add_done_callback(lambda _t: self._loading.pop(name, None))
        return await asyncio.shield(task)

    @asynccontextmanager
    async def adopting(self, name: str) -> AsyncIterator[None]:
        """This process compacts `name` without purging: its room holds the same content,
        and takes the new compaction base as its own at the end rather than being
        reloaded for it (server.base_watch). Until then the room is not stale for a base
        read between the compaction's commit and the adoption (`is_adopting`)."""
        self._adopting[name] = self._adopting.get(name, 0) + 1
        try:
            yield
            room = self._rooms.get(name)
            if room is not None:
                room.base = await self.store.compaction_base(name)
        finally:
            left = self._adopting[name] - 1
            if left:
                self._adopting[name] = left
            else:
                del self._adopting[name]

    def is_adopting(self, name: str) -> bool:
        """Whether this process is compacting `name` without purge (`adopting`)."""
        return name in self._adopting

    async def _load(self, name: str) -> Room:
        while True:
            try:
                return await self._load_once(name)
            except HookWroteDocument:
                # an extension's hook wrote into the document while it loaded: that hook
                # is off now (server.dispatch said whose); each time one fewer, so this ends
                log.warning("loading %s again, from the log", name)
            except SeededMeanwhile as e:
                # another process seeded it (or made another server change) while this
                # one's on_load seeded it: loaded again, the other's seed is in the log
                # and the hook finds the document seeded. Each time another process made
                # a change in between, so this ends; the connections waiting see nothing.
                log.info("loading %s again: %s", name, e, extra={"doc": name})

    async def _load_once(self, name: str) -> Room:
        # timed from here: the reads before the load proper wait for the store too (a
        # load in a PostgreSQL stall said "in 21.5 ms" after 35 s spent in them)
        t0 = time.perf_counter()
        holder: dict[str, Room] = {}

        def before_replay(doc: Doc[Any], snap: Snapshot | None) -> None:
            old = holder.get("room")
            if old is not None:  # the load starts again (an event broke the document)
                old.observer.unloaded(old)
            room = self._make(name, doc, snap.seq if snap else 0)
            # what extensions persisted with the snapshot (e.g. undo stacks)
            room.snapshot_meta = dict(snap.meta) if snap is not None else {}
            holder["room"] = room

        origin: list[ReplayOrigin] = []  # the event being replayed's, for both hooks

        def before_event(ev: Event) -> None:
            room = holder["room"]
            room.current_ts = ev.ts
            origin[:] = [ReplayOrigin(ev.actor, ev.seq, ev.kind)]
            room.observer.before_apply(room, ev, origin[0])

        def on_event(ev: Event) -> None:
            room = holder["room"]
            room.seq = ev.seq
            room.current_ts = ev.ts
            room.applied_bytes += len(ev.update)
            room.observer.applied(room, ev, origin[0])

        # a name used again after a deletion: the server's own Yjs client id changes
        generation = await self.store.tombstone(name)
        # before the load: a compaction during it leaves the room stale, never unnoticed
        base = await self.store.compaction_base(name)
        # before the load too: a sound log holds it, whatever is appended meanwhile; and
        # the document's generation, in the same read (a new document of the name made
        # during the load is another one: the room's appends are refused, never mixed in)
        info = await self.store.doc_info(name)
        head = info.head if info is not None else 0
        try:
            loaded = await load(
                self.store,
                name,
                before_replay=before_replay,
                on_event=on_event,
                before_event=before_event,
                generation=generation,
                with_meta=True,
            )
        except HookWroteDocument:
            if "room" in holder:  # never started: release what extensions made
                holder["room"].observer.unloaded(holder["room"])
            raise
        room = holder["room"]
        try:
            await check_loaded(self.store, name, head, loaded)
        except LogDamaged as e:
            room.observer.unloaded(room)  # never started: release what extensions made
            if name not in self._damaged:  # said once; each client that comes is refused
                self._damaged.add(name)
                log.error("%s", e, extra={"doc": name})
            raise
        self._damaged.discard(name)
        room.base = base
        room.generation = info.generation if info is not None else None
        room.seq = loaded.seq
        room.events_since_snapshot = loaded.replayed
        room.last_snapshot_bytes = len(loaded.snapshot.state) if loaded.snapshot else 0
        room.loaded = LoadInfo(
            loaded.snapshot.seq if loaded.snapshot else None,
            loaded.replayed,
            time.perf_counter() - t0,
        )
        if self._on_load is not None:
            seeded: list[bytes] = []
            sub = room.doc.observe(lambda e: seeded.append(e.update))
            try:
                await self._on_load(room)
                room.doc.unobserve(sub)
                if seeded:  # a hook wrote into the document: logged before anyone sees it
                    await room.log_loaded_change(seeded)
            except BaseException:
                room.observer.unloaded(room)  # never started: release what extensions made
                raise
        room.start()
        self._rooms[name] = room
        if info is not None:
            _warn_if_far_ahead(name, info.updated_ts)
        took = time.perf_counter() - t0
        log.info(
            "loaded %s: seq %d (snapshot %s + %d events) in %.1f ms%s",
            name,
            loaded.seq,
            loaded.snapshot.seq if loaded.snapshot else "none",
            loaded.replayed,
            took * 1e3,
            f" ({loaded.seconds * 1e3:.1f} ms of it reading and applying the snapshot and the log)"
            if took - loaded.seconds >= _WAITED
            else "",
        )
        return room

    def _make(self, name: str, doc: Doc[Any], seq: int) -> Room:
        room = Room(
            name,
            doc,
            seq,
            committer=self.committer,
            reader=self.store,
            observer=self.observer,
            on_broken=self._broken,
            snapshotter=self.snapshots,
            presence_timeout=self.presence_timeout,
            presence_batch=self.presence_batch,
        )
        room.owners.relay_until = self.relay_until
        room.generation_of = self._generation_of
        room.generation_failures = self._generation_failures
        room.replaced_of = self._replaced
        return room

    async def _replaced(self, room: Room) -> bool:
        from .deletion import was_replaced

        return await was_replaced(self.store, room)

    async def _generation_of(self, name: str) -> int | None:
        info = await self.store.doc_info(name)
        return info.generation if info is not None else None

    def _broken(self, room: Room, error: BaseException) -> None:
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        if isinstance(error, DeletedMeanwhile):  # not a failure: said by the room already
            how = "replaced" if isinstance(error, ReplacedMeanwhile) else "deleted"
            log.info("room %s dropped: its document was %s under it", room.name, how)
        else:
            log.error(
                "room %s dropped after a failure (%r); the next connection reloads it",
                room.name, error,
            )  # fmt: skip
        room.observer.unloaded(room)

    def release(self, room: Room) -> None:
        """A connection left; unload the room later if nobody is left."""
        if room.peers or self._rooms.get(room.name) is not room:
            return
        old = self._unload_timers.pop(room.name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._unload_timers[room.name] = loop.call_later(
            self.unload_after, self._start_unload, room
        )

    def _start_unload(self, room: Room) -> None:
        self._unload_timers.pop(room.name, None)
        if room.peers or self._rooms.get(room.name) is not room:
            return
        if room.queued_bytes or not room.idle:
            # edits or a server change not logged yet, held while the store refuses
            # writes: unloading stops the room, which gives them up. Their senders may
            # have left for good (a closed tab): the room waits with them instead.
            self.release(room)
            return
        task = asyncio.create_task(self.unload(room))
        self._unloading[room.name] = task
        task.add_done_callback(lambda _t: self._unloading.pop(room.name, None))

    async def unload(self, room: Room) -> None:
        await room.stop()  # flushes queued events first
        try:
            await self.snapshots.final(room)
        finally:
            if self._rooms.get(room.name) is room:
                del self._rooms[room.name]
            room.observer.unloaded(room)
        log.info("unloaded %s at seq %d", room.name, room.seq)

    async def discard(self, name: str) -> Room | None:
        """Forget a document's room WITHOUT a final snapshot, because the document is being
        deleted: cancel its unload, stop its pipeline (what is already queued is still
        committed), and wait for snapshot writes in flight. The caller closes its
        connections first, and deletes the document from the store after."""
        timer = self._unload_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        for pending in (self._unloading.get(name), self._loading.get(name)):
            if pending is not None:
                try:
                    await asyncio.shield(pending)
                except Exception:
                    pass
        room = self._rooms.pop(name, None)
        if room is not None:
            await room.stop()
            room.observer.unloaded(room)
        await self.snapshots.drain()
        self.snapshots.forget(name)
        return room

    async def stop(self) -> None:
        for timer in self._unload_timers.values():
            timer.cancel()
        self._unload_timers.clear()
        # an unload already in flight finishes first: stopping its room twice at once
        # would queue a flush barrier behind a pipeline being cancelled (a hang)
        for task in list(self._unloading.values()):
            try:
                await asyncio.shield(task)
            except Exception:
                log.exception("unloading failed")
        for room in list(self._rooms.values()):
            try:
                await self.unload(room)
            except Exception:
                log.exception("unloading %s failed", room.name)
        await self.snapshots.drain()


def _warn_if_far_ahead(name: str, last_ts: int | None) -> None:
    """Say it (once per load) when `name`'s last event's ts is more than MAX_AHEAD_MS
    ahead of this server's wall clock: a stamp from a clock set far ahead (or this
    clock stepped far back). Its later events are stamped with that ts until the wall
    clock passes it (the store keeps a document's ts from going back; the event clock
    runs on at most MAX_AHEAD_MS), so its time lookups, undo steps and compaction by
    time are off for that span (docs/history.md) unless ``palimpsest restamp`` repairs it."""
    if last_ts is None:
        return
    lead = last_ts - now_ms()
    if lead <= MAX_AHEAD_MS:
        return
    log.warning(
        "%r: its last event's ts (%s) is %s ahead of this server's clock, more than the "
        "%d min its event clock runs ahead: its new events keep that ts until the clock "
        "passes it, so versions at a time, undo steps and compaction by time are off for "
        "it until then; check the clocks (NTP) of every process that writes it, then "
        "`palimpsest restamp %s` (every server stopped) pulls its events back to now",
        name,
        iso(last_ts),
        timedelta(seconds=lead // 1000),
        MAX_AHEAD_MS // 60_000,
        shlex.quote(name),
        extra={"doc": name},
    )
