"""Maintenance of stored documents, on the store directly: verify a document's log
against its snapshots, fold its oldest events into a base snapshot (compact), append a
Yjs update or a text file as an event (import).

The commands ``palimpsest verify``, ``compact`` and ``import`` call these and only add
arguments, confirmation and output; docs/operations.md says when they are safe with a
server running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Text, XmlFragment, get_state

from . import erasure, subdoc_options, undo
from . import protocol as P
from .errors import FATAL, DocumentBroken, PalimpsestError, StoreError, TooDeep, panicked
from .history.render import TEXT, XML, infer_root_types, render, root_names, xml_tree
from .log_damage import lost_words
from .names import validate_doc_name
from .ownership import imported_clients
from .readable import tree_text
from .room import IMPORT_KIND
from .settings import Settings
from .snapshots import Fixes, Loaded, TooBroken, chain, load, new_doc
from .store import EventStore
from .store.base import (
    BASE_TS,
    FIRST_TS,
    MAX_AHEAD_MS,
    DocInfo,
    Event,
    MetaRewrite,
    NewEvent,
    Restamped,
    now_ms,
)
from .updates import decode_update_meta, unsupported
from .util import LocalTimeError, parse_iso, with_local_offset

#: events read per query while folding a log
PAGE = 5000
#: in a compaction base's meta: written with the content of deleted items removed
PURGED = "purged"


class MaintenanceError(PalimpsestError):
    """A maintenance operation refused: what was asked and why it cannot be done."""

    close_code = 4400
    http_status = 400


class NoSuchVersion(MaintenanceError):
    """A compaction's `before` names no version of the document: past its head, or no
    tag or time of that name (404 over HTTP)."""

    http_status = 404


class PinnedVersion(MaintenanceError):
    """A compaction's `before` is past a named version, or ambiguous (409 over HTTP)."""

    http_status = 409


async def require(store: EventStore, doc: str) -> DocInfo:
    """The document's info; MaintenanceError when the store has no such document."""
    validate_doc_name(doc)
    info = await store.doc_info(doc)
    if info is None or (info.head == 0 and not await store.snapshots(doc)):
        raise MaintenanceError(f"no document named {doc!r} in this store")
    return info


async def events(store: EventStore, doc: str, after: int, upto: int) -> AsyncIterator[Event]:
    """Events after < seq <= upto, read a page at a time."""
    while after < upto:
        page = await store.read(doc, after=after, upto=upto, limit=PAGE)
        if not page:
            return
        for ev in page:
            yield ev
        after = page[-1].seq


def root_types(ydoc: Doc[Any]) -> dict[str, str]:
    return {n: t or TEXT for n, t in infer_root_types(ydoc, root_names(ydoc)).items()}


def rendered(ydoc: Doc[Any], readable: bool = False) -> dict[str, dict[str, Any]]:
    """Every root as {type, value}, on a scratch copy (fixing root types is harmless there).
    `readable`: an XML root's value is its readable text (palimpsest.readable: `export
    --format text`), not its XML string; one nested too deep for that (TooDeep) keeps
    its XML string, which has no such limit."""
    scratch: Doc[Any] = Doc()
    scratch.apply_update(ydoc.get_update())
    roots = render(scratch, root_types(ydoc))
    if readable:
        for name, root in roots.items():
            if root["type"] == XML:
                with contextlib.suppress(TooDeep):
                    root["value"] = tree_text(xml_tree(scratch.get(name, type=XmlFragment)))
    return roots


# --- verify -----------------------------------------------------------------------------


