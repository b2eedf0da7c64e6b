"""An explicit undo group opened by an unmodified y-websocket client under Node.js
(tests/node/client.mjs sends the extension messages open_group and close_group on the
provider's own socket): its streamed edits, past a pause longer than UNDO_CAPTURE_MS
and past UNDO_MAX_GROUP events, are one undo step, and another user's words typed
inside it stay (docs/undo.md, "Explicit undo groups")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serverproc import ServerProcess
from test_interop_node import NodeClient, node_modules, y_websocket  # noqa: F401  (fixtures)

from palimpsest import client

pytestmark = pytest.mark.node

CAPTURE_MS, MAX_GROUP = 50, 10
GROUP = "answer-1"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    env = {
        "PALIMPSEST_UNDO_CAPTURE_MS": str(CAPTURE_MS),
        "PALIMPSEST_UNDO_MAX_GROUP": str(MAX_GROUP),
    }
    async with ServerProcess(tmp_path / "server", env=env) as srv:
        yield srv


async def test_a_y_websocket_bots_group_is_one_undo_and_keeps_a_humans_words(
    node_modules: Path,  # noqa: F811
    y_websocket: str,  # noqa: F811
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    alice = NodeClient(server, "g", "alice", tmp_path / "alice.log", y_websocket)
    bot = NodeClient(server, "g", "bot", tmp_path / "bot.log", y_websocket)
    try:
        for c in (alice, bot):
            await c.start()
            await c.connect()
        await alice.call("insert", text="Intro. ")
        await bot.wait_text(equals="Intro. ")

        opened = (await bot.call("openGroup", group=GROUP))["answer"]
        assert opened["ok"] is True and opened["group"] == GROUP, opened
        # the bot streams at the end, a character per update (each an event of its own);
        # alice types a word after its text twice; the bot pauses for 8 capture times
        await bot.call("type", text="tok00 tok01 tok02 tok03 ")
        await alice.wait_text(contains="tok03 ")
        await alice.call("insert", text="ALICE1 ")
        await bot.wait_text(contains="ALICE1 ")
        await bot.call("sleep", ms=8 * CAPTURE_MS)
        await bot.call("type", text="tok04 tok05 tok06 ")
        await alice.wait_text(contains="tok06 ")
        await alice.call("insert", text="ALICE2 ")
        await bot.wait_text(contains="ALICE2 ")
        await bot.call("type", text="tok07 tok08 ")
        # no wait for the server to hold the edits: it closes after what came before
        closed = (await bot.call("closeGroup", group=GROUP))["answer"]
        assert closed["ok"] is True and closed["steps"] == 1, closed
        full = "Intro. tok00 tok01 tok02 tok03 ALICE1 tok04 tok05 tok06 ALICE2 tok07 tok08 "
        await alice.wait_text(equals=full)

        async with client.History(server.http_url, user="bot") as h:
            events = [e async for e in h.iter_events("g")]
        streamed = [e.seq for e in events if (e.actor, e.kind) == ("bot", "edit")]
        assert len(streamed) == len("tok00 ") * 9 > MAX_GROUP
        assert opened["seq"] < streamed[0] and streamed[-1] < closed["seq"]

        undone = (await bot.call("request", message={"type": "undo"}))["answer"]
        assert undone["ok"] is True and undone["reverts"] == streamed, undone
        assert undone["removed"] == {"characters": len(streamed), "items": 0}, undone
        assert "removed_others" not in undone, undone
        for c in (alice, bot):
            await c.wait_text(equals="Intro. ALICE1 ALICE2 ")
        again = (await bot.call("request", message={"type": "undo"}))["answer"]
        assert again == {
            "type": "result",
            "id": again["id"],
            "ok": False,
            "reason": "nothing to undo",
            # (its group is on its redo stack now)
            "can_undo": False,
            "can_redo": True,
        }
    finally:
        await alice.aclose()
        await bot.aclose()
