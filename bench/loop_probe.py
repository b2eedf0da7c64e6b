"""How long the event loop is held: a probe task that sleeps a fixed period at a time and
notes how late it wakes (a hold of the loop by something else), and how much CPU time
this thread spent between two wake-ups (the same hold, less the time the machine,
shared, gave to other processes meanwhile). Used by bench/book_holds.py and
bench/undo_containers_bench.py.

    with Probe(0.001) as probe:
        probe.case = "undo"          # the holds from here on are the undo's
        ...
        probe.case = None            # not noted
        probe.longest["undo"], probe.longest_cpu["undo"]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Probe:
    """A task that sleeps `period` seconds at a time: per case (``case``, or what
    ``current`` says; None: not noted), the longest lateness of a wake-up (a hold) and
    the most CPU time this thread spent between two wake-ups."""

    def __init__(self, period: float, case: str | None = None) -> None:
        self.period = period
        self.case = case
        self.longest: dict[str, float] = {}
        self.longest_cpu: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def current(self) -> str | None:
        """The case a wake-up's hold counts for (a subclass may tell it otherwise)."""
        return self.case

    async def _run(self) -> None:
        while True:
            t, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.period)
            late, used = time.perf_counter() - t - self.period, time.thread_time() - cpu
            case = self.current()
            if case is None:
                continue
            if late > self.longest.get(case, 0.0):
                self.longest[case] = late
            if used > self.longest_cpu.get(case, 0.0):
                self.longest_cpu[case] = used

    async def hold_of(self, case: str, request: Awaitable[T]) -> tuple[tuple[float, float], T]:
        """Await `request` as `case` (its holds noted anew): its longest hold (wall, CPU
        seconds) and its result."""
        await asyncio.sleep(0.05)  # the probe is in its loop
        self.longest.pop(case, None)
        self.longest_cpu.pop(case, None)
        self.case = case
        try:
            got = await request
        finally:
            self.case = None
        return (self.longest.get(case, 0.0), self.longest_cpu.get(case, 0.0)), got

    def __enter__(self) -> Probe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


__all__ = ["Probe"]
