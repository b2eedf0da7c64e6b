"""The compact event log, as the SQLite and PostgreSQL stores keep it (schema version 5).

A document's events live in two places, and every read sees both as one log:

- the **tail**: one row per recent event, appended by group commit (``log``: doc id, seq,
  pos, ts, actor id, kind id, update, meta text or NULL for ``{}``);
- **sealed segments**: runs of :data:`~.segments.SEGMENT_EVENTS` consecutive events of one
  document, column by column and compressed (:mod:`.segments`), each with a checksum.
  Sealing (:meth:`EventStore.seal`) runs off the editing path: one transaction deletes
  the run's tail rows and inserts its segment, so a run is in exactly one of the two.

Doc names get an integer id in ``docs`` (never reused: a document made again under a
deleted one's name gets a new id); actors and kinds are interned in ``symbols``. Ids
never change, so each process caches them.

Reads that touch both places take the tail first and the segments second, each in one
statement: an event sealed in between is then seen twice (and kept once), never missed,
because segments are only ever added (compaction and deletion aside). The tail statement
also reads the document's head (or the global position), and nothing above it is
returned, so an event appended after the tail was read is never returned before one
below it that the read missed.

A segment whose checksum does not hold is never decoded into events: a read that needs it
raises :class:`~server.errors.StoreError` naming it, and ``palimpsest verify`` reports it.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any, TypeVar

from .. import cpu_account
from ..errors import StoreError
from . import segments as S
from .base import Event, EventStore, dump_meta

#: the schema version of this layout; a database below it is upgraded by ``palimpsest
#: migrate`` (servers refuse to start on it), a fresh one is created at it directly
LAYOUT_VERSION = 5
#: an upper bound for seqs and positions in queries
MAX = 2**62


def meta_text(meta: dict[str, Any]) -> str:
    """What a tail row or a segment keeps of an event's meta: "" for none."""
    return dump_meta(meta) if meta else ""


#: metas parsed lately whose values are all scalars, by text: the events of one
#: connection all carry the same meta ({"conn": ...}), and parsing it again for each of a
#: segment's 1,024 events was most of a read's CPU. Each caller gets its own copy.
_PARSED: dict[str, dict[str, Any]] = {}
_PARSED_MAX = 1024
_SCALARS = (str, int, float, bool, type(None))