async def verify_doc(
    store: EventStore, doc: str, on_event: Callable[[], None] | None = None
) -> list[str]:
    """Problems found in one document (empty when it is sound): the log folded from its
    start (or compaction base) must equal every valid snapshot, seqs must be gap-free,
    every event must apply, checksums must hold and tags must point into the log.
    `on_event` is called once per event folded (for a progress bar)."""
    problems: list[str] = []
    info = await store.doc_info(doc)
    if info is None:
        return [f"{doc}: no document of that name"]
    snaps = sorted(await store.snapshots(doc), key=lambda s: s.seq)
    for s in snaps:
        if not s.valid:
            problems.append(f"{doc}: snapshot @{s.seq} is damaged ({s.damage or 'checksum'})")
    damaged = await store.segment_damage(doc)
    if damaged:
        # its events cannot be read, so the log cannot be folded past it: say so and stop
        return [*problems, *(f"{doc}: {d}; its events cannot be read" for d in damaged)]
    start = 0
    base_state: bytes | None = None
    if info.base_seq > 0:
        base = await store.latest_snapshot(doc, at_most=info.base_seq)
        if base is None or base.seq != info.base_seq:
            problems.append(f"{doc}: the compaction base snapshot @{info.base_seq} is missing "
                            "or damaged: the document cannot be rebuilt")  # fmt: skip
            return problems
        try:
            new_doc(doc).apply_update(base.state)
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            return [*problems, f"{doc}: the base snapshot @{base.seq} does not apply: {e}"]
        start, base_state = base.seq, base.state

    #: runs of seqs missing from the log (first, last), and whether the fold lacks the
    #: events of one (it is then not compared with the snapshots after it, which the
    #: log no longer backs, but taken up again from the first of them, as a load does)
    holes: list[tuple[int, int]] = []
    short = False
    fold: Doc[Any]

    async def check(at: int) -> None:
        nonlocal fold, short
        snap = await store.latest_snapshot(doc, at_most=at)
        if snap is None or snap.seq != at:
            return  # damaged in between: already reported
        links = await chain(store, snap)
        if links is None:
            problems.append(f"{doc}: snapshot @{at} is a difference from @{snap.delta_of}, "
                            "which is missing or damaged")  # fmt: skip
            return
        if not short:
            problems.extend(_compare(doc, at, fold, [s.state for s in links]))
            return
        again = new_doc(doc)
        try:
            for link in links:
                again.apply_update(link.state)
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            problems.append(f"{doc}: snapshot @{at} does not decode: {e}")
            return
        fold, short = again, False

    # An event that makes yrs panic leaves the fold broken (every later operation on it
    # panics, or renders what it does not hold): it is reported, and the fold starts
    # again with it as a load applies it (snapshots.load: as merge_updates rewrites it,
    # or, when that breaks the document too, left out), so that the snapshots after it
    # are compared with what the server serves.
    fixes = Fixes()
    told: dict[int, str] = {}
    before = list(problems)
    reached = start
    while True:
        fold = new_doc(doc)
        if base_state is not None:
            fold.apply_update(base_state)
        seq = start
        pending = [s for s in snaps if s.valid and s.seq > seq]
        problems[:] = [*before, *told.values()]
        holes.clear()
        short = again = False
        try:
            async for ev in events(store, doc, seq, info.head):
                while pending and pending[0].seq <= seq:
                    await check(pending.pop(0).seq)
                if ev.seq != seq + 1:
                    holes.append((seq + 1, ev.seq - 1))
                    short = True
                    # the snapshots inside the hole: the last one, at its last seq,
                    # takes the fold up again (a version the log cannot give)
                    while pending and pending[0].seq < ev.seq:
                        inside = pending.pop(0).seq
                        if inside == ev.seq - 1:
                            await check(inside)
                update = fixes.update_of(ev)
                try:
                    if update is not None:
                        fold.apply_update(update)
                except FATAL:
                    raise
                except BaseException as e:  # pyo3 PanicException is one
                    what = f"{doc}: event {ev.seq} ({ev.kind} by {ev.actor}) does not apply: {e}"
                    if not panicked(e):
                        problems.append(what)
                    else:
                        try:
                            fix = fixes.note(DocumentBroken(ev, e))
                        except TooBroken as too:
                            return [*problems, f"{what}; {too}: no load gets past them"]
                        told[ev.seq] = what + (
                            "; it breaks the document: loads apply it as yrs's merge_updates "
                            "rewrites it" if fix is not None else
                            "; it breaks the document: loads leave it out"
                        )  # fmt: skip
                        again = True
                        break
                seq = ev.seq
                if on_event is not None and seq > reached:
                    reached = seq
                    on_event()
        except StoreError as e:
            return [*problems, f"{doc}: the log cannot be read after seq {seq}: {e}"]
        if not again:
            break
    while pending and pending[0].seq <= seq:
        await check(pending.pop(0).seq)
    if holes:
        ends = [(seq + 1, info.head)] if seq < info.head else []
        lost, _ = lost_words(holes + ends, [s.seq for s in snaps if s.valid], info.head)
        runs = ", ".join(f"{a}..{b}" for a, b in holes)
        problems.append(f"{doc}: events {runs} are missing from the log: {lost}")
    if seq != info.head:
        problems.append(f"{doc}: the log ends at {seq} but the head is {info.head}")
    if pending:  # a live server may have appended and checkpointed since we started
        now = await store.head(doc)
        for s in pending:
            if s.seq > now:
                problems.append(f"{doc}: snapshot @{s.seq} is beyond the end of the log ({now})")
    for t in await store.tags(doc):
        if not info.base_seq <= t.seq <= info.head:
            problems.append(f"{doc}: tag {t.name!r} @{t.seq} is outside the log "
                            f"({info.base_seq}..{info.head})")  # fmt: skip
    return problems


