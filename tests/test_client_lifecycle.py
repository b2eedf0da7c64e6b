"""A session's life around asyncio: cancelled while open or while opening (a timeout
around it, Ctrl-C), used from another event loop or another thread, awaited as
``await client.connect(...)``. Real servers on free ports; a SIGSTOPped one stands for a
server that stopped answering."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually
from pycrdt import Text as YText
from serverproc import ServerProcess

from palimpsest import client


def _cancel_soon(cm: asyncio.Timeout) -> None:
    """Make the `asyncio.timeout(None)` `cm` fire now: a cancellation from outside, as
    a bot's bound on its work or Ctrl-C under asyncio.run deliver it."""
    cm.reschedule(asyncio.get_running_loop().time())


async def test_leaving_a_session_by_cancellation_warns_what_is_lost_and_closes_the_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() stopped at the cancellation it met while unwinding (its task's
    cancelling() is non-zero all along): no warning about the edit the server never
    confirmed, the socket left open (ResourceWarning), the doc still observed."""
    caplog.set_level(logging.WARNING, logger="palimpsest.client")
    srv = ServerProcess(tmp_path)
    await srv.astart()
    assert srv.pid is not None
    ws: Any = None
    try:
        s = client.connect(srv.ws_url, "cancelled", user="ada")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as cm, s:
                ws = s._ws
                os.kill(srv.pid, signal.SIGSTOP)
                s.text().append("unconfirmed edit")
                _cancel_soon(cm)
                await asyncio.sleep(60)
        assert "closed with 1 local change(s)" in caplog.text, caplog.text
        assert ws.transport.is_closing()
        assert s._runner is not None and s._runner.done()
        # the document is no longer observed: an edit now is not counted as pending
        before = s.pending
        s.doc.get("content", type=YText).insert(0, "after")
        assert s.pending == before

        # close() itself cancelled (the server still frozen: its close handshake would
        # take 2 s): it still closes the socket and says what is lost, then lets the
        # cancellation go on
        os.kill(srv.pid, signal.SIGCONT)
        caplog.clear()
        b = await client.connect(srv.ws_url, "cancelled", user="bob").open()
        ws = b._ws
        os.kill(srv.pid, signal.SIGSTOP)
        b.text().append("also unconfirmed")
        closing = asyncio.create_task(b.close())
        await eventually(lambda: b._closing or b.pending == 0, what="close under way")
        await asyncio.sleep(0.2)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert "closed with 1 local change(s)" in caplog.text, caplog.text
        assert ws.transport.is_closing()
        assert b._runner is not None and b._runner.done()
    finally:
        os.kill(srv.pid, signal.SIGCONT)
        await srv.astop()


def _session_tasks() -> list[str]:
    return sorted(
        name
        for t in asyncio.all_tasks()
        if (name := t.get_name()).startswith("palimpsest:") and not t.done()
    )


async def test_a_cancelled_open_stops_the_session(tmp_path: Path) -> None:
    """open() cancelled while the server is not up yet (a timeout around it, a
    notebook's interrupt) left the session's task trying: it connected once the server
    came, and sent the edits made afterwards through a session the caller had given up."""
    srv = ServerProcess(tmp_path)  # its port is free: nobody listens there yet
    s = client.connect(srv.ws_url, "given-up", user="ada", connect_timeout=60)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as cm:
            opening = asyncio.ensure_future(s.open())
            await eventually(lambda: s._runner is not None, what="open() under way")
            _cancel_soon(cm)
            await opening
    assert _session_tasks() == []
    assert not s.connected and s.connections == 0
    s.text().insert(0, "typed into a session whose open() was cancelled")
    assert s.pending == 0  # not observed: nothing will carry it
    with pytest.raises(RuntimeError, match="connect"):
        await s.open()  # a new session is the way, and the error says so

    await srv.astart()
    try:
        async with client.connect(srv.ws_url, "given-up", user="bob") as b:
            await asyncio.sleep(1.0)  # (the old session's back-off was 0.05-0.4 s here)
            assert str(b.text()) == ""
    finally:
        await srv.astop()


def test_a_session_used_from_another_event_loop_says_so_at_once(tmp_path: Path) -> None:
    """Sync code driving a session with asyncio.run() per step (a Flask async view per
    request shares a module-level one the same way): each run is a new loop, and the
    session's task and futures live in the first. flush() waited its whole timeout,
    then raised ServerGone "not connected ... (reconnecting: no error seen)"."""
    with ServerProcess(tmp_path) as srv:
        s = client.connect(srv.ws_url, "loops", user="ada")
        asyncio.run(s.open())
        s.text().append("a")
        rule = "belongs to the event loop that opened it"
        with pytest.raises(RuntimeError, match=rule):
            asyncio.run(s.flush(timeout=5))
        with pytest.raises(RuntimeError, match=rule):
            asyncio.run(s.undo(timeout=5))
        with pytest.raises(RuntimeError, match=rule):
            asyncio.run(s.wait_for(lambda: False, timeout=5))
        # its loop is gone (and its task with it): closing is all that is left to do
        asyncio.run(s.close())

        # a loop that still runs, in another thread: its session is not ours either
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever)
        thread.start()
        try:
            t = asyncio.run_coroutine_threadsafe(
                client.connect(srv.ws_url, "loops", user="bob").open(), loop
            ).result(30)
            with pytest.raises(RuntimeError, match=rule):
                asyncio.run(t.flush(timeout=5))
            with pytest.raises(RuntimeError, match=rule):
                asyncio.run(t.close())
            assert asyncio.run_coroutine_threadsafe(t.flush(), loop).result(30) is None
            asyncio.run_coroutine_threadsafe(t.close(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def test_editing_from_another_thread_is_refused_and_a_raw_edit_still_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The run_coroutine_threadsafe pattern with edits made from the caller's thread:
    the session's observer woke the send loop from that thread (asyncio's debug mode:
    "Non-thread-safe operation invoked on an event loop other than the current one",
    and the send loop never woke again). pycrdt's transactions are not thread-safe (a
    thread's edit joins, or breaks, a transaction the loop's thread has open), so
    session.text() refuses an edit from another thread before it happens; an edit made
    through pycrdt itself cannot be stopped, and is handed to the loop's thread to be
    sent, with a warning."""
    caplog.set_level(logging.WARNING, logger="palimpsest.client")
    with ServerProcess(tmp_path) as srv:
        loop = asyncio.new_event_loop()
        loop.set_debug(True)  # asyncio then checks that its calls come from its thread
        thread = threading.Thread(target=loop.run_forever)
        thread.start()

        def call(coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

        try:
            s = call(client.connect(srv.ws_url, "threads", user="ada").open())
            with pytest.raises(RuntimeError, match="thread"):
                s.text().append("from the main thread")
            with pytest.raises(RuntimeError, match="thread"):
                s.text().set("from the main thread")

            async def edit_on_the_loop() -> str:
                s.text().append("on the loop's thread")
                await s.flush()
                return str(s.text())

            assert call(edit_on_the_loop()) == "on the loop's thread"

            # the raw edit while the loop's thread is parked outside pycrdt: made while it
            # applies what the server sends (the echo of the edit above), the two collide
            # in pycrdt ("Already mutably borrowed", a clean-clone run under load), which
            # is the unsafety the warning names, not what this test is about
            parked, resume = threading.Event(), threading.Event()
            loop.call_soon_threadsafe(lambda: (parked.set(), resume.wait(30)))
            assert parked.wait(30)
            try:
                s.doc.get("content", type=YText).insert(0, "raw ")  # (what the observer sees)
            finally:
                resume.set()
            assert "from another thread" in caplog.text, caplog.text
            call(s.flush())
            call(s.close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

        async def on_server() -> str:
            async with client.connect(srv.ws_url, "threads", user="bob") as b:
                return str(b.text())

        assert asyncio.run(on_server()) == "raw on the loop's thread"


async def test_awaiting_connect_opens_the_session(tmp_path: Path) -> None:
    """`await client.connect(...)` (a notebook's top-level await) was a TypeError: connect
    is the Session class, and a Session was not awaitable."""
    async with ServerProcess(tmp_path) as srv:
        s = await client.connect(srv.ws_url, "awaited", user="ada")
        try:
            assert s.connected and s.role is not None
            s.text().append("awaited")
            await s.flush()
        finally:
            await s.close()
        # and `async with` on a session already open (or awaited in place) uses it as is
        async with await client.connect(srv.ws_url, "awaited", user="bob") as b:
            assert b.text() == "awaited" and b.connections == 1
        assert not b.connected


async def test_a_cancelled_wait_for_ends_even_when_an_edit_wakes_it_in_the_same_turn(
    server: Any,
) -> None:
    """On 3.11, asyncio.wait_for lost a cancellation that came in the turn its inner
    future completed (it returned the result instead): a bot's task waiting in
    session.wait_for() just after an edit (whose sending wakes every waiter) was
    cancelled, and went on waiting, for its whole timeout (an hour). Done many times:
    the cancellation met the wake-up in some of them."""
    async with client.connect(server.ws_url, "cancel-wait", user="bot") as s:
        for i in range(30):
            ready = asyncio.Event()

            async def holder(ready: asyncio.Event = ready) -> None:
                s.text().append("x")
                ready.set()
                await s.wait_for(lambda: False, timeout=3600)

            task = asyncio.create_task(holder())
            await ready.wait()
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done, f"round {i}: the cancelled wait_for still waits"
            assert task.cancelled()
