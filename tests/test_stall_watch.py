"""The stall watch (server/stall_watch.py): a diagnostic that says where the event loop
was while something held it, so that a latency tail can be traced to its code."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from conftest import eventually, run_server

from palimpsest.settings import Settings
from palimpsest.stall_watch import StallWatch


def hold_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # what a blocking call on the loop's thread does


async def test_a_held_loop_is_reported_with_the_code_that_held_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = StallWatch(asyncio.get_running_loop(), threshold_ms=30)
    watch.start()
    try:
        await asyncio.sleep(0.05)  # a beat or two first
        with caplog.at_level(logging.WARNING, logger="palimpsest.stalls"):
            hold_the_loop_for(0.15)
            # (a loaded machine may hold the loop briefly before: wait for this stall)
            await eventually(lambda: any(h >= 0.1 for h, _ in watch.stalls),
                             what="the stall reported")  # fmt: skip
    finally:
        watch.stop()
    held, stacks = max(watch.stalls, key=lambda s: s[0])
    assert any("hold_the_loop_for" in stack for stack in stacks), stacks
    assert any("event loop held for" in r.getMessage() for r in caplog.records)
    assert any("hold_the_loop_for" in r.getMessage() for r in caplog.records)


async def test_the_server_watches_when_asked_and_only_then(settings: Settings) -> None:
    async with run_server(settings) as server:
        assert server.backend._stall_watch is None  # off by default
    settings.stall_report_ms = 40
    async with run_server(settings) as server:
        watch = server.backend._stall_watch
        assert watch is not None and watch.threshold == pytest.approx(0.04)
        hold_the_loop_for(0.12)
        await eventually(lambda: any(h >= 0.1 for h, _ in watch.stalls), what="reported")
    assert not watch._thread.is_alive()  # stopped with the server
