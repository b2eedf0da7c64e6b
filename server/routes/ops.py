"""Operations endpoints: liveness, readiness and Prometheus metrics.

``/healthz`` says the process serves HTTP; ``/readyz`` says whether it can accept and
durably commit an edit now, so a load balancer sends clients elsewhere exactly while it
cannot: the store answers, and takes writes (no commit is being refused and held, and a
small write transaction commits). From a SIGTERM on it says "draining" (503) while the
server serves on for its drain (Settings.drain_seconds), so that a balancer sends new
clients elsewhere before this one closes. Fan-out is not part of it: with Redis down or
hung (not subscribed, a subscription that answers no ping, publishes failing), edits
still commit and reach the other processes through the log's gap check, so the body
says "degraded" but the answer stays 200. ``/metrics`` (the Prometheus text format) is
the Metrics extension's route. None of them needs a token and none reveals document
names or contents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..backend import Backend
from ..errors import PalimpsestError
from ..fanout import Fanout

#: a store that does not answer a ping within this many seconds is not ready
PING_TIMEOUT = 2.0


def _backend(request: Request) -> Backend:
    b: Backend = request.app.state.backend
    return b


async def healthz(request: Request) -> Response:
    # the loop this process runs on: "uvloop" under `palimpsest serve` by default
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return JSONResponse({"status": "alive", "event_loop": loop})


async def readiness(backend: Backend) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    if backend.draining_until is not None:
        left = max(0.0, backend.draining_until - time.monotonic())
        checks["drain"] = f"shutting down in {left:.0f} s; open connections are served until then"
        return False, checks
    ok = True
    try:
        await _within(backend, "ping", backend.store.ping)
        checks["store"] = "ok"
    except TimeoutError:
        ok = False
        checks["store"] = f"no answer within {PING_TIMEOUT:g} s"
    except PalimpsestError as e:
        ok = False
        checks["store"] = str(e)
    except Exception as e:  # a driver error a store forgot to translate is still "not ready"
        ok = False
        checks["store"] = repr(e)
    if ok:
        checks["commits"] = await _commits(backend)
        ok = checks["commits"] == "ok"
    checks["fanout"] = _fanout(backend)
    return ok, checks


def _fanout(backend: Backend) -> str:
    fanout = backend.extension(Fanout)
    if fanout is None:
        return "off"
    trouble = fanout.trouble()
    if trouble is None:
        return "ok"
    return (
        f"degraded: {trouble}; edits still commit, and other processes see them "
        "through the log's gap check instead of at once"
    )


async def _commits(backend: Backend) -> str:
    """Say "ok" when an edit would commit now, else why not."""
    committer = backend.committer
    refusing = committer.refusing
    if refusing is not None and committer.held:
        # edits are waiting on the store right now: that is the answer, whatever a
        # one-page write check would say (a full disk may still take that one)
        since = time.monotonic() - (committer.waiting_since or time.monotonic())
        waiting = committer.waiting()  # as palimpsest_commit_waiting_edits has it
        return (
            f"the store has refused commits for {since:.0f} s ({refusing}); "
            f"{committer.held} appends of {committer.held_events} events held, retrying; "
            f"{waiting.bytes} bytes of edits waiting in {waiting.docs} "
            f"document{'' if waiting.docs == 1 else 's'}"
        )
    try:
        await _within(backend, "write check", backend.store.check_writable)
    except TimeoutError:
        return f"a write does not commit within {PING_TIMEOUT:g} s"
    except PalimpsestError as e:
        return f"the store refuses writes: {e}"
    except Exception as e:  # untranslated driver error: still not ready
        return f"the store refuses writes: {e!r}"
    if refusing is not None:
        committer.recovered("a write check committed")  # nobody was held
    return "ok"


async def _within(
    backend: Backend, kind: str, check: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Await a store check for PING_TIMEOUT seconds at most, then raise TimeoutError.

    Not with asyncio.wait_for: on its timeout it cancels the call and then waits for the
    call to unwind, and an asyncpg query on a stalled connection gives its connection
    back only once the cancellation has gone through (command_timeout, 30 s): the first
    /readyz after PostgreSQL stalled answered after 32 s. The check runs in a task of its
    own instead, left to finish (or to fail when the pool closes); at most one of each
    kind is out at a time, so a load balancer asking every second waits for the same one
    rather than tying up one pooled connection more each time."""
    task = backend.store_checks.get(kind)
    if task is None or task.done():
        task = asyncio.create_task(check(), name=f"readyz {kind}")
        task.add_done_callback(_retrieved)
        backend.store_checks[kind] = task
    await asyncio.wait({task}, timeout=PING_TIMEOUT)
    if not task.done():
        raise TimeoutError
    task.result()


def _retrieved(task: asyncio.Task[None]) -> None:
    """A check that ends after its /readyz answered: its error was reported as the
    timeout, and is not "never retrieved"."""
    if not task.cancelled():
        task.exception()


async def readyz(request: Request) -> Response:
    ok, checks = await readiness(_backend(request))
    status = "ready" if ok else "draining" if "drain" in checks else "not ready"
    return JSONResponse({"status": status, **checks}, status_code=200 if ok else 503)


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
]
