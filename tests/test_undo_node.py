"""Undo/redo seen by an unmodified y-websocket client under Node.js: an ordinary update,
and never an extension frame (it did not opt in); across a server crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from nodehelp import node_clients
from serverproc import ServerProcess
from test_interop_node import node_modules  # noqa: F401  (a fixture)

from palimpsest.ranges import from_b64
from palimpsest.store.sqlite import SQLiteStore

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
    async with node_clients(server, "n1", tmp_path, "alice", "bob") as (alice, bob):
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


@pytest.mark.parametrize("restart", [False, True])
async def test_an_undo_next_to_another_users_formatting_keeps_the_redo(
    node_modules: Path,  # noqa: F811
    server: ServerProcess,
    tmp_path: Path,
    restart: bool,
) -> None:
    """Alice's undo takes out text Bob made bold: Bob's bold marks are left with nothing
    between them, and every Yjs client cleans them up in a transaction of its own (yjs's
    cleanupYTextAfterTransaction), which it sends. The first copy was logged as an edit of
    that client's user: a step of its own (Alice's next undo did nothing visible) that
    emptied the redo stack ("nothing to redo"), hers or Bob's. Deleting only formatting
    marks changes nothing anyone sees: it is no step, and clears no redo. `restart`: the
    marks known come back from the snapshot the stop writes, and the undo state too."""
    async with node_clients(server, "fmt", tmp_path, "alice", "bob") as (alice, bob):
        await bob.call("insert", pos=0, text="Hello")
        await alice.wait_text(equals="Hello")
        await alice.call("insert", pos=0, text="pasted words ")  # alice's step
        await bob.wait_text(equals="pasted words Hello")
        await bob.call("format", pos=0, len=6, attrs={"bold": True})  # bob bolds "pasted"
        await alice.wait_text(equals="pasted words Hello")
        bold = [{"insert": "pasted", "attributes": {"bold": True}}, {"insert": " words Hello"}]
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            for _ in range(50):  # (until bob's format reached alice and the server)
                if (await alice.call("delta"))["delta"] == bold:
                    break
            if restart:
                await server.arestart()
                store = SQLiteStore(server.db_path)
                async with store:
                    snap = await store.latest_snapshot("fmt")
                assert snap is not None and from_b64(snap.meta["undo"]["marks"]), snap
                for c in (alice, bob):
                    await c.call("waitConnected", connected=True, timeout=20_000)
                    await c.call("waitSynced", timeout=20_000)
            r = await http.post("/api/docs/fmt/undo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            undo_seq = r.json()["seq"]
            await alice.wait_text(equals="Hello")
            await bob.wait_text(equals="Hello")
            # the clients' clean-ups of bob's marks come and are logged
            for _ in range(100):
                evs = (await http.get("/api/docs/fmt/events", params={"after": undo_seq})).json()
                if evs["events"]:
                    break
                await alice.call("sleep", ms=50)
            assert evs["events"] and {e["kind"] for e in evs["events"]} == {"edit"}, evs
            # ... and are nobody's step: alice's redo brings her text back (without bob's
            # bold, whose marks the clean-up took, as with Yjs's own UndoManager) ...
            r = await http.post("/api/docs/fmt/redo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            await bob.wait_text(equals="pasted words Hello")
            await alice.wait_text(equals="pasted words Hello")
            # ... and her undo after it takes the paste out again, at once
            r = await http.post("/api/docs/fmt/undo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            await bob.wait_text(equals="Hello")
            await alice.wait_text(equals="Hello")


async def test_turning_bold_off_is_a_step_of_its_own(
    node_modules: Path,  # noqa: F811
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    """Turning bold off over exactly a bold range deletes only its two marks, like a
    clean-up, but it changes what everyone sees: it is a step. (Taken for a clean-up, it
    was none, the bold's step had nothing left, and the next undo took the user's text
    out instead of bringing the bold back.)"""
    async with node_clients(server, "unbold", tmp_path, "alice") as (alice,):
        await alice.call("insert", pos=0, text="Hello world")
        bold = [{"insert": "Hello "}, {"insert": "world", "attributes": {"bold": True}}]
        assert (await alice.call("format", pos=6, len=5, attrs={"bold": True}))["delta"] == bold
        plain = [{"insert": "Hello world"}]
        assert (await alice.call("format", pos=6, len=5, attrs={"bold": None}))["delta"] == plain
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            for _ in range(100):  # (until the three edits are logged)
                evs = (await http.get("/api/docs/unbold/events")).json()["events"]
                if len(evs) == 3:
                    break
                await alice.call("sleep", ms=50)
            assert len(evs) == 3, evs
            r = await http.post("/api/docs/unbold/undo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            assert r.json()["reverts"] == [3], r.json()
            for _ in range(100):
                if (await alice.call("delta"))["delta"] == bold:
                    break
                await alice.call("sleep", ms=50)
            assert (await alice.call("delta"))["delta"] == bold
