"""PostgresStore on PostgreSQL as a managed deployment has it: the schema named by the
role's search_path rather than ?schema=, a pooler in front that drops startup
parameters, a role that owns nothing, a small connection limit."""

from __future__ import annotations

import asyncio

import pytest
from conftest import PG_URL

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
