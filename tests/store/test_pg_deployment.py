"""PostgresStore on PostgreSQL as a managed deployment has it: the schema named by the
role's search_path rather than ?schema=, a pooler in front that drops startup
parameters, a role that owns nothing, a small connection limit."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from conftest import PG_PORT, PG_URL
from stallproxy import StallingProxy

from palimpsest.errors import StoreError
from palimpsest.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


async def test_one_schema_named_two_ways_gives_one_turn_per_document(schema: str) -> None:
    """One process names the schema with ?schema=, another through its search_path (as a
    role's ``ALTER ROLE … SET search_path`` does; here the DSN's startup parameter): both
    write the same tables, so a document's turn on server changes is one turn for both
    (it was keyed on the name as configured, '' for the second: both held it at once, and
    a redo's copy raced a change of the other process)."""
    by_name = PostgresStore(f"{PG_URL}?schema={schema}")
    by_path = PostgresStore(f"{PG_URL}?search_path={schema}")
    async with by_name, by_path:

        async def take_turn() -> None:
            async with by_path.server_changes("d"):
                pass

        async with by_name.server_changes("d"):
            waiting = asyncio.create_task(take_turn())
            await asyncio.sleep(0.3)  # (time for a turn not kept to be taken wrongly)
            assert not waiting.done()
        await asyncio.wait_for(waiting, 30)
        assert await by_name.identity() == await by_path.identity()


def _through(proxy: StallingProxy, query: str) -> str:
    """PG_URL by way of `proxy`, with `query` (``schema=…``)."""
    parts = urlsplit(PG_URL)
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def _tables(schema_name: str) -> set[str]:
    conn = await asyncpg.connect(PG_URL)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema_name
        )
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def test_a_schema_a_pooler_drops_is_refused_not_written_elsewhere(schema: str) -> None:
    """A pooler that drops the search_path startup parameter (PgBouncer's
    ignore_startup_parameters = search_path; here a proxy that does the same) leaves the
    session in the role's default schema: the store refuses to start, naming the
    setting, rather than creating or reading its tables there (it said "at schema version
    5" and wrote into public, another deployment's tables)."""
    before = await _tables("public")
    with StallingProxy(PG_PORT, drop_startup={"search_path"}) as proxy:
        store = PostgresStore(_through(proxy, f"schema={schema}"))
        with pytest.raises(StoreError) as e:
            await store.start()
    assert "search_path" in str(e.value) and "ignore_startup_parameters" in str(e.value)
    assert repr(schema) in str(e.value)
    assert await _tables("public") == before
    assert await _tables(schema) == set()
    # and through no such pooler, it starts
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        assert store.resolved_schema == schema


async def test_durability_os_that_a_pooler_drops_is_refused(schema: str) -> None:
    """--durability os asks PostgreSQL for synchronous_commit=off as a startup parameter;
    a pooler that drops it would leave every commit waiting for the WAL flush, unsaid."""
    with StallingProxy(PG_PORT, drop_startup={"synchronous_commit"}) as proxy:
        store = PostgresStore(_through(proxy, f"schema={schema}"), durability="os")
        with pytest.raises(StoreError) as e:
            await store.start()
    assert "synchronous_commit" in str(e.value)
    assert "ignore_startup_parameters" in str(e.value)
