"""The cheap check of a document's log that a room's load makes: the log must hold the
events its head says it holds.

Rows deleted by hand (``delete from log where ... and seq >= 8``), or a restore that
brought back the docs table without the whole log, leave a document whose head (and
snapshot) is past the end of its log. Loaded from the snapshot, it looked sound: new
edits were written on top (events after the gap, a snapshot the log contradicts) and
the damage spread. Only ``palimpsest verify`` noticed. Now the load refuses it
(errors.LogDamaged): what it costs a sound document is at most one read of one event,
the head's, when the load replayed none (a snapshot at the head).

Not looked for by the load: a hole it did not read across (events missing below the
snapshot it started from): the document loads, and is sound from that snapshot on.
What needs the missing events is refused when it meets the hole (a version inside it,
blame and diffs, which fold every event: :func:`hole_error`, naming the missing seqs and
what is still served), and ``palimpsest verify`` lists it the same way
(:func:`lost_words`).
"""

from __future__ import annotations

from .errors import LogDamaged, StoreError, StoreUnavailable
from .snapshots import Loaded
from .store.base import EventStore


async def check_loaded(store: EventStore, doc: str, head: int, loaded: Loaded) -> None:
    """Raise LogDamaged when `loaded` (snapshots.load of `doc` at its head) shows that
    the log lacks events: it ends below `head` (the document's head read before the
    load: a sound log holds it, whatever was appended since), it skips seqs after the
    snapshot the load started from, or the snapshot it loaded is past the log's end."""
    check_gapless(doc, loaded)
    if loaded.seq < head and await store.head(doc) > loaded.seq:
        # (read again: a document deleted, or compacted away, during the load is none)
        raise LogDamaged(doc, f"its log ends at {loaded.seq} but its head is {head}")
    if loaded.replayed or loaded.seq == 0:
        return  # the event at loaded.seq was read
    if await _has_event(store, doc, loaded.seq):
        return
    base, _ = await store.compaction_base(doc)  # (now: a compaction may have run since)
    if base >= loaded.seq:
        return  # the compaction base: its events were folded into it
    raise await lacking(store, doc, loaded.seq, base, f"its head is {head}")


async def lacking(store: EventStore, doc: str, seq: int, base: int, what: str) -> LogDamaged:
    """The error for a log found to lack event `seq` (above the compaction base `base`),
    saying where the log ends and `what` seq was ("its head is 11")."""
    return LogDamaged(doc, f"{await _log_end(store, doc, base, seq)} but {what}")


def check_gapless(doc: str, loaded: Loaded) -> None:
    """Raise LogDamaged when the events `loaded` replayed skip seqs: what follows a
    hole builds on items the document never got (a version shows it short)."""
    start = loaded.snapshot.seq if loaded.snapshot is not None else 0
    if loaded.seq - start != loaded.replayed:
        raise LogDamaged(
            doc,
            f"its log skips seqs between {start} and {loaded.seq} (it holds "
            f"{loaded.replayed} of the {loaded.seq - start} events after the snapshot)",
        )


#: events read at a time when looking for the holes of a log (only once one was met)
_PAGE = 2000


async def holes(store: EventStore, doc: str, after: int, upto: int) -> list[tuple[int, int]]:
    """The runs of seqs (first, last) missing from `doc`'s log after `after` up to
    `upto`, one that reaches `upto` included (a log that ends below it). Reads those
    events: for errors, once damage was met."""
    found: list[tuple[int, int]] = []
    seq = after
    while seq < upto:
        page = await store.read(doc, after=seq, upto=upto, limit=_PAGE)
        if not page:
            break
        for ev in page:
            if ev.seq != seq + 1:
                found.append((seq + 1, ev.seq - 1))
            seq = ev.seq
    if seq < upto:
        found.append((seq + 1, upto))
    return found


def _run(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


def lost_words(found: list[tuple[int, int]], snapshots: list[int], head: int) -> tuple[str, bool]:
    """What a log with the holes `found` (first, last missing seq) still serves, given
    the seqs of its valid snapshots and its head; and whether the document itself still
    loads: every hole is below the snapshot its load starts from, and none reaches the
    head (check_loaded refuses those)."""
    lost: list[tuple[int, int]] = []
    for first, last in found:
        after = [s for s in snapshots if s >= last]
        # (a snapshot at the hole's last seq holds that version)
        end = after[0] - 1 if last < head and after else head
        if end < first:
            continue
        if lost and first <= lost[-1][1] + 1:
            lost[-1] = (lost[-1][0], max(end, lost[-1][1]))
        else:
            lost.append((first, end))
    runs = ", ".join(_run(a, b) for a, b in lost)
    many = len(lost) > 1 or lost[0][0] != lost[0][1] if lost else False
    served = found[-1][1] < head and max(snapshots, default=0) >= found[-1][1]
    if served and not lost:
        return (
            "every version is still held by a snapshot or the log; the current document "
            f"(loaded from the snapshot @{max(snapshots)}) is served",
            True,
        )
    if served:
        return (
            f"version{'s' if many else ''} {runs} cannot be rebuilt "
            f"({'they need' if many else 'it needs'} the missing events); the others, the "
            f"current document with them (loaded from the snapshot @{max(snapshots)}), are "
            "served",
            True,
        )
    return (
        f"version{'s' if many else ''} {runs} cannot be rebuilt, the current document with "
        "them (no snapshot after the hole holds it)",
        False,
    )


async def hole_error(store: EventStore, doc: str, what: str) -> LogDamaged | None:
    """The error for `what` ("version 6 was asked for"), which needs events missing from
    `doc`'s log: names the missing seqs and what is still served. None when its log
    has no hole after its compaction base."""
    info = await store.doc_info(doc)
    if info is None:
        return None
    found = await holes(store, doc, info.base_seq, info.head)
    if not found:
        return None
    snaps = sorted(s.seq for s in await store.snapshots(doc) if s.valid)
    runs = ", ".join(_run(a, b) for a, b in found)
    many = len(found) > 1 or found[0][0] != found[0][1]
    lost, served = lost_words(found, snaps, info.head)
    return LogDamaged(
        doc, f"its log lacks event{'s' if many else ''} {runs} ({what}): {lost}", served=served
    )


async def _has_event(store: EventStore, doc: str, seq: int) -> bool:
    try:
        return bool(await store.read(doc, after=seq - 1, upto=seq))
    except StoreUnavailable:
        raise
    except StoreError:
        # a damaged segment holds it (its events are there, unreadable): that is told
        # where they are read, and a load from a snapshot past it does not need them
        return True


async def _log_end(store: EventStore, doc: str, base: int, upto: int) -> str:
    """Where the log ends (read only once the head's event was found missing)."""
    try:
        events = await store.read(doc, after=base, upto=upto)
    except StoreUnavailable:
        raise
    except StoreError:
        return f"its log lacks event {upto}"
    return f"its log ends at {events[-1].seq if events else base}"
