"""A purge under an unmodified y-websocket client (Node.js) that keeps typing across it:
its provider is told to reconnect (1013), comes back with its Y.Doc (which still holds
the deleted items' IDs), and everything it typed lands; a new client syncs without the
purged text. Likewise a plain `palimpsest compact` run on the store beside the server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import PG_URL
from nodehelp import node_clients
from serverproc import REPO_ROOT, ServerProcess
from test_interop_node import node_modules  # noqa: F401  (a fixture)

from palimpsest import protocol as P

pytestmark = pytest.mark.node

SECRET = "ZQXPASSWORD99"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(tmp_path / "server") as srv:
        yield srv


async def raw_step2(srv: ServerProcess, doc: str) -> bytes:
    """What a new reader's sync step 1 (an empty state vector) is answered with."""
    async with websockets.connect(f"{srv.ws_url}/{doc}?user=reader", compression=None) as ws:
        await ws.send(P.encode_sync_step1(b"\x00"))
        while True:
            msg = P.decode(await asyncio.wait_for(ws.recv(), 10))
            if isinstance(msg, P.SyncStep2):
                return msg.update


async def test_a_node_client_keeps_typing_across_a_purge(
    node_modules: Path,  # noqa: F811
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    async with node_clients(server, "p1", tmp_path, "alice", "bob", start=False) as (alice, bob):
        await alice.start()
        await alice.connect()
        await alice.call("insert", pos=0, text=f"my password is {SECRET} ok")
        await alice.call("delete", pos=15, len=len(SECRET))
        await alice.call("waitText", equals="my password is  ok")
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            r = await http.get("/api/docs/p1/events", params={"user": "ops"})
            head = max(e["seq"] for e in r.json()["events"])
            assert SECRET.encode() in await raw_step2(server, "p1")
            # alice types one update per character, before, during and after the purge
            typing = asyncio.create_task(
                alice.call("type", text=" and then some more words", delayMs=40)
            )
            await asyncio.sleep(0.3)
            r = await http.post("/api/docs/p1/compact", params={"user": "ops"},
                                json={"before": head, "purge_deleted": True})  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.json()["closed"] == 1  # alice, mid-typing: told to reconnect
            await typing
        want = "my password is  ok and then some more words"
        await alice.call("waitText", equals=want)
        await alice.call("waitSynced")
        await bob.start()
        await bob.connect()
        await bob.wait_text(equals=want)  # everything alice typed reached the server
        await bob.call("insert", pos="end", text="!")
        await alice.wait_text(equals=want + "!")
        assert SECRET.encode() not in await raw_step2(server, "p1")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of a server process and the CLI beside it: a SQLite file, or a schema
    of PostgreSQL (no Redis: nobody tells the server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'palimpsest.db'}"
    return f"{PG_URL}?schema={request.getfixturevalue('schema')}"


async def palimpsest(*argv: str) -> tuple[int, str]:
    """The real `palimpsest` command, in a process of its own, as an operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "palimpsest", *argv, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_a_node_client_keeps_typing_across_a_cli_compact_beside_the_server(
    node_modules: Path,  # noqa: F811
    tmp_path: Path,
    store_url: str,
) -> None:
    """`compact --help` said the command was meant for a stopped server only, where
    docs/operations.md says it may run beside one: it may. A server (no fan-out) serves
    the document to a y-websocket client typing an update per character; `palimpsest
    compact` on the same store, in a process of its own, folds the log under it; the
    server notices the new base and reloads the room (the client reconnects), and every
    character typed before, during and after the compaction is in the document, the
    log folded as asked, and `verify` finds nothing wrong."""
    async with ServerProcess(tmp_path / "server", extra_args=["--store", store_url]) as srv:
        async with node_clients(srv, "c1", tmp_path, "alice", "bob", start=False) as (
            alice,
            bob,
        ):
            await alice.start()
            await alice.connect()
            await alice.call("type", text="before the compaction; ")
            await alice.call("waitSynced")
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=30) as http:
                r = await http.get("/api/docs/c1/events", params={"user": "ops", "limit": 1000})
                head = max(e["seq"] for e in r.json()["events"])
                assert head > 2, r.json()
                typing = asyncio.create_task(
                    alice.call("type", text="during it, one update a character; ", delayMs=40)
                )
                code, out = await palimpsest("compact", "c1", "--before", str(head), "--yes",
                                             "--store", store_url)  # fmt: skip
                assert code == 0 and f"folded into a base snapshot @{head}" in out, out
                await typing
                await alice.call("type", text="after it.")
                want = "before the compaction; during it, one update a character; after it."
                await alice.call("waitText", equals=want)
                await alice.call("waitSynced")
                await bob.start()
                await bob.connect()
                await bob.wait_text(equals=want)  # everything alice typed reached the server
                r = await http.get("/api/docs/c1/events", params={"user": "ops", "limit": 1000})
                assert r.json()["base_seq"] == head, r.json()
        assert "its document was compacted by another process" in srv.log_tail(200)
        await srv.astop()
    code, out = await palimpsest("verify", "--quiet", "--store", store_url)
    assert code == 0, out
