"""Snapshot retention: snapshots are a cache of the log, not the record.

A document keeps its newest few snapshots (a room loads from the newest; the ones
before it stand in if it is damaged) and, further back, a sparse ladder: an older
snapshot is kept only where dropping it would leave more than ``max_gap`` events
between two kept ones (or between the start of the log and the first kept one). So any
version is at most ``max_gap`` events of replay away from a snapshot, which bounds what
loading it costs, while the bytes of all the snapshots of a document grow with its
length / max_gap instead of its number of checkpoints. ``max_bytes`` bounds them
further: the gap doubles until the ladder fits (old versions then load more slowly,
never wrongly).

The ladder's rungs are stored as differences: a rung older than the newest few holds
``doc.get_update(state vector of the rung below)`` (the items added since, and the
delete set) instead of the whole state, with ``meta.delta_of`` naming the rung below;
every ``key_every``-th rung stays whole, so a version loads at most ``key_every - 1``
small differences on top of one whole state (snapshots.chain). Measured on
automerge-paper: 6-9 kB compressed per 4,000 events, against 61-142 kB for the whole
state. A rung is converted only when the difference applied to the rung below gives
exactly the rung's own state.

The server drops after every 4th snapshot it writes; it converts rungs when the document
goes idle (its last snapshot, on unload) or every 4 writes of a busy one (16 kept the
high-water of that many whole rungs in a PostgreSQL table, for the same work). The
snapshot policy takes each capture's difference from the previous capture while the
live document is at hand (:class:`Captured`, 0.1 ms at the end of automerge-paper), so a
conversion in the room's lifetime only merges those and rewrites the row. Otherwise
(the room reloaded since, or another process wrote the rung) a conversion loads and
compares the two states (20-40 ms at the end of automerge-paper, on a worker thread);
on automerge-paper those loads had been 1-1.5 s of the server's CPU during its ingest.

A rung older than the newest few is also made bare: its meta keeps only what the ladder
needs (:data:`LADDER_KEYS`) and ``bare: true``, without the undo stacks and owners that
the extensions wrote there (measured on automerge-paper: 1.56 MB of the 4.6 MB of
snapshots, most of it undo stacks that differ little from one rung to the next). Only a
room loading a document reads those, and it loads from the newest valid snapshot that
is not bare (snapshots.load(with_meta=True)); when there is none, it replays from the
start of the log (or the compaction base, never bare), which rebuilds them, slower but
never wrongly. Versions, diffs and blame read a bare rung as any other.

Never dropped: the compaction base (``meta.base``, at ``DocInfo.base_seq``) and anything
before it (compact decides about those), and damaged snapshots (``palimpsest verify``
reports them; an operator decides). Pruning runs after a snapshot is written, in the
background task that wrote it, never on the path of an edit (SnapshotPolicy), and on
demand (:func:`prune`: the bench, a database written before retention existed).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import protocol as P
from . import subdoc_options
from .ranges import Ranges
from .store.base import BaseMark, EventStore, SnapshotInfo
from .updates import read_delete_set

log = logging.getLogger("palimpsest.retention")


@dataclass(frozen=True)
class Retention:
    #: the newest valid snapshots always kept
    keep_recent: int = 3
    #: at most this many events between two kept snapshots further back (measured on
    #: automerge-paper: see bench/snapshot_bench.py and docs/history.md)
    max_gap: int = 3000
    #: bytes (as stored) of the snapshots older than the newest few, the whole rungs the
    #: kept differences are taken from counted in; 0: no bound
    max_bytes: int = 0
    #: every key_every-th rung stays whole, the ones between are differences: a version
    #: loads one whole rung and at most key_every - 1 differences (0: every rung whole)
    key_every: int = 6

    def __post_init__(self) -> None:
        if self.keep_recent < 1:
            raise ValueError("keep_recent must be at least 1: a room loads the newest snapshot")
        if self.max_gap < 1:
            raise ValueError("max_gap must be at least 1")


#: the meta entries a bare rung keeps (the rest is the extensions', for a loading room)
LADDER_KEYS = ("delta_of", "base")


def bare_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The meta of a ladder rung once it is no longer among the newest few."""
    return {**{k: v for k, v in meta.items() if k in LADDER_KEYS}, "bare": True}


