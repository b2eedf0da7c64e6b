"""The index outside the schema versions (``docs_name_c``), made where missing when a
store starts on an existing schema: built CONCURRENTLY after start, so that the
processes already serving the schema go on committing (every append writes a ``docs``
row) and the starting one serves meanwhile; an invalid index that an interrupted build
left is dropped and built again; processes starting together build it once. On the
machine's PostgreSQL, each test in a fresh schema.

A long transaction of another session that wrote ``docs`` holds every build from
finishing (a plain CREATE INDEX waits for its lock, a concurrent one for its end), so
what happens during a build is looked at without timing anything."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from conftest import PG_URL, eventually
from pghelp import schema_connection

from palimpsest.store.base import NewEvent
from palimpsest.store.doc_pages import DocPage, NameRange
from palimpsest.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

EDIT = bytes([1, 1, 7, 0, 4, 1, 0, 120])
INDEX_STATE = (
    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = 'docs_name_c' AND c.relnamespace = $1::regnamespace"
)


@pytest.fixture
async def conn(schema: str) -> AsyncIterator[asyncpg.Connection]:
    async with schema_connection(schema) as c:
        yield c


async def _index(conn: asyncpg.Connection, schema: str) -> list[bool]:
    """Whether each docs_name_c of the schema is valid (none: [])."""
    return [r[0] for r in await conn.fetch(INDEX_STATE, schema)]


async def _hold_docs(schema: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    """A session in a transaction that wrote docs, still open."""
    holder = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
    tx = holder.transaction()
    await tx.start()
    await holder.execute("UPDATE docs SET updated_ts = updated_ts WHERE name = 'held'")
    await holder.execute("LOCK TABLE docs IN ROW EXCLUSIVE MODE")
    return holder, tx


async def _builders(conn: asyncpg.Connection, holder: asyncpg.Connection) -> list[int]:
    """The sessions building docs_name_c that wait for the holder's transaction."""
    pid = holder.get_server_pid()
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE query ILIKE '%INDEX%docs_name_c%' "
        "AND $1 = ANY(pg_blocking_pids(pid))",
        pid,
    )
    return [r[0] for r in rows]


async def test_appends_commit_while_a_starting_process_builds_the_index(
    schema: str, conn: asyncpg.Connection
) -> None:
    serving = PostgresStore(PG_URL, schema=schema)
    await serving.start()  # a fresh schema: the index made in the migration
    starting = PostgresStore(PG_URL, schema=schema)
    holder, tx = None, None
    start = None
    try:
        await serving.append([("held", [NewEvent("ann", "update", EDIT)])])
        await serving.append([("d", [NewEvent("ann", "update", EDIT)])])
        assert await _index(conn, schema) == [True]
        await conn.execute("DROP INDEX docs_name_c")  # a schema an older server made
        holder, tx = await _hold_docs(schema)
        start = asyncio.create_task(starting.start())
        (builder,) = await eventually(lambda: _builders(conn, holder), what="a build waits")

        appended = asyncio.create_task(serving.append([("d", [NewEvent("ann", "update", EDIT)])]))
        while not appended.done():
            waiting = await conn.fetch(
                "SELECT pid, query FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                builder,
            )
            assert not waiting, f"sessions wait for the index build: {waiting}"
            await asyncio.sleep(0.02)
        [[event]] = await appended
        assert event.seq == 2
        # ... while the build was (and is) in progress
        assert await _builders(conn, holder) == [builder]
        assert await _index(conn, schema) in ([], [False])

        # the starting process serves before the build ends, and lists documents in
        # name order without the index
        await eventually(start.done, what="start returned")
        await start
        page = await starting.doc_page(DocPage(ranges=(NameRange(""),)))
        assert [d.doc for d in page] == ["d", "held"]

        await tx.rollback()
        tx = None
        assert starting.indexing is not None
        await starting.indexing
        assert await _index(conn, schema) == [True]
    finally:
        if tx is not None:
            await tx.rollback()
        if holder is not None:
            await holder.close()
        if start is not None:
            await asyncio.gather(start, return_exceptions=True)
        await starting.stop()
        await serving.stop()


async def test_an_invalid_index_left_by_an_interrupted_build_is_built_again(
    schema: str, conn: asyncpg.Connection
) -> None:
    store = PostgresStore(PG_URL, schema=schema)
    await store.start()
    await store.append([("d", [NewEvent("ann", "update", EDIT)])])
    await store.stop()
    await conn.execute("DROP INDEX docs_name_c")
    # a concurrent build cancelled half way (a process killed while it built)
    holder, tx = await _hold_docs(schema)
    try:
        build = asyncio.create_task(
            conn.execute('CREATE INDEX CONCURRENTLY docs_name_c ON docs (name COLLATE "C")')
        )
        other = await asyncpg.connect(PG_URL)
        try:
            (builder,) = await eventually(lambda: _builders(other, holder))
            await other.execute("SELECT pg_cancel_backend($1)", builder)
        finally:
            await other.close()
        with pytest.raises(asyncpg.QueryCanceledError):
            await build
    finally:
        await tx.rollback()
        await holder.close()
    assert await _index(conn, schema) == [False]

    store = PostgresStore(PG_URL, schema=schema)
    await store.start()
    try:
        assert store.indexing is not None
        await store.indexing
        assert await _index(conn, schema) == [True]
    finally:
        await store.stop()
    # palimpsest migrate (migrate=True) builds it before start returns
    await conn.execute("DROP INDEX docs_name_c")
    store = PostgresStore(PG_URL, schema=schema, migrate=True)
    await store.start()
    try:
        assert await _index(conn, schema) == [True]
    finally:
        await store.stop()


async def test_processes_starting_together_build_the_index_once(
    schema: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    first = PostgresStore(PG_URL, schema=schema)
    await first.start()
    await first.stop()
    await conn.execute("DROP INDEX docs_name_c")
    holder, tx = await _hold_docs(schema)
    stores = [PostgresStore(PG_URL, schema=schema) for _ in range(3)]
    for s in stores:
        s.index_retry_seconds = 0.05
    caplog.set_level(logging.INFO, "palimpsest.store.postgres")
    try:
        await asyncio.gather(*(s.start() for s in stores))
        await eventually(lambda: _builders(conn, holder), what="a build waits")
        # the others look again and again meanwhile, and leave the build alone
        for _ in range(5):
            await asyncio.sleep(0.05)
            assert len(await _builders(conn, holder)) == 1
        await tx.rollback()
        for s in stores:
            assert s.indexing is not None
            await s.indexing
        assert await _index(conn, schema) == [True]
        said = [r.getMessage() for r in caplog.records if "index" in r.getMessage()]
        assert said == ["built index docs_name_c in " + said[0].rsplit(" in ", 1)[1]], said
    finally:
        await holder.close()
        for s in stores:
            await s.stop()
