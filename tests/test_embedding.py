"""Palimpsest mounted inside another app: examples/notes_app.py, run for real (uvicorn on a
free port, the app's own cookie sessions, real websocket clients, both SQLite files)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from conftest import closed_with, eventually, free_port
from pycrdt import Text
from serverproc import ServerProcess
from yclient import connect

from palimpsest.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FORM = {"content-type": "application/x-www-form-urlencoded"}


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notes_app", REPO / "examples" / "notes_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def running(app: Any, **options: Any) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free loopback port (`options`: more of uvicorn's
    Config); yields HOST:PORT."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, **{
        "ws": "websockets-sansio", "ws_per_message_deflate": False, "log_level": "warning",
        "lifespan": "on", **options,
    })  # fmt: skip
    server = uvicorn.Server(config)

    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def notes(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    settings = Settings(unload_after_seconds=0.5)
    app = example().build_app(tmp_path / "app.db", f"sqlite:///{tmp_path / 'collab.db'}", settings)
    async with running(app) as host:
        yield host, app


async def login(host: str, user: str = "ada", password: str = "lovelace") -> str:
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        r = await http.post("/login", content=f"user={user}&password={password}", headers=FORM)
        assert r.status_code == 303, r.text
        return str(r.cookies["session"])


async def test_the_app_session_is_the_identity_and_a_plain_text_copy_follows(
    notes: tuple[str, Any],
) -> None:
    host, app = notes
    cookie = {"Cookie": f"session={await login(host)}"}
    base = f"ws://{host}/collab/ws"
    async with connect(base, "notes", headers=cookie) as c:
        answer = await c.request({"type": "hello"})
        assert (answer["user"], answer["role"]) == ("ada", "admin")
        c.insert(0, "hello")
        c.insert(5, " world")

        async def copied() -> Any:
            found = await app.state.db.copy("notes")
            return found is not None and found[1] == "hello world" and found

        seq, text = await eventually(copied, what="the app's plain-text copy")
        assert seq == await app.state.collab.backend.store.head("notes")
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        r = await http.get("/collab/api/docs", headers=cookie)
        assert r.status_code == 200 and [d["doc"] for d in r.json()["docs"]] == ["notes"]
        r = await http.get("/collab/api/docs/notes/events", headers=cookie)
        assert [e["actor"] for e in r.json()["events"]] == ["ada", "ada"]
        r = await http.get("/copies/notes", headers=cookie)
        assert r.json() == {"seq": seq, "text": "hello world"}
        # deleting the document (ada is an admin of the app) drops the app's copy too
        grace = {"Cookie": f"session={await login(host, 'grace', 'hopper')}"}
        r = await http.delete("/collab/api/docs/notes", headers=grace)
        assert r.status_code == 403
        r = await http.delete("/collab/api/docs/notes", headers=cookie)
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert (await http.get("/copies/notes", headers=cookie)).status_code == 404


async def test_a_document_deleted_while_its_copy_is_behind_has_no_copy(tmp_path: Path) -> None:
    """With the app's database slow (a remote one), the DELETE dropped the copy first and
    the edits' on_committed, still queued, wrote it back: ``{"seq": 2, "text": ""}``
    (the held document was dropped with the room, so the batch was folded onto the
    deleted document's empty log)."""
    module = example()
    save_copy = module.AppDB.save_copy
    saved: list[tuple[int, str]] = []

    async def slow(self: Any, doc: str, seq: int, text: str) -> None:
        await asyncio.sleep(0.3)
        saved.append((seq, text))
        await save_copy(self, doc, seq, text)

    module.AppDB.save_copy = slow
    settings = Settings(unload_after_seconds=0.5)
    app = module.build_app(tmp_path / "app.db", f"sqlite:///{tmp_path / 'collab.db'}", settings)
    async with running(app) as host:
        cookie = {"Cookie": f"session={await login(host)}"}
        store = app.state.collab.backend.store
        async with connect(f"ws://{host}/collab/ws", "notes", headers=cookie) as c:
            for i, word in enumerate(["secret ", "more "]):
                c.insert(len(c.content), word)

                async def logged(n: int = i + 1) -> bool:
                    return await store.head("notes") == n

                await eventually(logged, what="one batch each")
            async with httpx.AsyncClient(base_url=f"http://{host}") as http:
                r = await http.delete("/collab/api/docs/notes", headers=cookie)
                assert r.status_code == 200, r.text
                assert (await http.get("/copies/notes", headers=cookie)).status_code == 404
                await app.state.collab.backend.extensions.drain()
                assert await app.state.db.copy("notes") is None
        # and never a wrong copy meanwhile: a batch after the deletion is not folded
        # onto the empty log of the deleted document
        assert saved and all(text in ("secret ", "secret more ") for _, text in saved), saved


async def test_without_a_session_nothing_is_served(notes: tuple[str, Any]) -> None:
    host, _ = notes
    async with websockets.connect(f"ws://{host}/collab/ws/notes?user=ada") as ws:
        with pytest.raises(websockets.ConnectionClosed) as e:
            await ws.recv()
    assert e.value.rcvd is not None and e.value.rcvd.code == 4401
    assert "session cookie" in e.value.rcvd.reason
    bad = {"Cookie": "session=forged"}
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        for headers in ({}, bad):
            r = await http.get("/collab/api/docs", headers=headers, params={"user": "ada"})
            assert r.status_code == 401 and r.json()["error"] == "AuthError"
        r = await http.post("/login", content="user=ada&password=wrong", headers=FORM)
        assert r.status_code == 401


async def test_cookie_requests_from_other_origins_are_refused(notes: tuple[str, Any]) -> None:
    """The session cookie is ambient: a page of a sibling origin of the same site sends it
    (SameSite=Strict or not) on a websocket or a bodyless no-cors POST. The Origin check
    ran only in open mode or with --allow-origin, so such a page read and wrote the
    notes as the user; now a request with a Cookie header is checked whatever the mode."""
    host, app = notes
    port = host.rsplit(":", 1)[1]
    cookie = {"Cookie": f"session={await login(host)}"}
    async with connect(f"ws://{host}/collab/ws", "notes", headers=cookie) as c:
        c.insert(0, "ada's notes")
        await eventually(lambda: app.state.collab.backend.rooms.get_loaded("notes"))
        room = app.state.collab.backend.rooms.get_loaded("notes")
        await eventually(lambda: room.seq >= 1, what="logged")
    sibling = f"http://evil.example.test:{port}"
    url = f"ws://{host}/collab/ws/notes"
    async with websockets.connect(url, origin=sibling, additional_headers=cookie) as ws:  # type: ignore[arg-type]
        code, reason = await closed_with(ws)
    assert code == 4403 and "origin" in reason, (code, reason)
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        foreign = {**cookie, "Origin": sibling}
        r = await http.post("/collab/api/docs/notes/undo", headers=foreign)
        assert r.status_code == 403 and "origin" in r.json()["detail"], r.text
        r = await http.put("/collab/api/docs/notes/text", json={"text": "x"}, headers=foreign)
        assert r.status_code == 403, r.text
        # the app's own page, and clients that send no Origin, pass
        own = {**cookie, "Origin": f"http://{host}"}
        r = await http.post("/collab/api/docs/notes/undo/close", headers=own)
        assert r.status_code == 200, r.text
        r = await http.post("/collab/api/docs/notes/undo/close", headers=cookie)
        assert r.status_code == 200, r.text
        # the example's own route needs a login too
        assert (await http.get("/copies/notes")).status_code == 401
        assert (
            await http.get("/copies/notes", headers={"Cookie": "session=forged"})
        ).status_code == 401
        assert (await http.get("/copies/notes", headers=cookie)).json()["text"] == "ada's notes"
    async with websockets.connect(url, origin=f"http://{host}", additional_headers=cookie) as ws:  # type: ignore[arg-type]
        assert await ws.recv()  # the server's sync step 1
    assert str(room.doc.get("content", type=Text)) == "ada's notes"


async def test_the_page_works_under_the_mount_point(notes: tuple[str, Any]) -> None:
    host, _ = notes
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        r = await http.get("/collab/")
        assert r.status_code == 200 and '<base href="/collab/">' in r.text
        # every URL the page loads is relative to that base
        assert 'src="/' not in r.text and r.text.count('href="/') == 1  # the base's
        r = await http.get("/collab/static/app.js")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"]
        # a path under the mounted API that is no route: JSON, named from the mount point
        r = await http.get("/collab/api/nothing")
        assert r.status_code == 404, r.text
        assert r.json() == {"error": "NotFound", "detail": "no route GET /api/nothing"}
    # (tests/test_embedding_browser.py drives the page under the mount point in Chromium)


async def test_the_lifespan_of_palimpsest_is_the_host_apps() -> None:
    """The shortest embedding: Mount + lifespan=collab.lifespan (open mode, memory store)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from palimpsest import Palimpsest

    collab = Palimpsest(
        store="memory://",
        settings=Settings(unload_after_seconds=0.2, max_http_writes_per_second=1),
    )
    app = Starlette(routes=[Mount("/c", app=collab)], lifespan=collab.lifespan)
    async with running(app) as host:
        async with connect(f"ws://{host}/c/ws", "mounted", user="ada") as c:
            c.insert(0, "hi")
            await eventually(lambda: collab.backend.rooms.get_loaded("mounted") is not None
                             and collab.backend.rooms.get_loaded("mounted").seq == 1)  # type: ignore[union-attr]  # fmt: skip
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            r = await http.get("/c/api/docs", params={"user": "ada"})
            assert [d["doc"] for d in r.json()["docs"]] == ["mounted"]
            assert (await http.get("/c/healthz")).json()["status"] == "alive"
            # the write rate counts the API's writes under the mount point too
            statuses = []
            for i in range(20):
                w = await http.put(
                    "/c/api/docs/mounted/text", json={"text": f"v{i}"}, params={"user": "ada"}
                )
                statuses.append(w.status_code)
                if w.status_code != 200:
                    break
            assert statuses[:2] == [200, 200] and statuses[-1] == 429, statuses
    assert collab.backend._started is False  # the host's shutdown stopped it


async def test_the_host_deletes_a_document_through_the_python_api(tmp_path: Path) -> None:
    """An admin action of the host app deletes a document with ``await
    collab.delete(doc, by=...)``: there was no Python API for it, and a host called its
    own mount over HTTP with an admin token it minted for itself. What DELETE
    /api/docs/{doc} does, done: the open websocket closed with 4404, the tombstone (the
    name answers 410), the extensions' on_deleted, the changefeed's record."""
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from palimpsest import Extension, Identity, Palimpsest, PalimpsestError

    class Writers(Extension):
        """Everyone writes; nobody is an admin of the mount (the host decides deletions)."""

        async def authenticate(self, conn: HTTPConnection) -> Identity | None:
            user = conn.query_params.get("user")
            return Identity(user, "write") if user else None

    class Told(Extension):
        def __init__(self) -> None:
            self.deleted: list[tuple[str, str]] = []

        async def on_deleted(self, doc: str, by: str) -> None:
            self.deleted.append((doc, by))

    told = Told()
    collab = Palimpsest(store=f"sqlite:///{tmp_path / 'collab.db'}", extensions=[Writers(), told])

    async def admin_delete(request: Request) -> JSONResponse:
        try:
            done = await collab.delete(request.path_params["doc"], by="boss")
        except PalimpsestError as e:
            return JSONResponse({"error": type(e).__name__}, status_code=e.http_status)
        return JSONResponse(done)

    app = Starlette(
        routes=[Route("/admin/docs/{doc}", admin_delete, methods=["DELETE"]),
                Mount("/collab", app=collab)],
        lifespan=collab.lifespan,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="lifespan is not running"):
        await collab.delete("plan", by="boss")  # nothing is started yet
    async with running(app) as host:
        async with websockets.connect(f"ws://{host}/collab/ws/plan?user=ada") as ws:
            async with connect(f"ws://{host}/collab/ws", "plan", user="ada") as c:
                c.insert(0, "secret plan")
                await eventually(lambda: collab.backend.rooms.get_loaded("plan") is not None
                                 and collab.backend.rooms.get_loaded("plan").seq == 1)  # type: ignore[union-attr]  # fmt: skip
            async with httpx.AsyncClient(base_url=f"http://{host}") as http:
                # the mount's own route refuses ada (no admin); the host's action does it
                r = await http.delete("/collab/api/docs/plan", params={"user": "ada"})
                assert r.status_code == 403, r.text
                r = await http.delete("/admin/docs/plan")
                assert r.status_code == 200, r.text
                assert r.json() == {"doc": "plan", "deleted": True, "closed": 1}
                code, reason = await closed_with(ws)
                assert code == 4404 and "was deleted" in reason, (code, reason)
                r = await http.get("/collab/api/docs/plan/versions", params={"user": "ada"})
                assert r.status_code == 410, r.text  # the tombstone
                # errors as the route's: deleted before (410), never written (404), a bad name
                assert (await http.delete("/admin/docs/plan")).status_code == 410
                assert (await http.delete("/admin/docs/nothing")).status_code == 404
                assert (await http.delete("/admin/docs/.hidden")).status_code == 400
        assert told.deleted == [("plan", "boss")]
        feed = await collab.backend.store.deletions()
        assert [(e.doc, e.kind, e.actor) for e in feed] == [("plan", "deleted", "boss")]


async def test_a_stale_copy_catches_up_when_its_document_loads(tmp_path: Path) -> None:
    """Field test: after a kill -9 the app's copy stayed stale until the document's next
    edit (on_committed is at most once: the batches queued when the process died are
    never delivered). Here the edits the copy missed are made by another server on the
    same store while the app is down; the copy catches up as soon as the document is
    opened again, with no edit."""
    app_db, store = tmp_path / "app.db", tmp_path / "collab.db"
    settings = Settings(unload_after_seconds=0.5)
    app = example().build_app(app_db, f"sqlite:///{store}", settings)
    async with running(app) as host:
        cookie = {"Cookie": f"session={await login(host)}"}
        async with connect(f"ws://{host}/collab/ws", "notes", headers=cookie) as c:
            c.insert(0, "hello")

            async def copied() -> bool:
                return await app.state.db.copy("notes") == (1, "hello")

            await eventually(copied, what="the first copy")
    # edits the app's on_committed never sees (as after a kill -9)
    async with ServerProcess(tmp_path / "other", db_path=store) as other:
        async with connect(other.ws_url, "notes", user="bob") as c:
            c.insert(5, " world")
            await eventually(lambda: c.content == "hello world")
            await asyncio.sleep(0.5)  # (flushed: the server stops cleanly after)
    app = example().build_app(app_db, f"sqlite:///{store}", settings)
    async with running(app) as host:
        assert await app.state.db.copy("notes") == (1, "hello")
        cookie = {"Cookie": f"session={await login(host)}"}
        async with connect(f"ws://{host}/collab/ws", "notes", headers=cookie):

            async def caught_up() -> bool:
                return await app.state.db.copy("notes") == (2, "hello world")

            await eventually(caught_up, timeout=5, what="the copy caught up, no edit made")
