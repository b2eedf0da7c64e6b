"""The cheap check of a document's log that a room's load makes: the log must hold the
events its head says it holds.

Rows deleted by hand (``delete from log where ... and seq >= 8``), or a restore that
brought back the docs table without the whole log, leave a document whose head (and
snapshot) is past the end of its log. Loaded from the snapshot, it looked sound: new
edits were written on top (events after the gap, a snapshot the log contradicts) and
the damage spread. Only ``palimpsest verify`` noticed. Now the load refuses it
(errors.LogDamaged): what it costs a sound document is at most one read of one event,
the head's, when the load replayed none (a snapshot at the head).

Not looked for here: a hole the load did not read across (events missing below the
snapshot it started from); ``palimpsest verify`` finds those.
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
