"""`--durability fsync|os`: what a commit survives before an edit is broadcast.

fsync (the default) is SQLite's synchronous=FULL on the writer connection and
PostgreSQL's synchronous_commit as configured (on); os is synchronous=NORMAL and
synchronous_commit=off for our sessions. Either way nothing broadcast is lost when the
server process is killed, which is what `os` still promises."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PG_URL, eventually, run_server
from serverproc import ServerProcess
from yclient import connect as raw_connect

from palimpsest.settings import Settings
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent
from palimpsest.store.postgres import PostgresStore
from palimpsest.store.sqlite import WAL_RESERVE_BYTES, SQLiteStore, _reserve_wal, events_in_file


async def test_the_default_is_fsync(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "p.db"))
    assert settings.durability == "fsync"
    async with run_server(settings) as server:
        store = server.backend.store
        assert isinstance(store, SQLiteStore)
        assert await store.pragmas() == {"journal_mode": "wal", "synchronous": 2}  # FULL


async def test_os_durability_is_synchronous_normal_on_the_writer(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "p.db"), durability="os")
    async with run_server(settings) as server:
        store = server.backend.store
        assert isinstance(store, SQLiteStore)
        assert await store.pragmas() == {"journal_mode": "wal", "synchronous": 1}  # NORMAL


def test_an_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync, os"):
        open_store(str(tmp_path / "p.db"), durability="never")
    r = subprocess.run(
        [sys.executable, "-m", "palimpsest", "serve", "--durability", "never"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "invalid choice: 'never'" in r.stderr


async def test_os_durability_survives_kill9(tmp_path: Path) -> None:
    """synchronous=NORMAL: a commit is in the OS's hands when the edit is broadcast, so
    killing the process loses nothing anyone saw."""
    srv = ServerProcess(tmp_path, extra_args=["--durability", "os"])
    await srv.astart()
    try:
        assert "durability os" in srv.log_text()
        async with (
            raw_connect(srv.ws_url, "kill", "ann") as ann,
            raw_connect(srv.ws_url, "kill", "obs") as obs,
        ):
            for i in range(200):
                ann.insert(len(ann.content), str(i % 10))
                if i % 20 == 0:
                    await asyncio.sleep(0.01)
            await eventually(lambda: len(obs.content) == 200, what="the observer has it all")
            seen = obs.content
            await srv.akill9()
        rows = [(e.update,) for e in events_in_file(srv.db_path, "kill")]
        from pycrdt import Doc, Text

        d: Doc = Doc()
        for (data,) in rows:
            d.apply_update(data)
        assert str(d.get("content", type=Text)) == seen
    finally:
        await srv.astop()


# --- PostgreSQL -----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(("durability", "expected"), [("fsync", "on"), ("os", "off")])
async def test_postgres_synchronous_commit(schema: str, durability: str, expected: str) -> None:
    store = PostgresStore(f"{PG_URL}?schema={schema}", durability=durability, max_size=2)
    async with store:
        async with store.pool.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == expected


@pytest.mark.postgres
async def test_postgres_append_is_one_round_trip(schema: str) -> None:
    """A group commit of several documents is one statement on one connection: the
    positions counter, the heads and the events in a single query, and no reset query
    when the connection goes back to the pool. (An actor or kind this process has never
    seen is interned first, in a statement of its own, once: both are seen here before.)"""
    store = PostgresStore(f"{PG_URL}?schema={schema}", min_size=1, max_size=1)
    queries: list[str] = []
    async with store:
        await store.append([("a", [NewEvent("u", "edit", b"\x00\x00", {}, 1)])])  # prepared
        await store._intern({"v"})  # as an earlier append by v would have
        async with store.pool.acquire() as conn:
            conn.add_query_logger(lambda rec: queries.append(rec.query))
        stored = await store.append(
            [
                ("b", [NewEvent("u", "edit", b"b1", {}, 2), NewEvent("v", "edit", b"b2", {}, 3)]),
                ("a", [NewEvent("u", "edit", b"a2", {"k": 1}, 4)]),
                ("b", [NewEvent("u", "edit", b"b3", {}, 5)]),
            ]
        )
        assert len(queries) == 1, queries
        assert "INSERT INTO log" in queries[0]
        assert [[(e.doc, e.seq, e.update) for e in evs] for evs in stored] == [
            [("b", 1, b"b1"), ("b", 2, b"b2")],
            [("a", 2, b"a2")],
            [("b", 3, b"b3")],
        ]
        positions = [e.pos for evs in stored for e in evs]
        assert positions == list(range(positions[0], positions[0] + 4)) and positions[0] == 2
        # what the statement wrote is what append returned
        assert [(e.seq, e.update, e.meta, e.pos) for e in await store.read("a")] == [
            (1, b"\x00\x00", {}, 1),
            (2, b"a2", {"k": 1}, 4),
        ]
        assert [(e.seq, e.pos) for e in await store.read("b")] == [(1, 2), (2, 3), (3, 5)]
        assert await store.head("b") == 3
        assert await store.last_position() == 5


# --- the WAL's blocks ------------------------------------------------------------------


def _wal_size(db: Path) -> int:
    return Path(f"{db}-wal").stat().st_size


async def test_commits_overwrite_a_wal_laid_down_at_start(tmp_path: Path) -> None:
    """A fresh store's WAL already has its blocks, so lone commits overwrite them rather
    than grow the file (each growth costs the fdatasync a journal commit), and nothing of
    the database changed to lay them down."""
    db = tmp_path / "p.db"
    store = SQLiteStore(db)
    async with store:
        laid = _wal_size(db)
        assert laid >= WAL_RESERVE_BYTES
        ev = NewEvent("ann", "edit", b"\x00\x00", None, 1)
        for _ in range(300):  # ~1.2 MB of frames: a fresh WAL would grow by as much
            await store.append([("doc", [ev])])
        assert _wal_size(db) == laid
        assert await store.head("doc") == 300
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert not any("reserve" in n for n in names)
    assert [e.seq for e in events_in_file(db, "doc")] == list(range(1, 301))


_KILLED_WRITER = """
import asyncio, os, sys
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.start()
    for i in range(int(sys.argv[2])):
        await store.append([("doc", [NewEvent("ann", "edit", bytes([i % 256]), None, 1)])])
    print("appended", flush=True)
    os.kill(os.getpid(), 9)

