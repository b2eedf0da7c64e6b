"""Servers started at once on one new SQLite file: each takes the write lock before it
looks for the schema, so exactly one makes it and the others find it made. (Two servers
of the scale-out suite started together on one file, and one of them stopped with "table
symbols already exists": the look was made before the lock. Then, in the suite under
load, one of four stopped at once on "database is locked" as it set WAL mode, which
SQLite answers without waiting while another connection changes it.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

OPEN = """
import asyncio, os, sys, time
from palimpsest.store.sqlite import SQLiteStore
go, db = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
async def main():
    store = SQLiteStore(db)
    await store.start()
    version = await store.schema_version()
    await store.stop()
    print(version)
asyncio.run(main())
"""


def test_stores_started_at_once_on_a_new_file_all_start(tmp_path: Path) -> None:
    for trial in range(8):  # each trial failed about one time in three before the fix
        go, db = tmp_path / f"go-{trial}", tmp_path / f"new-{trial}.db"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN, str(go), str(db)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(6)
        ]
        time.sleep(0.5)  # all six imported and waiting
        go.touch()
        results = [p.communicate(timeout=60) for p in procs]
        for p, (_out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err
        assert len({out.strip() for out, _ in results}) == 1  # one schema version, made once


def test_a_new_database_and_its_wal_and_shm_are_private_to_their_owner(
    tmp_path: Path,
) -> None:
    """They hold every document's text, but under umask 022 the database, its -wal and
    its -shm were made 0644, readable by every user of the machine (the lock files were
    already 0600): a new database is made 0600, and SQLite gives the -wal and -shm the
    database file's mode. A backup's copy is made 0600 too."""
    import asyncio
    import os
    import stat

    from palimpsest.store.base import NewEvent
    from palimpsest.store.sqlite import SQLiteStore

    db = tmp_path / "p.db"
    before = os.umask(0o022)
    try:

        def modes() -> dict[str, int]:
            return {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}

        async def write() -> dict[str, int]:
            async with SQLiteStore(db) as store:
                await store.append([("doc", [NewEvent("ann", "edit", b"\x00\x00")])])
                return modes()  # (the -wal and -shm are there while it is open)

        made = asyncio.run(write())
        r = subprocess.run(
            [sys.executable, "-m", "palimpsest", "backup", "--db", str(db),
             str(tmp_path / "copy.db")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        copy = stat.S_IMODE((tmp_path / "copy.db").stat().st_mode)
    finally:
        os.umask(before)
    assert {"p.db", "p.db-wal", "p.db-shm"} <= set(made), made
    assert made["p.db"] == made["p.db-wal"] == made["p.db-shm"] == 0o600, made
    assert copy == 0o600