def _compare(doc: str, seq: int, fold: Doc[Any], states: list[bytes]) -> list[str]:
    snap = new_doc(doc)
    try:
        for state in states:
            snap.apply_update(state)
    except FATAL:
        raise
    except BaseException as e:  # pyo3 PanicException is one
        return [f"{doc}: snapshot @{seq} does not decode: {e}"]
    # compare decoded state vectors (their byte order differs) and rendered content
    sv_fold = P.decode_state_vector(fold.get_state())
    sv_snap = P.decode_state_vector(snap.get_state())
    out = []
    if sv_fold != sv_snap:
        out.append(f"{doc}: snapshot @{seq} has state vector {sv_snap}, the log gives {sv_fold}")
    folded = fold.get_update()
    if folded == snap.get_update() and root_names(fold) == root_names(snap):
        # the same encoding: the same items and deletions, so the same content (the
        # usual case, where the snapshot was written by this engine from this log);
        # rendering both, on a copy of each document, was most of the comparison's time
        return out
    types = root_types(fold)
    a: Doc[Any] = Doc()
    a.apply_update(folded)
    # `snap` is a scratch document already: rendering it (which fixes its root types)
    # harms nothing
    names = root_names(snap)
    try:
        differs = render(a, types) != render(snap, types)
    except TooDeep:
        # values nested deeper than the history renders: not compared by content (the
        # state vectors, compared above, still are); not a problem of the snapshot
        differs = False
    if differs or root_names(fold) != names:
        out.append(f"{doc}: snapshot @{seq} renders differently from the log folded to {seq}")
    return out


# --- compact ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactPlan:
    """What compacting `doc` up to `before` would fold: events base_seq+1..before."""

    doc: str
    before: int
    base_seq: int

    @property
    def events(self) -> int:
        return max(0, self.before - self.base_seq)


async def plan_compact(
    store: EventStore, doc: str, before: str | int, *, local: bool = False
) -> CompactPlan:
    """Where a compaction of `doc` would end: `before` is a seq, a tag name or an ISO-8601
    time (the last seq at or before it); one without an offset is UTC (the HTTP API's
    rule), or with `local` (the CLI's) this machine's local time. Refused past the
    head, or past a named version (it would stop rendering)."""

    def parse_time(text: str) -> int:
        try:
            return parse_iso(with_local_offset(text) if local else text)
        except LocalTimeError as e:  # (a daylight-saving change skipped or repeated it)
            raise MaintenanceError(str(e)) from None

    info = await require(store, doc)
    raw = str(before).strip()
    # (tag names compared in NFC, as the HTTP API's: History.resolve)
    if not raw.isdigit():
        raw = unicodedata.normalize("NFC", raw)
    tags = {unicodedata.normalize("NFC", t.name): t.seq for t in await store.tags(doc)}
    if raw.isdigit():
        seq = int(raw)
    elif raw == "head" and raw not in tags:
        seq = info.head
    elif raw in tags:
        seq = tags[raw]
        try:
            at = parse_time(raw)
        except Exception:
            pass
        else:
            raise PinnedVersion(
                f"--before {raw!r} is both a named version (seq {seq}) and a time (seq "
                f"{await store.seq_at(doc, at)}): give the seq you mean"
            )
    else:
        try:
            ts = parse_time(raw)
        except MaintenanceError:  # a time, but no local time or two here: said so
            raise
        except Exception as e:
            raise NoSuchVersion(
                f"--before is a seq, a tag name or an ISO-8601 time: {doc!r} has no tag "
                f"{raw!r}, and it is not a time"
            ) from e
        seq = await store.seq_at(doc, ts)
    if seq > info.head:
        raise NoSuchVersion(f"{doc!r} has no seq {seq}: its head is {info.head}")
    pinned = [t for t in await store.tags(doc) if t.seq < seq]
    if pinned and seq > info.base_seq:
        oldest = min(pinned, key=lambda t: t.seq)
        raise PinnedVersion(
            f"named version {oldest.name!r} is at seq {oldest.seq}, before {seq}: compacting "
            f"would make it unreadable. Compact with --before {oldest.seq} at most, or delete "
            "the tag first"
        )
    return CompactPlan(doc, seq, info.base_seq)


