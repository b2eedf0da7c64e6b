"""A position that stays put, in the client's units: ``Text.sticky(pos)`` follows its
place while an unmodified y-websocket client (Node.js) types non-ASCII text before it.
``session.text()`` counts code points, pycrdt's ``sticky_index`` counts UTF-8 bytes: a
bot that used pycrdt's StickyIndex as it is wrote 4 places off per "é🌍" typed before
its spot. (Inside non-ASCII text, and both ways, tests/test_client_sticky.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nodehelp import node_clients
from pycrdt import Assoc
from serverproc import ServerProcess
from test_interop_node import node_modules  # noqa: F401  (a fixture)

from palimpsest import client

pytestmark = pytest.mark.node


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(tmp_path / "server") as srv:
        yield srv


async def test_a_sticky_spot_follows_its_place_while_a_human_types_before_it(
    node_modules: Path,  # noqa: F811
    server: ServerProcess,
    tmp_path: Path,
) -> None:
    async with (
        node_clients(server, "spot", tmp_path, "human") as (human,),
        client.connect(server.ws_url, "spot", user="bot") as bot,
    ):
        await human.call("insert", pos=0, text="Intro.\n[[]]\nafter\n")
        await bot.wait_for(lambda: "[[]]" in str(bot.text()))
        t = bot.text()
        spot = t.sticky(str(t).index("]]"))  # Assoc.AFTER: it stays after what goes in
        for i in range(5):
            await human.call("insert", pos=0, text="é🌍")  # typed before the bot's spot
            await bot.wait_for(lambda i=i: str(t).count("🌍") == i + 1)
            assert spot.index == str(t).index("]]"), (i, spot.index, str(t))
            t.insert(spot.index, f"<{i}>")
            await bot.flush()
        want = "é🌍" * 5 + "Intro.\n[[<0><1><2><3><4>]]\nafter\n"
        await human.call("waitText", equals=want)
        assert str(t) == want

        # Assoc.BEFORE stays before what is inserted at it; a position past the end is
        # refused as insert() refuses it
        before = t.sticky(str(t).index("]]"), Assoc.BEFORE)
        t.insert(before.index, "X")
        t.insert(before.index, "Y")
        assert "<4>YX]]" in str(t)
        with pytest.raises(IndexError):
            t.sticky(len(t) + 1)
