"""The ASGI app: starlette routes over a Backend."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from .backend import Backend
from .errors import PalimpsestError
from .request_guard import RequestGuard
from .routes import route_modules
from .routes.ws import websocket_endpoint
from .settings import Settings

log = logging.getLogger("palimpsest.app")

STATIC_DIR = Path(
    os.environ.get("PALIMPSEST_STATIC", Path(__file__).resolve().parent.parent / "static")
)


async def index(request: Request) -> Response:
    page = STATIC_DIR / "index.html"
    if page.is_file():
        return FileResponse(page, media_type="text/html")
    return PlainTextResponse("Palimpsest is running. The page is not built (static/index.html).")


async def palimpsest_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PalimpsestError)
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)}, status_code=exc.http_status
    )


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> Starlette:
    backend = backend or Backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with backend:
            yield

    routes: list[BaseRoute] = [
        Route("/", index),
        WebSocketRoute("/ws/{doc:path}", websocket_endpoint),
    ]
    for module in route_modules():
        routes.extend(module.routes)
    if STATIC_DIR.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={PalimpsestError: palimpsest_error},
        middleware=[
            Middleware(
                RequestGuard,
                settings=backend.settings,
                is_open=lambda: bool(getattr(backend.auth, "open", False)),
                refused=backend.refused,
            )
        ],
    )
    app.state.backend = backend
    return app
