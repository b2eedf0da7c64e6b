"""The client reconnects by itself: after a clean server restart and after a kill -9,
with edits made while the server was down, and no edit is lost or logged twice.

The server runs as a real subprocess (tests/serverproc.py) on a free port, or in this
process (run_server) for one whose documents cannot be loaded."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import run_server
from pycrdt import Doc, Text
from serverproc import ServerProcess

from palimpsest import Client, Extension, Room, client
from palimpsest.backend import Backend
from palimpsest.errors import StoreError
from palimpsest.features import builtin_extensions
from palimpsest.settings import Settings
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
            # a program sees its edits wait (pending read 0 while offline)
            assert (a.pending, b.pending) == (2, 1)

            await srv.astart()
            await a.wait_connected(timeout=20)
            await b.wait_connected(timeout=20)
            assert a.connections == 2 and b.connections == 2
            await a.flush()
            await b.flush()
            assert (a.pending, b.pending) == (0, 0)
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


async def test_reconnect_after_kill_9_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="palimpsest.client")
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

            for _ in range(100):  # (the session's back-off tries again meanwhile)
                if "cannot reconnect yet" in caplog.text:
                    break
                await asyncio.sleep(0.1)
            await srv.astart()
            await a.wait_connected(timeout=20)
            await a.flush()
            assert a.text() == "durable. in flight. offline. "
            # a bot at the default log level hears of the outage: once, not every attempt
            warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert any("connection closed with 1006" in m and "reconnecting" in m for m in warned)
            assert sum("cannot reconnect yet" in m for m in warned) == 1, warned
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


async def test_offline_edits_over_the_frame_limit_all_reach_the_server(tmp_path: Path) -> None:
    # 9 MiB typed while the server is down: more than its 8 MiB frame limit. The step 2
    # that carries them goes as a step 2 and sync updates of about 1 MiB each (it was
    # one frame: 4413, and the session failed for good with every edit)
    srv = ServerProcess(tmp_path)
    await srv.astart()
    chunk = 1 << 20
    expected = "online. " + "".join(chr(ord("a") + i) * chunk for i in range(9))
    try:
        async with client.connect(srv.ws_url, "bigoffline", user="ada", max_backoff=0.3) as a:
            a.text().insert(0, "online. ")
            await a.flush()
            await srv.astop()
            await a.wait_for(lambda: not a.connected, timeout=10)
            for i in range(9):  # nine pastes of 1 MiB
                a.text().append(chr(ord("a") + i) * chunk)
            await srv.astart()
            await a.wait_connected(timeout=30)
            await a.flush(timeout=120)
            assert a.error is None and a.connections == 2
        async with client.connect(srv.ws_url, "bigoffline", user="bob") as b:
            assert b.text() == expected
    finally:
        await srv.astop()
    text, useless = await logged_edits(srv.db_path, "bigoffline")
    assert text == expected
    assert useless == 0


async def test_close_when_the_server_died_unnoticed_warns_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="palimpsest.client")
    srv = ServerProcess(tmp_path)
    await srv.astart()
    try:
        # a healthy close of an edit never flushed: the server answers the close, so the
        # edit reached it, and nothing is said
        async with client.connect(srv.ws_url, "lost", user="ada") as a:
            a.text().insert(0, "saved ")
        assert "local change" not in caplog.text

        # the server killed; the session may or may not have seen the socket close when
        # the edit is made and close() called. Either way close() does not wait out its
        # flush_timeout (the suite's timeout would stop it) and says what is lost
        a = await client.connect(srv.ws_url, "lost", user="ada", max_backoff=0.3).open()
        assert a.text() == "saved "
        await srv.akill9()
        a.text().append("lost ")
        await a.close(flush_timeout=600)
        assert "closed with 1 local change(s)" in caplog.text
        assert "did not reach the server" in caplog.text

        # a server that stopped answering (SIGSTOP: a partition, nothing noticed): the
        # edit goes into the socket, the close gets no answer, so it may be lost
        await srv.astart()
        b = await client.connect(srv.ws_url, "lost", user="bob").open()
        assert b.text() == "saved "  # ada's second edit never reached the server
        caplog.clear()
        assert srv.pid is not None
        os.kill(srv.pid, signal.SIGSTOP)
        try:
            b.text().append("unconfirmed ")
            b.text().append("twice ")
            await b.close(flush_timeout=600)
        finally:
            os.kill(srv.pid, signal.SIGCONT)
        assert "closed with 2 local change(s)" in caplog.text
    finally:
        await srv.astop()


async def test_close_after_the_server_went_away_does_not_count_what_it_confirmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Edits the server logged and echoed are not "lost" when the connection then ends
    for good (here reconnect=False and the server stops): close() warned of every edit
    sent on the connection, since only flush() or a clean close of ours forgot them."""
    caplog.set_level(logging.WARNING, logger="palimpsest.client")
    srv = ServerProcess(tmp_path)
    await srv.astart()
    try:
        a = await client.connect(srv.ws_url, "kept", user="ada", reconnect=False).open()
        for i in range(10):
            a.text().append(f"[{i}]")
            await a.wait_for(lambda: a.pending == 0)
        a.text().delete(0, 3)  # deletes only: its echo says so by its deletions
        await a.wait_for(lambda: a.pending == 0)
        # bob's edit is logged after all of ada's, and the server sends a connection its
        # updates in log order: once ada holds it, she has had the echo of each of hers
        async with client.connect(srv.ws_url, "kept", user="bob") as b:
            await b.wait_for(lambda: str(b.text()).startswith("[1]"))
            b.text().append("(bob)")
            await a.wait_for(lambda: str(a.text()).endswith("(bob)"))
        await srv.astop()
        with pytest.raises(client.ServerGone, match="1001"):  # (reconnect=False)
            await a.wait_for(lambda: False, timeout=60)
        await a.close()
        assert "local change" not in caplog.text, caplog.text
        await srv.astart()
        async with client.History(srv.http_url, user="check") as h:
            assert (await h.version("kept")).text == "".join(
                f"[{i}]" for i in range(1, 10)
            ) + "(bob)"
    finally:
        await srv.astop()


