"""The stall watch (server/stall_watch.py): a diagnostic that says where the event loop
was while something held it, so that a latency tail can be traced to its code."""

from __future__ import annotations

import asyncio
import logging
import threading
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


class Witness:
    """Says in which thread it was freed."""

    def __init__(self, freed_in: list[int]) -> None:
        self.freed_in = freed_in

    def __del__(self) -> None:
        self.freed_in.append(threading.get_ident())


def hold_the_loop_with(freed_in: list[int], seconds: float) -> None:
    witness = Witness(freed_in)  # a local of a call the watch samples
    time.sleep(seconds)
    assert witness.freed_in is freed_in


async def test_what_a_sampled_call_held_is_freed_in_the_loops_thread() -> None:
    """The watch keeps the frames it samples, and the locals of a call the loop has
    since left with them: they are the loop's to free, never the watch's thread's (an
    undo's pycrdt UndoManager freed there, while the loop held a transaction on its
    document, took the process down)."""
    watch = StallWatch(asyncio.get_running_loop(), threshold_ms=30)
    watch.start()
    freed_in: list[int] = []
    try:
        await asyncio.sleep(0.05)
        hold_the_loop_with(freed_in, 0.15)
        await eventually(lambda: any(h >= 0.1 for h, _ in watch.stalls), what="the stall")
        hold_the_loop_for(0.15)  # sampled again (the watch's thread let go of the last ones)
        await eventually(lambda: freed_in, what="the witness freed")
    finally:
        watch.stop()
    assert freed_in == [threading.get_ident()]
