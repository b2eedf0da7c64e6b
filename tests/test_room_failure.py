"""A room whose pipeline fails tells every waiter, those whose items were queued while
the failing step was in flight included: nothing is left waiting forever."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pycrdt import Text

from palimpsest.backend import Backend
from palimpsest.errors import StoreError
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent
from palimpsest.store.memory import MemoryStore


class GatedStore(MemoryStore):
    """A memory store whose appends wait for a gate, and refuse for good once told to
    (fault injection around the real store)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse = False
        self.waiting = 0

    async def append(self, batches: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[Event]]:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        if self.refuse:
            raise StoreError("injected: this append is refused")
        return await super().append(batches)


def insert(text: str) -> Any:
    def change(doc: Any) -> None:
        doc.get("content", type=Text).insert(0, text)

    return change


async def test_what_was_queued_during_the_failing_step_is_failed_too() -> None:
    store = GatedStore()
    backend = Backend(Settings(), store, [])
    async with backend:
        room = await backend.rooms.get("d")
        store.gate.clear()
        first = asyncio.create_task(room.server_change("ann", "edit", insert("a")))
        for _ in range(100):  # the room's task takes it and waits in the store
            if store.waiting:
                break
            await asyncio.sleep(0.001)
        assert store.waiting == 1
        # queued while that append is in flight: the room's task has not taken it
        second = asyncio.create_task(room.server_change("bob", "edit", insert("b")))
        await asyncio.sleep(0.01)
        store.refuse = True
        store.gate.set()
        with pytest.raises(StoreError):
            await asyncio.wait_for(first, 5)
        # before: never resolved (the room's task had returned, its inbox left behind)
        with pytest.raises(StoreError, match="failed"):
            await asyncio.wait_for(second, 5)
        assert room.broken is not None
