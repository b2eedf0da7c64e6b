"""Helpers for tests on the machine's PostgreSQL (conftest.PG_URL), each test in a fresh
schema (the conftest fixture ``schema``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from conftest import PG_URL


@contextlib.asynccontextmanager
async def schema_connection(schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose search_path is `schema` (created if missing), so that the
    tables a PostgresStore makes in it are named unqualified; closed after."""
    c = await asyncpg.connect(PG_URL)
    await c.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await c.execute(f'SET search_path = "{schema}"')
    try:
        yield c
    finally:
        await c.close()