async def compact_doc(
    store: EventStore, plan: CompactPlan, settings: Settings, *, purge_deleted: bool = False
) -> int:
    """Fold events up to plan.before into a base snapshot and delete them; returns how
    many were removed. Refused when the fold does not reach it cleanly. The base
    snapshot carries the undo stacks of the folded events and the owners of their Yjs
    client ids, as any snapshot does, so that their steps stay undoable and their ids
    stay their writers' (a second write: see CompactedWithoutStacks).

    `purge_deleted`: the base is written with the content of its deleted items removed
    (server.erasure), and the snapshots after it are folded again from it and replaced
    in the same transaction; a plan at the current base (no event to fold) purges the
    base as it stands."""
    if purge_deleted and plan.before < plan.base_seq:
        plan = dataclasses.replace(plan, before=plan.base_seq)  # the base as it stands
    loaded, folded = await undo.fold(store, plan.doc, plan.before, settings)
    if loaded.seq != plan.before or loaded.failed:
        raise MaintenanceError(
            f"folding {plan.doc!r} to {plan.before} reached {loaded.seq} with {loaded.failed} "
            "events that do not apply: run `palimpsest verify` first"
        )
    state = subdoc_options.restored(loaded.doc, loaded.doc.get_update())
    if purge_deleted:
        state = erasure.purge_deleted(state)
    # the base version's time, which its event took with it: `?at=` before it is
    # compacted away, at or after it is the base (history.service.seq_at)
    last = await store.read(plan.doc, after=plan.before - 1, upto=plan.before)
    old_base = await store.latest_snapshot(plan.doc, plan.before) if not last else None
    # and the first event's, before which the document was empty: `?at=` before it is
    # seq 0 (it said compacted away), from the log or from the base before this one
    first = await store.read(plan.doc, after=0, upto=1)
    if first:
        first_ts: Any = first[0].ts
    else:
        info = await store.doc_info(plan.doc)
        below = await store.latest_snapshot(plan.doc, info.base_seq) if info else None
        base_now = below is not None and info is not None and 0 < below.seq == info.base_seq
        first_ts = below.meta.get(FIRST_TS) if below is not None and base_now else None
    if purge_deleted:
        above = await erasure.refold_above(store, plan.doc, plan.before, state)
        removed = await store.compact(plan.doc, plan.before, state, above=above)
    else:
        await _whole_above(store, plan.doc, plan.before)
        removed = await store.compact(plan.doc, plan.before, state)
    try:
        meta: dict[str, Any] = {"base": True, **folded}  # undo stacks and owners
        if purge_deleted:
            meta[PURGED] = True
        if last:
            meta[BASE_TS] = last[0].ts
        elif old_base is not None and BASE_TS in old_base.meta:  # purging the base again
            meta[BASE_TS] = old_base.meta[BASE_TS]
        if isinstance(first_ts, int) and not isinstance(first_ts, bool):
            meta[FIRST_TS] = first_ts
        await store.put_snapshot(plan.doc, plan.before, state, meta)
    except StoreError as e:
        raise CompactedWithoutStacks(removed, e) from e
    return removed


async def _whole_above(store: EventStore, doc: str, before: int) -> None:
    """Store whole again the ladder rungs after `before` that are differences from a
    snapshot compaction is about to drop (their chain would break)."""
    infos = {s.seq: s for s in await store.snapshots(doc)}
    for s in sorted(infos.values(), key=lambda s: s.seq):
        if s.seq <= before or not s.delta_of:
            continue
        below, crosses = s.delta_of, False
        while below:
            if below < before:
                crosses = True
                break
            link = infos.get(below)
            below = link.delta_of if link is not None else 0
        if not crosses:
            continue
        loaded = await load(store, doc, upto=s.seq)
        snap = await store.latest_snapshot(doc, s.seq)
        if loaded.seq == s.seq and snap is not None and snap.seq == s.seq:
            meta = {k: v for k, v in snap.meta.items() if k != "delta_of"}
            state = subdoc_options.restored(loaded.doc, loaded.doc.get_update())
            await store.put_snapshot(doc, s.seq, state, meta)
            infos[s.seq] = dataclasses.replace(s, delta_of=0)


