"""Webhook cursors in SQL: one table, ``webhooks``, the same statements for SQLite and
PostgreSQL (placeholders aside), beside the log's schema rather than in its versions: it
holds no event data. SQLite creates it on first use (``CREATE TABLE IF NOT EXISTS``): a
store that never had a webhook never gets it; PostgreSQL's migration when it is missing
(side_tables).

Each operation is one statement (or a read after it) in its own transaction, so a
cursor moves atomically with the lease check: only the lease holder moves it, and only
forward.
"""

from __future__ import annotations

import sqlite3
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .base import now_ms
from .cursors import ACTIVE, DISABLED, FAILING, HookState, WebhookCursors
from .side_tables import PostgresSideTable

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .sqlite import SQLiteStore

_COLS = "id, url, cursor, state, failures, last_error, delivered, owner, lease_until, updated_ts"

CREATE_TABLE = """CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    delivered BIGINT NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    lease_until BIGINT NOT NULL DEFAULT 0,
    updated_ts BIGINT NOT NULL
)"""


def _row(r: Sequence[Any]) -> HookState:
    return HookState(
        str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]), str(r[5]), int(r[6]),
        str(r[7]), int(r[8]), int(r[9]),
    )  # fmt: skip


class SQLCursors(WebhookCursors):
    """The statements, written with ``?`` placeholders; a subclass runs them."""

    @abstractmethod
    async def _exec(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        """Run one statement in its own transaction (the table exists); its rows."""

    async def _one(self, sql: str, *args: Any) -> HookState | None:
        rows = await self._exec(sql, args)
        return _row(rows[0]) if rows else None

    async def register(self, hook_id: str, url: str, start: int) -> HookState:
        await self._exec(
            "INSERT INTO webhooks (id, url, cursor, updated_ts) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (hook_id, url, start, now_ms()),
        )
        row = await self.get(hook_id)
        if row is None:
            raise StoreError(f"webhook {hook_id} vanished while it was registered")
        return row

    async def carry(self, row: HookState) -> bool:
        return bool(
            await self._exec(
                "INSERT INTO webhooks (id, url, cursor, state, failures, last_error, delivered, "
                "updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING "
                "RETURNING id",
                (
                    row.id,
                    row.url,
                    row.cursor,
                    row.state,
                    row.failures,
                    row.last_error,
                    row.delivered,
                    row.updated_ts,
                ),
            )
        )

    async def get(self, hook_id: str) -> HookState | None:
        return await self._one(f"SELECT {_COLS} FROM webhooks WHERE id = ?", hook_id)

    async def list(self) -> list[HookState]:
        return [_row(r) for r in await self._exec(f"SELECT {_COLS} FROM webhooks ORDER BY id", ())]

    async def claim(self, hook_id: str, owner: str, lease_ms: int) -> HookState | None:
        now = now_ms()
        return await self._one(
            "UPDATE webhooks SET owner = ?, lease_until = ? "
            "WHERE id = ? AND (owner = '' OR owner = ? OR lease_until < ?) "
            f"RETURNING {_COLS}",
            owner, now + lease_ms, hook_id, owner, now,
        )  # fmt: skip

    async def advance(self, hook_id: str, owner: str, cursor: int, delivered: int) -> bool:
        row = await self._one(
            "UPDATE webhooks SET cursor = CASE WHEN cursor > ? THEN cursor ELSE ? END, "
            "delivered = delivered + ?, failures = 0, last_error = '', updated_ts = ? "
            f"WHERE id = ? AND owner = ? RETURNING {_COLS}",
            cursor, cursor, delivered, now_ms(), hook_id, owner,
        )  # fmt: skip
        return row is not None

    async def failed(
        self, hook_id: str, owner: str, error: str, max_failures: int
    ) -> HookState | None:
        return await self._one(
            "UPDATE webhooks SET failures = failures + 1, last_error = ?, updated_ts = ?, "
            f"state = CASE WHEN state = '{ACTIVE}' AND failures + 1 >= ? THEN '{FAILING}' "
            "ELSE state END "
            f"WHERE id = ? AND owner = ? RETURNING {_COLS}",
            error[:500], now_ms(), max_failures, hook_id, owner,
        )  # fmt: skip

    async def set_state(self, hook_id: str, state: str) -> HookState | None:
        if state not in (ACTIVE, DISABLED):
            raise ValueError(f"a hook is set active or disabled, not {state!r}")
        return await self._one(
            "UPDATE webhooks SET state = ?, updated_ts = ?, "
            "failures = CASE WHEN ? THEN 0 ELSE failures END "
            f"WHERE id = ? RETURNING {_COLS}",
            state, now_ms(), state == ACTIVE, hook_id,
        )  # fmt: skip

    async def release(self, hook_id: str, owner: str) -> None:
        await self._exec(
            "UPDATE webhooks SET owner = '', lease_until = 0 WHERE id = ? AND owner = ?",
            (hook_id, owner),
        )

    async def remove(self, hook_id: str) -> bool:
        return bool(await self._exec("DELETE FROM webhooks WHERE id = ? RETURNING id", (hook_id,)))


class SQLiteCursors(SQLCursors):
    """Through the store's writer thread: one transaction per statement, in turn with
    the log's writes (cursor writes are rare: one per delivered batch)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self._created = False

    async def _exec(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        def run(conn: sqlite3.Connection) -> list[Sequence[Any]]:
            if not self._created:
                conn.execute(CREATE_TABLE)
            return list(conn.execute(sql, tuple(args)).fetchall())

        rows = await self.store._write("webhook cursor", run)
        self._created = True
        return rows


class PostgresCursors(SQLCursors):
    """Through the store's pool (and its error translation)."""

    def __init__(self, store: PostgresStore) -> None:
        self._table = PostgresSideTable(store, "webhook cursor")

    async def _exec(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        return await self._table.run(sql, args)


__all__ = ["PostgresCursors", "SQLCursors", "SQLiteCursors"]
