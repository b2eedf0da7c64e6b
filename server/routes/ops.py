"""Operations endpoints: liveness, readiness and Prometheus metrics.

``/healthz`` says the process serves HTTP; ``/readyz`` says it can do its job (the store
answers, the fan-out bus is subscribed when one is configured), so a load balancer sends
clients elsewhere while it cannot. ``/metrics`` (the Prometheus text format) is the
Metrics extension's route. None of them needs a token and none reveals document names
or contents.
"""

from __future__ import annotations

import asyncio
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
    return JSONResponse({"status": "alive"})


async def readiness(backend: Backend) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    ok = True
    try:
        await asyncio.wait_for(backend.store.ping(), PING_TIMEOUT)
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
    fanout = backend.extension(Fanout)
    if fanout is None:
        checks["fanout"] = "off"
    elif fanout.connected:
        checks["fanout"] = "ok"
    else:
        ok = False
        checks["fanout"] = "not subscribed to the fan-out bus"
    return ok, checks


async def readyz(request: Request) -> Response:
    ok, checks = await readiness(_backend(request))
    return JSONResponse(
        {"status": "ready" if ok else "not ready", **checks}, status_code=200 if ok else 503
    )


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
]
