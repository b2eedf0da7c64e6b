"""The client reconnects by itself: after a clean server restart and after a kill -9,
with edits made while the server was down, and no edit is lost or logged twice.

The server runs as a real subprocess (tests/serverproc.py) on a free port."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text
from serverproc import ServerProcess

from palimpsest import client
from palimpsest.store.sqlite import SQLiteStore


async def logged_edits(db: Path, doc: str) -> tuple[str, int]:
    """The text the log folds to, and how many logged edits changed nothing (duplicates)."""
    store = SQLiteStore(db)
    await store.start()
    try:
        events = await store.read(doc)
    finally:
        await store.stop()
    ydoc: Doc[Any] = Doc()
    text = ydoc.get("content", type=Text)
    changed: list[bool] = []
    ydoc.observe(lambda _e: changed.append(True))
    useless = 0
    for ev in events:
        changed.clear()
        ydoc.apply_update(ev.update)
        if ev.kind == "edit" and not changed:
            useless += 1
    return str(text), useless


async def test_reconnect_after_restart_sends_offline_edits_once(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    await srv.astart()
    try:
        async with (
            client.connect(srv.ws_url, "restart", user="ada", max_backoff=0.3) as a,
            client.connect(srv.ws_url, "restart", user="bob", max_backoff=0.3) as b,
        ):
            a.text().insert(0, "before. ")
            await a.flush()
            await b.wait_for(lambda: b.text() == "before. ")

            await srv.astop()
            await a.wait_for(lambda: not a.connected, timeout=10)
            await b.wait_for(lambda: not b.connected, timeout=10)
            # offline: both edit; nothing can be sent
            a.text().append("ada offline. ")
            b.text().insert(0, "bob offline. ")
            a.text().delete(0, 1)  # a deletion too: "efore."
            assert not a.connected

            await srv.astart()
            await a.wait_connected(timeout=20)
            await b.wait_connected(timeout=20)
            assert a.connections == 2 and b.connections == 2
            await a.flush()
            await b.flush()
            expected = "bob offline. efore. ada offline. "
            await a.wait_for(lambda: a.text() == expected, timeout=10)
            await b.wait_for(lambda: b.text() == expected, timeout=10)
            # and live editing goes on
            a.text().append("after.")
            await b.wait_for(lambda: b.text() == expected + "after.", timeout=10)
            await a.flush()
    finally:
        await srv.astop()
    text, useless = await logged_edits(srv.db_path, "restart")
    assert text == "bob offline. efore. ada offline. after."
    assert useless == 0


async def test_reconnect_after_kill_9_loses_nothing(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    await srv.astart()
    try:
        async with client.connect(srv.ws_url, "crash", user="ada", max_backoff=0.3) as a:
            a.text().insert(0, "durable. ")
            await a.flush()
            # typed right before the crash: maybe logged, maybe not
            for ch in "in flight. ":
                a.text().append(ch)
                await asyncio.sleep(0)
            await srv.akill9()
            await a.wait_for(lambda: not a.connected, timeout=10)
            for ch in "offline. ":
                a.text().append(ch)
            a.set_presence({"name": "ada"})

            await srv.astart()
            await a.wait_connected(timeout=20)
            await a.flush()
            assert a.text() == "durable. in flight. offline. "
            async with client.connect(srv.ws_url, "crash", user="bob", max_backoff=0.3) as b:
                assert b.text() == "durable. in flight. offline. "
                # presence came back with the reconnection
                await b.wait_for(lambda: {"name": "ada"} in b.presence.values(), timeout=5)
    finally:
        await srv.astop()
    text, useless = await logged_edits(srv.db_path, "crash")
    assert text == "durable. in flight. offline. "
    assert useless == 0


async def test_undo_after_reconnect(tmp_path: Path) -> None:
    # the undo stack lives in the log: it survives the crash and works on the new socket
    srv = ServerProcess(tmp_path)
    await srv.astart()
    try:
        async with client.connect(srv.ws_url, "undo-crash", user="ada", max_backoff=0.3) as a:
            a.text().insert(0, "keep ")
            await a.close_group()
            a.text().append("drop")
            await a.flush()
            await srv.akill9()
            await a.wait_for(lambda: not a.connected, timeout=10)
            await srv.astart()
            result = await a.undo(timeout=20)
            assert result.ok, result.reason
            await a.wait_for(lambda: a.text() == "keep ", timeout=10)
    finally:
        await srv.astop()