def parse_meta(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    flat = _PARSED.get(text)
    if flat is not None:
        return flat.copy()
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StoreError(f"an event's meta is a JSON {type(value).__name__}, not an object")
    if all(isinstance(v, _SCALARS) for v in value.values()):
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[text] = value.copy()
    return value


class UnknownSymbol(LookupError):
    """A stored event names a symbol id this process has not loaded (yet)."""


class Symbols:
    """Interned strings (actors, kinds) of one store, cached both ways. A store fills it
    from its ``symbols`` table; an id is only cached once its row is committed."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: dict[int, str] = {}

    def add(self, rows: Iterable[tuple[int, str]]) -> None:
        for i, name in rows:
            self.ids[name] = int(i)
            self.names[int(i)] = name

    def name(self, i: int) -> str:
        try:
            return self.names[i]
        except KeyError:
            raise UnknownSymbol(i) from None

    def rename(self, old: str, new: str) -> None:
        """The name of an id changed (EventStore.rename_actor, in this process)."""
        i = self.ids.pop(old, None)
        if i is not None:
            self.ids[new] = i
            self.names[i] = new

    def missing_names(self, names: Iterable[str]) -> list[str]:
        return sorted({n for n in names if n not in self.ids})

    def missing_ids(self, ids: Iterable[int]) -> list[int]:
        return sorted({i for i in ids if i not in self.names})


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """A stored segment as a read fetches it."""

    doc: str
    first_seq: int
    last_seq: int
    blob: bytes
    checksum: bytes


@dataclass(frozen=True, slots=True)
class TailRow:
    doc: str
    seq: int
    pos: int
    ts: int
    actor: int
    kind: int
    data: bytes
    meta: str | None


class _Decoded:
    """Segments decoded lately, by their stored checksum, up to a few MB: reading one
    seq decodes its whole segment (~1 ms: decompressed, then every column), and a
    history browser reads neighbouring versions, a diff two of them, a version's
    timestamp one event. A hit is only taken when the blob as read now still has that
    checksum, so a segment damaged after it was decoded is found as before. Shared by
    the worker threads that decode."""

    MAX_BYTES = 16 << 20
    #: a segment bigger than this (huge updates) is not kept
    MAX_ONE = 4 << 20

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cols: OrderedDict[bytes, tuple[S.Columns, int]] = OrderedDict()
        self._bytes = 0

    def get(self, row: SegmentRow) -> S.Columns | None:
        key = bytes(row.checksum)
        with self._lock:
            got = self._cols.get(key)
            if got is None:
                return None
            self._cols.move_to_end(key)
        return got[0] if S.checksum(row.blob) == key else None

    def put(self, row: SegmentRow, cols: S.Columns) -> None:
        size = sum(map(len, cols.updates)) + sum(map(len, cols.meta)) + 200 * len(cols)
        if size > self.MAX_ONE:
            return
        key = bytes(row.checksum)
        with self._lock:
            if key in self._cols:
                return
            self._cols[key] = (cols, size)
            self._bytes += size
            while self._bytes > self.MAX_BYTES:
                _, (_, gone) = self._cols.popitem(last=False)
                self._bytes -= gone

    def clear(self) -> None:
        with self._lock:
            self._cols.clear()
            self._bytes = 0


DECODED = _Decoded()


def decode_segment(row: SegmentRow) -> S.Columns:
    cols = DECODED.get(row)
    if cols is not None:
        return cols
    try:
        cols = S.decode(row.blob, row.checksum)
        DECODED.put(row, cols)
        return cols
    except S.SegmentDamaged as e:
        raise StoreError(
            f"segment {row.doc}@{row.first_seq}..{row.last_seq} of the event log is damaged "
            f"({e}): its events cannot be read; run `palimpsest verify`"
        ) from e


def seq_before(cols: S.Columns, ts: int) -> int:
    """The seq before the first event of a run whose ts is after `ts` (it has one)."""
    return cols.first_seq + next(i for i, t in enumerate(cols.ts) if t > ts) - 1


async def base_answer(store: EventStore, doc: str, ts: int, found: int | None) -> int:
    """seq_at's answer from `found`, the seq before the first event kept in the log
    whose ts is after `ts` (None: no such document): when that is the compaction base,
    the base if its snapshot was made by `ts`, else 0 (history.service.seq_at then tells
    by the base's own ts)."""
    if not found:
        return 0
    info = await store.doc_info(doc)
    if info is None or not info.base_seq or found > info.base_seq:
        return found
    snap = await store.latest_snapshot(doc, info.base_seq)
    return info.base_seq if snap is not None and snap.ts <= ts else 0


def _check_seqs(row: SegmentRow, first_seq: int, n: int) -> None:
    if n != row.last_seq - row.first_seq + 1 or first_seq != row.first_seq:
        raise StoreError(
            f"segment {row.doc}@{row.first_seq}..{row.last_seq} of the event log is damaged "
            f"(it holds seqs {first_seq}..{first_seq + n - 1}); run `palimpsest verify`"
        )


#: which events of a segment a read wants, by index, once its integer columns are seen
Pick = Callable[[S.Index], Sequence[int]]


def ANY_ROW(actor: int, kind: int, ts: int) -> bool:  # noqa: N802 (a constant predicate)
    """assemble's keep_row for a read without filters."""
    return True


def segment_events(
    row: SegmentRow,
    symbols: Symbols,
    seqs: tuple[int, int] | None = None,
    pick: Pick | None = None,
) -> list[Event]:
    """The events of a segment; with `seqs` (lo, hi), only those with lo < seq <= hi
    (the rest are not built: a version read needs part of its first segment); with
    `pick`, only those it picks (of those).

    Without `pick` the segment is decoded whole, through DECODED (decoded once, kept: a
    history browser reads neighbouring versions). A read with `pick` (a page of
    ``/events``, of ``read(limit=)``, the changefeed's next batch) does so too when
    the segment is small enough to be kept (its body and events within
    ``DECODED.MAX_ONE``, as a segment of keystrokes always is). A bigger one (huge
    updates: imports, pastes, restores) is never kept: the read inflates its body only
    up to the last update it wants and holds only the texts and updates it wants
    (segments.decode_some), the page's memory whatever the segment's size, where a
    whole decode answered 50 events with a MemoryError under a tight limit."""
    n = row.last_seq - row.first_seq + 1
    start, stop = 0, n
    if seqs is not None:
        start = min(stop, max(0, seqs[0] + 1 - row.first_seq))
        stop = max(start, min(stop, seqs[1] + 1 - row.first_seq))
    cached = DECODED.get(row)
    if cached is None and pick is not None:
        try:
            return _some_events(row, symbols, start, stop, pick)
        except _Keepable:
            pass  # decoded whole below, and kept for the next page
    c = cached if cached is not None else decode_segment(row)
    _check_seqs(row, c.first_seq, len(c))
    name = symbols.name
    doc = row.doc
    wanted: Sequence[int] = range(start, stop)
    if pick is not None:
        index = S.Index(c.first_seq, c.ts, c.pos, c.actor, c.kind)
        wanted = [i for i in pick(index) if start <= i < stop]
    return [
        Event(doc, c.first_seq + i, c.ts[i], name(c.actor[i]), name(c.kind[i]),
              c.updates[i], parse_meta(c.meta[i]), c.pos[i])
        for i in wanted
    ]  # fmt: skip


class _Keepable(Exception):
    """A segment small enough for DECODED: decoded whole and kept, the next page of the
    same segment (a changefeed catching up, ``/events`` paged) then costs no inflating."""


def _some_events(
    row: SegmentRow, symbols: Symbols, start: int, stop: int, pick: Pick | None
) -> list[Event]:
    def chosen(index: S.Index) -> Sequence[int]:
        _check_seqs(row, index.first_seq, len(index))
        if index.body_bytes + 200 * len(index) <= DECODED.MAX_ONE:
            raise _Keepable
        if pick is None:
            return range(start, stop)
        return [i for i in pick(index) if start <= i < stop]

    try:
        c, wanted, metas, updates = S.decode_some(row.blob, row.checksum, chosen)
    except S.SegmentDamaged as e:
        raise StoreError(
            f"segment {row.doc}@{row.first_seq}..{row.last_seq} of the event log is damaged "
            f"({e}): its events cannot be read; run `palimpsest verify`"
        ) from e
    name = symbols.name
    doc = row.doc
    return [
        Event(doc, c.first_seq + i, c.ts[i], name(c.actor[i]), name(c.kind[i]),
              update, parse_meta(meta), c.pos[i])
        for i, meta, update in zip(wanted, metas, updates, strict=True)
    ]  # fmt: skip


def tail_event(row: TailRow, symbols: Symbols) -> Event:
    return Event(row.doc, row.seq, row.ts, symbols.name(row.actor), symbols.name(row.kind),
                 bytes(row.data),
                 parse_meta(row.meta), row.pos)  # fmt: skip


def assemble(
    tail: Sequence[TailRow],
    segs: Sequence[SegmentRow],
    symbols: Symbols,
    keep: Callable[[Event], bool],
    seqs: tuple[int, int] | None = None,
    first: tuple[int, Callable[[int, int, int], bool]] | None = None,
    desc: bool = False,
) -> list[Event]:
    """The events of tail rows and segments of ONE document, in seq order, each once.
    `seqs` (lo, hi): no event outside lo < seq <= hi is kept (nor built). `first`
    (limit, keep_row): only the first `limit` of them are wanted, and keep_row tells from
    an event's actor id, kind id and ts whether `keep` could take it: segments (in seq
    order, below the tail's rows) are decoded only as far as those. With `desc`, the
    last `limit` are wanted instead (a page of the newest): the tail's rows first, then
    the segments from the highest down, each picked from its end (its body is still
    inflated up to the last event picked, but only the picked ones are built and held)."""
    if desc and first is not None:
        return _assemble_last(tail, segs, symbols, keep, seqs, first)
    out: dict[int, Event] = {}
    for s in segs:
        pick: Pick | None = None
        if first is not None:
            limit, keep_row = first
            if len(out) >= limit:
                break  # (the segments left hold higher seqs)

            def pick(
                c: S.Index,
                left: int = limit - len(out),
                keep_row: Callable[[int, int, int], bool] = keep_row,
            ) -> list[int]:
                got: list[int] = []
                lo, hi = seqs if seqs is not None else (-1, MAX)
                for i in range(len(c)):
                    if lo < c.first_seq + i <= hi and keep_row(c.actor[i], c.kind[i], c.ts[i]):
                        got.append(i)
                        if len(got) >= left:
                            break
                return got

        for e in segment_events(s, symbols, seqs, pick):
            if keep(e):
                out[e.seq] = e
    for r in tail:
        if r.seq not in out:
            e = tail_event(r, symbols)
            if keep(e):
                out[e.seq] = e
    return [out[k] for k in sorted(out)]


def _assemble_last(
    tail: Sequence[TailRow],
    segs: Sequence[SegmentRow],
    symbols: Symbols,
    keep: Callable[[Event], bool],
    seqs: tuple[int, int] | None,
    first: tuple[int, Callable[[int, int, int], bool]],
) -> list[Event]:
    """:func:`assemble` of the last `first[0]` events (in seq order)."""
    limit, keep_row = first
    out: dict[int, Event] = {}
    for r in tail:
        e = tail_event(r, symbols)
        if keep(e):
            out[e.seq] = e
    lo, hi = seqs if seqs is not None else (-1, MAX)
    for s in sorted(segs, key=lambda s: s.first_seq, reverse=True):
        if len(out) >= limit:
            break  # (this segment and those left hold lower seqs than the tail's rows)

        def pick(c: S.Index, left: int = limit - len(out)) -> list[int]:
            got: list[int] = []
            for i in range(len(c) - 1, -1, -1):
                seq = c.first_seq + i
                if lo < seq <= hi and seq not in out and keep_row(c.actor[i], c.kind[i], c.ts[i]):
                    got.append(i)
                    if len(got) >= left:
                        break
            return got[::-1]

        for e in segment_events(s, symbols, seqs, pick):
            if keep(e):
                out[e.seq] = e
    return [out[k] for k in sorted(out)[-limit:]]


async def assemble_off_loop(
    tail: Sequence[TailRow],
    segs: Sequence[SegmentRow],
    symbols: Symbols,
    keep: Callable[[Event], bool],
    seqs: tuple[int, int] | None = None,
    first: tuple[int, Callable[[int, int, int], bool]] | None = None,
    desc: bool = False,
) -> list[Event]:
    """:func:`assemble` on a worker thread when it has segments to decode: a segment is
    ~1-2 ms of CPU (decompressed, then its events built; see DECODED), so a page of a
    long log read on the event loop held every room's edits for tens of ms."""
    if not segs:
        with cpu_account.on_loop():
            return assemble(tail, segs, symbols, keep, seqs, first, desc)
    return await cpu_account.to_thread(assemble, tail, segs, symbols, keep, seqs, first, desc)


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """The filters of ``EventStore.query``: as SQL for the tail rows and for the
    segments' index fields (``?`` placeholders, numbered by each store), and as a
    predicate for the events decoded from segments."""

    tail_where: str
    tail_params: list[Any]
    seg_where: str
    seg_params: list[Any]
    keep: Callable[[Event], bool]
    #: `keep` from a stored event's actor id, kind id and ts (a segment's columns)
    keep_row: Callable[[int, int, int], bool]


def query_filter(
    symbols: Symbols,
    actor: str | None,
    kinds: Sequence[str] | None,
    since_ts: int | None,
    until_ts: int | None,
    kinds_sql: Callable[[list[int]], tuple[str, list[Any]]],
) -> QueryFilter | None:
    """The filter of a query, or None when nothing can match (an actor or kinds never
    written). `kinds_sql` is the store's dialect for "kind is one of these ids"."""
    tail_where, tail_params = "", list[Any]()
    seg_where, seg_params = "", list[Any]()
    if actor is not None:
        if actor not in symbols.ids:
            return None
        tail_where += " AND actor = ?"
        tail_params.append(symbols.ids[actor])
    if kinds:
        kind_ids = [symbols.ids[k] for k in kinds if k in symbols.ids]
        if not kind_ids:
            return None
        sql, params = kinds_sql(kind_ids)
        tail_where += sql
        tail_params += params
    if since_ts is not None:
        tail_where += " AND ts >= ?"
        tail_params.append(since_ts)
        seg_where += " AND ts_max >= ?"
        seg_params.append(since_ts)
    if until_ts is not None:
        tail_where += " AND ts <= ?"
        tail_params.append(until_ts)
        seg_where += " AND ts_min <= ?"
        seg_params.append(until_ts)
    kind_set = set(kinds) if kinds else None
    actor_id = symbols.ids[actor] if actor is not None else None
    kind_id_set = {symbols.ids[k] for k in kind_set if k in symbols.ids} if kind_set else None

    def keep_row(actor: int, kind: int, ts: int) -> bool:
        return (
            (actor_id is None or actor == actor_id)
            and (kind_id_set is None or kind in kind_id_set)
            and (since_ts is None or ts >= since_ts)
            and (until_ts is None or ts <= until_ts)
        )

    def keep(e: Event) -> bool:
        return (
            (actor is None or e.actor == actor)
            and (kind_set is None or e.kind in kind_set)
            and (since_ts is None or e.ts >= since_ts)
            and (until_ts is None or e.ts <= until_ts)
        )

    return QueryFilter(tail_where, tail_params, seg_where, seg_params, keep, keep_row)


#: seqs read per step of a filtered query (a filter may keep few of them)
QUERY_WINDOW = 4096


async def query_windows(
    doc: str,
    lo: int,
    head: int,
    limit: int,
    f: QueryFilter,
    tail: Callable[..., Awaitable[tuple[tuple[int, int, int] | None, list[TailRow]]]],
    segments: Callable[..., Awaitable[list[SegmentRow]]],
    symbols: Symbols,
    before: int | None = None,
    desc: bool = False,
) -> list[Event]:
    """The first `limit` events after seq `lo` (and before seq `before`, if given) that
    pass `f`, read QUERY_WINDOW seqs at a time with the store's ``_doc_tail`` and
    ``_doc_segments``; with `desc`, the last `limit` of them, the newest first, read in
    windows from the top down (the tail's rows newest first: ``_doc_tail(desc=True)``)."""
    if before is not None:
        head = min(head, before - 1)
    if desc:
        return await _windows_down(doc, lo, head, limit, f, tail, segments, symbols)
    out: list[Event] = []
    while lo < head and len(out) < limit:
        hi = min(head, lo + QUERY_WINDOW)
        info, rows = await tail(doc, lo, hi, limit, f.tail_where, f.tail_params)
        if info is None:
            break
        segs = await segments(doc, info[0], lo, hi, f.seg_where, f.seg_params)

        def keep(e: Event, lo: int = lo, hi: int = hi) -> bool:
            return lo < e.seq <= hi and f.keep(e)

        # only as many as the page still needs are decoded from the window's segments
        first = (limit - len(out), f.keep_row)
        out += await assemble_off_loop(rows, segs, symbols, keep, (lo, hi), first)
        lo = hi
    return out[:limit]


async def _windows_down(
    doc: str,
    bottom: int,
    hi: int,
    limit: int,
    f: QueryFilter,
    tail: Callable[..., Awaitable[tuple[tuple[int, int, int] | None, list[TailRow]]]],
    segments: Callable[..., Awaitable[list[SegmentRow]]],
    symbols: Symbols,
) -> list[Event]:
    """query_windows' newest first: windows of QUERY_WINDOW seqs from `hi` down to
    `bottom`, each answering the last events it still needs."""
    out: list[Event] = []
    while bottom < hi and len(out) < limit:
        lo = max(bottom, hi - QUERY_WINDOW)
        need = limit - len(out)
        info, rows = await tail(doc, lo, hi, need, f.tail_where, f.tail_params, desc=True)
        if info is None:
            break
        segs = await segments(doc, info[0], lo, hi, f.seg_where, f.seg_params)

        def keep(e: Event, lo: int = lo, hi: int = hi) -> bool:
            return lo < e.seq <= hi and f.keep(e)

        got = await assemble_off_loop(rows, segs, symbols, keep, (lo, hi), (need, f.keep_row), True)
        out += got[::-1]
        hi = lo
    return out[:limit]


async def merge_by_pos(
    tail: Sequence[TailRow],
    segs: Sequence[tuple[int, int]],
    fetch: Callable[[list[int]], Awaitable[dict[int, SegmentRow]]],
    symbols: Symbols,
    after: int,
    bound: int,
    limit: int,
) -> list[Event]:
    """The ``limit`` events with after < pos <= bound, in pos order, from tail rows and
    segments given as (first_pos, id) in first_pos order: segments are fetched (a few ids
    at a time) and decoded only while they can still hold one of those events."""
    best: list[tuple[int, Event]] = []  # a heap of the smallest found, largest on top
    seen: set[int] = set()

    def offer(e: Event) -> None:
        if not after < e.pos <= bound or e.pos in seen:
            return
        if len(best) < limit:
            heapq.heappush(best, (-e.pos, e))
            seen.add(e.pos)
        elif e.pos < -best[0][0]:
            _, out = heapq.heapreplace(best, (-e.pos, e))
            seen.discard(out.pos)
            seen.add(e.pos)

    for r in tail:
        offer(tail_event(r, symbols))
    i = 0
    while i < len(segs):
        batch = segs[i : i + 4]
        i += len(batch)
        got = await fetch([sid for _, sid in batch])
        if len(got) != len(batch):
            raise Reread("a segment went away while it was read (compaction or deletion)")
        for first_pos, sid in batch:
            if len(best) >= limit and first_pos > -best[0][0]:
                return [e for _, e in sorted(best, key=lambda t: -t[0])]

            def pick(c: S.Index) -> Sequence[int]:
                if any(a >= b for a, b in itertools.pairwise(c.pos)):
                    return range(len(c))  # (not written so: every event, as before)
                # positions grow along a segment: its first `limit` past `after` at most
                top = min(bound, -best[0][0]) if len(best) >= limit else bound
                start = bisect.bisect_right(c.pos, after)
                stop = min(bisect.bisect_right(c.pos, top), start + limit)
                return list(range(start, stop))

            for e in segment_events(got[sid], symbols, pick=pick):
                offer(e)
    return [e for _, e in sorted(best, key=lambda t: -t[0])]


class Reread(Exception):
    """A read raced with a compaction or deletion: the caller reads again."""


_T = TypeVar("_T")


async def decoded(
    read: Callable[[], Awaitable[_T]], load_symbols: Callable[[], Awaitable[None]]
) -> _T:
    """Run a read that turns rows into events (the stores' ``_decoded``). A symbol id not
    cached yet (interned since by another process or connection) loads the symbol table
    and reads again; a segment that went away meanwhile (compaction, deletion) reads
    again.

    A symbol's row commits before any event that names it, so an id still unknown after
    a load made after a read met it is missing for good (StoreError). The read again may
    meet another id, new since that load (a first undo, then at once a first redo): that
    one is loaded in turn. Giving up at the second unknown id ended every changefeed
    stream that read past such a pair."""
    loaded: set[int] = set()
    rereads = 0
    while True:
        try:
            return await read()
        except UnknownSymbol as e:
            if e.args[0] in loaded:
                raise StoreError(f"an event names symbol id {e} that is not stored") from e
            loaded.add(e.args[0])
            await load_symbols()
        except Reread:
            rereads += 1
            if rereads == 3:
                raise StoreError("the log kept changing while it was read; try again") from None


def restamped_segment(
    doc: str, blob: bytes, stored: bytes, after: int, stamp: Callable[[int], int]
) -> tuple[S.Sealed, int]:
    """A segment of `doc` written again with each ts after `after` stamped anew
    (EventStore.restamp), and how many it changed; StoreError for a damaged one (its
    events cannot be read, so nor restamped)."""
    try:
        cols = S.decode(blob, stored)
    except S.SegmentDamaged as e:
        raise StoreError(f"a sealed segment of {doc!r} is damaged ({e}): its events "
                         "cannot be restamped") from e  # fmt: skip
    ts = [stamp(t) if t > after else t for t in cols.ts]
    changed = sum(1 for t in cols.ts if t > after)
    return S.encode(dataclasses.replace(cols, ts=ts)), changed


def runs(events: Sequence[Event], first_seq: int, size: int = S.SEGMENT_EVENTS) -> int:
    """How many leading events (a multiple of ``size``) are consecutive from first_seq, so
    that they can be written as whole segments."""
    n = 0
    for e in events:
        if e.seq != first_seq + n:
            break
        n += 1
    return n - n % size


def plan(events: Sequence[Event], base_seq: int) -> tuple[list[Sequence[Event]], list[Event], int]:
    """How a document's events (in seq order, after base_seq) are written at once (import,
    migration): whole runs as segments, the rest as tail rows; and the sealed seq."""
    whole = runs(events, base_seq + 1)
    segs = [events[i : i + S.SEGMENT_EVENTS] for i in range(0, whole, S.SEGMENT_EVENTS)]
    sealed = events[whole - 1].seq if whole else base_seq
    return segs, list(events[whole:]), sealed


def columns(events: Sequence[Event], symbols: Symbols) -> S.Columns:
    """Columns of consecutive events (their actors and kinds already interned)."""
    ids = symbols.ids
    return S.Columns(
        events[0].seq,
        [e.ts for e in events],
        [e.pos for e in events],
        [ids[e.actor] for e in events],
        [ids[e.kind] for e in events],
        [meta_text(e.meta) for e in events],
        [e.update for e in events],
    )


def run_columns(rows: Sequence[Sequence[Any]], sealed: int, n: int) -> S.Columns | None:
    """Columns of n tail rows (seq, pos, ts, actor, kind, data, meta, in seq order) that
    follow seq `sealed` without a gap; None when they do not (a hole, or fewer rows)."""
    if len(rows) != n or n == 0:
        return None
    seq, pos, ts, actor, kind, data, meta = map(list, zip(*rows, strict=True))
    # seqs are unique and sorted: the first and the last say there is no hole
    if seq[0] != sealed + 1 or seq[-1] != sealed + n:
        return None
    return S.Columns(sealed + 1, ts, pos, actor, kind, [m or "" for m in meta],
                     list(map(bytes, data)))  # fmt: skip


def tail_columns(rows: Sequence[TailRow]) -> S.Columns:
    """Columns of consecutive tail rows, as they are stored (ids, meta text)."""
    return S.Columns(
        rows[0].seq,
        [r.ts for r in rows],
        [r.pos for r in rows],
        [r.actor for r in rows],
        [r.kind for r in rows],
        [r.meta or "" for r in rows],
        [bytes(r.data) for r in rows],
    )


class RecentRows:
    """The tail rows this process appended lately, per document id, as stored (seq, pos,
    ts, actor, kind, data, meta): sealing takes a run from here instead of reading it
    back (on seph-blog1 that read was 1.6 us of the SQLite server's CPU per event). Only
    rows whose transaction committed are noted, in consecutive seqs per document (a gap,
    such as another process's appends, starts the list again), and at most ``MAX_ROWS``
    in all (the documents appended to least recently go first); a document whose rows
    are all sealed has no entry left. A row, once stored, never changes (document ids are
    never reused; rows are only ever deleted), and sealing's write checks that every row
    of the run is still there, so a run taken from here is exactly what the log holds;
    whatever is missing is read from the database.

    Bounded by their bytes as well (``MAX_BYTES``: the update and meta, plus
    ``ROW_OVERHEAD`` for the tuple and its numbers, about what a typed character's row
    takes): 65,536 rows of pasted pages were hundreds of MB. A document gone idle (its
    room unloaded, see :meth:`EventStore.seal` with ``rest``) keeps nothing here: its
    last rows were noted for a run it will not complete until it is written again, maybe
    never, and every document that unloaded with fewer than ``rest`` rows unsealed kept
    them until 65,536 others pushed them out (7 kB of a 20-event document's rows, 200 kB
    of a typist's 900)."""

    MAX_ROWS = 65_536
    MAX_BYTES = 16 * 1024 * 1024
    ROW_OVERHEAD = 200

    def __init__(self) -> None:
        self._docs: OrderedDict[int, list[tuple[Any, ...]]] = OrderedDict()
        self._count = 0
        #: the bytes of the rows kept, as counted by _size
        self._bytes = 0

    @classmethod
    def _size(cls, rows: Sequence[tuple[Any, ...]]) -> int:
        """The bytes of rows (seq, pos, ts, actor, kind, data, meta) as counted here."""
        return sum(len(r[5]) + len(r[6] or "") for r in rows) + cls.ROW_OVERHEAD * len(rows)

    @property
    def count(self) -> int:
        """The rows kept."""
        return self._count

    @property
    def kept_bytes(self) -> int:
        """Their bytes, as counted against MAX_BYTES."""
        return self._bytes

    def __len__(self) -> int:
        """The documents with rows kept."""
        return len(self._docs)

    def note(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows (doc id first) of one committed append, each document's in seq order
        (a document's rows in a run: one check per run, not per row)."""
        for doc_id, run in groupby(rows, itemgetter(0)):
            part = [row[1:] for row in run]
            got = self._docs.get(doc_id)
            if got is None:
                got = self._docs[doc_id] = []
            elif got and got[-1][0] + 1 != part[0][0]:
                self._count -= len(got)
                self._bytes -= self._size(got)
                got.clear()
            got.extend(part)
            self._bytes += self._size(part)
            self._docs.move_to_end(doc_id)
        self._count += len(rows)
        while (self._count > self.MAX_ROWS or self._bytes > self.MAX_BYTES) and self._docs:
            _, gone = self._docs.popitem(last=False)
            self._count -= len(gone)
            self._bytes -= self._size(gone)

    def run(self, doc_id: int, first: int, n: int) -> list[tuple[Any, ...]] | None:
        """Rows of seqs first .. first + n - 1, or None when not all are here."""
        got = self._docs.get(doc_id)
        if not got or got[0][0] > first or got[-1][0] < first + n - 1:
            return None
        i = first - got[0][0]
        return got[i : i + n]

    def sealed(self, doc_id: int, upto: int) -> None:
        """Rows up to seq `upto` are in a segment now."""
        got = self._docs.get(doc_id)
        if got:
            drop = min(len(got), max(0, upto - got[0][0] + 1))
            self._bytes -= self._size(got[:drop])
            del got[:drop]
            self._count -= drop
            if not got:  # an empty list counts for nothing against MAX_ROWS: not kept
                del self._docs[doc_id]

    def forget(self, doc_id: int) -> None:
        gone = self._docs.pop(doc_id, None)
        if gone:
            self._count -= len(gone)
            self._bytes -= self._size(gone)

    def clear(self) -> None:
        self._docs.clear()
        self._count = 0
        self._bytes = 0
