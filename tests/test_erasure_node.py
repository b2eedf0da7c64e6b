"""A purge under an unmodified y-websocket client (Node.js) that keeps typing across it:
its provider is told to reconnect (1013), comes back with its Y.Doc (which still holds
the deleted items' IDs), and everything it typed lands; a new client syncs without the
purged text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from nodehelp import node_clients
from serverproc import ServerProcess
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
