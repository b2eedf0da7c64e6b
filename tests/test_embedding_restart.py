"""One Palimpsest instance started, stopped and started again, on a new event loop each
time: the usual FastAPI/Starlette test pattern (one module-level app, ``with
TestClient(app)`` per test, or pytest-asyncio's loop per test). Real SQLite files, the
app's real lifespan; the writes of each run are read back by the next."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.websockets import WebSocketDisconnect

from palimpsest import Changefeed, Extension, Identity, Palimpsest

with warnings.catch_warnings():
    # (this Starlette wants httpx2 for its TestClient; FastAPI's users have httpx)
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class Alice(Extension):
    reads_cookies = False

    async def authenticate(self, conn: object) -> Identity:
        return Identity("alice", "write")


class Seen(Extension):
    """Counts the batches its on_committed was handed (its feed runs on each loop)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []

    async def on_committed(self, doc: str, events: object) -> None:
        self.batches.append((doc, len(events)))  # type: ignore[arg-type]


def build(tmp_path: Path) -> tuple[Starlette, Palimpsest, Seen]:
    seen = Seen()
    collab = Palimpsest(
        store=f"sqlite:///{tmp_path}/app.db",
        # a changefeed of its own: its task waits on the backend's `stopping`
        extensions=[Alice(), seen, Changefeed([])],
    )
    app = Starlette(routes=[Mount("/collab", app=collab)], lifespan=collab.lifespan)
    return app, collab, seen


def text_of(client: TestClient | httpx.Response, doc: str = "d") -> str:
    assert isinstance(client, TestClient)
    r = client.get(f"/collab/api/docs/{doc}/versions")
    assert r.status_code == 200, r.text
    return str(r.json()["roots"]["content"]["value"])


def test_testclient_per_test_reuses_one_app(tmp_path: Path) -> None:
    """Each ``with TestClient(app)`` runs the lifespan on a loop of its own."""
    app, _, seen = build(tmp_path)
    for n in range(3):
        with TestClient(app) as c:
            if n:
                assert text_of(c) == f"v{n - 1}"  # the last run's write is there
            r = c.put("/collab/api/docs/d/text", json={"text": f"v{n}"})
            assert r.status_code == 200, r.text
            assert text_of(c) == f"v{n}"
            with c.websocket_connect("/collab/ws/d") as ws:
                assert ws.receive_bytes()[:1] == b"\x00"  # sync step 1: served
        # leaving the block stopped it without an error (the shutdown raised before)
    # every run's on_committed ran, on its own loop
    assert [doc for doc, _ in seen.batches].count("d") >= 3, seen.batches


def test_asyncio_run_per_start(tmp_path: Path) -> None:
    """``asyncio.run`` per start (pytest-asyncio's new loop per test), twice on one loop
    too: each start serves writes, and nothing written before is lost."""
    app, collab, _ = build(tmp_path)

    async def once(text: str) -> str:
        async with collab.lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                before = (await c.get("/collab/api/docs/d/versions")).json()
                r = await c.put("/collab/api/docs/d/text", json={"text": text})
                assert r.status_code == 200, r.text
                roots = before.get("roots")
                return str(roots["content"]["value"]) if roots else ""

    assert asyncio.run(once("one")) == ""

    async def twice() -> list[str]:
        return [await once("two"), await once("three")]

    assert asyncio.run(twice()) == ["one", "two"]
    assert asyncio.run(once("four")) == "three"


