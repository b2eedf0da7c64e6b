"""A SQLite backup restored onto a new file (`palimpsest backup BK NEW`, `cp`,
`sqlite3 .backup`), the server started there with no recovery window, and y-websocket
clients (Node.js) reconnecting with what they typed after the backup.

Their edits after the backup build on each other's (a1, b1 on a1, a2 on b1, …), so
each one's sync step 2, with the other user's items left out (server.resync), waits
for the other's. Taken one step 2 at a time that cost a round trip per turn of theirs,
and once one of them closed the tab before the end, the other's edits waited for good:
in the field, `palimpsest export` gave 205 code points where the clients held 497.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from serverproc import REPO_ROOT, ServerProcess
from test_interop_node import Y_WEBSOCKET, NodeClient, node_modules  # noqa: F401

from palimpsest.cli.backup import backup

pytestmark = pytest.mark.node

DOC = "restored"


async def _head(server: ServerProcess) -> str:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        r = await http.get(f"/api/docs/{DOC}/versions/head")
        return str(r.json()["roots"]["content"]["value"]) if r.status_code == 200 else ""


async def _is(server: ServerProcess, text: str) -> bool:
    return await _head(server) == text


async def _runs(server: ServerProcess) -> list[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        got = (await http.get(f"/api/docs/{DOC}/blame?join=actor")).json()
    return [(r["text"], r["actor"]) for r in got["roots"]["content"]["runs"]]


@pytest.mark.usefixtures("node_modules")
@pytest.mark.parametrize("y_websocket", list(Y_WEBSOCKET))
async def test_edits_after_a_backup_restored_to_a_new_file_are_logged(
    tmp_path: Path, y_websocket: str
) -> None:
    """Alice and Bob take turns typing after the backup, each on the other's text. The
    backup is restored onto a new file and a server started on it. Alice reconnects
    first: her step 2 waits for Bob's lost items, and she closes the tab. Bob
    reconnects: his waits for hers. Both are logged now, each text its author's, and no
    client (a reader in its own process) ever gets an edit the log does not hold."""
    bk = tmp_path / "backup.db"
    new_db = tmp_path / "restored" / "live.db"
    new_db.parent.mkdir()
    first = ServerProcess(tmp_path / "first")
    alice = NodeClient(first, DOC, "alice", tmp_path / "alice.log", y_websocket)
    bob = NodeClient(first, DOC, "bob", tmp_path / "bob.log", y_websocket)
    reader = None
    try:
        async with first:
            for c in (alice, bob):
                await c.start()
                await c.connect()
            await alice.call("insert", text="A0 ")
            await bob.wait_text(equals="A0 ")
            await bob.call("insert", text="B0 ")
            await alice.wait_text(equals="A0 B0 ")
            await eventually(lambda: _head(first), what="logged")
            await asyncio.to_thread(backup, str(first.db_path), str(bk))
            text = "A0 B0 "
            for i in range(6):
                for me, other, mine in ((alice, bob, f"a{i} "), (bob, alice, f"b{i} ")):
                    await me.call("insert", text=mine)  # at the end: on the other's
                    text += mine
                    await other.wait_text(equals=text)
            await eventually(lambda: _is(first, text), what="all logged")
            await bob.call("disconnect")  # (he comes back later)
        await asyncio.to_thread(backup, str(bk), str(new_db))
        second = ServerProcess(tmp_path / "second", port=first.port, db_path=new_db)
        async with second:
            reader = NodeClient(second, DOC, "reader", tmp_path / "reader.log", y_websocket)
            await reader.start()
            await reader.connect()
            await alice.call("waitConnected")
            # hers up to the first that builds on Bob's lost "b0 "; the rest waits
            await eventually(lambda: _is(second, "A0 B0 a0 "), what="hers")
            assert await reader.wait_text(equals="A0 B0 a0 ") == "A0 B0 a0 "
            assert await alice.text() == text
            await alice.aclose()  # she closes the tab
            await bob.call("connect")
            await eventually(lambda: _is(second, text), timeout=20, what="everything")
            assert await reader.wait_text(equals=text) == text
            assert await bob.text() == text
            runs = await _runs(second)
        want = [("A0 ", "alice"), ("B0 ", "bob")]
        for i in range(6):
            want += [(f"a{i} ", "alice"), (f"b{i} ", "bob")]
        assert runs == want, runs
        assert "Traceback" not in second.log_text()
        export = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "palimpsest", "export", DOC, "--db", str(new_db)],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert export.stdout == text, export
    finally:
        for c in (alice, bob, reader):
            if c is not None:
                await c.aclose()
