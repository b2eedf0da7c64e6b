"""An extension whose plain hook blocks (docs/extending.md: "quick, never blocking")
holds the event loop for every document of the process. The log must name it, not
blame the hooks and the store that waited behind it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence

import pytest
from conftest import eventually, run_server
from yclient import connect

from palimpsest import Client, Event, Extension, Room
from palimpsest.backend import Backend
from palimpsest.features import builtin_extensions
from palimpsest.hook_timing import SLOW_HOOK_SECONDS
from palimpsest.settings import Settings
from palimpsest.stall_watch import StallWatch

#: far past the threshold, so that a busy machine changes nothing
BLOCK = max(0.3, 3 * SLOW_HOOK_SECONDS)


class Blocking(Extension):
    """A policy that asks a service synchronously: time.sleep stands for the call."""

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        if room.name.startswith("slow"):
            time.sleep(BLOCK)


class Patient(Extension):
    """An innocent on_committed that awaits a little."""

    def __init__(self) -> None:
        self.calls = 0

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        self.calls += 1
        await asyncio.sleep(0.5)


async def test_a_blocking_hook_is_named_and_the_hook_that_waited_says_who_held_the_loop(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Field test: on_update sleeping 0.2 s per update stalled flushes of an unrelated
    document, and the log said only that an innocent SearchIndex.on_committed "did not
    return within 3 s". Now the blocking hook is named with how long it took, and the
    timeout says who held the loop meanwhile."""
    settings.hook_timeout_seconds = 1.0
    patient = Patient()
    exts = [Blocking(), patient, *builtin_extensions(settings)]
    backend = Backend(settings, extensions=exts)
    caplog.set_level(logging.WARNING, logger="palimpsest.extensions")
    async with run_server(settings, backend) as srv:
        async with connect(srv.ws_url, "slow-doc", "ann") as c:
            c.insert(0, "a")
            await eventually(lambda: patient.calls, what="the first on_committed began")
            for _ in range(8):  # each holds the loop while Patient's sleep runs
                c.insert(0, "b")
            await eventually(
                lambda: "did not return within" in caplog.text, timeout=20, what="a timeout"
            )
    text = caplog.text
    assert "Blocking.on_update took" in text and "holding the event loop" in text, text
    timeout = next(r.getMessage() for r in caplog.records if "did not return" in r.getMessage())
    assert "Patient" in timeout and "held" in timeout and "Blocking.on_update" in timeout, timeout


async def test_the_stall_watch_names_the_hook_that_held_the_loop(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="palimpsest.stalls")
    backend = Backend(settings, extensions=[Blocking(), *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        watch = StallWatch(asyncio.get_running_loop(), threshold_ms=BLOCK * 1000 / 2)
        watch.start()
        try:
            async with connect(srv.ws_url, "slow-2", "ann") as c:
                c.insert(0, "a")
                await eventually(lambda: watch.stalls, what="a stall reported")
        finally:
            watch.stop()
    report = next(r.getMessage() for r in caplog.records if "event loop held" in r.getMessage())
    assert "in extension hook Blocking.on_update" in report, report


class BlockingAsync(Extension):
    """An async hook that blocks between its awaits: time.sleep where asyncio.sleep (or
    asyncio.to_thread) was meant."""

    def __init__(self, block: float = BLOCK) -> None:
        self.block = block
        self.committed = 0

    async def on_connect(self, client: Client) -> None:
        await asyncio.sleep(0)
        if client.doc.startswith("blockconn"):
            time.sleep(self.block)  # noqa: ASYNC251 - the misbehaviour under test

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        self.committed += 1
        if doc.startswith("blockc") and self.committed == 1:
            time.sleep(self.block)  # noqa: ASYNC251 - the misbehaviour under test


async def test_a_blocking_async_hook_is_named_by_default(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Field test: time.sleep(2) in an async on_committed (or authenticate) stalled every
    document and nothing was logged: only plain hooks were timed. Each step of an
    awaited hook's coroutine is timed as a plain hook's call is, without the stall watch."""
    backend = Backend(settings, extensions=[BlockingAsync(), *builtin_extensions(settings)])
    caplog.set_level(logging.WARNING, logger="palimpsest.extensions")
    async with run_server(settings, backend) as srv:
        async with connect(srv.ws_url, "blockconn-1", "ann"):
            pass
        async with connect(srv.ws_url, "blockc-1", "ann") as c:
            c.insert(0, "a")
            await eventually(
                lambda: "BlockingAsync.on_committed took" in caplog.text, what="on_committed named"
            )
    text = caplog.text
    assert "BlockingAsync.on_connect took" in text, text
    said = next(r.getMessage() for r in caplog.records if "on_committed took" in r.getMessage())
    assert "holding the event loop" in said and "between its awaits" in said, said


async def test_the_stall_watch_names_the_async_hook_that_held_the_loop(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="palimpsest.stalls")
    backend = Backend(settings, extensions=[BlockingAsync(), *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        watch = StallWatch(asyncio.get_running_loop(), threshold_ms=BLOCK * 1000 / 2)
        watch.start()
        try:
            async with connect(srv.ws_url, "blockc-2", "ann") as c:
                c.insert(0, "a")
                await eventually(lambda: watch.stalls, what="a stall reported")
        finally:
            watch.stop()
    report = next(r.getMessage() for r in caplog.records if "event loop held" in r.getMessage())
    assert "in extension hook BlockingAsync.on_committed" in report, report


async def test_the_commit_watch_says_the_loop_was_held_not_the_store(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Field test: after a hook held the loop, the first warning was "the sqlite store
    has not answered a commit for 10.3 s": the store had answered, and its answer waited
    for the loop. Here a commit is in flight (another connection holds the write lock a
    moment) when a hook holds the loop 1.5 s; the lock goes at once, and the warning
    that follows says who held the loop, and that the answer may have waited for it."""
    from palimpsest import commit
    from palimpsest.hook_timing import Timed

    monkeypatch.setattr(commit, "WAIT_WARN", 1.0)
    backend = Backend(settings, extensions=builtin_extensions(settings))
    caplog.set_level(logging.WARNING, logger="palimpsest")
    async with run_server(settings, backend) as srv:
        async with connect(srv.ws_url, "slow-3", "ann") as c:
            c.insert(0, "a")
            await eventually(lambda: backend.committer.last_commit, what="the first commit")
            locker = sqlite3.connect(settings.db, check_same_thread=False, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
            c.insert(0, "b")
            await eventually(lambda: backend.committer._in_flight, what="a commit in flight")
            threading.Timer(0.1, locker.execute, ("ROLLBACK",)).start()
            Timed(Holding(), "on_update")(None, None, b"")  # a plain hook's call, 1.5 s
            await eventually(
                lambda: "has not answered a commit" in caplog.text, timeout=5, what="the warning"
            )
            locker.close()
    said = next(r.getMessage() for r in caplog.records if "not answered" in r.getMessage())
    assert "Holding.on_update" in said and "waited for the event loop" in said, said


class Holding(Extension):
    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        time.sleep(1.5)
