"""The store contract against the in-process MemoryStore."""

from __future__ import annotations

import dataclasses

from palimpsest.store.base import EventStore
from palimpsest.store.memory import MemoryStore
from store.contract import StoreContract


class TestMemoryStore(StoreContract):
    can_fail_midway = False  # nothing in memory refuses an event
    seals = False  # events stay objects: nothing to compress

    async def create(self) -> EventStore:
        return MemoryStore()

    async def set_event_ts(self, store: EventStore, doc: str, seq: int, ts: int) -> None:
        assert isinstance(store, MemoryStore)
        evs = store._events[doc]
        i = next(i for i, e in enumerate(evs) if e.seq == seq)
        evs[i] = dataclasses.replace(evs[i], ts=ts)

    async def damage_snapshot(self, store: EventStore, doc: str, seq: int) -> None:
        assert isinstance(store, MemoryStore)
        ts, state, stored, meta = store._snaps[doc][seq]
        store._snaps[doc][seq] = (ts, state + b"\x00", stored, meta)

    async def set_snapshot_meta(self, store: EventStore, doc: str, seq: int, text: str) -> None:
        assert isinstance(store, MemoryStore)
        ts, state, stored, _ = store._snaps[doc][seq]
        store._snaps[doc][seq] = (ts, state, stored, text)

    async def set_snapshot_checksum(
        self, store: EventStore, doc: str, seq: int, value: str
    ) -> None:
        assert isinstance(store, MemoryStore)
        ts, state, _, meta = store._snaps[doc][seq]
        store._snaps[doc][seq] = (ts, state, value, meta)

    async def set_snapshot_state(self, store: EventStore, doc: str, seq: int, data: bytes) -> None:
        assert isinstance(store, MemoryStore)
        ts, _, stored, meta = store._snaps[doc][seq]
        store._snaps[doc][seq] = (ts, data, stored, meta)
