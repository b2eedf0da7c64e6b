"""export, inspect and verify only read: the SQLite file they are given (a backup, a
stopped server's database with its -wal) comes out byte for byte as it went in.

They opened the file as a server does and closed it as a server does: the free pages
a live server keeps (up to 1,024, which an online backup carries) were given back at
close, and the -wal folded into the file, so a backup's sha256 changed under `verify`
(1,323,008 bytes became 90,112 in the drill)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import eventually, free_port, run_server
from yclient import connect

from palimpsest.cli import main
from palimpsest.settings import Settings


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_pages(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.close()


async def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capfd.readouterr()
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


async def written_by_a_server(db: Path) -> None:
    async with run_server(Settings(db=str(db), port=free_port(), unload_after_seconds=0.2)) as srv:
        async with connect(srv.ws_url, "notes", user="ann") as c:
            c.insert(0, "kept text")
            await eventually(lambda: srv.backend.store.head("notes"), what="logged")


def with_free_pages(db: Path) -> None:
    """Pages freed as sealing and pruning free them on a live server (kept, not given
    back: _FREE_PAGES_KEPT), made here by hand."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE junk (x BLOB)")
    conn.execute(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300) "
        "INSERT INTO junk SELECT randomblob(4000) FROM c"
    )
    conn.execute("DROP TABLE junk")
    conn.close()


#: a process that commits one event of a new document "crashed" and dies (kill -9 as
#: far as SQLite can tell): the event is only in the -wal file, never checkpointed
CRASHED_WRITER = textwrap.dedent(
    """
    import asyncio, os, sys
    from pycrdt import Doc, Text
    from palimpsest.store.base import NewEvent
    from palimpsest.store.sqlite import SQLiteStore

    async def main() -> None:
        store = SQLiteStore(sys.argv[1])
        await store.start()
        d = Doc()
        d["content"] = Text("only in the wal")
        await store.append([("crashed", [NewEvent("bob", "edit", d.get_update())])])
        os._exit(0)

    asyncio.run(main())
    """
)


COMMANDS = [
    ["verify"],
    ["verify", "notes"],
    ["inspect", "notes"],
    ["inspect", "notes", "--json"],
    ["export", "notes"],
    ["export", "notes", "--format", "json"],
    ["export", "notes", "--format", "update", "-o", "{tmp}/notes.yjs"],
]


def commands(tmp: Path) -> list[list[str]]:
    return [[a.format(tmp=tmp) for a in argv] for argv in COMMANDS]


async def test_a_backup_with_free_pages_is_left_byte_for_byte(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "live.db"
    await written_by_a_server(db)
    with_free_pages(db)
    backup = tmp_path / "backup.db"
    code, out, err = await run(capfd, "backup", "--db", str(db), str(backup))
    assert code == 0, err
    assert free_pages(backup) > 100  # what made the file shrink
    before, size = digest(backup), backup.stat().st_size
    for argv in commands(tmp_path):
        code, out, err = await run(capfd, *argv, "--db", str(backup))
        assert code == 0, (argv, out, err)
        assert digest(backup) == before and backup.stat().st_size == size, argv
    assert "kept text" in (await run(capfd, "export", "notes", "--db", str(backup)))[1]


async def test_a_crashed_servers_database_and_its_wal_are_left_byte_for_byte(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The -wal of a server that died holds committed edits: the commands read them
    (the document is there), and neither fold them into the file nor remove the -wal."""
    db = tmp_path / "p.db"
    await written_by_a_server(db)
    with_free_pages(db)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASHED_WRITER, str(db)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wal = Path(f"{db}-wal")
    assert digest(wal) != hashlib.sha256(b"").hexdigest()
    before = digest(db), digest(wal), db.stat().st_size
    for argv in [*commands(tmp_path), ["export", "crashed"], ["inspect", "crashed"]]:
        code, out, err = await run(capfd, *argv, "--db", str(db))
        assert code == 0, (argv, out, err)
        assert (digest(db), digest(wal), db.stat().st_size) == before, argv
    code, out, _ = await run(capfd, "export", "crashed", "--db", str(db))
    assert out == "only in the wal"
    code, out, _ = await run(capfd, "verify", "--db", str(db))
    assert "2 documents OK" in out


async def test_a_write_on_a_read_only_store_is_refused(tmp_path: Path) -> None:
    from palimpsest.errors import StoreUnavailable
    from palimpsest.store.base import NewEvent
    from palimpsest.store.sqlite import SQLiteStore

    db = tmp_path / "p.db"
    await written_by_a_server(db)
    before = digest(db)
    store = SQLiteStore(db, read_only=True)
    await store.start()
    try:
        assert await store.head("notes") >= 1
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.append([("notes", [NewEvent("ann", "edit", b"\x00\x00")])])
    finally:
        await store.stop()
    assert digest(db) == before
