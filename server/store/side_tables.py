"""Tables kept beside the log's schema rather than in its migrations (the webhook
cursors', the revoked users'): they hold no event data, so no schema version changes for
them, and each is made on first use (``CREATE TABLE IF NOT EXISTS``). Their statements
are written once with ``?`` placeholders for both SQL stores; this runs them on
PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postgres import PostgresStore


class PostgresSideTable:
    """One such table on a PostgreSQL store, through its pool (and its error
    translation): `create` makes it, `what` names it in errors."""

    def __init__(self, store: PostgresStore, create: str, what: str) -> None:
        self.store = store
        self.create = create
        self.what = what
        self._created = False

    async def run(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        """One statement (``?`` placeholders) in its own transaction; its rows."""
        if not self._created:
            await self._create()
        numbers = iter(range(1, len(args) + 1))
        text = re.sub(r"\?", lambda _m: f"${next(numbers)}", sql)
        return list(await self.store._fetch(text, *args, what=self.what))

    async def _create(self) -> None:
        import asyncpg

        async def run(conn: Any) -> None:
            try:
                await conn.execute(self.create)
            except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
                pass  # another process created it at the same moment

        await self.store._run(run, f"{self.what} table", idempotent=True)
        self._created = True


__all__ = ["PostgresSideTable"]
