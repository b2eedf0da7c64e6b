"""Tables kept beside the log's schema rather than in its versions (the webhook
cursors', the revoked users'): they hold no event data, so no schema version changes for
them. On SQLite each is made on first use (``CREATE TABLE IF NOT EXISTS``); on
PostgreSQL the store's migration makes those missing (postgres_schema.SIDE_TABLES), so
that a server running as a role that may not create tables uses them, and they belong to
the role that migrates, not to whichever server first used one. Their statements are
written once with ``?`` placeholders for both SQL stores; this runs them on
PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postgres import PostgresStore


class PostgresSideTable:
    """One such table on a PostgreSQL store (made by its start), through its pool (and
    its error translation): `what` names it in errors."""

    def __init__(self, store: PostgresStore, what: str) -> None:
        self.store = store
        self.what = what

    async def run(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        """One statement (``?`` placeholders) in its own transaction; its rows."""
        numbers = iter(range(1, len(args) + 1))
        text = re.sub(r"\?", lambda _m: f"${next(numbers)}", sql)
        return list(await self.store._fetch(text, *args, what=self.what))


__all__ = ["PostgresSideTable"]
