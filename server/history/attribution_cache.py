"""Where attribution indexes live: in memory (least recently used first out), and in the
store, so that a cold server (a restarted process, another instance) reads an index
instead of replaying the whole log.

- First use of a document: read the stored index (its blob, then the version at its
  seq, loaded like any version) and extend it with the events since; only when none is
  stored (or it does not match the log) is it built from the start of the log.
- Stored again after a build, and after an extension of at least ``persist_every``
  events, by a background task (the encoding itself is done under the document's lock,
  so that the index does not change under it).
- Kept current off the editing path: when a document's room unloads (idle, nobody
  connected), :meth:`AttributionCache.refresh` extends the stored index to the head (or
  builds the first one) in the background, at the cost of the events since, paced to
  at most half of a core (it waits after each slice as long as the slice took). Ingest
  never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable

from .. import cpu_account
from ..errors import FATAL, DocumentBroken, LogDamaged
from ..keyed_locks import KeyedLocks
from ..log_damage import hole_error
from ..snapshots import Fixes, load
from ..store.base import DocInfo, EventStore
from . import attribution_codec as codec
from .attribution import READ_PAGE, AttributionIndex, Roots, TextTrack, root_kinds

log = logging.getLogger("palimpsest.history")

#: the memory the indexes kept in memory may take, estimated (Settings.attribution_cache_mb)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: a background refresh reads its next page of events once no edit was committed in the
#: process for this long (seconds)...
QUIET_SECONDS = 0.25
#: ...or after waiting this long for such a pause: while editing never pauses, a refresh
#: still reads a page twice a minute. It is upkeep for a cold server's first blame (a
#: blame here builds what it needs itself). The fan-out scenario's worst latencies came
#: while refreshes read and folded pages every 2 s as others typed: turning them off
#: took the p99 from up to 606 ms to under 8 (1 Dec 2026), and on 2 Dec the stall watch
#: caught seven stalls of 13-52 ms within 0.3 s while one was building an index (its
#: fold in the loop's samples of two of them)
MAX_DEFER_SECONDS = 30.0
#: the builds and restores remembered (AttributionCache.builds, .restores): the latest
RECENT = 100
#: a stored index read back folds on by text deltas (attribution_ids: the fold by ids
#: holds only from an empty document), whose every event costs in proportion to the
#: document's length; a build from the start folds by ids, at a cost that grows little.
#: Past this many events to fold, an index read back is built again from the start
#: instead of extended (see _far_behind). Measured 7 Dec 2026 (bench runs of 2):
#: six writers typing into one text, extending by deltas took 123-137 us an event at
#: 10-15k events, 308-313 at 30-35k (5k -> 45k: 12.8-13.9 s; built by ids: 1.1 s).
#: automerge-paper (one writer at a time) folds by deltas cheaper: 30k -> 35k took
#: 0.43-0.49 s extended, 0.95-1.18 built; 30k -> 50k 1.1-2.3 and 1.3-1.5; 30k -> 90k
#: 4.7-6.6 and 2.4-2.7. 5,000 is between the two break-even points. The field's first
#: blame after a restart extended 36,870 -> 105,047 (six writers) in 578 s
EXTEND_READ_BACK_MAX = 5000
#: documents whose stored seq is remembered though their index is not in memory (the
#: ones refreshed as their rooms unloaded): the most recent; one forgotten costs its
#: next refresh a read of the stored index to learn it is current (every document ever
#: unloaded with 2,000 events or more was remembered for good)
STORED_KNOWN = 1024


def fingerprint(update: bytes) -> str:
    """What the stored index says of the event at its seq (see attribution_codec)."""
    return hashlib.sha256(update).hexdigest()[:32]


def _length_matches(index: AttributionIndex) -> bool:
    """Each tracked root's alive bytes equal its text's UTF-8 length in the index's doc:
    a cheap check that the stored runs and the version they fold on agree."""
    from pycrdt import Text

    for name, track in index.tracks.items():
        # len(): UTF-8 bytes with an embed counting one, as the runs count (str() would
        # leave the embeds out, and refuse every stored index of a text that has one)
        if track.length != len(index.doc.get(name, type=Text)):
            return False
    return all(
        tree.failed is not None or tree.matches(real) for _, tree, real in index.tree_roots()
    )


class AttributionCache:
    """One index per document: built, stored and read back, extended on each use,
    LRU-bounded in memory."""

    def __init__(
        self,
        store: EventStore,
        max_docs: int = 8,
        persist_every: int = 1000,
        *,
        last_edit: Callable[[], float] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.store = store
        #: when an edit was last committed in this process (time.monotonic()): a
        #: background refresh gives way to edits (see QUIET_SECONDS)
        self.last_edit = last_edit
        #: pages a background refresh waited for a pause in the editing before reading
        self.deferred = 0
        #: per document, the callers (blame, diff, a restore) waiting for its lock: while
        #: there are any, a background refresh holding it neither waits for a pause in
        #: the editing nor paces itself (see _hurry)
        self._wanted: dict[str, int] = {}
        #: observable: pages and slices a refresh stopped deferring or pacing because a
        #: caller was waiting for the index
        self.hurried = 0
        self.max_docs = max_docs
        #: the memory the indexes kept may take, as AttributionIndex.estimated_bytes
        #: estimates it (0: no bound but max_docs); the one in use stays, however large
        self.max_bytes = max_bytes
        #: per document kept, its estimate when it was last used
        self._sizes: dict[str, int] = {}
        #: observable: indexes dropped from memory to keep within the bounds
        self.evicted = 0
        self.persist_every = persist_every
        #: observable: indexes written to the store by this process
        self.stored = 0
        #: the CPU of background refreshes (when a document unloads): reading the log,
        #: folding, encoding (server.cpu_account; /metrics, so that a bench can tell it
        #: from the ingest's)
        self.upkeep = cpu_account.Account()
        self._indexes: OrderedDict[str, AttributionIndex] = OrderedDict()
        #: per document, its lock, only while someone holds it or waits for it (see
        #: lock): kept for good, they added up to one per name ever touched
        self._locks: KeyedLocks[str] = KeyedLocks()
        #: the seq of the index last stored, per document: those kept in memory, and at
        #: most stored_known others (least recently stored first out)
        self._stored: OrderedDict[str, int] = OrderedDict()
        self.stored_known = STORED_KNOWN
        self._writes: set[asyncio.Task[None]] = set()
        #: per document, (seq, bytes) of the latest index whose write is under way: a
        #: read back takes it rather than the store's row, which that write has not
        #: replaced yet (see _restore)
        self._writing: dict[str, tuple[int, bytes]] = {}
        #: (doc, seconds, seq) for each full build, for logs and the bench: the latest
        #: RECENT of them
        self.builds: deque[tuple[str, float, int]] = deque(maxlen=RECENT)
        #: indexes folded by ids that had to be built again by deltas (attribution_ids)
        self.rebuilt_by_deltas = 0
        #: (doc, seconds, seq) for each index read back from the store: the latest RECENT
        self.restores: deque[tuple[str, float, int]] = deque(maxlen=RECENT)
        #: observable: indexes read back built again from the start by ids rather than
        #: extended by deltas, being too far behind (see EXTEND_READ_BACK_MAX)
        self.rebuilt_far_behind = 0
        self.extend_read_back_max = EXTEND_READ_BACK_MAX
        #: per document, the events found to break it (errors.DocumentBroken): seq ->
        #: the update folded instead, None when left out (as snapshots.load does)
        self._fixes: dict[str, Fixes] = {}

    def lock(self, doc: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the lock under which the document's index is built, extended and stored:
        while it is held the index does not change, so a walk of it may run in a worker
        thread (the blame and diff of an XML root do). The lock exists while someone
        holds it or waits for it (KeyedLocks). A background refresh that holds it
        hurries while someone waits here (_hurry)."""
        return self._wanting(doc)

    @contextlib.asynccontextmanager
    async def _wanting(self, doc: str) -> AsyncIterator[None]:
        self._wanted[doc] = self._wanted.get(doc, 0) + 1
        try:
            async with self._locks.hold(doc):
                self._unwant(doc)
                doc = ""  # (no longer waiting)
                yield
        finally:
            if doc:
                self._unwant(doc)

    def _unwant(self, doc: str) -> None:
        n = self._wanted.pop(doc, 1) - 1
        if n:
            self._wanted[doc] = n

    def _hurry(self, doc: str) -> bool:
        """Whether a caller waits for the lock of `doc` a background refresh holds: it
        then folds on without waiting for a pause in the editing and without pacing.
        Before 6 Dec 2026 it did not: a restore of a manuscript right after its room
        unloaded, while someone typed in another document, waited 20-27 s for a refresh
        that was waiting for the typing to pause (MAX_DEFER_SECONDS a page)."""
        if self._wanted.get(doc):
            self.hurried += 1
            return True
        return False

    def peek(self, doc: str) -> AttributionIndex | None:
        return self._indexes.get(doc)

    def stale(self, doc: str, base_seq: int) -> bool:
        """Whether the index in memory of `doc` was built before its log was compacted to
        `base_seq` (by `palimpsest compact`, in another process): it still names the
        writers of the events folded away, whose text the base holds, written by nobody
        known. The caller drops it (the stored one is refused too, see _mismatch)."""
        index = self._indexes.get(doc)
        return index is not None and index.base != base_seq

    def drop(self, doc: str) -> None:
        self._indexes.pop(doc, None)
        self._sizes.pop(doc, None)
        self._stored.pop(doc, None)
        self._fixes.pop(doc, None)
        self._writing.pop(doc, None)

    def _mend(self, e: DocumentBroken) -> None:
        """Note an event that broke an index's document: the next build folds it as
        merge_updates rewrites it, or, the second time, leaves it out."""
        fix = self._fixes.setdefault(e.doc, Fixes()).note(e)
        log.error("attribution of %s: event %d breaks the document (%s): %s", e.doc, e.seq,
                  e.cause, "building it again without it" if fix is None else
                  "building it again with it as merge_updates rewrites it")  # fmt: skip

    async def _extended(
        self, index: AttributionIndex, upto: int | None, paced: bool = False
    ) -> AttributionIndex:
        """`index` folded up to `upto`, or, when an event breaks its document, an index
        built again (see _mend)."""
        try:
            await self._extend(index, upto, paced)
        except DocumentBroken as e:
            self._mend(e)
            return await self._build(index.doc_name, index.roots(), paced)
        return index

    async def get(self, doc: str, upto: int, roots: Roots) -> AttributionIndex:
        """The document's index, folded at least up to `upto`, tracking `roots` (text
        roots, or name -> kind: see attribution.root_kinds)."""
        wanted = root_kinds(roots)
        async with self.lock(doc):
            index = self._indexes.get(doc)
            if index is None:
                index = await self._restore(doc, upto)
            if index is None or not wanted.items() <= index.roots().items():
                known = index.roots() if index is not None else {}
                index = await self._build(doc, {**known, **wanted})
            elif await self._far_behind(index, upto):
                index = await self._build(doc, index.roots())
            index = await self._extended(index, upto)
            index = await self._checked(index)
            found = index.new_roots()
            if found:
                index = await self._build(doc, {**index.roots(), **found})
            self._keep(index)
            await self._maybe_store(index)
            return index

    async def warm(self, doc: str, upto: int) -> AttributionIndex | None:
        """The index in memory, or read back from the store (then kept in memory), or
        None: never a build. Lets a cold server learn the text roots from the stored
        index instead of loading the head version first."""
        async with self.lock(doc):
            index = self._indexes.get(doc)
            if index is None:
                index = await self._restore(doc, upto)
                if index is None:
                    return None
                self._keep(index)
            return index

    @property
    def kept_bytes(self) -> int:
        """The estimated memory of the indexes kept (see max_bytes)."""
        return sum(self._sizes.values())

    def _keep(self, index: AttributionIndex) -> None:
        """Keep `index` in memory, the most recently used, and drop the least recently
        used others while more than max_docs are kept or their estimate is over
        max_bytes. A dropped index is freed (its runs and its Yjs document); a store
        holds it for the next use."""
        doc = index.doc_name
        self._indexes[doc] = index
        self._indexes.move_to_end(doc)
        self._sizes[doc] = index.estimated_bytes()
        while len(self._indexes) > 1 and (
            len(self._indexes) > self.max_docs or 0 < self.max_bytes < self.kept_bytes
        ):
            gone, _ = self._indexes.popitem(last=False)
            self._sizes.pop(gone, None)
            self._stored.pop(gone, None)
            self.evicted += 1

    async def refresh(
        self, doc: str, roots: Callable[[], Awaitable[Roots]], build_from: int
    ) -> bool:
        """Bring the stored index of `doc` up to its head, for a cold server to read;
        build the first one only when the log has at least `build_from` events (a short
        log is folded quickly enough on first use). Not kept in memory unless it was
        already. True when an index was stored."""
        with cpu_account.charged_to(self.upkeep):
            return await self._refresh(doc, roots, build_from)

    async def _refresh(
        self, doc: str, roots: Callable[[], Awaitable[Roots]], build_from: int
    ) -> bool:
        info = await self.store.doc_info(doc)
        if info is None or info.head == 0 or self._stored.get(doc, -1) >= info.head:
            return False
        async with self._locks.hold(doc):  # (its own wait does not make it hurry)
            index = self._indexes.get(doc)
            if index is not None and index.base != info.base_seq:
                self.drop(doc)  # compacted since it was built (see stale)
                index = None
            index = index or await self._restore(doc, info.head)
            if index is None:
                if info.head - info.base_seq < build_from:
                    return False
                index = await self._build(doc, await roots(), paced=True)
            elif await self._far_behind(index, info.head, info):
                index = await self._build(doc, index.roots(), paced=True)
            index = await self._extended(index, info.head, paced=True)
            index = await self._checked(index, paced=True)
            found = index.new_roots()
            if found:
                index = await self._build(doc, {**index.roots(), **found}, True)
            if self._indexes.get(doc) is index:
                self._sizes[doc] = index.estimated_bytes()  # (extended: see _keep)
            await self._maybe_store(index, force=True)
        await self.drain()
        return True

    async def drain(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _far_behind(
        self, index: AttributionIndex, upto: int | None, info: DocInfo | None = None
    ) -> bool:
        """Whether `index` folds by deltas (read back from the store) and more than
        extend_read_back_max events are to be folded, while a build from the start would
        fold by ids (an uncompacted log, no XML root, no event mended): then building it
        again costs less than extending it (see EXTEND_READ_BACK_MAX). `info`: the
        document's, when the caller has just read it (else it is read here)."""
        if index.folds_by_ids or index.xml or self._fixes.get(index.doc_name):
            return False
        info = info or await self.store.doc_info(index.doc_name)
        if info is None or info.base_seq or index.base:
            return False
        head = info.head if upto is None else min(upto, info.head)
        if head - index.seq <= self.extend_read_back_max:
            return False
        log.info("attribution index of %s at seq %d is %d events behind: built again by "
                 "ids rather than extended by deltas", index.doc_name, index.seq,
                 head - index.seq)  # fmt: skip
        self.rebuilt_far_behind += 1
        return True

    # --- the store ----------------------------------------------------------------------

    async def _restore(self, doc: str, upto: int) -> AttributionIndex | None:
        """The stored index, read back and matched against the log, or None."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        row = await self.store.derived(doc, codec.KIND)
        # an index stored by this process whose write has not committed yet (SQLite
        # queues it behind the appends): the row read is the one it replaces. A blame
        # right after a background refresh read it, one stored 68,000 events before,
        # and extended and stored it all over again (field test, 7 Dec 2026)
        writing = self._writing.get(doc)
        if writing is not None and (row is None or row[0] < writing[0]):
            row = writing
        if row is None:
            return None
        seq, data = row
        # decompressing and reading it grows with the index (seconds for a long
        # manuscript's): in a worker thread, not on the event loop (codec.Parsed)
        try:
            parsed = await cpu_account.to_thread(codec.parse, data)
        except FATAL:
            raise
        except Exception as e:
            log.info("stored attribution index of %s not used: it does not decode (%s)", doc, e)
            return None
        why = await self._mismatch(doc, seq, parsed, upto)
        if why is not None:
            log.info("stored attribution index of %s not used: %s", doc, why)
            return None
        loaded = await load(self.store, doc, upto=seq)
        if loaded.seq != seq or loaded.failed:
            log.info("stored attribution index of %s not used: version %d does not load", doc, seq)
            return None
        try:
            index = codec.assemble(parsed, loaded.doc)
        except FATAL:
            raise
        except Exception as e:
            log.warning("stored attribution index of %s does not decode (%s): rebuilding", doc, e)
            return None
        if not _length_matches(index):
            log.warning("stored attribution index of %s disagrees with version %d: rebuilding",
                        doc, seq)  # fmt: skip
            return None
        self._note_stored(doc, seq)
        dt = loop.time() - t0
        self.restores.append((doc, dt, seq))
        log.info("attribution index of %s read back at seq %d in %.3f s", doc, seq, dt)
        return index

    async def _mismatch(self, doc: str, seq: int, parsed: codec.Parsed, upto: int) -> str | None:
        h = parsed.header
        if int(h["seq"]) != seq or h.get("doc") != doc:
            return "its header names another document or seq"
        info = await self.store.doc_info(doc)
        if info is None or seq > info.head or seq < info.base_seq:
            return f"its seq {seq} is outside the log"
        if parsed.base != info.base_seq:
            return (f"it starts at seq {parsed.base}, the log at {info.base_seq} (compacted "
                    "since): it names the writers of events folded away")  # fmt: skip
        if seq > info.base_seq:
            evs = await self.store.read(doc, after=seq - 1, upto=seq)
            if not evs or fingerprint(evs[0].update) != h.get("fp"):
                return f"event {seq} is not the one it was built from"
        elif h.get("fp"):
            return "it was built from an event the log no longer holds"
        return None

    async def _maybe_store(self, index: AttributionIndex, force: bool = False) -> None:
        doc = index.doc_name
        last = self._stored.get(doc)
        if last is not None and index.seq - last < (1 if force else self.persist_every):
            return
        fp = ""  # an index at the compaction base: its event is no longer in the log
        if index.seq > 0:
            evs = await self.store.read(doc, after=index.seq - 1, upto=index.seq)
            fp = fingerprint(evs[0].update) if evs else ""
        # tens of ms for a long document's index: off the event loop (the lock is held, so
        # nothing folds into the index meanwhile)
        data = await cpu_account.to_thread(codec.encode, index, fp)
        self._note_stored(doc, index.seq)
        self._writing[doc] = (index.seq, data)
        task = asyncio.create_task(self._write(doc, index.seq, data))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _note_stored(self, doc: str, seq: int) -> None:
        """Remember that `doc`'s index in the store is at `seq`; of the documents whose
        index is not in memory, only the stored_known most recent are remembered."""
        self._stored[doc] = seq
        self._stored.move_to_end(doc)
        if len(self._stored) > len(self._indexes) + self.stored_known:
            for old in list(self._stored):
                if len(self._stored) <= len(self._indexes) + self.stored_known:
                    break
                if old not in self._indexes and old != doc:
                    del self._stored[old]

    async def _write(self, doc: str, seq: int, data: bytes) -> None:
        try:
            await self.store.put_derived(doc, codec.KIND, seq, data)
        except Exception as e:  # a cache: the next use rebuilds or extends it
            self._written(doc, data)
            log.warning("attribution index of %s@%d not stored: %s", doc, seq, e)
            if self._stored.get(doc) == seq:
                self._stored.pop(doc, None)
            return
        self._written(doc, data)
        self.stored += 1
        log.info("attribution index of %s stored at seq %d (%d bytes)", doc, seq, len(data))

    def _written(self, doc: str, data: bytes) -> None:
        """The write of `data` ended: a read back reads the store again (unless a later
        write of the document is under way)."""
        writing = self._writing.get(doc)
        if writing is not None and writing[1] is data:
            del self._writing[doc]

    def _editing(self) -> bool:
        """Whether an edit was committed in the last QUIET_SECONDS."""
        return self.last_edit is not None and time.monotonic() - self.last_edit() < QUIET_SECONDS

    async def _give_way(self, doc: str) -> None:
        """Before a background refresh reads its next page: wait until no edit was
        committed for QUIET_SECONDS, at most MAX_DEFER_SECONDS. Reading a page decodes
        its segments on a worker thread, which holds the interpreter for ~1.5 ms a
        segment; meanwhile an edit's every I/O step on the event loop (the socket, the
        commit's fsync) waits up to the switch interval to take it back, and a few of
        those add up to the 2-7 ms outliers measured while typing went on
        (docs/durability.md)."""
        if self.last_edit is None:
            return
        deadline = time.monotonic() + MAX_DEFER_SECONDS
        waited = False
        while not self._hurry(doc):
            now = time.monotonic()
            rest = min(self.last_edit() + QUIET_SECONDS, deadline) - now
            if rest <= 0:
                break
            waited = True
            # (in short naps: a caller who starts waiting for the index is noticed)
            await asyncio.sleep(min(rest, QUIET_SECONDS))
        if waited:
            self.deferred += 1

    # --- folding ------------------------------------------------------------------------

    async def _build(
        self, doc: str, roots: Roots, paced: bool = False, by_ids: bool = True
    ) -> AttributionIndex:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            index = AttributionIndex(doc, roots, by_ids=by_ids, fixes=self._fixes.get(doc))
            info = await self.store.doc_info(doc)
            if info is not None and info.base_seq:
                snap = await self.store.latest_snapshot(doc, info.base_seq)
                if snap is not None:
                    busy = self._editing if paced else None
                    hurry = (lambda: self._hurry(doc)) if paced else None
                    await index.start_at(snap.seq, snap.state, paced=paced, busy=busy, hurry=hurry)
            try:
                await self._extend(index, None, paced)
                break
            except DocumentBroken as e:
                self._mend(e)
        if by_ids:
            checked = await self._checked(index, paced)
            if checked is not index:
                return checked  # built again by deltas (and counted there)
        self._stored.pop(doc, None)  # a new index: store it
        self.builds.append((doc, loop.time() - t0, index.seq))
        log.info(
            "attribution index of %s built to seq %d in %.2f s", doc, index.seq, loop.time() - t0
        )
        return index

    async def _checked(self, index: AttributionIndex, paced: bool = False) -> AttributionIndex:
        """`index`, or, if folding it by ids went wrong (attribution_ids), the same index
        built again by text deltas."""
        if (index.by_ids or index.broken) and not index.verify():
            log.warning("attribution index of %s by ids disagrees with the document at seq "
                        "%d: building it by deltas", index.doc_name, index.seq)  # fmt: skip
            self.rebuilt_by_deltas += 1
            return await self._build(index.doc_name, index.roots(), paced, by_ids=False)
        index.check_xml()
        return index

    async def _extend(self, index: AttributionIndex, upto: int | None, paced: bool = False) -> None:
        """Fold the events after the index's seq (up to `upto`), a slice at a time.
        `paced` (background refreshes): after each slice, wait as long as it took, so
        that a refresh takes at most half of the CPU from whatever else runs."""
        doc = index.doc_name
        hurry = (lambda: self._hurry(doc)) if paced else None
        while upto is None or index.seq < upto:
            if paced:
                await self._give_way(doc)
            events = await self.store.read(doc, after=index.seq, upto=upto, limit=READ_PAGE)
            if not events:
                return
            if events[-1].seq - index.seq != len(events):
                # a hole in the log (rows deleted by hand): what follows it builds on
                # items never folded, and blame and diffs came out short, as 200s
                what = "blame and diffs fold every event of the log, and cannot"
                raise await hole_error(self.store, doc, what) or LogDamaged(
                    doc, f"its log skips seqs between {index.seq} and {events[-1].seq}"
                )
            await index.fold_sliced(
                events,
                paced=paced,
                busy=self._editing if paced else None,
                hurry=hurry,
            )


__all__ = ["AttributionCache", "TextTrack", "fingerprint"]
