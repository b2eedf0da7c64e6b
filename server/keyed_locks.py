"""One asyncio lock per key, kept only while someone holds it or waits for it.

A map of locks filled with ``setdefault`` keeps one for every key ever used: every
document ever snapshotted, browsed or touched by a refused connection. Here the last one
out removes its key's entry, so the map holds only the locks in use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class _Held:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        #: those holding it or waiting for it
        self.users = 0


class KeyedLocks(dict[K, _Held], Generic[K]):
    """The locks in use, by key (a dict: its length and keys are what is held or awaited)."""

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold `key`'s lock, waiting for those before; a waiter cancelled gives its place
        back as one that held it does."""
        held = self.get(key)
        if held is None:
            held = self[key] = _Held()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self[key]


__all__ = ["KeyedLocks"]
