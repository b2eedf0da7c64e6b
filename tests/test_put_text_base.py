"""PUT /api/docs/{doc}/text with a base: a bot reads a version, thinks, and writes its
fix of that version; what people typed meanwhile (real y-websocket clients under
Node.js) stays, and the bot's change is undoable and blamed as its own. A real server
process, real SQLite, the Python client (client.History)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess
from test_interop_node import NodeClient, node_modules

from palimpsest.client import History
from palimpsest.client.errors import NotFound

pytestmark = pytest.mark.node
__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed

FIRST = "teh quick brown fox.\n"
ALICE = "Alice's new sentence.\n"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(tmp_path / "server") as srv:
        yield srv


async def _alice(server: ServerProcess, tmp_path: Path, doc: str) -> NodeClient:
    alice = await NodeClient(server, doc, "alice", tmp_path / "alice.log").start()
    await alice.connect()
    return alice


async def test_a_bot_writing_from_an_old_version_keeps_what_was_typed_since(
    node_modules: Path, server: ServerProcess, tmp_path: Path
) -> None:
    alice = await _alice(server, tmp_path, "story")
    try:
        await alice.call("insert", pos=0, text=FIRST)
        async with History(server.http_url, user="bot") as bot:
            read = await bot.version("story")
            while read.text != FIRST:  # (alice's insert logged)
                read = await bot.version("story")
            # alice appends while the bot thinks, and types inside the word the bot fixes
            await alice.call("insert", pos="end", text=ALICE)
            await alice.call("insert", pos=4, text="very ")
            typed = "teh very quick brown fox.\n" + ALICE
            await alice.wait_text(equals=typed)
            now = await bot.version("story")
            while now.text != typed:  # (both logged: her text is hers before it is the log's)
                now = await bot.version("story")
            head = now.seq
            assert head > read.seq

            fixed = read.text.replace("teh", "the").replace("fox", "dog")
            seq = await bot.put_text("story", fixed, base=read.seq)
            assert seq == head + 1
            merged = "the very quick brown dog.\n" + ALICE
            assert await alice.wait_text(equals=merged) == merged
            assert (await bot.version("story")).text == merged

            # blame: the bot wrote only its fixes; alice's sentence is still hers
            runs = await bot.blame("story")
            by_bot = "".join(r.text for r in runs if r.actor == "bot")
            assert 0 < len(by_bot) <= len("thedog") and ALICE not in by_bot, runs
            by_alice = "".join(r.text for r in runs if r.actor == "alice")
            assert ALICE in by_alice and "very " in by_alice, runs
            events = await bot.events("story", after=head)
            [ev] = events.events
            assert (ev.actor, ev.kind, ev.meta.get("base")) == ("bot", "edit", read.seq)

            # the bot undoes its write: only its fix goes, alice's typing stays
            await bot.undo("story")
            after_undo = "teh very quick brown fox.\n" + ALICE
            assert await alice.wait_text(equals=after_undo) == after_undo
            await bot.redo("story")
            assert await alice.wait_text(equals=merged) == merged

            # the merged text on the version that holds it: nothing left to change
            now = await bot.version("story")
            assert now.text == merged
            assert await bot.put_text("story", merged, base=now.seq) is None

            # without a base the text read earlier overwrites (as documented)
            gone = await bot.put_text("story", read.text)
            assert gone is not None
            assert await alice.wait_text(equals=FIRST) == FIRST
    finally:
        await alice.aclose()


async def test_a_base_past_the_head_or_not_a_seq_is_refused_and_changes_nothing(
    node_modules: Path, server: ServerProcess, tmp_path: Path
) -> None:
    alice = await _alice(server, tmp_path, "memo")
    try:
        await alice.call("insert", pos=0, text="one\n")
        async with History(server.http_url, user="bot") as bot, httpx.AsyncClient(
            base_url=server.http_url
        ) as http:  # fmt: skip
            v = await bot.version("memo")
            while v.text != "one\n":
                v = await bot.version("memo")
            with pytest.raises(NotFound, match="head"):
                await bot.put_text("memo", "two\n", base=v.seq + 5)
            for bad in ("1", True, -1, 1.5):
                r = await http.put(
                    "/api/docs/memo/text", json={"text": "two\n", "base": bad}, params={"user": "b"}
                )
                assert r.status_code == 400 and "base" in r.json()["detail"], (bad, r.text)
            assert (await bot.version("memo")).seq == v.seq
            # a new document: base 0 is the empty version
            assert await bot.put_text("newdoc", "hi\n", base=0) == 1
            with pytest.raises(NotFound):
                await bot.put_text("newdoc2", "hi\n", base=3)
            # base 0 of a document with text: an insert into the empty version,
            # merged with the text there
            assert await bot.put_text("memo", "zero\n", base=0) is not None
            assert "zero\n" in await alice.wait_text(contains="zero\n")
            assert "one\n" in (await bot.version("memo")).text
    finally:
        await alice.aclose()
