"""cancel_and_wait: how every service's stop() ends the tasks it started."""

from __future__ import annotations

import asyncio
import logging

import pytest

from palimpsest.lifecycle import cancel_and_wait


def _slow_to_stop(release: asyncio.Event, cleaning: asyncio.Event) -> asyncio.Task[None]:
    """A task that, once cancelled, takes until `release` to clean up (a flush, a last
    write), then lets its cancellation through."""

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()
            raise

    return asyncio.create_task(run(), name="slow-to-stop")


async def test_the_tasks_cancellation_ends_there() -> None:
    t = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await cancel_and_wait(t)
    assert t.cancelled()


async def test_a_cancel_aimed_at_the_caller_goes_on_up() -> None:
    release, cleaning = asyncio.Event(), asyncio.Event()
    t = _slow_to_stop(release, cleaning)
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(t))
    await asyncio.wait_for(cleaning.wait(), 5)
    stopper.cancel()  # e.g. a timeout around a service's stop()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert stopper.cancelled()  # not swallowed along with the task's own
    assert t.done()


async def test_a_timeout_around_it_fires() -> None:
    release, cleaning = asyncio.Event(), asyncio.Event()
    t = _slow_to_stop(release, cleaning)
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cancel_and_wait(t)
    # (the timeout's cancel reached the task too, through the await, as asyncio does)
    assert cleaning.is_set() and t.cancelled()


async def test_every_task_is_waited_for() -> None:
    release, cleaning = asyncio.Event(), asyncio.Event()
    slow = _slow_to_stop(release, cleaning)
    quick = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(cancel_and_wait(quick, slow))
    await asyncio.wait_for(cleaning.wait(), 5)
    await asyncio.sleep(0.01)
    assert not stopping.done()  # the slow one is still cleaning up
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert quick.cancelled() and slow.cancelled()


async def test_an_error_of_a_task_is_raised_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise ValueError("broken on the way out")

    t = asyncio.create_task(fails(), name="failing")
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken on the way out"):
        await cancel_and_wait(t)

    t = asyncio.create_task(fails(), name="failing")
    other = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    log = logging.getLogger("test.lifecycle")
    with caplog.at_level(logging.WARNING, logger="test.lifecycle"):
        await cancel_and_wait(t, other, log=log)
    assert other.cancelled()
    assert "failing ended with an error as it stopped" in caplog.text
    assert "broken on the way out" in caplog.text
