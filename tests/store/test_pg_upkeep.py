"""What the PostgreSQL store does about the space of rows it deletes (docs/storage.md,
"PostgreSQL upkeep"), on the machine's PostgreSQL, each test in a fresh schema: the
tail's indexes rebuilt when a document goes idle, the snapshots' table vacuumed after a
prune so that new snapshots reuse the space."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import pytest
from conftest import PG_URL, eventually
from pghelp import schema_connection

from palimpsest.retention import Retention, prune
from palimpsest.store.base import NewEvent
from palimpsest.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture
async def conn(schema: str) -> AsyncIterator[asyncpg.Connection]:
    async with schema_connection(schema) as c:
        yield c


async def _keystrokes(store: PostgresStore, n: int) -> None:
    """n keystroke-sized events in document "d", appended 1,000 at a time."""
    for i in range(0, n, 1000):
        batch = [NewEvent("ann", "update", bytes([1, 1, k % 251, 0, 4, 1, 0, 120]))
                 for k in range(i, i + 1000)]  # fmt: skip
        await store.append([("d", batch)])


async def test_the_tail_indexes_are_rebuilt_when_a_document_goes_idle(
    schema: str, conn: asyncpg.Connection
) -> None:
    n = 100_000
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        await _keystrokes(store, n)
        # a tail that grew faster than sealing took it (a full-speed ingest), then sealed
        await store.seal_due()
        before = await conn.fetchval("SELECT pg_indexes_size('log'::regclass)")
        # B-tree pages emptied by sealing stay with the index, vacuumed or not (what
        # made the tail cost more than the whole rest of the store)
        assert before > 2 * 1024 * 1024, before
        await store.seal("d", rest=64)  # the document went idle: sealed to its end
        after = await conn.fetchval("SELECT pg_indexes_size('log'::regclass)")
        heap = await conn.fetchval("SELECT pg_relation_size('log'::regclass)")
        assert after < 256 * 1024, (before, after, heap)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_index WHERE indrelid = 'log'::regclass AND indisvalid"
            )
            == 2
        )
        assert await conn.fetchval("SELECT count(*) FROM log") == 0
        events = await store.read("d")
        assert [e.seq for e in events] == list(range(1, n + 1))
        assert events[-1].update == bytes([1, 1, (n - 1) % 251, 0, 4, 1, 0, 120])
        # and appends go on, through the rebuilt indexes
        await store.append([("d", [NewEvent("ann", "update", b"\x00\x00")])])
        assert (await store.read("d", after=n))[0].seq == n + 1


async def test_the_tail_gives_its_pages_back_when_a_document_goes_idle(
    schema: str, conn: asyncpg.Connection
) -> None:
    """Sealing deletes tail rows and VACUUMs every 4,096; when the document goes idle,
    the last rows are deleted and the table's empty pages must go back to the disk. A
    plain VACUUM did not give them back here: with dead rows on under 2 % of the pages,
    PostgreSQL (14+) skips the index pass and leaves their line pointers, and a page
    with one is not empty (an empty tail kept 18.6 MB after automerge-paper)."""
    n = 100_000
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        await _keystrokes(store, n)
        await store.seal_due()  # whole runs, a VACUUM every 4,096 events
        big = await conn.fetchval("SELECT pg_relation_size('log'::regclass)")
        assert big > 4 * 1024 * 1024, big  # every row was written before sealing took it
        await store.seal("d", rest=64)  # idle: sealed to its end, then its upkeep
        heap = await conn.fetchval("SELECT pg_relation_size('log'::regclass)")
        assert heap < 256 * 1024, (big, heap)
        assert await conn.fetchval("SELECT count(*) FROM log") == 0
        assert [e.seq for e in await store.read("d", after=n - 3)] == [n - 2, n - 1, n]


async def test_pruned_snapshot_space_is_reused(schema: str, conn: asyncpg.Connection) -> None:
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        # incompressible states of 40 kB: TOASTed, as real snapshots are
        for seq in range(1000, 13_000, 1000):
            await store.put_snapshot("d", seq, os.urandom(40_000), {})
        rules = Retention(keep_recent=2, max_gap=1_000_000)
        dropped = await prune(store, "d", rules, convert=False)
        assert len(dropped) == 10
        size = await conn.fetchval("SELECT pg_total_relation_size('snapshots'::regclass)")
        # ten more: they go where the dropped ones were, not at the end of the table
        for seq in range(13_000, 23_000, 1000):
            await store.put_snapshot("d", seq, os.urandom(40_000), {})
        grown = await conn.fetchval("SELECT pg_total_relation_size('snapshots'::regclass)")
        assert grown - size < 100_000, (size, grown)  # 400 kB without the vacuum
        assert [s.seq for s in await store.snapshots("d")][:2] == [11_000, 12_000]


async def test_an_idle_prune_rewrites_a_bloated_snapshot_table(
    schema: str, conn: asyncpg.Connection
) -> None:
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        states = {seq: os.urandom(40_000) for seq in range(1000, 13_000, 1000)}
        for seq, state in states.items():
            await store.put_snapshot("d", seq, state, {})
        rules = Retention(keep_recent=2, max_gap=1_000_000)
        # a busy document's prune: the space is reusable, the table keeps its size
        await prune(store, "d", rules, convert=False)
        size = await conn.fetchval("SELECT pg_total_relation_size('snapshots'::regclass)")
        assert size > 400_000
        # its last one, gone idle: the table is rewritten to what its rows take
        await store.put_snapshot("d", 13_000, states[1000], {})
        await prune(store, "d", rules, convert=False, idle=True)
        after = await conn.fetchval("SELECT pg_total_relation_size('snapshots'::regclass)")
        assert after < 200_000, (size, after)
        kept = await store.snapshots("d")
        assert [s.seq for s in kept] == [12_000, 13_000] and all(s.valid for s in kept)
        snap = await store.latest_snapshot("d")
        assert snap is not None and snap.state == states[1000]


async def test_a_deletion_vacuums_the_tables_it_left_dead_rows_in(
    schema: str, conn: asyncpg.Connection
) -> None:
    """Deleted rows stay whole in their pages, their space never reused, until a VACUUM
    (autovacuum waits for 50 dead rows and 20 % of the table, or is off): the deletion
    vacuums the tables it deleted from, in the background. (VACUUM does not zero the
    bytes: docs/operations.md, "Erasure on disk".)"""
    tables = ("log", "segments", "snapshots", "derived", "tags", "docs")
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        for doc in ("secret", "other"):
            await store.append([(doc, [NewEvent("ann", "update", b"ZQXPGMARK" * 50)] * 40)])
        await store.seal("secret", run=32)
        await store.put_snapshot("secret", 40, b"ZQXPGMARK state")
        await store.put_derived("secret", "attribution", 40, b"ZQXPGMARK runs")
        await store.put_tag("secret", "v1", 40, "ann")

        async def vacuumed() -> set[str]:
            rows = await conn.fetch(
                "SELECT relname FROM pg_stat_user_tables WHERE schemaname = $1 "
                "AND last_vacuum IS NOT NULL",
                schema,
            )
            return {r[0] for r in rows} & set(tables)

        assert await vacuumed() == set()  # 40 events: no sealing's VACUUM
        assert await store.delete_doc("secret")
        await eventually(lambda: _equal(vacuumed(), set(tables)), what="every table vacuumed")
        assert [e.actor for e in await store.read("other")] == ["ann"] * 40


async def _equal(got: Awaitable[set[str]], want: set[str]) -> bool:
    return await got == want
