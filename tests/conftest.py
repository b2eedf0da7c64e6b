"""Shared fixtures: a real server on a free loopback port, over a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
import websockets
from starlette.routing import Mount, Route, WebSocketRoute

from palimpsest.app import create_app
from palimpsest.backend import Backend
from palimpsest.handshake import uvicorn_options
from palimpsest.limits import Limits
from palimpsest.settings import Settings

#: the machine's PostgreSQL and Redis, for every test that uses them (one place: override
#: with PALIMPSEST_TEST_PG / PALIMPSEST_TEST_REDIS)
PG_URL = os.environ.get("PALIMPSEST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PALIMPSEST_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_PORT = urlsplit(PG_URL).port or 5432


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Put the loggers back as they were: a command run in process (the admin CLI's
    tests) configures logging as `palimpsest` does (its own handler, no propagation), and
    a later test's caplog, which listens at the root, then heard nothing of ours."""
    ours, top = logging.getLogger("palimpsest"), logging.getLogger()
    kept = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in (ours, top)]
    yield
    for lg, handlers, level, propagate in kept:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    backend: Backend
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


@contextlib.asynccontextmanager
async def run_server(
    settings: Settings, backend: Backend | None = None
) -> AsyncIterator[RunningServer]:
    settings.port = settings.port if settings.port != 8000 else free_port()
    backend = backend or Backend(settings)
    app = create_app(settings, backend)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="on",
        **uvicorn_options(settings, backend.extension(Limits), refused=backend.refused),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server did not start")
        await asyncio.sleep(0.01)
    running = RunningServer(backend, settings.port, server, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "palimpsest.db"


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db=str(db_path), port=free_port(), unload_after_seconds=0.5)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings) as s:
        yield s


async def closed_with(ws: Any, timeout: float = 10.0) -> tuple[int | None, str]:
    """Read a websocket (websockets' client) until the server closes; its close code and reason."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason or ""


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll until check() (sync or async) returns a truthy value; fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(
                f"condition not met within {timeout}s: {what or check}; last={last!r}"
            )
        await asyncio.sleep(interval)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema name for one test (tests that share the database never
    see each other's tables), dropped after it."""
    import uuid

    import asyncpg

    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def http_routes(app: Any) -> list[tuple[str, str]]:
    """Every HTTP route of `app` as (method, path template), HEAD left out (Starlette
    adds it to every GET). The websockets and the static files are no HTTP API; any
    other websocket route or mount fails here, so that the checks built on this list
    (the token matrix in test_auth.py, the OpenAPI file in test_openapi.py) cannot miss
    routes behind it."""
    out = []
    for r in app.routes:
        if isinstance(r, Route):
            for m in sorted(r.methods or {"GET"}):
                if m != "HEAD":
                    out.append((m, r.path))
        elif isinstance(r, WebSocketRoute):
            # /hocuspocus authenticates each document in-band, with the same identify()
            # and authorize(): tests/test_hocuspocus_node.py runs its token cases; the
            # catch-all (where /ws/.. arrives, at /, and every path of no route) refuses
            # every request before its token is read
            known = ("/ws/{doc}", "/ws/{doc:path}", "/hocuspocus", "/{elsewhere:path}")
            assert r.path in known, f"unknown websocket route {r.path}"
        elif isinstance(r, Mount):
            assert r.path == "/static", f"an unknown mount {r.path}: check its routes too"
    return out


# --- the browser tests' people (the `browser` fixture is their module's) -----------------


@pytest.fixture
def people(browser: Any) -> Any:
    """Make browser contexts (one per person, a desktop's window unless told); all closed
    after the test."""
    made: list[Any] = []

    def make(width: int = 1360, height: int = 820) -> Any:
        ctx = browser.new_context(viewport={"width": width, "height": height})
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def doc_name(request: pytest.FixtureRequest) -> str:
    """A document name of the test's own."""
    return re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
