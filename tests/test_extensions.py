"""The extension interface, from the outside: a real server, real websockets, extensions
that record what they see (docs/extending.md describes the hooks and their order)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import pytest
import websockets
from conftest import RunningServer, eventually, run_server
from pycrdt import Text
from sqlitehelp import sqlite_conn
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from yclient import connect

from palimpsest import Client, Event, Extension, Identity, OpContext, Origin, Room
from palimpsest.backend import Backend
from palimpsest.dispatch import Extensions
from palimpsest.errors import AuthError, Forbidden, FrameTooLarge, RateLimited
from palimpsest.extensions import Operation
from palimpsest.features import builtin_extensions
from palimpsest.lifecycle import Service
from palimpsest.origins import ClientOrigin, ReplayOrigin, ServerOrigin
from palimpsest.settings import Settings
from palimpsest.snapshots import SnapshotWritten


class Recorder(Extension):
    """Writes down every hook call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.committed: list[Event] = []

    async def on_connect(self, client: Client) -> None:
        self.calls.append(("on_connect", client.doc, client.user))

    async def on_disconnect(self, client: Client) -> None:
        self.calls.append(("on_disconnect", client.doc, client.user))

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        self.calls.append(("on_committed", doc, [e.seq for e in events]))
        self.committed.extend(events)

    async def on_load(self, room: Room) -> None:
        self.calls.append(("on_load", room.name, room.loaded.replayed))

    def on_unload(self, room: Room) -> None:
        self.calls.append(("on_unload", room.name))

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        self.calls.append(("before_apply", event.seq, type(origin).__name__))

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        self.calls.append(("on_applied", event.seq, type(origin).__name__))

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        # in the room's task: the room has applied the batch already
        self.calls.append(("on_logged", room.name, [e.seq for e in events], room.seq))

    def on_snapshot(self, written: SnapshotWritten) -> None:
        self.calls.append(("on_snapshot", written.doc, written.seq))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