def test_mounted_without_lifespan_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The host forgot the mounted app's lifespan (Starlette and FastAPI never run it):
    every answer says so and how to fix it, and the log says it once."""
    collab = Palimpsest(store=f"sqlite:///{tmp_path}/app.db", extensions=[Alice()])
    host = Starlette(routes=[Mount("/collab", app=collab)])  # no lifespan=
    with caplog.at_level(logging.ERROR, logger="palimpsest"), TestClient(host) as c:
        for _ in range(3):
            r = c.put("/collab/api/docs/d/text", json={"text": "x"})
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "LifespanNotRun"
            detail = r.json()["detail"]
            assert "lifespan has not run" in detail and "collab.lifespan" in detail, detail
            assert "docs/extending.md" in detail
        with c.websocket_connect("/collab/ws/d") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
        assert closed.value.code == 1013
        assert "collab.lifespan" in closed.value.reason
    said = [r for r in caplog.records if "lifespan has not run" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert not (tmp_path / "app.db").exists()  # nothing was started

    # the same app with its lifespan run serves
    host = Starlette(routes=[Mount("/collab", app=collab)], lifespan=collab.lifespan)
    with TestClient(host) as c:
        r = c.put("/collab/api/docs/d/text", json={"text": "x"})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_the_lifespan_entered_while_it_runs_is_refused_at_once(tmp_path: Path, store: str) -> None:
    """The host's own lifespan entered collab.lifespan, which was entered already (passed
    as ``lifespan=`` too, or twice in one lifespan): with memory:// a second committer
    started silently (at exit asyncio said "Task was destroyed but it is pending!"), with
    SQLite the start failed with the advice for two apps on one file ("run every server
    on it with the same --fanout") and left ``app.db-serving`` behind. Now the second
    entry fails at once, naming the mistake; the first run goes on, and its stop leaves
    no file of its own."""
    url = f"sqlite:///{tmp_path}/app.db" if store == "sqlite" else "memory://"
    collab = Palimpsest(store=url, extensions=[Alice()])
    app = Starlette(routes=[Mount("/collab", app=collab)])

    def files() -> list[str]:
        return sorted(p.name for p in tmp_path.iterdir())

    async def run(text: str) -> str:
        async with collab.lifespan(app):
            before = files()
            with pytest.raises(RuntimeError) as twice:
                async with collab.lifespan(app):
                    raise AssertionError("entered twice")
            assert files() == before  # (the lock file the first run holds is there)
            assert "this Palimpsest's lifespan is already running: pass it to the host once" in (
                str(twice.value)
            )
            assert collab.startup_error is None
            # the first run serves as before
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.put("/collab/api/docs/d/text", json={"text": text})
                assert r.status_code == 200, r.text
                return str((await c.get("/collab/api/docs/d/versions")).json()["roots"])

    assert "one" in asyncio.run(run("one"))
    assert not collab.backend.started
    left = files()  # what a run leaves: the database (and its lock file, its changes)
    assert "two" in asyncio.run(run("two"))  # and it starts again

    # the same mistake in a host's lifespan under TestClient: its start fails, saying so
    @contextlib.asynccontextmanager
    async def host_lifespan(app: Starlette) -> AsyncIterator[None]:
        async with collab.lifespan(app), collab.lifespan(app):
            yield

    host = Starlette(routes=[Mount("/collab", app=collab)], lifespan=host_lifespan)
    with pytest.raises(RuntimeError, match="already running: pass it to the host once"):
        with TestClient(host):
            pass
    assert not collab.backend.started
    assert files() == left


def test_fanout_publishes_after_a_restart_on_a_new_loop(tmp_path: Path) -> None:
    """The fan-out's publisher waits on an event of its own: made in the constructor, the
    second start's publisher died at once and no process heard this one's edits."""
    import redis.asyncio as aioredis
    from conftest import REDIS_URL
    from scaleout import fanout_url

    from palimpsest.settings import Settings

    url = fanout_url(REDIS_URL)
    prefix = url.split("prefix=")[1].split("&")[0]
    collab = Palimpsest(
        store=f"sqlite:///{tmp_path}/app.db",
        extensions=[Alice()],
        settings=Settings(fanout=url),
    )
    app = Starlette(routes=[Mount("/collab", app=collab)])

    async def once(text: str) -> bool:
        bus = aioredis.Redis.from_url(REDIS_URL)
        sub = bus.pubsub()
        await sub.psubscribe(f"{prefix}:*")
        try:
            async with collab.lifespan(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                    r = await c.put("/collab/api/docs/d/text", json={"text": text})
                    assert r.status_code == 200, r.text
                async with asyncio.timeout(15):
                    while True:
                        m = await sub.get_message(ignore_subscribe_messages=True, timeout=1)
                        if m is not None and str(m["channel"], "utf-8").endswith(":d"):
                            return True
        finally:
            await sub.aclose()
            await bus.aclose()

    assert asyncio.run(once("one"))
    assert asyncio.run(once("two"))  # published from the second loop too


def test_testclient_in_open_mode_as_the_docs_say(tmp_path: Path) -> None:
    """Open mode (no extension authenticates) serves only loopback names and addresses
    (a guard against DNS rebinding), so the recommended ``with TestClient(app):``, whose
    requests say ``Host: testserver``, got 403 "not served as 'testserver'" for every
    request. docs/extending.md says what works: ``base_url="http://127.0.0.1"``, or
    ``Settings(allow_host=("testserver",))``; and both refusals, of a host and of an
    Origin, name the setting of an embedding app besides the flag."""
    from palimpsest.settings import Settings

    def app_of(settings: Settings | None = None) -> Starlette:
        collab = Palimpsest(store="memory://", settings=settings)
        return Starlette(routes=[Mount("/collab", app=collab)], lifespan=collab.lifespan)

    def served(c: TestClient, ws_base: str = "") -> None:
        r = c.put("/collab/api/docs/d/text", params={"user": "ada"}, json={"text": "x"})
        assert r.status_code == 200, r.text
        with c.websocket_connect(f"{ws_base}/collab/ws/d?user=ada") as ws:
            assert ws.receive_bytes()[:1] == b"\x00"  # sync step 1: served

    with TestClient(app_of()) as c:
        r = c.get("/collab/api/docs", params={"user": "ada"})
        assert r.status_code == 403, r.text
        detail = r.json()["detail"]
        assert "not served as 'testserver'" in detail, detail
        assert "--allow-host testserver" in detail and "Settings(allow_host=" in detail, detail
    with TestClient(app_of(), base_url="http://127.0.0.1") as c:
        # (its websocket_connect takes ws://testserver for a path: give it the URL)
        served(c, ws_base="ws://127.0.0.1")
        # a page of another origin: refused, naming the flag and the setting
        evil = {"Origin": "https://evil.example"}
        r = c.put("/collab/api/docs/d/text", params={"user": "ada"}, json={"text": "y"},
                  headers=evil)  # fmt: skip
        assert r.status_code == 403, r.text
        detail = r.json()["detail"]
        assert "'https://evil.example' is not allowed here" in detail, detail
        assert "--allow-origin" in detail and "Settings(allow_origin=" in detail, detail
        with pytest.raises(WebSocketDisconnect) as refused:
            with c.websocket_connect("ws://127.0.0.1/collab/ws/d?user=ada", headers=evil) as ws:
                ws.receive_bytes()
        assert refused.value.code == 4403
        assert "Settings(allow_origin=" in refused.value.reason, refused.value.reason
    with TestClient(app_of(Settings(allow_host=("testserver",)))) as c:
        served(c)
