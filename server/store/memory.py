"""An in-process store: fast, nothing survives the process. For tests and experiments."""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import StoreError, StoreUnavailable
from .actor_rename import kind_clash, taken
from .base import (
    DELETED,
    NO_BASE,
    ActorRenamed,
    BaseMark,
    DocInfo,
    Event,
    EventStore,
    MetaRewrite,
    NewEvent,
    Restamped,
    Snapshot,
    SnapshotInfo,
    Stamp,
    Tag,
    TagMove,
    check_replacing,
    checksum,
    derived_from_row,
    exact_of,
    floors_of,
    generations_of,
    now_ms,
    renamed_snapshot_row,
    restamped_snapshot_row,
    rising,
    snapshot_from_row,
    snapshot_info,
    snapshot_row,
)
from .cursors import MemoryCursors, WebhookCursors
from .doc_locks import DocLocks, MemoryDocLocks
from .doc_pages import DocPage
from .revocations import MemoryRevocations, Revocations
from .segments import SEGMENT_EVENTS

#: a stored snapshot as the other stores keep it: ts, state column, checksum, meta column
_SnapRow = tuple[int, bytes, str, str]


def _snap_row(state: bytes, meta: dict[str, Any], floor: int = 0) -> _SnapRow:
    """`floor`: the document's last event's ts, which the clock is raised to (after it
    stepped back, as an event's: EventStore.append)."""
    return max(now_ms(), floor), *snapshot_row(state, meta)