async def recorded(settings: Settings) -> AsyncIterator[tuple[RunningServer, Recorder]]:
    rec = Recorder()
    backend = Backend(settings, extensions=[rec, *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        yield srv, rec


async def test_hooks_run_in_their_documented_order(
    recorded: tuple[RunningServer, Recorder],
) -> None:
    srv, rec = recorded
    async with connect(srv.ws_url, "order", "ada") as c:
        c.insert(0, "a")
        await eventually(lambda: rec.committed, what="on_committed")
        assert (await c.request({"type": "undo"}))["ok"] is True
        await eventually(lambda: len(rec.committed) == 2, what="the undo committed")
    await eventually(lambda: "on_unload" in rec.names(), what="unload when idle")
    names = rec.names()
    assert names[:2] == ["on_connect", "on_load"], names
    i = names.index("before_apply")
    assert rec.calls[i : i + 2] == [("before_apply", 1, "ClientOrigin"),
                                    ("on_applied", 1, "ClientOrigin")]  # fmt: skip
    # a server change: on_applied (no before_apply) once its event is durable
    assert ("on_applied", 2, "ServerOrigin") in rec.calls
    assert ("before_apply", 2, "ServerOrigin") not in rec.calls
    assert [e.kind for e in rec.committed] == ["edit", "undo"]
    assert names.index("on_committed") > i
    # on_logged: the same batches, right after their on_applied, the room past them
    logged = [c for c in rec.calls if c[0] == "on_logged"]
    assert logged == [("on_logged", "order", [1], 1), ("on_logged", "order", [2], 2)], logged
    assert rec.calls[i + 2] == ("on_logged", "order", [1], 1)
    j = rec.calls.index(("on_applied", 2, "ServerOrigin"))
    assert rec.calls[j + 1] == ("on_logged", "order", [2], 2)
    # the final snapshot of the unload, then the room stops
    assert names.index("on_disconnect") < names.index("on_snapshot") < names.index("on_unload")
    # loading it again replays the log through the same hooks, with replay origins
    rec.calls.clear()
    async with connect(srv.ws_url, "order", "ada"):
        pass
    assert rec.calls[1][0] == "on_load" and not any(c[0] == "on_applied" for c in rec.calls)
    srv.backend.snapshots.every = 10**9


class SlowIndex(Extension):
    """A search index kept in on_committed, slowly (a remote database), forgotten in
    on_deleted."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.index: dict[str, int] = {}

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        await asyncio.sleep(0.2)
        self.calls.append(("on_committed", doc, events[-1].seq))
        self.index[doc] = events[-1].seq

    async def on_deleted(self, doc: str, by: str) -> None:
        self.calls.append(("on_deleted", doc))
        self.index.pop(doc, None)


async def test_on_deleted_runs_after_the_documents_queued_on_committed(
    settings: Settings,
) -> None:
    """on_deleted ran at once while on_committed of the edits just before the DELETE
    still waited in the extension's queue: they ran after it and put the deleted
    document back into the app's index, for good."""
    idx = SlowIndex()
    backend = Backend(settings, extensions=[idx, *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        async with connect(srv.ws_url, "other", "ada") as o:
            o.insert(0, "x")  # another document's batch, queued first
            async with connect(srv.ws_url, "gone", "ada") as c:
                for i, ch in enumerate("abc"):
                    c.insert(i, ch)

                    async def logged(n: int = i + 1) -> bool:
                        return await srv.backend.store.head("gone") == n

                    await eventually(logged, what="one batch each")

                async with httpx.AsyncClient(base_url=srv.url) as http:
                    r = await http.delete("/api/docs/gone", params={"user": "admin"})
                assert r.status_code == 200, r.text
                # answered once on_deleted ran, after every batch of the document
                assert idx.calls[-1] == ("on_deleted", "gone"), idx.calls
                assert [c for c in idx.calls if c[1] == "gone"] == [
                    ("on_committed", "gone", 1), ("on_committed", "gone", 2),
                    ("on_committed", "gone", 3), ("on_deleted", "gone"),
                ]  # fmt: skip
                await srv.backend.extensions.drain()
                assert "gone" not in idx.index and idx.index["other"] == 1
                # the name used again: a new document, whose batches come after
                async with connect(srv.ws_url, "gone", "ada") as again:
                    again.insert(0, "new")
                    await eventually(lambda: idx.index.get("gone") == 1, what="re-indexed")


class Boom(Extension):
    """Fails in every after-the-fact and pipeline hook."""

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        raise RuntimeError("on_committed exploded")

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        raise RuntimeError("on_logged exploded")

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        raise RuntimeError("on_applied exploded")


async def test_a_failing_hook_is_logged_and_never_breaks_a_room(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    backend = Backend(settings, extensions=[Boom(), rec, *builtin_extensions(settings)])
    with caplog.at_level(logging.ERROR, logger="palimpsest.extensions"):
        async with run_server(settings, backend) as srv:
            async with connect(srv.ws_url, "boom", "ada") as a, connect(srv.ws_url, "boom") as b:
                for i, ch in enumerate("hello"):
                    a.insert(i, ch)
                await eventually(lambda: b.content == "hello", what="edits still flow")
                await eventually(lambda: len(rec.committed) == 5, what="others still fed")
            assert await backend.store.head("boom") == 5
    messages = [r.getMessage() for r in caplog.records]
    assert any("on_committed" in m for m in messages) and any("on_applied" in m for m in messages)
    assert any("on_logged(boom" in m for m in messages), messages
    assert all(r.exc_info for r in caplog.records if "exploded" in str(r.exc_info))


class HeaderAuth(Extension):
    """Accepts ``X-User``; refuses a known-bad one; otherwise not its business."""

    credentials = "an X-User header"

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        user = conn.headers.get("x-user")
        if user is None:
            return None
        if user == "mallory":
            raise AuthError("mallory is banned")
        return Identity(user, "read" if user.startswith("ro-") else "write", docs=("team-*",))


async def test_authenticate_chain(settings: Settings) -> None:
    backend = Backend(settings, extensions=[HeaderAuth(), *builtin_extensions(
        settings, others=[HeaderAuth()])])  # fmt: skip
    async with run_server(settings, backend) as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws/team-a"

        async def close_of(headers: dict[str, str], doc: str = "team-a") -> tuple[int, str]:
            async with websockets.connect(url.replace("team-a", doc),
                                          additional_headers=headers) as ws:  # fmt: skip
                with pytest.raises(websockets.ConnectionClosed) as e:
                    while True:
                        await ws.recv()
            assert e.value.rcvd is not None
            return e.value.rcvd.code, e.value.rcvd.reason

        # nobody accepts: refused, saying what would be accepted (no open mode fallback)
        code, reason = await close_of({})
        assert code == 4401 and "X-User" in reason
        assert (await close_of({"X-User": "mallory"}))[0] == 4401
        assert (await close_of({"X-User": "ada"}, doc="other"))[0] == 4403
        async with connect(srv.ws_url, "team-a", headers={"X-User": "ada"}) as c:
            assert (await c.request({"type": "hello"}))["role"] == "write"
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get("/api/docs", headers={"X-User": "ro-bob"})
            assert r.status_code == 200
            r = await http.post("/api/docs/team-a/undo", headers={"X-User": "ro-bob"})
            assert r.status_code == 403
            r = await http.get("/api/docs", params={"user": "ada"})
            assert r.status_code == 401


class Gatekeeper(Extension, Service):
    """A connection limit of its own, an operation, a route and a service."""

    def __init__(self) -> None:
        self.open: list[str] = []
        self.running = False
        self.backend: Backend | None = None

    def setup(self, backend: Backend) -> None:
        self.backend = backend

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def services(self) -> Sequence[Service]:
        return [self]

    async def on_connect(self, client: Client) -> None:
        if client.doc == "closed":
            raise RateLimited("this document takes no visitors")
        self.open.append(client.id)

    async def on_disconnect(self, client: Client) -> None:
        self.open.remove(client.id)

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        if len(update) > 200:
            raise FrameTooLarge("updates over 200 bytes are not welcome here")

    def operations(self) -> Mapping[str, Operation]:
        return {"whoami": self.whoami}

    async def whoami(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        await ctx.flush()
        return {"ok": True, "user": ctx.client.user, "seq": ctx.room.seq, "echo": body.get("x")}

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/api/gatekeeper", self.status)]

    async def status(self, request: Request) -> Response:
        assert self.backend is not None
        await self.backend.authenticate(request, None, "read")
        return JSONResponse({"open": len(self.open), "running": self.running})


async def test_connect_refusal_operations_routes_and_services(settings: Settings) -> None:
    gate = Gatekeeper()
    backend = Backend(settings, extensions=[gate, *builtin_extensions(settings)])
    assert gate.running is False
    async with run_server(settings, backend) as srv:
        assert gate.running is True
        async with websockets.connect(f"{srv.ws_url}/closed?user=ada") as ws:
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
        assert e.value.rcvd is not None and e.value.rcvd.code == 1013
        assert gate.open == []
        async with connect(srv.ws_url, "gated", "ada") as c:
            c.insert(0, "short")
            answer = await c.request({"type": "whoami", "x": 7})
            assert answer == {"type": "result", "id": answer["id"], "ok": True, "user": "ada",
                              "seq": 1, "echo": 7}  # fmt: skip
            assert "whoami" in (await c.request({"type": "hello"}))["ops"]
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.get("/api/gatekeeper", params={"user": "x"})
                assert r.json() == {"open": 1, "running": True}
            c.insert(5, "x" * 500)
            await eventually(lambda: c.ws.close_code == 4413, what="refused by on_update")
        await eventually(lambda: gate.open == [], what="on_disconnect")
        assert await backend.store.head("gated") == 1
    assert gate.running is False


class Archive(Extension):
    """extending.md's read-only guard: documents in `frozen` take no change, from a
    client or made by the server for one."""

    def __init__(self) -> None:
        self.frozen: set[str] = set()
        self.refused: list[tuple[str, str]] = []

    def _check(self, room: Room, what: str) -> None:
        if room.name in self.frozen:
            self.refused.append((room.name, what))
            raise Forbidden("archived documents are read-only")

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        self._check(room, "update")

    def on_server_change(self, room: Room, actor: str, kind: str) -> None:
        self._check(room, kind)


async def test_a_read_only_guard_refuses_server_changes_too(settings: Settings) -> None:
    """on_update sees clients' updates only: with extending.md's guard in it, PUT /text,
    an undo over the socket and a restore still wrote into the archived document.
    on_server_change sees each change the server makes for a user, and refuses it."""
    guard = Archive()
    backend = Backend(settings, extensions=[guard, *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        async with connect(srv.ws_url, "archive-1", "ada") as c:
            c.insert(0, "kept")
            room = await eventually(lambda: srv.backend.rooms.get_loaded("archive-1"))
            await eventually(lambda: room.seq >= 1)
            guard.frozen.add("archive-1")
            answer = await c.request({"type": "undo"})
            assert answer["ok"] is False and answer["status"] == 403, answer
            assert "read-only" in answer["reason"]
            c.insert(0, "no ")
            await eventually(lambda: c.ws.close_code == 4403, what="refused by on_update")
        async with httpx.AsyncClient(base_url=srv.url, params={"user": "ada"}) as http:
            for method, path, body in (
                ("PUT", "text", {"text": "overwritten"}),
                ("POST", "restore", {"seq": 0}),
                ("POST", "undo", None),
                ("POST", "undo/close", None),
            ):
                r = await http.request(method, f"/api/docs/archive-1/{path}", json=body)
                assert r.status_code == 403 and "read-only" in r.text, (path, r.status_code, r.text)
            guard.frozen.clear()
            r = await http.put("/api/docs/archive-1/text", json={"text": "thawed"})
            assert r.status_code == 200, r.text
        assert await backend.store.head("archive-1") == 2
        assert str(room.doc.get("content", type=Text)) == "thawed"
        kinds = [what for _, what in guard.refused]
        assert kinds[:2] == ["undo", "update"] and "edit" in kinds and "restore" in kinds


def test_two_extensions_cannot_claim_one_operation(settings: Settings) -> None:
    with pytest.raises(ValueError, match="whoami"):
        Backend(settings, extensions=[Gatekeeper(), Gatekeeper()])


class Counter_:
    """Typed per-room state."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.edits = 0


class Counting(Extension):
    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        if isinstance(origin, ClientOrigin | ReplayOrigin | ServerOrigin):
            room.state(Counter_).edits += 1

    def snapshot_meta(self, room: Room) -> Mapping[str, Any]:
        return {"counting": room.state(Counter_).edits}


async def test_typed_room_state_and_snapshot_meta_survive_a_reload(settings: Settings) -> None:
    counting = Counting()
    backend = Backend(settings, extensions=[counting, *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        async with connect(srv.ws_url, "count", "ada") as c:
            for i in range(3):
                c.insert(i, "x")
            await eventually(lambda: (r := backend.rooms.get_loaded("count")) is not None
                             and r.peek(Counter_) is not None
                             and r.state(Counter_).edits == 3)  # fmt: skip
        await eventually(lambda: "count" not in backend.rooms, what="unload")
        snap = await backend.store.latest_snapshot("count")
        assert snap is not None and snap.meta["counting"] == 3
        room = await backend.rooms.get("count")
        try:
            assert room.snapshot_meta["counting"] == 3 and room.peek(Counter_) is None
        finally:
            backend.rooms.release(room)


def test_hooks_are_dispatched_only_to_extensions_that_override_them() -> None:
    class OnlyLoad(Extension):
        async def on_load(self, room: Room) -> None:
            pass

    exts = Extensions([OnlyLoad(), Recorder()])
    assert [type(e).__name__ for e in exts._by["on_load"]] == ["OnlyLoad", "Recorder"]
    assert [type(e).__name__ for e in exts._by["on_committed"]] == ["Recorder"]
    assert exts._by["authenticate"] == ()


def test_the_builtin_features_use_no_task_per_commit(settings: Settings) -> None:
    """The built-in features that only count or wake something take each committed batch
    in the room's task (on_logged): on a single-process server no on_committed feed
    wakes a task per commit. Fan-out, which awaits Redis, keeps its feed."""
    exts = Extensions(builtin_extensions(settings))
    assert exts._by["on_committed"] == (), exts._by["on_committed"]
    names = {type(e).__name__ for e in exts._by["on_logged"]}
    assert {"Metrics", "Deletion", "SyncStatus", "Sealing", "Changefeed"} <= names, names


async def test_authenticate_with_no_extension_refuses() -> None:
    exts = Extensions([Recorder()])
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    with pytest.raises(AuthError, match="not authenticated"):
        await exts.authenticate(Request(scope))
    await asyncio.sleep(0)


async def test_credentials_from_inside_a_protocol_reach_authenticate(settings: Settings) -> None:
    """A token that arrives in a message (Hocuspocus) is shown to the extensions as
    ?token= of the same connection: its headers and cookies stay."""
    from palimpsest.backend import with_params

    seen: list[tuple[str | None, str | None]] = []

    class Spy(Extension):
        async def authenticate(self, conn: HTTPConnection) -> Identity | None:
            seen.append((conn.query_params.get("token"), conn.headers.get("x-app")))
            return Identity("spy", "read")

    backend = Backend(settings, extensions=[Spy()])
    scope = {"type": "websocket", "path": "/ws/d", "query_string": b"token=old&user=u",
             "headers": [(b"x-app", b"yes")]}  # fmt: skip
    conn = with_params(HTTPConnection(scope), token="in-band")
    assert conn.query_params.get("user") == "u"
    identity = await backend.authenticate(conn, "d", "read")
    assert identity.user == "spy" and seen == [("in-band", "yes")]


class Seeder(Extension):
    """Seeds a new document in `on_load`, as Hocuspocus's onLoadDocument does."""

    async def on_load(self, room: Room) -> None:
        text = room.doc.get("content", type=Text)
        if room.seq == 0 and len(text) == 0:
            text += "Welcome! "


async def test_a_document_seeded_in_on_load_is_logged_and_survives_a_crash(
    settings: Settings,
) -> None:
    """What an on_load hook writes is logged (kind seed, by server) before anyone sees
    it. It used to reach the snapshots but not the log: after a crash (no snapshot at
    unload) the room came back without it, and every client's step 2, which carries its
    items under the server's client id, was refused with 4403: nothing typed got in."""

    from test_delete import copy_of

    def make() -> Backend:
        return Backend(settings, extensions=[Seeder(), *builtin_extensions(settings)])

    async with run_server(settings, make()) as srv:
        async with connect(srv.ws_url, "s1", "ann") as a:
            assert a.content == "Welcome! "
            a.insert(len(a.content), "hi")
            await eventually(lambda: srv.backend.rooms.get_loaded("s1").seq == 2, what="2 events")  # type: ignore[union-attr]
            kept = copy_of(a.doc)
        events = await srv.backend.store.read("s1")
        logged = [(e.seq, e.kind, e.actor) for e in events]
        assert logged == [(1, "seed", "server"), (2, "edit", "ann")]
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{srv.url}/api/docs/s1/blame", params={"user": "x"})
            runs = [(x["text"], x["actor"]) for x in r.json()["roots"]["content"]["runs"]]
            assert runs == [("Welcome! ", "server"), ("hi", "ann")], runs
    # a crash: the room never wrote its snapshot at unload
    with sqlite_conn(settings.db) as db:
        db.execute("DELETE FROM snapshots")
    settings.port = 8000  # (run_server picks a free port)
    async with run_server(settings, make()) as srv:
        async with connect(srv.ws_url, "s1", "ann", ydoc=kept) as a:
            assert a.content == "Welcome! hi"
            a.insert(len(a.content), "!")
            await eventually(lambda: srv.backend.rooms.get_loaded("s1").seq == 3, what="3 events")  # type: ignore[union-attr]
            assert a.close_code is None, (a.close_code, a.close_reason)
        events = await srv.backend.store.read("s1")
        assert [e.kind for e in events] == ["seed", "edit", "edit"]  # seeded once only
