"""Hearing that the app server was told to stop, under any ASGI server.

uvicorn, gunicorn's UvicornWorker and hypercorn tell the app that they stop only with
the lifespan's shutdown, and send it only once every open request has ended: a
changefeed stream (``GET /api/events/stream``) never ends by itself, so a stopping worker
waited out gunicorn's ``--graceful-timeout`` (and was killed), holding the database's
serving lock all that time, while the worker a reload started in its place could not
serve. ``palimpsest serve`` has its own shutdown (``cli/serve.py``, with its drain);
under another server the app hears the stop signal itself: it wraps the handler the
server installed for SIGTERM and SIGINT, which it still calls first, and then runs
`callback` on the event loop (the backend's ``going_away``: streams end, websockets
close with 1001, rooms are flushed). Signals nobody handles (the default action, or
ignored) are left alone, and so is a loop off the main thread (no signal reaches it).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

#: the signals ASGI servers stop gracefully on (gunicorn's master sends its workers
#: SIGTERM on a reload, an upgrade and a stop)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop_signals(callback: Callable[[str], None]) -> Iterator[None]:
    """While inside: on SIGTERM or SIGINT, the handler that was there runs, then
    ``callback(signal name)`` on the running loop. The handlers are put back on the way
    out, unless something replaced them meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}

    def handler(sig: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
            loop.call_soon_threadsafe(callback, signal.Signals(sig).name)
        before = previous.get(signal.Signals(sig))
        if callable(before):
            before(sig, frame)

    for sig in STOP_SIGNALS:
        current = signal.getsignal(sig)
        if not callable(current):  # SIG_DFL, SIG_IGN, or set outside Python
            continue
        previous[sig] = current
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)


__all__ = ["STOP_SIGNALS", "on_stop_signals"]
