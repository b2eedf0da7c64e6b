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
