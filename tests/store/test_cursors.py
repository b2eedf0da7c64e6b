"""Webhook delivery cursors (server.store.cursors): the same contract for every store:
memory, SQLite (through its writer thread) and PostgreSQL (a fresh schema)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from conftest import PG_URL

from palimpsest.store.base import EventStore
from palimpsest.store.cursors import ACTIVE, DISABLED, FAILING
from palimpsest.store.memory import MemoryStore
from palimpsest.store.postgres import PostgresStore
from palimpsest.store.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    s: EventStore
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "c.db")
    else:
        s = PostgresStore(f"{PG_URL}?schema={schema}")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
        if request.param == "postgres":
            conn = await asyncpg.connect(PG_URL)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


async def test_register_keeps_an_existing_cursor(store: EventStore) -> None:
    c = store.webhook_cursors()
    row = await c.register("h1", "http://x/hook", 7)
    assert (row.id, row.url, row.cursor, row.state, row.failures) == ("h1", "http://x/hook", 7,
                                                                      ACTIVE, 0)  # fmt: skip
    assert (await c.register("h1", "http://x/hook", 99)).cursor == 7
    assert [r.id for r in await c.list()] == ["h1"]
    assert await c.get("nope") is None


async def test_only_the_lease_holder_moves_the_cursor_and_only_forward(store: EventStore) -> None:
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


async def test_failures_mark_failing_and_enable_resumes_from_the_cursor(store: EventStore) -> None:
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


async def test_cursors_survive_reopening(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "r.db")
    async with s:
        c = s.webhook_cursors()
        await c.register("h", "http://x", 0)
        await c.claim("h", "p", 60_000)
        await c.advance("h", "p", 42, 42)
    s2 = SQLiteStore(tmp_path / "r.db")
    async with s2:
        row = await s2.webhook_cursors().get("h")
        assert row is not None and row.cursor == 42