class CompactedWithoutStacks(StoreError):
    """The events were folded, but the base snapshot with their undo stacks and the
    owners of their Yjs client ids was not written: those steps are no longer undoable,
    and those client ids belong to nobody (anyone may write under them)."""

    def __init__(self, removed: int, cause: StoreError) -> None:
        super().__init__(
            f"the undo stacks and client-id owners of the folded events were not kept: {cause}"
        )
        self.removed = removed


# --- restamp ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestampPlan:
    """The events of `doc` stamped ahead of `now` (seqs first..last, ts old_first..
    old_last) and the ts they get: the first one the ts of the last event before them
    plus 1 ms (`anchor` + 1), the others as far after it as they were after the first,
    and none later than `now` (they stop there). `anchor`: that event's ts; the
    compaction base's time when the run starts right after it; when neither is known
    (the document's first events, or a base without its time), `now` minus the run's
    span minus 1 ms, so that the run ends at `now`. `events` 0: nothing to restamp (the
    last event is at most MAX_AHEAD_MS ahead: the event clock's own lead)."""

    doc: str
    now: int
    events: int = 0
    first: int = 0
    last: int = 0
    old_first: int = 0
    old_last: int = 0
    anchor: int = 0

    def stamp(self, ts: int) -> int:
        """The new ts of an old one after `now` (events, and the tags and snapshots
        stamped in that span: a tag keeps its ts at or after its version's events')."""
        return min(self.now, self.anchor + 1 + max(0, ts - self.old_first))

    @property
    def new_first(self) -> int:
        return self.stamp(self.old_first)

    @property
    def new_last(self) -> int:
        return self.stamp(self.old_last)


async def plan_restamp(store: EventStore, doc: str, now: int | None = None) -> RestampPlan:
    """What restamping `doc` at `now` (default: this machine's clock) would change."""
    info = await require(store, doc)
    now = now_ms() if now is None else now
    last = await store.read(doc, after=info.head - 1, upto=info.head) if info.head else []
    if not last or last[0].ts <= now + MAX_AHEAD_MS:
        return RestampPlan(doc, now)
    # the run: the events after the last one at or before now (ts never go back in a
    # log; in one written before 6 Dec 2026 that they may, store.restamp still moves
    # every ts after now, and those before the run's first keep theirs)
    first = max(await store.seq_at(doc, now), info.base_seq) + 1
    [head] = last
    run = await store.read(doc, after=first - 1, upto=first)
    old_first = run[0].ts if run else head.ts
    anchor: int | None = None
    if first - 1 > info.base_seq:
        before = await store.read(doc, after=first - 2, upto=first - 1)
        anchor = before[0].ts if before else None
    elif info.base_seq > 0:
        base = await store.latest_snapshot(doc, at_most=info.base_seq)
        ts = base.meta.get(BASE_TS) if base is not None and base.seq == info.base_seq else None
        anchor = ts if isinstance(ts, int) and not isinstance(ts, bool) else None
    if anchor is None or anchor > now:
        anchor = max(0, now - (head.ts - old_first) - 1)
    return RestampPlan(doc, now, head.seq - first + 1, first, head.seq, old_first, head.ts,
                       anchor)  # fmt: skip


