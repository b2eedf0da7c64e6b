"""Graceful shutdown: SIGTERM to the real server process while a client types."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest import eventually
from pycrdt import Doc, Text
from serverproc import ServerProcess
from yclient import connect

from palimpsest.snapshots import load
from palimpsest.store import open_store


async def stored(db: Path, doc: str) -> tuple[str, int, list[int]]:
    """Content, head and snapshot seqs of a document, read from the SQLite file."""
    store = open_store(f"sqlite:///{db}")
    async with store:
        loaded = await load(store, doc)
        snaps = [s.seq for s in await store.snapshots(doc) if s.valid]
        return str(loaded.doc.get("content", type=Text)), loaded.seq, snaps


async def test_sigterm_while_typing_loses_nothing(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, extra_args=["--log-json"])
    await srv.astart()
    try:
        ydoc: Doc = Doc()
        async with (
            connect(srv.ws_url, "shut", user="ann", ydoc=ydoc) as typist,
            connect(srv.ws_url, "shut", user="obs") as observer,
        ):
            count = 0

            async def type_() -> None:
                nonlocal count
                while typist.close_code is None and count < 20_000:
                    typist.insert(len(typist.content), f"{count};")
                    count += 1
                    await asyncio.sleep(0.001)

            typing = asyncio.create_task(type_())
            await eventually(lambda: len(observer.content) > 300, what="edits flowing")
            await srv.astop()  # SIGTERM, and wait for the process to exit
            await eventually(lambda: typist.close_code is not None and observer.close_code
                             is not None, what="both clients closed")  # fmt: skip
            typing.cancel()
            seen = observer.content
            assert typist.close_code == 1001, (typist.close_code, typist.close_reason)
            assert observer.close_code == 1001, (observer.close_code, observer.close_reason)
        typed = str(ydoc.get("content", type=Text))
        assert typed.startswith(seen)

        # every edit anybody saw (so: was acknowledged durable) is in the log, and the
        # open room was checkpointed on the way out
        content, head, snaps = await stored(srv.db_path, "shut")
        assert content.startswith(seen) and typed.startswith(content)
        assert len(content) >= len(seen) > 300
        assert snaps and snaps[-1] == head, (snaps, head)

        # the typist comes back (as y-websocket does after 1001) and re-sends the rest
        await srv.astart()
        async with connect(srv.ws_url, "shut", user="ann", ydoc=ydoc) as again:
            assert again.content == typed
            async with connect(srv.ws_url, "shut", user="reader") as reader:
                await eventually(lambda: reader.content == typed, what="server has it all")

        log = srv.log_text()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert any("going away: closed 2 connections" in entry["msg"] for entry in lines), log
        assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
        # with --log-json every log line is JSON (the rest are the banner's print lines)
        others = [ln for ln in log.splitlines() if ln and not ln.startswith(("{", "palimpsest:",
                                                                          "====="))]  # fmt: skip
        assert not others, others
        assert any(entry["msg"] == "stopped" for entry in lines)
        assert "1012" not in log
    finally:
        await srv.astop()
