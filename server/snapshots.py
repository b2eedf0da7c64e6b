"""Checkpoint policy and loading, kept out of append().

A snapshot at seq N holds ``doc.get_update()`` of a document that is exactly the fold of
events 1..N. Taken every N events (once the edits since the last one amount to a quarter
of its size, so that a large document does not store a copy of itself per thousand
keystrokes; but at least every ``retention.max_gap`` events, so that any version stays
a bounded replay away), after a quiet period, and when a room unloads; the
state is captured between two pipeline steps (cheap, in memory) and written by a
background task, never on the path of an edit.

Loading = the newest snapshot whose checksum holds and that applies + the events after
it. A damaged snapshot is skipped in favour of an older one, or the log alone. Loading
a version with no per-event hook (history) applies the events merged a few dozen at a
time, ~4x faster than one by one (bench/snapshot_bench.py).

Retention (server.retention): after each snapshot it writes, the policy drops the
older snapshots the ladder does not need, in the same background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycrdt import Doc, merge_updates

from . import cpu_account, subdoc_options
from .errors import FATAL, DocumentBroken, StoreError, StoreUnavailable
from .keyed_locks import KeyedLocks
from .origins import SystemOrigin
from .repeat_logs import FailedLines
from .retention import Captured, Retention, prune
from .room import Room, replay
from .store.base import Event, EventStore, Snapshot

log = logging.getLogger("palimpsest.snapshots")


@dataclass(frozen=True, slots=True)
class SnapshotWritten:
    doc: str
    seq: int
    size: int
    seconds: float


class SnapshotObserver(Protocol):
    """What the policy tells the extensions (server.dispatch.Extensions is the one)."""

    def snapshot_meta(self, room: Room) -> dict[str, Any]:
        """Entries for the meta of a snapshot being captured (e.g. undo stacks)."""
        ...

    def snapshot(self, written: SnapshotWritten) -> None: ...


class _Nobody:
    def snapshot_meta(self, room: Room) -> dict[str, Any]:
        return {}

    def snapshot(self, written: SnapshotWritten) -> None:
        pass


def server_client_id(doc: str, generation: bytes | None = None, salt: bytes | None = None) -> int:
    """A fixed Yjs client id per document for server-made changes (undo, redo, restore).

    Fixed so that the live doc after a reload continues the same client's clock: the
    items it makes then are exactly the ones its logged updates describe. Processes that
    share a store share it too, so they make server changes of one document one at a
    time, each on the log's head (EventStore.server_changes). A document
    made again under the name of a deleted one (`generation`: the deletion's tombstone)
    gets another, so that its items never take the IDs of the deleted ones.

    `salt`: the store's (EventStore.server_salt, made with the store), so that two
    independent stores never write a name's server-made items under the same ids with
    other content: Yjs takes items of one ID for the same, so a merge of the two (a copy
    of one into the other, a client of one connecting to the other) kept one side's and
    dropped the other's, and a copy --replace took the other store's document for a
    stale copy of the one it replaced. None (a store made before stores had one): the
    name alone, as then, so that nothing already written changes ids."""
    import hashlib

    key = doc.encode() + (b"\x00" + generation if generation else b"")
    # (an empty key is plain BLAKE2b: the ids of stores with no salt are as they were)
    digest = hashlib.blake2b(key, digest_size=4, key=salt or b"").digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def new_doc(doc: str, generation: bytes | None = None, salt: bytes | None = None) -> Doc[Any]:
    """An empty document under the server's client id (server_client_id's arguments)."""
    # skip_gc: deleted content stays, so undo and history can bring it back after reload
    return Doc(skip_gc=True, client_id=server_client_id(doc, generation, salt))


@dataclass
class Loaded:
    doc: Doc[Any]
    seq: int
    snapshot: Snapshot | None
    replayed: int
    seconds: float
    failed: int = 0
    #: the ts of the last event replayed (None when none was)
    last_ts: int | None = None
    #: events that made yrs panic (load): seq -> True when applied as merge_updates
    #: rewrites them, False when left out
    broken: dict[int, bool] = field(default_factory=dict)


#: events that make yrs panic a load gets past before it gives up (each one costs a
#: replay of the events before it again)
MAX_BROKEN = 32


class TooBroken(StoreError):
    """More than MAX_BROKEN events of one document make yrs panic: it is not folded."""


class Fixes(dict[int, bytes | None]):
    """The events of one document that make yrs panic (errors.DocumentBroken), and what
    a fold applies instead: seq -> the event as yrs's merge_updates rewrites it, or None
    (left out). One rule for every fold of a log: a load (and so the live room and the
    history's versions), verify, and the attribution index."""

    def note(self, e: DocumentBroken) -> bytes | None:
        """Event `e.seq` broke a document: the fold starts again applying what this
        returns instead (the rewrite the first time, nothing the second). Raises
        TooBroken past MAX_BROKEN such events."""
        fix = self[e.seq] = rewritten(e.update) if e.seq not in self else None
        if len(self) > MAX_BROKEN:
            raise TooBroken(f"{e.doc}: more than {MAX_BROKEN} events break the document")
        return fix

    def update_of(self, ev: Event) -> bytes | None:
        """What a fold applies for `ev` (None: nothing)."""
        return self.get(ev.seq, ev.update) if self else ev.update


def rewritten(update: bytes) -> bytes | None:
    """`update` as yrs's merge_updates writes it again, alone: it keeps one struct per
    clock where an update repeats a client's clocks (and so made yrs panic), as a merged
    replay does with it among others. None when that fails or changes nothing."""
    try:
        again = merge_updates(update)
    except FATAL:
        raise
    except BaseException:  # pyo3 PanicException is one
        return None
    return again if again != update else None


#: events merged into one update before applying, when loading with no per-event hook:
#: merge_updates grows faster than linearly with the count; 32 was fastest (16-256 tried)
MERGE = 32


def replay_merged(doc: Doc[Any], events: list[Event]) -> bool:
    """Apply the events merged MERGE at a time; False (doc left part-way) when a merged
    update does not apply, and the caller replays them one by one instead."""
    try:
        with doc.transaction(origin=SystemOrigin("replay")):
            for i in range(0, len(events), MERGE):
                chunk = events[i : i + MERGE]
                update = (
                    chunk[0].update
                    if len(chunk) == 1
                    else merge_updates(*[e.update for e in chunk])
                )
                doc.apply_update(update)
    except FATAL:
        raise
    except BaseException as e:  # pyo3 PanicException is one
        log.warning("merged replay of %s failed (%r): replaying one by one", events[0].doc, e)
        return False
    return True


#: longest chain of ladder rungs stored as differences (server.retention keeps it short)
MAX_CHAIN = 64


async def chain(store: EventStore, snap: Snapshot) -> list[Snapshot] | None:
    """The snapshots to apply, in order, for the state at `snap`: itself when it holds the
    whole state; for a ladder rung stored as a difference, the whole one below it, then
    each difference up to it. None (logged) when a link is missing or damaged."""
    links = [snap]
    while links[-1].delta_of:
        below = links[-1].delta_of
        base = await store.latest_snapshot(snap.doc, below)
        if base is None or base.seq != below or len(links) > MAX_CHAIN:
            log.error("snapshot %s@%d: the snapshot @%d it is a difference from is missing or "
                      "damaged; trying an older one", snap.doc, snap.seq, below)  # fmt: skip
            return None
        links.append(base)
    return links[::-1]


def apply_chain(doc: Doc[Any], links: list[Snapshot]) -> bool:
    """Apply a chain (see :func:`chain`) to a new doc; False (logged) when it does not."""
    try:
        with doc.transaction(origin=SystemOrigin("snapshot")):
            for s in links:
                doc.apply_update(s.state)
    except FATAL:
        raise
    except BaseException as e:  # pyo3 PanicException is one
        top = links[-1]
        log.error("snapshot %s@%d does not apply (%r); trying an older one", top.doc, top.seq, e)
        return False
    return True


async def load(
    store: EventStore,
    name: str,
    *,
    upto: int | None = None,
    before_replay: Callable[[Doc[Any], Snapshot | None], None] | None = None,
    on_event: Callable[[Event], None] | None = None,
    before_event: Callable[[Event], None] | None = None,
    generation: bytes | None = None,
    with_meta: bool = False,
    off_loop: bool = False,
) -> Loaded:
    """The document at `upto` (default: head): nearest valid snapshot + the events after it.
    `off_loop`: the snapshot and the events are applied in a worker thread (a scratch
    document nobody else holds yet: a version the history reads, 0.2 s for a 1.6 MB
    notebook; a compaction's fold, whose hooks then run there too and touch only what
    they made for it: 20 s for 200,000 events of a 1 MB book), not on the event loop.
    `generation`: the tombstone of a deleted document of the same name (see new_doc).
    `with_meta`: the caller restores state from the snapshot's meta (undo stacks,
    owners): a bare ladder rung (server.retention) is passed over for an older snapshot
    that is not bare, or none (the whole log replayed, which rebuilds that state)."""
    t0 = time.perf_counter()
    at_most = upto
    states: list[bytes] = []
    unreadable: StoreError | None = None
    while True:
        doc = new_doc(name, generation, store.server_salt)
        try:
            snap = await store.latest_snapshot(name, at_most)
            if snap is None:
                break
            if with_meta and snap.bare:
                log.info("snapshot %s@%d is bare (no undo stacks): loading from an older one",
                         name, snap.seq)  # fmt: skip
                at_most = snap.seq - 1
                continue
            links = await chain(store, snap)
        except StoreUnavailable:
            raise
        except StoreError as e:
            # the snapshots' table itself is damaged (not one snapshot's checksum): they
            # are a cache, the log alone rebuilds the document unless it was compacted
            log.error("the snapshots of %s cannot be read (%s): loading from the log alone",
                      name, e)  # fmt: skip
            unreadable, snap, doc = e, None, new_doc(name, generation, store.server_salt)
            break
        if links is not None and (
            await cpu_account.to_thread(apply_chain, doc, links)
            if off_loop
            else apply_chain(doc, links)
        ):
            states = [s.state for s in links]
            break
        at_most = snap.seq - 1
    base = snap.seq if snap is not None else 0
    if before_replay is not None:
        before_replay(doc, snap)
    events = await store.read(name, after=base, upto=upto)
    if unreadable is not None:
        whole = events[0].seq == 1 if events else await store.head(name) == 0
        if not whole:
            raise unreadable  # compacted: its base is in a snapshot
    hooked = on_event is not None or before_event is not None or before_replay is not None

    def again() -> Doc[Any]:
        fresh = new_doc(name, generation, store.server_salt)
        for state in states:
            fresh.apply_update(state)
        return fresh

    fixes = Fixes()  # events that break the document: see below
    if (
        events
        and not hooked
        and (
            await cpu_account.to_thread(replay_merged, doc, events)
            if off_loop
            else replay_merged(doc, events)
        )
    ):
        failed = 0
    else:
        if events and not hooked:  # the merged attempt left it part-way: start again
            doc = again()
        if off_loop:
            doc, failed = await cpu_account.to_thread(
                _replay_fixing, name, doc, events, snap, again, fixes, before_replay, on_event,
                before_event,
            )  # fmt: skip
        else:
            doc, failed = _replay_fixing(
                name, doc, events, snap, again, fixes, before_replay, on_event, before_event
            )
    # the subdocuments' options as logged (yrs keeps no meta): see subdoc_options.py
    subdoc_options.note_all(doc, states)
    subdoc_options.note_all(doc, (ev.update for ev in events))
    seq = events[-1].seq if events else base
    last_ts = events[-1].ts if events else None
    return Loaded(
        doc, seq, snap, len(events), time.perf_counter() - t0, failed + len(fixes), last_ts,
        {seq: fix is not None for seq, fix in fixes.items()},
    )  # fmt: skip


def _replay_fixing(
    name: str,
    doc: Doc[Any],
    events: list[Event],
    snap: Snapshot | None,
    again: Callable[[], Doc[Any]],
    fixes: Fixes,
    before_replay: Callable[[Doc[Any], Snapshot | None], None] | None,
    on_event: Callable[[Event], None] | None,
    before_event: Callable[[Event], None] | None,
) -> tuple[Doc[Any], int]:
    """The events replayed one by one onto `doc` (with the hooks), the ones that break it
    rewritten or left out (`fixes`): the document and how many events failed. In a
    worker thread for :func:`load` with `off_loop`, its hooks then too."""
    todo = events
    while True:
        try:
            return doc, replay(doc, todo, on_event, before_event)
        except DocumentBroken as e:
            # An event that makes yrs panic (one logged by an older version, or a
            # shape no rule refuses yet) leaves the document broken: every later
            # operation on it panics, and the document could not be loaded at all.
            # The load starts again (every hook's state too, through before_replay)
            # with the event as yrs's merge_updates rewrites it, which is what the
            # merged replay above applies; failing that, without it (what depends
            # on its items then waits as pending, as in a client that cannot apply it).
            fix = fixes.note(e)
            log.error("%s: event %d breaks the document (%s): %s", name, e.seq, e.cause,
                      "leaving it out" if fix is None else
                      "applying it as yrs's merge_updates rewrites it")  # fmt: skip
            todo = [
                ev if ev.seq not in fixes else dataclasses.replace(ev, update=fix)
                for ev in events
                if (fix := fixes.update_of(ev)) is not None
            ]
            doc = again()
            if before_replay is not None:
                before_replay(doc, snap)


#: snapshot writes of a document that never goes idle between two conversions of its
#: ladder rungs to differences (server.retention)
CONVERT_EVERY = 4
#: snapshot writes of a document between two prunes (drops) of its older snapshots
PRUNE_EVERY = 4
#: differences taken at capture kept per document until a conversion uses them (the
#: newest few rungs stay whole, conversions come every CONVERT_EVERY writes, and a rung
#: may be several captures above the one below it, the ones between dropped)
MAX_CAPTURED = 16
#: ... and at most this many bytes of them per document (each holds the whole delete set:
#: a document with a very fragmented history keeps fewer)
MAX_CAPTURED_BYTES = 8 << 20


def _task_name(doc: str) -> str:
    return f"snapshot {doc}"


@dataclass
class SnapshotPolicy:
    store: EventStore
    every: int = 1000
    quiet_seconds: float = 10.0
    #: periodic snapshots need edits worth this fraction of the last snapshot's size
    size_ratio: float = 0.25
    #: and snapshots after a quiet period this fraction
    quiet_ratio: float = 0.02
    #: several processes checkpoint the same documents (fan-out): write through the
    #: store's put_snapshot_if_due, so that one of them writes at a time and a snapshot
    #: another process just wrote is not written again
    shared: bool = False
    observer: SnapshotObserver = field(default_factory=_Nobody)
    #: which older snapshots are dropped after each write (None: all are kept)
    retention: Retention | None = field(default_factory=Retention)
    _timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    #: loop time of each room's last step with unsnapshotted events (its quiet timer's base)
    _last: dict[str, float] = field(default_factory=dict)
    _writes: set[asyncio.Task[None]] = field(default_factory=set)
    #: per document being pruned: one prune at a time (the snapshot writes of a busy
    #: document overlap, and two prunes would convert or drop the same rungs), and how
    #: many hold or wait for it; the entry goes with the last of them
    _pruning: KeyedLocks[str] = field(default_factory=KeyedLocks)
    #: per document: snapshot writes since its rungs were last converted (none: 0)
    _since_convert: dict[str, int] = field(default_factory=dict)
    #: per document: the room, seq and state vector of its last capture
    _previous: dict[str, tuple[Room, int, bytes]] = field(default_factory=dict)
    #: per document: the differences taken at capture, by seq (server.retention.Captured)
    _captured: dict[str, dict[int, Captured]] = field(default_factory=dict)
    #: called with a room whose snapshot was refused because its document's compaction
    #: base is no longer the one it loaded from (server.base_watch reloads it)
    on_stale: Callable[[Room], None] | None = None
    #: the snapshots that could not be written, said once a minute (a store that is down)
    _failures: FailedLines = field(
        default_factory=lambda: FailedLines(log, "snapshots not written", "snapshots written")
    )

    def due(self, room: Room, ratio: float) -> bool:
        """Whether the edits since the last snapshot are worth a new one: storing a
        snapshot costs its size, so the edits must amount to `ratio` of the last one.
        That bounds all snapshots together to about (1 + 1/ratio) x the log's size, while
        replaying the tail after any snapshot stays cheaper than loading a fraction of it."""
        edits = room.applied_bytes - room.snapshot_applied_bytes
        return edits >= ratio * room.last_snapshot_bytes

    def __call__(self, room: Room) -> None:
        """Called by the room after each pipeline step."""
        since = room.events_since_snapshot
        if since >= self.every and (self.due(room, self.size_ratio) or self._gap_full(since)):
            self.take(room)
        elif room.events_since_snapshot > 0 and self.quiet_seconds > 0:
            # one timer per room, pushed back when it fires early (not re-armed per step:
            # a TimerHandle per edit was a measurable share of an edit's CPU)
            loop = asyncio.get_running_loop()
            self._last[room.name] = loop.time()
            if room.name not in self._timers:
                self._timers[room.name] = loop.call_later(self.quiet_seconds, self._quiet, room)

    def _gap_full(self, since: int) -> bool:
        """No more than the retention ladder's gap between two snapshots, whatever their
        size: retention keeps the bytes bounded, this keeps any version's replay bounded."""
        return self.retention is not None and since >= self.retention.max_gap

    def _quiet(self, room: Room) -> None:
        self._timers.pop(room.name, None)
        loop = asyncio.get_running_loop()
        rest = self._last.get(room.name, 0.0) + self.quiet_seconds - loop.time()
        if rest > 0 and not room.closed:  # an edit came since the timer was set
            self._timers[room.name] = loop.call_later(rest, self._quiet, room)
            return
        self._last.pop(room.name, None)
        if not room.closed and room.events_since_snapshot > 0 and self.due(room, self.quiet_ratio):
            self.take(room)

    def capture(self, room: Room) -> tuple[int, bytes, dict[str, Any]] | None:
        if not room.consistent or room.seq == 0:
            return None
        meta = self.observer.snapshot_meta(room)
        # in the clients' encoding of subdocuments (meta), which a load takes back
        state = subdoc_options.restored(room.doc, room.doc.get_update())
        self._difference(room, state)
        room.events_since_snapshot = 0
        room.snapshot_applied_bytes = room.applied_bytes
        room.last_snapshot_bytes = len(state)
        return room.seq, state, meta

    def _difference(self, room: Room, state: bytes) -> None:
        """Take, while the live document is at hand, its difference from the state it
        had at this room's previous capture (0.1 ms at the end of automerge-paper):
        when retention later stores this rung as a difference from that one, it uses it
        instead of loading both states (server.retention.Captured)."""
        sv = room.doc.get_state()
        prev = self._previous.get(room.name)
        self._previous[room.name] = (room, room.seq, sv)
        if prev is None or prev[0] is not room or prev[1] >= room.seq:
            return
        taken = self._captured.setdefault(room.name, {})
        delta = subdoc_options.restored(room.doc, room.doc.get_update(prev[2]))
        taken[room.seq] = Captured(prev[1], delta, zlib.crc32(state))
        while len(taken) > MAX_CAPTURED or (
            len(taken) > 1 and sum(len(c.delta) for c in taken.values()) > MAX_CAPTURED_BYTES
        ):
            del taken[min(taken)]

    def forget(self, name: str) -> None:
        """The room of `name` is gone (unloaded, or its document deleted)."""
        self._previous.pop(name, None)
        self._captured.pop(name, None)
        self._since_convert.pop(name, None)

    def _pruning_turn(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold `name`'s turn to prune: kept per document only while held or awaited,
        so that every document ever snapshotted does not leave a lock behind."""
        return self._pruning.hold(name)

    def take(self, room: Room) -> asyncio.Task[None] | None:
        captured = self.capture(room)
        if captured is None:
            return None
        task = asyncio.create_task(self._write(room, *captured), name=_task_name(room.name))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    async def _write(
        self, room: Room, seq: int, state: bytes, meta: dict[str, Any], idle: bool = False
    ) -> None:
        name, base, generation = room.name, room.base, room.generation
        t0 = time.perf_counter()
        try:
            # written only while the compaction base is the one the room loaded from,
            # checked in the write's own transaction: compacted under the room by another
            # process (palimpsest compact --purge-deleted), the room may hold what the new
            # base purged, and its state must be written neither after it nor over it;
            # and only while the document is the generation the room loaded (when known):
            # replaced under it (palimpsest copy --replace), or deleted and written again,
            # its state, at the old document's seq, must not land on the new one
            if self.shared:
                min_gap = max(1, self.every // 2)
                done = await self.store.put_snapshot_if_due(
                    name, seq, state, meta, min_gap=min_gap, base=base, generation=generation
                )
            else:
                done = await self.store.put_snapshot(
                    name, seq, state, meta, base=base, generation=generation
                )
            if not done and generation is not None:
                now = (await self.store.generations([name])).get(name)
                if now != generation:
                    # not a compaction: the room is dropped (server.base_watch, or its
                    # next commit, which the store refuses), never reloaded from here
                    log.info("snapshot %s@%d not written: the document was deleted or "
                             "replaced under its room (generation %d, now %s)",
                             name, seq, generation, now, extra={"doc": name})  # fmt: skip
                    return
            # refused: for that reason, or (a rare read) at or below the base it still has
            current = None if done else await self.store.compaction_base(name)
            if current is not None and current != base and current == room.base:
                log.debug("snapshot %s@%d not written: the room took the new compaction "
                          "base meanwhile (compacted here)", name, seq)  # fmt: skip
                return
            if current is not None and current != base:
                log.warning("snapshot %s@%d not written: the document was compacted under "
                            "its room (the base it loaded from, @%d, is no longer the "
                            "store's): the room reloads", name, seq, base[0])  # fmt: skip
                if self.on_stale is not None:
                    self.on_stale(room)
                return
        except Exception as e:  # a failed checkpoint costs load time, never data
            # (a store that is down fails every busy document's: the first said, then
            # once a minute with a count, and when one is written again)
            tail = self._failures.failed(name)
            if tail is None:
                log.debug("snapshot %s@%d not written: %s", name, seq, e, extra={"doc": name})
            else:
                log.warning("snapshot %s@%d not written: %s%s", name, seq, e, tail,
                            extra={"doc": name})  # fmt: skip
            return
        self._failures.worked()
        dt = time.perf_counter() - t0
        if not done:
            log.debug("snapshot %s@%d not written: left to another process, or at or below "
                      "the compaction base", name, seq)  # fmt: skip
            return
        log.info("snapshot %s@%d written (%d bytes, %.1f ms)", name, seq, len(state), dt * 1e3)
        self.observer.snapshot(SnapshotWritten(name, seq, len(state), dt))
        if self.retention is not None:
            # dropping reads every snapshot row (their checksums): done every PRUNE_EVERY
            # writes; storing rungs as differences costs a few document loads each, so
            # it waits for the document to go idle (its last snapshot, on unload), or
            # for CONVERT_EVERY writes of a busy one
            writes = self._since_convert.pop(name, 0) + 1
            convert = idle or writes >= CONVERT_EVERY
            if not convert:
                self._since_convert[name] = writes
                if writes % PRUNE_EVERY:
                    return
            try:
                async with self._pruning_turn(name):
                    await prune(self.store, name, self.retention, convert=convert, idle=idle,
                                captured=self._captured.get(name))  # fmt: skip
            except Exception as e:  # pruning costs bytes on disk when it fails, never data
                log.warning("snapshots of %s not pruned: %s", name, e)

    async def final(self, room: Room) -> None:
        """On unload: a last snapshot if anything happened since the previous one."""
        timer = self._timers.pop(room.name, None)
        if timer is not None:
            timer.cancel()
        self._last.pop(room.name, None)
        try:
            if room.events_since_snapshot > 0:
                captured = self.capture(room)
                if captured is not None:
                    await self._write(room, *captured, idle=True)
        finally:
            # the writes still in flight prune with what was captured, then it goes
            mine = [t for t in self._writes if t.get_name() == _task_name(room.name)]
            await asyncio.gather(*mine, return_exceptions=True)
            if self._previous.get(room.name, (None,))[0] is room:
                self.forget(room.name)

    async def drain(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
