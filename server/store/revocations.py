"""Revoked users, kept in the event store beside the log (``server.revocation`` uses it).

One row per revoked user: the whole second from which on their tokens count again (a
token issued before it, or without an issue time, is refused), who revoked them and
when. Lifting a revocation removes the row.

In SQL, one table, ``revoked_users``, the same statements for SQLite and PostgreSQL
(placeholders aside), kept beside the log's schema rather than in its versions, as the
webhook cursors' table is: it holds no event data, and no schema version changes for it.
SQLite creates it on first use (``CREATE TABLE IF NOT EXISTS``), PostgreSQL's migration
when it is missing (side_tables). Every store offers it
(``EventStore.revocations()``).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import now_ms
from .side_tables import PostgresSideTable

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .sqlite import SQLiteStore


@dataclass(frozen=True, slots=True)
class Revoked:
    user: str
    #: tokens of `user` issued before this (Unix seconds, whole) are refused
    since: int
    #: who revoked them, and when (ms)
    by: str = ""
    ts: int = 0


class Revocations(ABC):
    """The revoked users of one store."""

    @abstractmethod
    async def put(self, row: Revoked) -> None:
        """Revoke `row.user` (again: the new time replaces the old)."""

    @abstractmethod
    async def remove(self, user: str) -> bool:
        """Lift the revocation of `user`; False when there was none."""

    @abstractmethod
    async def list(self) -> list[Revoked]:
        """Every revoked user, by name."""


class MemoryRevocations(Revocations):
    def __init__(self) -> None:
        self._rows: dict[str, Revoked] = {}

    async def put(self, row: Revoked) -> None:
        self._rows[row.user] = row

    async def remove(self, user: str) -> bool:
        return self._rows.pop(user, None) is not None

    async def list(self) -> list[Revoked]:
        return [self._rows[u] for u in sorted(self._rows)]


CREATE_TABLE = """CREATE TABLE IF NOT EXISTS revoked_users (
    user_name TEXT PRIMARY KEY,
    since BIGINT NOT NULL,
    by_user TEXT NOT NULL DEFAULT '',
    ts BIGINT NOT NULL
)"""


class SQLRevocations(Revocations):
    """The statements, written with ``?`` placeholders; a subclass runs them."""

    @abstractmethod
    async def _exec(self, sql: str, args: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        """Run one statement in its own transaction (the table exists); its rows."""

    async def put(self, row: Revoked) -> None:
        await self._exec(
            "INSERT INTO revoked_users (user_name, since, by_user, ts) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_name) DO UPDATE SET since = excluded.since, "
            "by_user = excluded.by_user, ts = excluded.ts",
            (row.user, row.since, row.by, row.ts or now_ms()),
            write=True,
        )

    async def remove(self, user: str) -> bool:
        rows = await self._exec(
            "DELETE FROM revoked_users WHERE user_name = ? RETURNING user_name", (user,), write=True
        )
        return bool(rows)

    async def list(self) -> list[Revoked]:
        rows = await self._exec(
            "SELECT user_name, since, by_user, ts FROM revoked_users ORDER BY user_name",
            (),
            write=False,
        )
        return [Revoked(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]


class SQLiteRevocations(SQLRevocations):
    """Writes through the store's writer thread; reads on its reader connection once the
    table exists (made by the first call, whichever it is)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self._created = False

    async def _exec(self, sql: str, args: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        if self._created and not write:
            return list(await self.store._fetchall(sql, tuple(args)))

        def run(conn: sqlite3.Connection) -> list[Sequence[Any]]:
            conn.execute(CREATE_TABLE)
            return list(conn.execute(sql, tuple(args)).fetchall())

        rows = await self.store._write("revoked users", run)
        self._created = True
        return rows


class PostgresRevocations(SQLRevocations):
    """Through the store's pool (and its error translation)."""

    def __init__(self, store: PostgresStore) -> None:
        self._table = PostgresSideTable(store, "revoked users")

    async def _exec(self, sql: str, args: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        return await self._table.run(sql, args)


__all__ = [
    "MemoryRevocations",
    "PostgresRevocations",
    "Revocations",
    "Revoked",
    "SQLRevocations",
    "SQLiteRevocations",
]
