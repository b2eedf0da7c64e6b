"""The store contract against SQLiteStore, on a real file in a fresh temporary directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from palimpsest.errors import StoreUnavailable
from palimpsest.store.base import EventStore, NewEvent
from palimpsest.store.sqlite import SQLiteStore
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

    def _set(self, doc: str, seq: int, column: str, value: str) -> None:
        with sqlite3.connect(self.path) as db:
            n = db.execute(
                f"UPDATE snapshots SET {column} = ? WHERE doc = ? AND seq = ?", (value, doc, seq)
            ).rowcount
        assert n == 1

    async def set_snapshot_meta(self, store: EventStore, doc: str, seq: int, text: str) -> None:
        self._set(doc, seq, "meta", text)

    async def set_snapshot_checksum(
        self, store: EventStore, doc: str, seq: int, value: str
    ) -> None:
        self._set(doc, seq, "checksum", value)


# --- beyond the contract: a disk that fills up --------------------------------------------


async def _fill_up(store: SQLiteStore) -> None:
    """Let the database grow no more: SQLite then refuses with SQLITE_FULL, as on a full
    disk (max_page_count is per connection, so it is set on the store's own one)."""
    async with store.db.execute("PRAGMA page_count") as cur:
        row = await cur.fetchone()
    assert row is not None
    await store.db.execute(f"PRAGMA max_page_count = {int(row[0])}")


async def test_a_full_disk_is_reported_as_such_and_nothing_half_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "full.db")
    async with store:
        await store.append([("a", [NewEvent("ann", "edit", b"first", {})])])
        await _fill_up(store)
        with pytest.raises(StoreUnavailable) as info:
            for i in range(200):  # the last page fills after a few
                await store.append([("a", [NewEvent("ann", "edit", bytes(2000) + bytes([i]), {})]),
                                    ("b", [NewEvent("bob", "edit", b"b", {})])])  # fmt: skip
        head = await store.head("a")
        # the real cause, kept as the cause; never the failed ROLLBACK's message
        assert "database or disk is full" in str(info.value)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        text = str(info.value) + "\n".join(r.getMessage() for r in caplog.records)
        assert "cannot rollback" not in text
        # the failed batch left nothing behind (a and b are one transaction)
        assert [e.seq for e in await store.read("a")] == list(range(1, head + 1))
        assert await store.head("b") == head - 1
        with pytest.raises(StoreUnavailable, match="database or disk is full"):
            await store.put_snapshot("a", head, bytes(50_000))
        # room again: the store works, without a gap
        await store.db.execute("PRAGMA max_page_count = 1073741823")
        [[e]] = await store.append([("a", [NewEvent("ann", "edit", b"later", {})])])
        assert e.seq == head + 1
        await store.check_writable()
