"""server.cpu_account: a task's CPU on the loop and on the worker threads it uses."""

from __future__ import annotations

import asyncio
import time

from palimpsest import cpu_account


def spin(seconds: float) -> int:
    """Burn about `seconds` of this thread's CPU."""
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


async def test_a_charged_task_counts_its_threads_and_its_loop_stretches() -> None:
    account = cpu_account.Account()

    async def work() -> None:
        with cpu_account.charged_to(account):
            assert await cpu_account.to_thread(spin, 0.05) > 0
            with cpu_account.on_loop():
                spin(0.03)
            await asyncio.sleep(0.05)  # waiting is not CPU

    await work()
    assert 0.075 <= account.seconds < 0.5


async def test_nothing_is_charged_outside_the_task() -> None:
    account = cpu_account.Account()
    other = cpu_account.Account()

    async def charged() -> None:
        with cpu_account.charged_to(account):
            await asyncio.sleep(0.1)

    async def uncharged() -> None:
        await cpu_account.to_thread(spin, 0.03)
        with cpu_account.on_loop():
            spin(0.03)

    async def elsewhere() -> None:
        with cpu_account.charged_to(other):
            await cpu_account.to_thread(spin, 0.02)

    await asyncio.gather(charged(), uncharged(), elsewhere())
    assert account.seconds == 0.0
    assert 0.02 <= other.seconds < 0.4