asyncio.run(main())
"""


@pytest.mark.parametrize("appends", [0, 1, 250])
def test_a_crash_never_reads_the_laid_down_blocks_as_data(tmp_path: Path, appends: int) -> None:
    """kill -9 with the laid-down frames still in the WAL (none, one or many commits
    written over their start): recovery keeps every commit and nothing else."""
    db = tmp_path / "p.db"
    r = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(db), str(appends)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == -9, r.stderr
    assert "appended" in r.stdout
    assert _wal_size(db) >= WAL_RESERVE_BYTES  # the WAL was left for recovery
    assert [e.update for e in events_in_file(db, "doc")] == [
        bytes([i % 256]) for i in range(appends)
    ]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_wal_is_not_laid_down_over_another_writer(tmp_path: Path) -> None:
    """Another connection holding the write lock: skipped at once (the store starts
    without waiting for it); a WAL already that big: left as it is."""
    db = str(tmp_path / "p.db")
    other = sqlite3.connect(db, isolation_level=None)
    mine = sqlite3.connect(db, isolation_level=None)
    try:
        cache = mine.execute("PRAGMA cache_size").fetchone()
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (1)")
        assert _reserve_wal(mine, db) is False
        assert not mine.in_transaction
        other.execute("COMMIT")
        assert _reserve_wal(mine, db) is True
        size = _wal_size(Path(db))
        assert size >= WAL_RESERVE_BYTES
        assert _reserve_wal(mine, db) is False  # already laid down
        assert _wal_size(Path(db)) == size
        assert mine.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert mine.execute("PRAGMA cache_size").fetchone() == cache  # put back
    finally:
        other.close()
        mine.close()