def restamped_meta(plan: RestampPlan) -> MetaRewrite:
    """A snapshot's meta with the times it keeps after plan.now restamped: a compaction
    base's time (BASE_TS), and each actor's last change in the undo stacks (their idle
    ends) and each open step's (its session's pause); None when it keeps none. Other
    extensions' entries are left as they are."""

    def late(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > plan.now

    def restamped_stacks(st: dict[str, Any]) -> dict[str, Any]:
        """An actor's stacks with their last change and each open step's restamped
        (the same dict when neither is late)."""
        out = st
        if late(st.get("last_ts")):
            out = {**out, "last_ts": plan.stamp(st["last_ts"])}
        steps = st.get("undo")
        if isinstance(steps, list) and any(
            isinstance(s, dict) and late(s.get("last_ts")) for s in steps
        ):
            out = {
                **out,
                "undo": [
                    {**s, "last_ts": plan.stamp(s["last_ts"])}
                    if isinstance(s, dict) and late(s.get("last_ts"))
                    else s
                    for s in steps
                ],
            }
        return out

    def rewrite(meta: dict[str, Any]) -> dict[str, Any] | None:
        out = dict(meta)
        for key in (BASE_TS, FIRST_TS):
            if late(meta.get(key)):
                out[key] = plan.stamp(meta[key])
        stacks = meta.get(undo.META_KEY)
        actors = stacks.get("actors") if isinstance(stacks, dict) else None
        if isinstance(stacks, dict) and isinstance(actors, dict):
            moved = {}
            for a, st in actors.items():
                new = restamped_stacks(st) if isinstance(st, dict) else st
                if new is not st:
                    moved[a] = new
            if moved:
                out[undo.META_KEY] = {**stacks, "actors": {**actors, **moved}}
        return out if out != meta else None

    return rewrite


async def restamp_doc(store: EventStore, plan: RestampPlan) -> Restamped:
    """Restamp as planned, in one transaction (EventStore.restamp): the events, tags and
    snapshots stamped after plan.now, and the times snapshot metas keep. For a store no
    server serves (``palimpsest restamp`` refuses otherwise)."""
    if not plan.events:
        return Restamped()
    return await store.restamp(plan.doc, plan.now, plan.stamp, restamped_meta(plan))


# --- import -----------------------------------------------------------------------------


def as_update(data: bytes) -> bytes | None:
    """data if it is a Yjs update that applies to an empty document, else None. One that
    applies but is refused over the websocket (a client id past 2^53 - 1, a clock past
    2^32 - 1, a struct of length 0: updates.decode_update_meta) is refused here too."""
    if not data or data.startswith(b"\xef\xbb\xbf"):
        return None
    try:
        P.decode_state_vector(get_state(data))
        probe: Doc[Any] = Doc()
        probe.apply_update(data)
    except FATAL:
        raise
    except BaseException:  # pyo3 PanicException is one
        why = unsupported(data)  # an update, but not one the server can hold
        if why is not None:
            raise MaintenanceError(f"the update cannot be imported: {why}") from None
        return None
    try:
        decode_update_meta(data)
    except PalimpsestError as e:
        raise MaintenanceError(f"the update cannot be imported: {e}") from e
    return data


async def import_data(
    store: EventStore,
    doc: str,
    data: bytes,
    *,
    user: str,
    source: str,
    root: str = "content",
    as_text: bool = False,
    ts: int | None = None,
    loaded: Loaded | None = None,
    item: int | None = None,
) -> Event:
    """Append `data` to `doc` as one event of kind ``import``: a Yjs v1 update that
    applies to the document, or (as_text, or when it is not an update) UTF-8 text that
    becomes the `root` text of a document with no events yet. The event is `user`'s
    (blame, undo), but the Yjs client ids it carries stay unclaimed
    (ownership.imported_clients). On the store directly: a running server that has
    the document open takes it at its next commit; through the live room (its clients
    get it at once) is Room.import_update, POST /api/docs/{doc}/updates. `ts`: the
    event's time (default now); `loaded`: the document as loaded to its head, when the
    caller keeps it (an import of many updates: bulk_import); it is advanced in place;
    `item`: the number of the source's row it is (bulk_import: where a run interrupted
    goes on)."""
    validate_doc_name(doc)
    update = None if as_text else as_update(data)
    head = await store.head(doc)
    if loaded is None:
        loaded = await load(store, doc)
    meta: dict[str, Any] = {"source": source}
    if item is not None:
        meta["item"] = item
    if update is None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise MaintenanceError(f"{source} is neither a Yjs update nor UTF-8 text ({e})") from e
        if head > 0:
            raise MaintenanceError(
                f"{doc!r} already has {head} events: plain text is imported only as the "
                "first event (import a Yjs update instead, or restore through the history API)"
            )
        ydoc = loaded.doc
        before = ydoc.get_state()
        ydoc.get(root, type=Text).insert(0, text)
        update = ydoc.get_update(before)
        meta.update(format="text", root=root, chars=len(text))
    else:
        try:
            loaded.doc.apply_update(update)
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            raise MaintenanceError(f"the update does not apply to {doc!r}: {e}") from e
        meta.update(format="update")
    relays = imported_clients(decode_update_meta(update), loaded.doc.client_id)
    if relays:  # written, not claimed (ownership.imported_clients)
        meta["relays"] = relays
    [[ev]] = await store.append([(doc, [NewEvent(user, IMPORT_KIND, update, meta, ts)])])
    return ev


__all__ = [
    "PURGED",
    "CompactPlan",
    "RestampPlan",
    "CompactedWithoutStacks",
    "MaintenanceError",
    "as_update",
    "compact_doc",
    "events",
    "import_data",
    "plan_compact",
    "plan_restamp",
    "rendered",
    "require",
    "restamp_doc",
    "restamped_meta",
    "root_types",
    "verify_doc",
]
