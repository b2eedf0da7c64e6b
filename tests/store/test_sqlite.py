"""The store contract against SQLiteStore, on a real file in a fresh temporary directory."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from sqlitehelp import sqlite_conn

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

    def child_url(self) -> str | None:
        return f"sqlite:///{self.path}"

    async def delete_tail_row(self, store: EventStore, doc: str, seq: int) -> None:
        with sqlite_conn(self.path) as db:
            db.execute(
                "DELETE FROM log WHERE seq = ? AND doc = (SELECT id FROM docs WHERE name = ?)",
                (seq, doc),
            )

    async def set_event_ts(self, store: EventStore, doc: str, seq: int, ts: int) -> None:
        store._recent.clear()  # type: ignore[attr-defined]  # rows it would seal as written
        with sqlite_conn(self.path) as db:
            db.execute(
                "UPDATE log SET ts = ? WHERE seq = ? AND doc = "
                "(SELECT id FROM docs WHERE name = ?)",
                (ts, seq, doc),
            )

    async def damage_segment(self, store: EventStore, doc: str, first_seq: int) -> None:
        where = "WHERE first_seq = ? AND doc = (SELECT id FROM docs WHERE name = ?)"
        with sqlite_conn(self.path) as db:
            (body,) = db.execute(f"SELECT body FROM segments {where}", (first_seq, doc)).fetchone()
            bad = bytearray(body)
            bad[len(bad) // 2] ^= 0x01
            db.execute(f"UPDATE segments SET body = ? {where}", (bytes(bad), first_seq, doc))

    async def damage_snapshot(self, store: EventStore, doc: str, seq: int) -> None:
        with sqlite_conn(self.path) as db:
            n = db.execute(
                "UPDATE snapshots SET state = CAST(state || X'00' AS BLOB) "
                "WHERE doc = ? AND seq = ?",
                (doc, seq),
            ).rowcount
        assert n == 1

    def _set(self, doc: str, seq: int, column: str, value: str) -> None:
        with sqlite_conn(self.path) as db:
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

    async def set_snapshot_state(self, store: EventStore, doc: str, seq: int, data: bytes) -> None:
        self._set(doc, seq, "state", data)  # type: ignore[arg-type]


# --- beyond the contract: a disk that fills up --------------------------------------------


async def _fill_up(store: SQLiteStore) -> None:
    """Let the database grow no more: SQLite then refuses with SQLITE_FULL, as on a full
    disk (max_page_count is per connection, so it is set on the store's own one)."""
    pages = await store.on_writer(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await store.on_writer(lambda c: c.execute(f"PRAGMA max_page_count = {int(pages)}"))


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
            await store.put_snapshot("a", head, os.urandom(50_000))  # incompressible
        # room again: the store works, without a gap
        await store.on_writer(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        [[e]] = await store.append([("a", [NewEvent("ann", "edit", b"later", {})])])
        assert e.seq == head + 1
        await store.check_writable()


async def test_version_2_events_get_positions_in_time_order(tmp_path: Path) -> None:
    """A file written before positions existed: its events are numbered by time (each
    document's in seq order, even where its clock stepped back), then appends go on."""
    from palimpsest.store.sqlite_schema import OLD_STEPS, SCHEMA_VERSION

    path = tmp_path / "v2.db"
    with sqlite_conn(path) as db:
        for v in (1, 2):
            for stmt in OLD_STEPS[v]:
                db.execute(stmt)
        db.execute("PRAGMA user_version = 2")
        rows = [("a", 1, 100), ("b", 1, 150), ("a", 2, 200), ("a", 3, 120), ("b", 2, 300)]
        db.executemany(
            "INSERT INTO events (doc, seq, ts, actor, kind, data, meta) "
            "VALUES (?, ?, ?, 'ann', 'edit', x'00', '{}')",
            rows,
        )
        db.execute(
            "INSERT INTO docs (name, head, created_ts, updated_ts) VALUES ('a', 3, 100, 200), "
            "('b', 2, 150, 300)"
        )
    async with SQLiteStore(path, migrate=True) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        got = [(e.doc, e.seq, e.pos) for e in await store.read_all()]
        # a3's clock went back to 120: it stays after a2 (its document's order)
        assert got == [("a", 1, 1), ("b", 1, 2), ("a", 2, 3), ("a", 3, 4), ("b", 2, 5)]
        assert await store.last_position() == 5
        [[e]] = await store.append([("b", [NewEvent("ann", "edit", b"x", {}, 400)])])
        assert (e.seq, e.pos) == (3, 6)


async def test_writes_run_on_one_thread_with_full_sync(tmp_path: Path) -> None:
    """The writer connection (the one every commit goes through) syncs fully, and every
    write runs on its one thread, whichever task asked."""
    import threading

    async with SQLiteStore(tmp_path / "w.db") as store:
        assert await store.pragmas() == {"journal_mode": "wal", "synchronous": 2}
        names = await asyncio.gather(
            *(store.on_writer(lambda c: threading.current_thread().name) for _ in range(5))
        )
        assert set(names) == {"palimpsest-sqlite-writer"}
        assert threading.current_thread().name not in names
        await asyncio.gather(*(store.append([(f"d{i}", [NewEvent("a", "edit", b"u", {})])])
                               for i in range(20)))  # fmt: skip
        assert await store.last_position() == 20


async def test_an_in_memory_database_reads_what_it_wrote() -> None:
    async with SQLiteStore(":memory:") as store:
        await store.append([("a", [NewEvent("ann", "edit", b"x", {})])])
        assert [e.update for e in await store.read("a")] == [b"x"]
        assert await store.head("a") == 1