def _ladder(older: Sequence[SnapshotInfo], start: int, top: int, gap: int) -> list[SnapshotInfo]:
    """The snapshots of `older` (ascending) to keep so that no two kept seqs (with `start`
    below and `top` above them) are more than `gap` apart, where the snapshots allow."""
    kept: list[SnapshotInfo] = []
    last = start
    for i, s in enumerate(older):
        nxt = older[i + 1].seq if i + 1 < len(older) else top
        if nxt - last > gap:
            kept.append(s)
            last = s.seq
    return kept


def plan(infos: Sequence[SnapshotInfo], base_seq: int, rules: Retention) -> list[int]:
    """The seqs of the snapshots to drop (pure: the listing in, the decision out)."""
    valid = sorted((s for s in infos if s.valid), key=lambda s: s.seq)
    if len(valid) <= rules.keep_recent:
        return []
    recent = valid[-rules.keep_recent :]
    pinned = [s for s in valid if s.seq == base_seq and base_seq > 0]
    older = [s for s in valid[: -rules.keep_recent] if s not in pinned]
    start = max(base_seq, 0)
    older = [s for s in older if s.seq > start]
    gap = rules.max_gap
    by_seq = {s.seq: s for s in valid}
    kept = _ladder(older, start, recent[0].seq, gap)

    def ladder_bytes() -> int:
        # the rungs kept and the whole ones below them they are differences from, which
        # stay with them: counting the kept rungs alone (mostly differences of a few kB)
        # let a 1 MB book keep 6.5 MB of its 7.8 MB ladder under a 1 MB bound
        seqs = _with_bases({s.seq for s in kept}, by_seq) - {s.seq for s in recent}
        return sum(by_seq[q].size for q in seqs if q in by_seq and q > start)

    while rules.max_bytes and kept and ladder_bytes() > rules.max_bytes:
        gap *= 2
        kept = _ladder(older, start, recent[0].seq, gap)
        if gap > recent[0].seq:
            kept = []
    below = {s.seq for s in valid if s.seq < start}  # before the base: not the ladder's
    keep = {s.seq for s in kept} | {s.seq for s in recent} | {s.seq for s in pinned} | below
    keep = _with_bases(keep, by_seq)
    return [s.seq for s in valid if s.seq not in keep]


def _with_bases(seqs: set[int], by_seq: Mapping[int, SnapshotInfo]) -> set[int]:
    """`seqs` and the rungs they are differences from (a difference needs the rung below
    it, and that one the rung below it, down to a whole one)."""
    keep = set(seqs)
    todo = list(keep)
    while todo:
        base = by_seq.get(todo.pop(), None)
        if base is not None and base.delta_of and base.delta_of not in keep:
            keep.add(base.delta_of)
            todo.append(base.delta_of)
    return keep


def to_convert(
    infos: Sequence[SnapshotInfo], base_seq: int, rules: Retention
) -> list[tuple[int, int]]:
    """(rung, the rung below it) pairs to store as differences (pure)."""
    if rules.key_every <= 0:
        return []
    valid = sorted((s for s in infos if s.valid), key=lambda s: s.seq)
    older = valid[: -rules.keep_recent] if len(valid) > rules.keep_recent else []
    out: list[tuple[int, int]] = []
    links = 0  # differences since the last whole rung
    prev: SnapshotInfo | None = None
    for s in older:
        if s.seq <= base_seq:
            prev = s if s.seq == base_seq else prev
            continue
        if s.delta_of:
            links += 1
        elif prev is None or links + 1 >= rules.key_every:
            links = 0
        else:
            out.append((s.seq, prev.seq))
            links += 1
        prev = s
    return out


def to_strip(infos: Sequence[SnapshotInfo], base_seq: int, rules: Retention) -> list[int]:
    """The seqs of the rungs to make bare (pure): valid, older than the newest
    ``keep_recent``, after the compaction base (which keeps its undo stacks: compact
    wrote them for the events it folded) and not bare yet."""
    valid = sorted((s for s in infos if s.valid), key=lambda s: s.seq)
    older = valid[: -rules.keep_recent] if len(valid) > rules.keep_recent else []
    return [s.seq for s in older if s.seq > base_seq and not s.bare]


