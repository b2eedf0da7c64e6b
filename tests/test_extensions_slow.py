"""An extension whose plain hook blocks (docs/extending.md: "quick, never blocking")
holds the event loop for every document of the process. The log must name it, not
blame the hooks and the store that waited behind it."""

from __future__ import annotations

import asyncio
import logging
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