class MemoryStore(EventStore):
    name = "memory"

    def __init__(self) -> None:
        #: each memory store is a store of its own (EventStore.server_salt)
        self.server_salt = os.urandom(16)
        self._events: dict[str, list[Event]] = {}
        self._heads: dict[str, int] = {}
        #: per document, a number of its own (DocInfo.created_ts): a new one each time
        #: the name is written after a deletion
        self._created: dict[str, int] = {}
        self._generations = itertools.count(1)
        self._base: dict[str, int] = {}
        self._snaps: dict[str, dict[int, _SnapRow]] = {}
        #: doc -> kind -> (seq, data, checksum)
        self._derived: dict[str, dict[str, tuple[int, bytes, str]]] = {}
        self._tags: dict[str, dict[str, Tag]] = {}
        self._tag_moves: dict[str, list[TagMove]] = {}
        self._tombstones: dict[str, bytes] = {}
        #: the deletions, in pos order (EventStore.deletions)
        self._deletions: list[Event] = []
        self._cursors = MemoryCursors()
        self._revocations = MemoryRevocations()
        self._doc_locks = MemoryDocLocks()
        self._pos = 0
        self._lock = asyncio.Lock()
        self._up = False
        #: set to simulate an outage in tests of the layers above
        self.down = False

    def _check(self) -> None:
        if not self._up or self.down:
            raise StoreUnavailable("the memory store is down")

    async def start(self) -> None:
        self._lock = asyncio.Lock()  # of this start's event loop (a lock binds to one)
        self._up = True

    async def stop(self) -> None:
        self._up = False

    async def ping(self) -> None:
        self._check()

    async def check_writable(self) -> None:
        self._check()

    async def schema_version(self) -> int:
        self._check()
        return 1  # nothing persists: always this code's

    async def identity(self) -> str | None:
        return f"memory:{id(self)}"  # the processes sharing it: this one's backends

    async def append(
        self,
        batches: Sequence[tuple[str, Sequence[NewEvent]]],
        floors: Sequence[int] | None = None,
        generations: Sequence[int | None] | None = None,
        exact: Sequence[bool] | None = None,
    ) -> list[list[Event]]:
        self._check()
        least = floors_of(batches, floors)
        gens = generations_of(batches, generations)
        exacts = exact_of(batches, exact)
        async with self._lock:
            # each floor against the head before this append (EventStore.append), each
            # generation against the document's then
            before = {doc: self._heads.get(doc, 0) for doc, _ in batches}
            made = {doc: self._created.get(doc) if doc in self._heads else None
                    for doc, _ in batches}  # fmt: skip
            out: list[list[Event]] = []
            for (doc, evs), floor, gen, ex in zip(batches, least, gens, exacts, strict=True):
                if (
                    before[doc] < floor
                    or (ex and before[doc] != floor)
                    or (gen is not None and made[doc] != gen)
                ):
                    out.append([])  # the log was deleted under its writer
                    continue
                head = self._heads.get(doc, 0)
                last = self._events.get(doc)
                top = last[-1].ts if last else 0
                stored = []
                for ev in evs:
                    head += 1
                    self._pos += 1
                    top = max(top, ev.ts)  # never before the previous event's
                    stored.append(
                        Event(doc, head, top, ev.actor, ev.kind, ev.update, ev.meta, self._pos)
                    )
                if stored:
                    if doc not in self._heads:
                        self._created[doc] = next(self._generations)
                    self._events.setdefault(doc, []).extend(stored)
                    self._heads[doc] = head
                out.append(stored)
            return out

    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[Event]:
        self._check()
        evs = [
            e
            for e in self._events.get(doc, [])
            if e.seq > after and (upto is None or e.seq <= upto)
        ]
        return evs[:limit] if limit is not None else evs

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Event]:
        self._check()
        # each document's events are in pos order already: merge them
        merged = heapq.merge(
            *([e for e in evs if e.pos > after] for evs in self._events.values()),
            key=lambda e: e.pos,
        )
        return list(itertools.islice(merged, limit))

    async def last_position(self) -> int:
        self._check()
        return self._pos

    async def deletions(
        self, after: int = 0, upto: int | None = None, limit: int = 1000
    ) -> list[Event]:
        self._check()
        got = [e for e in self._deletions if e.pos > after and (upto is None or e.pos <= upto)]
        return got[:limit]

    # nothing to seal: this store keeps events as objects, and nothing persists
    async def seal(self, doc: str, *, run: int = SEGMENT_EVENTS, rest: int = 0) -> int:
        self._check()
        return 0

    async def seal_due(self, *, run: int = SEGMENT_EVENTS) -> int:
        self._check()
        return 0

    async def segment_damage(self, doc: str) -> list[str]:
        self._check()
        return []

    async def head(self, doc: str) -> int:
        self._check()
        return self._heads.get(doc, 0)

    async def query(
        self,
        doc: str,
        *,
        after: int = 0,
        limit: int = 100,
        actor: str | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        kinds: Sequence[str] | None = None,
        before: int | None = None,
        desc: bool = False,
    ) -> list[Event]:
        self._check()
        out = []
        evs = self._events.get(doc, [])
        for e in reversed(evs) if desc else evs:
            if e.seq <= after or (actor is not None and e.actor != actor):
                continue
            if before is not None and e.seq >= before:
                continue
            if since_ts is not None and e.ts < since_ts:
                continue
            if until_ts is not None and e.ts > until_ts:
                continue
            if kinds and e.kind not in kinds:
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out

    async def seq_at(self, doc: str, ts: int) -> int:
        self._check()
        evs = self._events.get(doc, [])
        found = next((e.seq - 1 for e in evs if e.ts > ts), self._heads.get(doc, 0))
        base = self._base.get(doc, 0)
        if found > base:
            return found
        snap = self._snaps.get(doc, {}).get(base)
        return base if base and snap is not None and snap[0] <= ts else 0

    def _info(self, doc: str) -> DocInfo:
        evs = self._events.get(doc, [])
        return DocInfo(
            doc,
            self._heads[doc],
            max((e.ts for e in evs), default=None),
            sum(len(e.update) for e in evs),
            self._base.get(doc, 0),
            self._created.get(doc),
            self._created.get(doc),  # (a counter: also its generation)
        )

    async def list_docs(self) -> list[DocInfo]:
        self._check()
        return [self._info(d) for d in sorted(self._heads)]

    async def doc_count(self) -> int:
        self._check()
        return len(self._heads)

    async def doc_page(self, page: DocPage) -> list[DocInfo]:
        self._check()
        infos = [self._info(d) for d in self._heads]
        found = [i for i in infos if page.holds(i.doc, i.updated_ts or 0)]
        found.sort(key=lambda i: page.sort_key(i.doc, i.updated_ts or 0))
        return found[: page.limit]

    async def doc_info(self, doc: str) -> DocInfo | None:
        self._check()
        return self._info(doc) if doc in self._heads else None

    async def delete_doc(self, doc: str, tombstone: bytes = b"", *, by: str = "") -> bool:
        self._check()
        existed = doc in self._heads
        if existed:
            self._pos += 1
            self._deletions.append(
                Event(doc, self._heads[doc], now_ms(), by, DELETED, b"", {}, self._pos)
            )
        for d in (self._events, self._heads, self._base, self._snaps, self._tags, self._derived,
                  self._created, self._tag_moves):  # fmt: skip
            d.pop(doc, None)
        if existed:
            self._tombstones[doc] = tombstone
        return existed

    async def rename_actor(self, old: str, new: str, rewrite: MetaRewrite) -> ActorRenamed:
        self._check()
        async with self._lock:
            events = [e for evs in self._events.values() for e in evs]
            tags = [t for ts in self._tags.values() for t in ts.values()]
            if any(e.actor == new for e in events) or any(t.actor == new for t in tags):
                old_left = any(e.actor == old for e in events) or any(t.actor == old for t in tags)
                raise taken(new, old_left)
            clash = next((e.doc for e in events if e.kind == old), None)
            if clash is not None:
                raise kind_clash(old, clash)
            docs = {e.doc for e in events if e.actor == old}
            for doc in docs:
                self._events[doc] = [
                    dataclasses.replace(e, actor=new) if e.actor == old else e
                    for e in self._events[doc]
                ]
            renamed_tags = 0
            for by_name in self._tags.values():
                for name, t in by_name.items():
                    if t.actor == old:
                        by_name[name] = dataclasses.replace(t, actor=new)
                        renamed_tags += 1
            tag_moves = 0
            for moves in self._tag_moves.values():
                for i, m in enumerate(moves):
                    if m.actor == old:
                        moves[i] = dataclasses.replace(m, actor=new)
                        tag_moves += 1
            snapshots = damaged = 0
            for doc, rows in self._snaps.items():
                for seq, (ts, state, stored, meta) in rows.items():
                    try:
                        row = renamed_snapshot_row(state, stored, meta, rewrite)
                    except ValueError:
                        damaged += 1
                        continue
                    if row is not None:
                        rows[seq] = (ts, *row)
                        snapshots += 1
                        docs.add(doc)
            derived = sum(len(self._derived.pop(doc, {})) for doc in docs)
            return ActorRenamed(any(e.actor == old for e in events), tuple(sorted(docs)),
                                renamed_tags, snapshots, damaged, derived,
                                tag_moves)  # fmt: skip

    async def restamp(self, doc: str, after: int, stamp: Stamp, rewrite: MetaRewrite) -> Restamped:
        self._check()
        async with self._lock:
            evs = self._events.get(doc, [])
            moved = [i for i, e in enumerate(evs) if e.ts > after]
            for i in moved:
                evs[i] = dataclasses.replace(evs[i], ts=stamp(evs[i].ts))
            tags = self._tags.get(doc, {})
            late = [n for n, t in tags.items() if t.ts > after]
            for name in late:
                tags[name] = dataclasses.replace(tags[name], ts=stamp(tags[name].ts))
            records = self._tag_moves.get(doc, [])
            moves = [i for i, m in enumerate(records) if m.ts > after]
            for i in moves:
                records[i] = dataclasses.replace(records[i], ts=stamp(records[i].ts))
            snapshots = 0
            rows = self._snaps.get(doc, {})
            for seq, (ts, state, stored, meta) in list(rows.items()):
                changed = restamped_snapshot_row(ts, state, stored, meta, after, stamp, rewrite)
                if changed is not None:
                    rows[seq] = changed
                    snapshots += 1
            return Restamped(len(moved), snapshots, len(late), len(moves))

    async def tombstone(self, doc: str) -> bytes | None:
        self._check()
        return self._tombstones.get(doc)

    async def tombstones(self) -> dict[str, bytes]:
        self._check()
        return dict(self._tombstones)

    async def put_tombstone(self, doc: str, tombstone: bytes) -> None:
        self._check()
        self._tombstones[doc] = tombstone

    async def put_snapshot(
        self,
        doc: str,
        seq: int,
        state: bytes,
        meta: dict[str, Any] | None = None,
        *,
        base: BaseMark | None = None,
        generation: int | None = None,
    ) -> bool:
        self._check()
        if generation is not None and (
            doc not in self._heads or self._created.get(doc) != generation
        ):
            return False
        if base is not None and (
            seq <= base[0] or self._mark(doc) != base or self._heads.get(doc, 0) < seq
        ):
            return False
        self._snaps.setdefault(doc, {})[seq] = _snap_row(state, meta or {}, self._last_ts(doc))
        return True

    async def compaction_bases(self, docs: Sequence[str]) -> dict[str, BaseMark]:
        self._check()
        return {doc: self._mark(doc) for doc in docs}

    async def generations(self, docs: Sequence[str]) -> dict[str, int | None]:
        self._check()
        return {doc: self._created.get(doc) if doc in self._heads else None for doc in docs}

    def _mark(self, doc: str) -> BaseMark:
        seq = self._base.get(doc, 0)
        if not seq or doc not in self._heads:
            return NO_BASE
        row = self._snaps.get(doc, {}).get(seq)
        return (seq, row[2] if row is not None else "")

    async def latest_snapshot(self, doc: str, at_most: int | None = None) -> Snapshot | None:
        self._check()
        for seq in sorted(self._snaps.get(doc, {}), reverse=True):
            if at_most is None or seq <= at_most:
                snap = snapshot_from_row(doc, seq, *self._snaps[doc][seq])
                if snap is not None:
                    return snap
        return None

    async def snapshots(self, doc: str) -> list[SnapshotInfo]:
        self._check()
        return [
            snapshot_info(doc, seq, *row) for seq, row in sorted(self._snaps.get(doc, {}).items())
        ]

    async def compact(
        self,
        doc: str,
        before: int,
        state: bytes,
        *,
        above: Mapping[int, tuple[bytes, dict[str, Any]]] | None = None,
    ) -> int:
        self._check()
        evs = self._events.get(doc, [])
        kept = [e for e in evs if e.seq > before]
        self._events[doc] = kept
        snaps = {s: v for s, v in self._snaps.get(doc, {}).items() if s > before}
        floor = max((e.ts for e in evs), default=0)
        if above is not None:
            snaps = {s: _snap_row(st, m, floor) for s, (st, m) in above.items() if s > before}
        snaps[before] = _snap_row(state, {"base": True}, floor)
        self._snaps[doc] = snaps
        self._base[doc] = max(self._base.get(doc, 0), before)
        self._derived.pop(doc, None)  # (it names what the folded events did)
        return len(evs) - len(kept)

    async def put_tag(self, doc: str, name: str, seq: int, actor: str, *, move: bool = True) -> Tag:
        self._check()
        tags = self._tags.setdefault(doc, {})
        was = tags.get(name)
        if not move and was is not None:
            return was
        tag = tags[name] = Tag(doc, name, seq, max(now_ms(), self._last_ts(doc)), actor)
        if was is None or was.seq != seq:
            action = "create" if was is None else "move"
            self._tag_moves.setdefault(doc, []).append(
                TagMove(doc, name, tag.ts, actor, action, seq, was.seq if was else None)
            )
        return tag

    def _last_ts(self, doc: str) -> int:
        """The document's last event's ts (0: none), which a snapshot's and a tag's ts
        are raised to."""
        return max((e.ts for e in self._events.get(doc, [])), default=0)

    async def tags(self, doc: str) -> list[Tag]:
        self._check()
        return sorted(self._tags.get(doc, {}).values(), key=lambda t: (t.seq, t.name))

    async def delete_tag(self, doc: str, name: str, actor: str = "") -> bool:
        self._check()
        was = self._tags.get(doc, {}).pop(name, None)
        if was is not None:
            ts = max(now_ms(), self._last_ts(doc))
            self._tag_moves.setdefault(doc, []).append(
                TagMove(doc, name, ts, actor, "delete", None, was.seq)
            )
        return was is not None

    async def tag_history(self, doc: str, name: str | None = None) -> list[TagMove]:
        self._check()
        return [m for m in self._tag_moves.get(doc, []) if name is None or m.name == name]

    async def import_doc(
        self,
        info: DocInfo,
        events: Sequence[Event],
        snapshots: Sequence[Snapshot],
        tags: Sequence[Tag],
        *,
        replace: bool = False,
        keep_positions: bool = False,
        tombstone: bytes | None = None,
        replacing: tuple[int | None, int] | None = None,
        tag_moves: Sequence[TagMove] = (),
    ) -> None:
        self._check()
        events = rising(events)
        async with self._lock:
            if info.doc in self._heads and not replace:
                raise StoreError(f"document {info.doc!r} already exists in the target")
            if replacing is not None:
                check_replacing(info.doc, replacing, self._created.get(info.doc),
                                self._heads.get(info.doc))  # fmt: skip
            for d in (
                self._events,
                self._heads,
                self._base,
                self._snaps,
                self._tags,
                self._derived,
                self._tag_moves,
            ):
                d.pop(info.doc, None)
            if keep_positions:
                fresh = list(events)
                taken = {e.pos for log in self._events.values() for e in log}
                clash = min((e.pos for e in fresh if e.pos in taken), default=None)
                if clash is not None:
                    raise StoreError(f"position {clash} is taken in the target by another event")
                deleted = {d.pos for d in self._deletions}
                gone = min((e.pos for e in fresh if e.pos in deleted), default=None)
                if gone is not None:
                    raise StoreError(f"position {gone} is taken in the target by a deletion")
                self._pos = max([self._pos, *(e.pos for e in fresh)])
            else:
                fresh = [dataclasses.replace(e, pos=self._pos + i) for i, e in enumerate(events, 1)]
                self._pos += len(fresh)
            self._events[info.doc] = fresh
            self._heads[info.doc] = info.head
            self._created[info.doc] = next(self._generations)
            if info.base_seq:
                self._base[info.doc] = info.base_seq
            self._snaps[info.doc] = {
                s.seq: (s.ts, *snapshot_row(s.state, s.meta)) for s in snapshots
            }
            self._tags[info.doc] = {t.name: t for t in tags}
            if tag_moves:
                self._tag_moves[info.doc] = [dataclasses.replace(m, doc=info.doc)
                                             for m in tag_moves]  # fmt: skip
            if tombstone is not None:
                self._tombstones[info.doc] = tombstone

    async def import_deletions(self, records: Sequence[Event]) -> int:
        self._check()
        async with self._lock:
            have = {e.pos: e for e in self._deletions}
            used = {e.pos for log in self._events.values() for e in log}
            new = []
            for r in records:
                old = have.get(r.pos)
                if old is not None and (old.doc, old.seq) != (r.doc, r.seq):
                    raise StoreError(f"position {r.pos} is taken in the target by the "
                                     f"deletion of {old.doc!r}")  # fmt: skip
                if r.pos in used:
                    raise StoreError(f"position {r.pos} is taken in the target by another event")
                if old is None:
                    new.append(dataclasses.replace(r, kind=DELETED, update=b"", meta={}))
            self._deletions = sorted([*self._deletions, *new], key=lambda e: e.pos)
            self._pos = max([self._pos, *(r.pos for r in records)])
            return len(new)

    async def carry_positions(self, last: int) -> None:
        self._check()
        self._pos = max(self._pos, last)

    # --- retention and derived data ------------------------------------------------------

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> int:
        self._check()
        snaps = self._snaps.get(doc, {})
        return sum(1 for s in set(seqs) if snaps.pop(s, None) is not None)

    async def put_derived(self, doc: str, kind: str, seq: int, data: bytes) -> None:
        self._check()
        rows = self._derived.setdefault(doc, {})
        if kind not in rows or rows[kind][0] <= seq:
            rows[kind] = (seq, bytes(data), checksum(data))

    async def derived(self, doc: str, kind: str) -> tuple[int, bytes] | None:
        self._check()
        row = self._derived.get(doc, {}).get(kind)
        if row is None:
            return None
        data = derived_from_row(doc, kind, row[1], row[2])
        return None if data is None else (row[0], data)

    def doc_locks(self) -> DocLocks:
        return self._doc_locks

    def revocations(self) -> Revocations:
        return self._revocations

    def webhook_cursors(self) -> WebhookCursors:
        return self._cursors
