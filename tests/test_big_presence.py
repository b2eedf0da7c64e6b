"""A presence state over ``max_awareness_state_bytes`` (an avatar as a data URL) is
dropped, not a reason to close the connection (server.presence). A field tester's
classroom: a y-websocket client with a 20 KB awareness state was closed 4400 about ten
times a second forever, and since the provider sends its presence right after the socket
opens, before its sync step 2, the student's typing never reached the server while
their tab showed it."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import ServerProcess
from test_interop_node import NodeClient, node_modules

__all__ = ["node_modules"]

AVATAR = "data:image/png;base64," + "A" * 20_000  # 20 KB: over the 16 KiB limit


@pytest.mark.node
async def test_a_client_with_oversized_presence_stays_and_its_edits_sync(
    node_modules: Path, tmp_path: Path
) -> None:
    doc = "class-presence"
    async with ServerProcess(tmp_path / "srv") as srv:
        big = NodeClient(srv, doc, "s10", tmp_path / "s10.log")
        other = NodeClient(srv, doc, "s01", tmp_path / "s01.log")
        late = NodeClient(srv, doc, "s02", tmp_path / "s02.log")
        try:
            await other.start()
            await other.connect()
            await other.call("awareness", state={"user": {"name": "s01"}})
            await big.start()
            await big.connect()
            await big.call("waitAwareness", name="s01")
            await big.call("awareness", state={"user": {"name": "s10"}, "avatar": AVATAR})
            # the provider sends its presence first on every (re)connect: a reconnect
            # brings it again, before its sync step 2
            await big.call("disconnect")
            await big.connect()
            await big.call("insert", pos=0, text="AFTERBIG10 ")
            await other.call("insert", pos="end", text=" from s01")
            # its edits reach the server and the others; theirs reach it
            assert "AFTERBIG10" in await other.wait_text(contains="AFTERBIG10")
            assert "from s01" in await big.wait_text(contains="from s01")
            await late.start()
            await late.connect()
            assert "AFTERBIG10" in await late.wait_text(contains="AFTERBIG10")
            # others' presence is still relayed, to a newcomer and to it (y-websocket
            # drops remote states on a disconnect and takes them again at a newer clock)
            await late.call("waitAwareness", name="s01")
            await other.call("awareness", state={"user": {"name": "s01"}, "cursor": 3})
            await big.call("waitAwareness", name="s01", where={"cursor": 3})
            # its own presence is relayed to nobody, nor held for a newcomer
            await late.call("awareness", state={"user": {"name": "s02"}})
            await other.call("waitAwareness", name="s02")
            for client in (other, late):
                states = (await client.call("state"))["awareness"]
                assert not [s for s in states if "avatar" in (s["state"] or {})], states
                names = [(s["state"] or {}).get("user", {}).get("name") for s in states]
                assert "s10" not in names, names
            state = await big.call("state")
            assert state["connected"] and state["synced"], state
            assert state["lastClose"] is None, state  # never closed by the server
            # logged once per connection, at INFO, with the size and the limit
            log = srv.log_text()
            lines = [ln for ln in log.splitlines() if "over the limit of 16384" in ln]
            assert len(lines) == 2, lines  # (two connections: before and after reconnecting)
            assert "presence state of 20" in lines[0] and "INFO" in lines[0], lines
        finally:
            for c in (big, other, late):
                await c.aclose()
