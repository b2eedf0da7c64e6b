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

Never dropped: the compaction base (``meta.base``, at ``DocInfo.base_seq``) and anything
before it (compact decides about those), and damaged snapshots (``palimpsest verify``
reports them; an operator decides). Pruning runs after a snapshot is written, in the
background task that wrote it, never on the path of an edit (SnapshotPolicy), and on
demand (:func:`prune`: the bench, a database written before retention existed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .store.base import EventStore, SnapshotInfo

log = logging.getLogger("palimpsest.retention")


@dataclass(frozen=True)
class Retention:
    #: the newest valid snapshots always kept
    keep_recent: int = 3
    #: at most this many events between two kept snapshots further back (measured on
    #: automerge-paper: see bench/snapshot_bench.py and docs/history.md)
    max_gap: int = 4000
    #: bytes (as stored) of the snapshots older than the newest few; 0: no bound
    max_bytes: int = 0

    def __post_init__(self) -> None:
        if self.keep_recent < 1:
            raise ValueError("keep_recent must be at least 1: a room loads the newest snapshot")
        if self.max_gap < 1:
            raise ValueError("max_gap must be at least 1")


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
    kept = _ladder(older, start, recent[0].seq, gap)
    while rules.max_bytes and sum(s.size for s in kept) > rules.max_bytes and len(kept) > 0:
        gap *= 2
        kept = _ladder(older, start, recent[0].seq, gap)
        if gap > recent[0].seq:
            kept = []
    below = {s.seq for s in valid if s.seq < start}  # before the base: not the ladder's
    keep = {s.seq for s in kept} | {s.seq for s in recent} | {s.seq for s in pinned} | below
    return [s.seq for s in valid if s.seq not in keep]


async def prune(store: EventStore, doc: str, rules: Retention) -> list[int]:
    """Drop what :func:`plan` says from the store; returns the seqs dropped."""
    info = await store.doc_info(doc)
    drop = plan(await store.snapshots(doc), info.base_seq if info else 0, rules)
    if drop:
        await store.delete_snapshots(doc, drop)
        log.debug("snapshots of %s pruned: %d dropped", doc, len(drop))
    return drop


__all__ = ["Retention", "plan", "prune"]