@dataclass(frozen=True, slots=True)
class Captured:
    """A difference taken when a snapshot was captured (server.snapshots): the live
    document's ``get_update(state vector at the capture of `below`)``, and the CRC-32 of
    the whole state captured at this seq. Converting the rung then costs no document
    load: the stored rung must still be those very bytes (its CRC), and the rung below
    one captured from the same document before (the differences of the captures
    between them, whose snapshots the ladder dropped, are merged: a delete set only
    grows, so the merge applied to the rung below gives this state)."""

    below: int
    delta: bytes
    crc: int


async def prune(
    store: EventStore,
    doc: str,
    rules: Retention,
    *,
    convert: bool = True,
    idle: bool = False,
    captured: Mapping[int, Captured] | None = None,
) -> list[int]:
    """Drop what :func:`plan` says from the store, then (`convert`) store the ladder's
    older rungs as differences (:func:`to_convert`) and make them bare
    (:func:`to_strip`); returns the seqs dropped. `idle`: the document went idle, the
    store may take longer to give the space back (EventStore.reclaim_snapshots).
    `captured`: differences taken at capture, by seq (see :class:`Captured`)."""
    # rewritten rungs are written only while the base holds: one a compaction (a purge)
    # folded again meanwhile is not written back as it was read
    base = await store.compaction_base(doc)
    base_seq = base[0]
    infos = await store.snapshots(doc)  # reads every row (checksums): once
    drop = plan(infos, base_seq, rules)
    if drop:
        await store.delete_snapshots(doc, drop)
        log.debug("snapshots of %s pruned: %d dropped", doc, len(drop))
    changed = bool(drop)
    if convert:
        gone = set(drop)
        left = [s for s in infos if s.seq not in gone]
        done: set[int] = set()
        listed = {s.seq: s for s in left}
        for seq, below in to_convert(left, base_seq, rules):
            known = (
                _captured_difference(captured, seq, below)
                if captured and _resolves(listed, below)
                else None
            )
            if await _as_difference(store, doc, seq, below, known, base):
                done.add(seq)  # made bare as it became a difference
        for seq in to_strip(left, base_seq, rules):
            if seq not in done and await _strip(store, doc, seq, base):
                done.add(seq)
        changed = changed or bool(done)
    if changed:
        await store.reclaim_snapshots(idle=idle)
    return drop


def _resolves(listed: Mapping[int, SnapshotInfo], seq: int) -> bool:
    """Whether the rung at `seq` and every rung it is a difference from are listed valid
    (what :func:`snapshots.chain` would find), from the listing alone."""
    for _ in range(64):
        info = listed.get(seq)
        if info is None or not info.valid:
            return False
        if not info.delta_of:
            return True
        seq = info.delta_of
    return False


def _captured_difference(captured: Mapping[int, Captured], seq: int, below: int) -> Captured | None:
    """The difference from `below` to `seq` out of the ones taken at capture: each goes
    from the capture before it, so the ones between (snapshots the ladder dropped
    since) are merged; None when one of them is not at hand."""
    parts: list[bytes] = []
    at = seq
    while at != below:
        step = captured.get(at)
        if step is None or step.below < below:
            return None
        parts.append(step.delta)
        at = step.below
    if not parts:
        return None
    delta = parts[0] if len(parts) == 1 else subdoc_options.merge(*reversed(parts))
    return Captured(below, delta, captured[seq].crc)


async def _strip(store: EventStore, doc: str, seq: int, base: BaseMark) -> bool:
    """Rewrite the snapshot at `seq` with :func:`bare_meta` (its state unchanged)."""
    snap = await store.latest_snapshot(doc, seq)
    if snap is None or snap.seq != seq or snap.bare:
        return False
    return await store.put_snapshot(doc, seq, snap.state, bare_meta(snap.meta), base=base)


