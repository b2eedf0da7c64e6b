"""Undo/redo seen by an unmodified y-websocket client under Node.js: an ordinary update,
and never an extension frame (it did not opt in); across a server crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess
from test_interop_node import NodeClient, node_modules  # noqa: F401  (a fixture)

pytestmark = pytest.mark.node


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(tmp_path / "server", env={"PALIMPSEST_UNDO_CAPTURE_MS": "0"}) as srv:
        yield srv


async def post(srv: ServerProcess, path: str, user: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http:
        return await http.post(path, params={"user": user})


async def test_node_client_sees_undo_as_an_update(
    node_modules: Path,  # noqa: F811
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    alice = NodeClient(server, "n1", "alice", tmp_path / "alice.log")
    bob = NodeClient(server, "n1", "bob", tmp_path / "bob.log")
    try:
        await alice.start()
        await bob.start()
        await alice.connect()
        await bob.connect()
        await alice.call("insert", pos=0, text="hello")
        await bob.wait_text(equals="hello")
        await bob.call("insert", pos="end", text=" world")
        await alice.wait_text(equals="hello world")
        await alice.call("insert", pos="end", text="!")
        await bob.wait_text(equals="hello world!")

        r = await post(server, "/api/docs/n1/undo", "alice")
        assert r.status_code == 200, r.text
        await alice.wait_text(equals="hello world")
        await bob.wait_text(equals="hello world")
        r = await post(server, "/api/docs/n1/undo", "alice")
        assert r.status_code == 200, r.text
        await bob.wait_text(equals=" world")

        # a crash: the stacks come back from the log (no final snapshot was written)
        await server.akill9()
        await server.astart()
        r = await post(server, "/api/docs/n1/redo", "alice")
        assert r.status_code == 200, r.text
        await alice.wait_text(equals="hello world", timeout=20_000)
        await bob.wait_text(equals="hello world", timeout=20_000)
        r = await post(server, "/api/docs/n1/undo", "bob")
        assert r.status_code == 200, r.text
        await alice.wait_text(equals="hello")
        await bob.wait_text(equals="hello")

        for c in (alice, bob):
            frames = (await c.call("frames"))["frames"]
            assert frames, "the client recorded its frames"
            received = [f for f in frames if f.get("dir") == "recv"]
            # the undos and redos arrived as plain sync updates ...
            assert any(f.get("type") == "sync" and f.get("sub") == "update" for f in received)
            # ... and no extension frame (type 100) was ever sent to a client that did not ask
            assert all(
                f.get("type") in ("sync", "awareness", "auth", "queryAwareness") for f in received
            ), received
    finally:
        await alice.aclose()
        await bob.aclose()