async def test_an_undo_that_timed_out_tells_its_late_outcome(tmp_path: Path) -> None:
    """An undo whose answer does not come in time was sent all the same, and a paused
    server does it when it resumes: the Timeout says so, and its `late` gives the
    answer when it comes, or ServerGone when the connection is lost first (the outcome
    then unknown)."""
    srv = ServerProcess(tmp_path)
    await srv.astart()
    assert srv.pid is not None
    try:
        async with client.connect(srv.ws_url, "late", user="bot", max_backoff=0.3) as s:
            s.text().append("keep me")
            await s.flush()
            os.kill(srv.pid, signal.SIGSTOP)
            try:
                with pytest.raises(client.Timeout, match="the server may still do it") as slow:
                    await s.undo(timeout=1)
            finally:
                os.kill(srv.pid, signal.SIGCONT)
            assert slow.value.late is not None
            done = await slow.value.late
            assert done == client.OpResult(
                True, 2, None, removed_characters=len("keep me"), reverts=(1,)
            )
            await s.wait_for(lambda: str(s.text()) == "")

            s.text().append("again")
            await s.flush()
            os.kill(srv.pid, signal.SIGSTOP)
            try:
                with pytest.raises(client.Timeout) as lost:
                    await s.redo(timeout=1)
                await srv.akill9()
            finally:
                if srv.running:
                    os.kill(srv.pid, signal.SIGCONT)
            assert lost.value.late is not None
            with pytest.raises(client.ServerGone, match="may or may not have been applied"):
                await lost.value.late
    finally:
        await srv.astop()


async def test_presence_of_a_peer_that_left_during_an_outage_is_not_kept(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    await srv.astart()
    try:
        async with (
            client.connect(srv.ws_url, "pres", user="ada", max_backoff=0.3) as a,
            client.connect(srv.ws_url, "pres", user="cy", max_backoff=0.3) as c,
        ):
            b = await client.connect(srv.ws_url, "pres", user="bob", max_backoff=0.3).open()
            b.set_presence({"name": "bob"})
            c.set_presence({"name": "cy"})
            await a.wait_for(lambda: len(a.presence) == 2, timeout=10)
            await srv.akill9()
            await a.wait_for(lambda: not a.connected, timeout=10)
            assert a.presence == {}  # nobody is known to be there while we are cut off
            await b.close()  # bob leaves while the server is down: nobody hears it
            await srv.astart()
            await a.wait_connected(timeout=30)
            # cy re-announces to the new connection; bob, who is gone, does not come back
            await a.wait_for(lambda: {"name": "cy"} in a.presence.values(), timeout=10)
            assert list(a.presence.values()) == [{"name": "cy"}]
    finally:
        await srv.astop()


class Unreadable(Extension):
    """Counts the websocket connections to each document; while `broken`, loading a
    document fails (as a store that cannot be read does: the server accepts the socket,
    then closes it with 1011)."""

    def __init__(self) -> None:
        self.broken = False
        self.connects = 0

    async def on_connect(self, client: Client) -> None:
        self.connects += 1

    async def on_load(self, room: Room) -> None:
        if self.broken:
            raise StoreError(f"the document {room.name!r} cannot be read (test)")


async def test_accepted_then_closed_connections_back_off(settings: Settings) -> None:
    """A server that accepts the websocket and then closes it (the document cannot be
    loaded) is tried again with a growing delay: the handshake alone does not reset the
    back-off, the sync does."""
    ext = Unreadable()
    backend = Backend(settings, extensions=[ext, *builtin_extensions(settings)])
    async with run_server(settings, backend):
        a = await client.connect(
            f"ws://127.0.0.1:{settings.port}/ws", "shelf", user="ada", max_backoff=5.0
        ).open()
    try:
        assert a.connections == 1
        await a.wait_for(lambda: not a.connected, timeout=10)
        ext.broken = True
        backend = Backend(settings, extensions=[ext, *builtin_extensions(settings)])
        async with run_server(settings, backend):
            before = ext.connects
            await asyncio.sleep(3.0)  # the window the attempts are counted over
            tried = ext.connects - before
            # with no back-off: a new attempt every ~0.05 s (some 40-60 in the window);
            # doubling from 0.05 s: 0.05 + 0.1 + ... + 1.6 fit in it, jitter halving
            # them at most: at most 8 attempts
            assert 1 <= tried <= 10, tried
            assert not a.connected
            ext.broken = False  # readable again: the session syncs by itself
            await a.wait_connected(timeout=20)
            assert a.connections == 2
    finally:
        await a.close()