async def _as_difference(
    store: EventStore,
    doc: str,
    seq: int,
    below: int,
    known: Captured | None = None,
    mark: BaseMark | None = None,
) -> bool:
    """Rewrite the whole snapshot at `seq` as its difference from the one at `below`,
    if that difference gives back exactly its state. `known`: the difference taken at
    capture, used when it applies to this pair and to the rung as stored."""
    from pycrdt import Doc

    from .snapshots import apply_chain, chain  # the snapshot policy imports this module

    top = await store.latest_snapshot(doc, seq)
    if (
        known is not None
        and known.below == below
        and top is not None
        and top.seq == seq
        and not top.delta_of
        and zlib.crc32(top.state) == known.crc
    ):
        # the live document at `seq` held exactly top.state, and held the state of the
        # rung below (captured from it before) when its state vector was taken: that
        # rung plus this difference is this state, with no document built to check it
        meta = {**bare_meta(top.meta), "delta_of": below}
        if not await store.put_snapshot(doc, seq, known.delta, meta, base=mark):
            return False
        log.debug("snapshot %s@%d stored as its difference from @%d (taken at capture)",
                  doc, seq, below)  # fmt: skip
        return True
    base = await store.latest_snapshot(doc, below)
    if top is None or base is None or top.seq != seq or base.seq != below or top.delta_of:
        return False
    links = await chain(store, base)
    if links is None:
        return False

    def difference() -> bytes | None:
        # two whole states built and compared: 15-30 ms of CPU, on a worker thread so
        # that the event loop serves edits meanwhile (the docs live and die in it)
        old: Doc[Any] = Doc(skip_gc=True)
        if not apply_chain(old, links):
            return None
        new: Doc[Any] = Doc(skip_gc=True)
        new.apply_update(top.state)
        subdoc_options.note(new, top.state)
        delta = subdoc_options.restored(new, new.get_update(old.get_state()))
        # the rung below plus the difference must give the rung back, byte for byte:
        # `old` becomes that sum (it is not needed as it was any more)
        old.apply_update(delta)
        if old.get_update() != new.get_update():
            _not_given_back(doc, seq, below, old, new)
            return None
        return delta

    delta = await asyncio.to_thread(difference)
    if delta is None:
        return False
    meta = {**bare_meta(top.meta), "delta_of": below}
    if not await store.put_snapshot(doc, seq, delta, meta, base=mark):
        return False
    log.debug("snapshot %s@%d stored as its difference from @%d (both states loaded)",
              doc, seq, below)  # fmt: skip
    return True


def _not_given_back(doc: str, seq: int, below: int, old: Any, new: Any) -> None:
    """Say why the rung at `seq` stays whole: its difference from `below` did not give
    it back byte for byte. When both hold the same items (the same state vector) and
    the same deletions, the content is the same and only the encoding differs: yrs
    writes the keys of a JSON object value in its hash map's order, another in each
    document that reads it (a whiteboard's ``props: {w, h, color}``), so the rung below
    plus the difference and the rung itself, read into two documents, rarely encode
    alike. Routine where the difference is computed from the two stored states (after
    a compaction, or a room reloaded since the capture): nothing is wrong, the rung is
    kept whole, correct and only larger (debug). Otherwise the two differ in content,
    which no routine work makes: a warning (run `palimpsest verify`)."""
    same_items = P.decode_state_vector(old.get_state()) == P.decode_state_vector(new.get_state())
    same_deletions = _deletions(old) == _deletions(new)
    if same_items and same_deletions:
        log.debug("snapshot %s@%d kept whole (as it was): its difference from @%d gives the "
                  "same content back, encoded otherwise (JSON objects' keys in another "
                  "order); nothing is wrong, the rung is only larger", doc, seq, below)  # fmt: skip
        return
    log.warning("snapshot %s@%d kept whole: its difference from @%d does not give back its "
                "content (%s): run `palimpsest verify` on the document", doc, seq, below,
                "other deletions" if same_items else "other items")  # fmt: skip


def _deletions(ydoc: Any) -> Ranges | None:
    """The delete set of `ydoc`, each client's ranges in order (the encoding's order of
    clients may differ between two documents that hold the same)."""
    r = P.Reader(ydoc.get_update(ydoc.get_state()))  # (no structs: the delete set alone)
    if r.read_var_uint("number of clients") != 0:
        return None
    return {client: sorted(spans) for client, spans in read_delete_set(r).items()}


__all__ = ["LADDER_KEYS", "Captured", "Retention", "bare_meta", "plan", "prune", "to_strip"]
