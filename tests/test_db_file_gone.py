"""The SQLite file deleted (or replaced) under a running server: writes stop, nothing is
lost. Before, the server went on committing into the unlinked file, /readyz said ready,
and a restart lost every edit (those before the deletion with the file, those after it
with the inode). Now the store notices within a second (a stat, off the edit's path),
refuses writes, /readyz says why, and the clients keep what they typed: once the server
runs again, they send it to the new database. A real server process, a real file, the
real client."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
from serverproc import ServerProcess

from palimpsest import client


async def test_a_deleted_database_stops_writes_and_the_clients_bring_everything_back(
    tmp_path: Path,
) -> None:
    db = tmp_path / "team.db"
    async with ServerProcess(tmp_path, db_path=db) as srv:
        async with client.connect(srv.ws_url, "notes", user="ann", reconnect=True) as ann:
            ann.text().insert(0, "typed before, ")
            await ann.flush(timeout=10)
            for suffix in ("", "-wal", "-shm"):
                os.unlink(f"{db}{suffix}")
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=5) as http:
                for _ in range(50):  # noticed within a second or two
                    r = await http.get("/readyz")
                    if r.status_code == 503:
                        break
                    await asyncio.sleep(0.1)
            assert r.status_code == 503, r.text
            assert "was removed while the server ran" in r.json()["store"], r.text

            ann.text().insert(len(ann.text()), "typed after")
            try:
                await ann.flush(timeout=2)
            except client.Timeout:
                pass  # not acknowledged: the commit is refused, the client keeps it
            else:
                raise AssertionError("an edit was acknowledged into a deleted file")

            srv.kill9()
            await srv.astart()  # the same path: a new, empty database
            await ann.wait_for(lambda: ann.connected, timeout=20)
            await ann.flush(timeout=20)  # acknowledged by the new database

        log = srv.log_text()
        assert "palimpsest.store.sqlite: the database file" in log
        async with client.History(srv.http_url, user="ann") as h:
            assert (await h.version("notes")).text == "typed before, typed after"
