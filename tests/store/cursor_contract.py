"""The webhook cursors' part of the store contract (server.store.cursors): mixed into
StoreContract, so every backend runs it with its own ``create`` and ``reopen``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from palimpsest.store.base import EventStore
from palimpsest.store.cursors import ACTIVE, DISABLED, FAILING, HookState


class CursorContract:
    async def create(self) -> EventStore:
        raise NotImplementedError

    async def reopen(self, store: EventStore) -> EventStore | None:
        return None

    @contextlib.asynccontextmanager
    async def reopened(self, store: EventStore) -> AsyncIterator[EventStore]:
        """Stop `store` and yield a new store over the same data, started; skip the test
        on a backend where nothing survives (``reopen`` is the contract's)."""
        await store.stop()
        again = await self.reopen(store)  # type: ignore[attr-defined]
        if again is None:
            await store.start()
            pytest.skip("nothing survives this backend")
        await again.start()
        try:
            yield again
        finally:
            await again.stop()

    async def test_webhook_register_keeps_an_existing_cursor(self, store: EventStore) -> None:
        c = store.webhook_cursors()
        row = await c.register("h1", "http://x/hook", 7)
        assert (row.id, row.url, row.cursor, row.state, row.failures) == ("h1", "http://x/hook", 7,
                                                                          ACTIVE, 0)  # fmt: skip
        assert (await c.register("h1", "http://x/hook", 99)).cursor == 7
        assert [r.id for r in await c.list()] == ["h1"]
        assert await c.get("nope") is None

    async def test_webhook_carry_writes_another_stores_row_unleased(
        self, store: EventStore
    ) -> None:
        """What `palimpsest copy` does with the source's rows: as they were, but the
        lease (a process of the source's) is not carried; a row here already stays."""
        theirs = HookState("h", "http://x", 12, FAILING, 3, "HTTP 500", 12, "p1", 2**50, 77)
        c = store.webhook_cursors()
        assert await c.carry(theirs)
        assert await c.get("h") == replace(theirs, owner="", lease_until=0)
        assert await c.claim("h", "p2", 60_000) is not None
        assert not await c.carry(replace(theirs, cursor=3))
        row = await c.get("h")
        assert row is not None and (row.cursor, row.owner) == (12, "p2")

    async def test_webhook_only_the_lease_holder_moves_the_cursor_and_only_forward(
        self, store: EventStore
    ) -> None:
        c = store.webhook_cursors()
        await c.register("h", "http://x", 0)
        mine = await c.claim("h", "p1", 60_000)
        assert mine is not None and mine.owner == "p1"
        assert await c.claim("h", "p2", 60_000) is None  # held by p1
        assert await c.claim("h", "p1", 60_000) is not None  # renewed
        assert not await c.advance("h", "p2", 10, 3)
        assert await c.advance("h", "p1", 10, 3)
        assert await c.advance("h", "p1", 5, 1)  # a stale batch never moves it back
        row = await c.get("h")
        assert row is not None and (row.cursor, row.delivered) == (10, 4)
        await c.release("h", "p1")
        taken = await c.claim("h", "p2", 60_000)
        assert taken is not None and taken.owner == "p2" and taken.cursor == 10
        # a lapsed lease is taken over
        await c.claim("h", "p2", -1)
        assert (await c.claim("h", "p3", 60_000)) is not None

    async def test_webhook_failures_mark_failing_and_enable_resumes_from_the_cursor(
        self, store: EventStore
    ) -> None:
        c = store.webhook_cursors()
        await c.register("h", "http://x", 4)
        await c.claim("h", "p", 60_000)
        for i in range(1, 3):
            row = await c.failed("h", "p", f"HTTP 500 #{i}", max_failures=3)
            assert row is not None and (row.failures, row.state) == (i, ACTIVE)
        row = await c.failed("h", "p", "x" * 2000, max_failures=3)
        assert row is not None and row.state == FAILING and len(row.last_error) == 500
        assert await c.failed("h", "other", "e", 3) is None
        row = await c.set_state("h", ACTIVE)
        assert row is not None and (row.state, row.failures, row.cursor) == (ACTIVE, 0, 4)
        row = await c.set_state("h", DISABLED)
        assert row is not None and row.state == DISABLED
        assert await c.set_state("missing", ACTIVE) is None
        with pytest.raises(ValueError):
            await c.set_state("h", FAILING)
        assert await c.advance("h", "p", 9, 2)
        row = await c.get("h")
        assert row is not None and (row.cursor, row.failures, row.last_error) == (9, 0, "")
        assert await c.remove("h") and not await c.remove("h")

    async def test_webhook_cursors_survive_reopening(self, store: EventStore) -> None:
        c = store.webhook_cursors()
        await c.register("h", "http://x", 0)
        await c.claim("h", "p", 60_000)
        assert await c.advance("h", "p", 42, 42)
        async with self.reopened(store) as again:
            row = await again.webhook_cursors().get("h")
            assert row is not None and (row.cursor, row.delivered) == (42, 42)
