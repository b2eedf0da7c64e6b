"""The store contract against SQLiteStore, on a real file in a fresh temporary directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.store.base import EventStore
from server.store.sqlite import SQLiteStore
from store.contract import StoreContract


class TestSQLiteStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    async def create(self) -> EventStore:
        return SQLiteStore(self.path)

    async def reopen(self, store: EventStore) -> EventStore | None:
        return SQLiteStore(self.path)

    async def damage_snapshot(self, store: EventStore, doc: str, seq: int) -> None:
        with sqlite3.connect(self.path) as db:
            n = db.execute(
                "UPDATE snapshots SET state = CAST(state || X'00' AS BLOB) "
                "WHERE doc = ? AND seq = ?",
                (doc, seq),
            ).rowcount
        assert n == 1
