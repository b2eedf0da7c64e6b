"""CPU accounting for background work: what one task spends, on the event loop's thread
and on the worker threads it hands work to.

A task runs ``with charged_to(account):``; inside it, :func:`to_thread` (instead of
``asyncio.to_thread``) adds the worker thread's CPU time of each call to the account, and
``with on_loop():`` the event loop thread's CPU time of a synchronous stretch. The
context variable follows the task across awaits and into the threads (asyncio copies
the context), and nothing is charged outside such a task. What is not wrapped (a SQL
statement's own thread, the glue between steps) is not counted: the account is a lower
bound, close to the whole for work made of a few large steps, such as building a
document's attribution index (/metrics:
``palimpsest_attribution_upkeep_cpu_seconds_total``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

_T = TypeVar("_T")


class Account:
    """CPU seconds charged so far."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


_current: ContextVar[Account | None] = ContextVar("palimpsest_cpu_account", default=None)


@contextlib.contextmanager
def charged_to(account: Account) -> Iterator[None]:
    token = _current.set(account)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def on_loop() -> Iterator[None]:
    """Charge this thread's CPU time of the block to the current account, if any."""
    account = _current.get()
    if account is None:
        yield
        return
    c0 = time.thread_time()
    try:
        yield
    finally:
        account.seconds += time.thread_time() - c0


def _charged(account: Account, fn: Callable[..., _T], *args: Any) -> _T:
    c0 = time.thread_time()
    try:
        return fn(*args)
    finally:
        account.seconds += time.thread_time() - c0


async def to_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """``asyncio.to_thread(fn, *args)``, the worker's CPU time charged to the current
    account, if any."""
    account = _current.get()
    if account is None:
        return await asyncio.to_thread(fn, *args)
    return await asyncio.to_thread(_charged, account, fn, *args)


__all__ = ["Account", "charged_to", "on_loop", "to_thread"]
