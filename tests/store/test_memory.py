"""The store contract against the in-process MemoryStore."""

from __future__ import annotations

import dataclasses

from server.store.base import EventStore
from server.store.memory import MemoryStore
from store.contract import StoreContract


class TestMemoryStore(StoreContract):
    can_fail_midway = False  # nothing in memory refuses an event

    async def create(self) -> EventStore:
        return MemoryStore()

    async def damage_snapshot(self, store: EventStore, doc: str, seq: int) -> None:
        assert isinstance(store, MemoryStore)
        snap = store._snaps[doc][seq]
        store._snaps[doc][seq] = dataclasses.replace(snap, state=snap.state + b"\x00")
