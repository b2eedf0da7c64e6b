"""The quiet-period snapshot (server/snapshots.py): one timer per room, pushed back by
each edit rather than re-armed per edit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import eventually, run_server
from yclient import connect as raw_connect

from palimpsest.settings import Settings


async def test_the_quiet_snapshot_waits_for_the_last_edit(tmp_path: Path) -> None:
    """One quiet-period timer per room, pushed back by each edit (not re-armed per edit):
    no snapshot while edits keep coming closer than the quiet period, one at the last
    seq once they stop."""
    settings = Settings(db=str(tmp_path / "p.db"), snapshot_quiet_seconds=1.5)
    async with run_server(settings) as server, raw_connect(server.ws_url, "q", "ann") as ann:
        store = server.backend.store
        room = await eventually(lambda: server.backend.rooms.get_loaded("q"), what="loaded")
        for i in range(12):
            ann.insert(len(ann.content), str(i % 10))
            await eventually(lambda n=i + 1: room.seq >= n, what=f"edit {i} committed")  # type: ignore[misc]
            await asyncio.sleep(0.1)
            assert await store.snapshots("q") == [], "a snapshot while edits keep coming"
        snaps = await eventually(
            lambda: store.snapshots("q"), timeout=10, what="the quiet snapshot"
        )
        assert [s.seq for s in snaps] == [room.seq]
