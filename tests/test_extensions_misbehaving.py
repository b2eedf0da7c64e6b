"""Extensions that misbehave, as an embedding developer's do by mistake: a hook that
empties the batch it was handed, one that lets a CancelledError out, an ``async def``
where a plain one is called, a hook that never returns, a wrong return type, snapshot
meta that is not JSON, a route Palimpsest already has. Each used to cost something
silently (another extension's events, a guard, a shutdown that never ended, every
snapshot); now the server goes on and says which extension did what."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import closed_with, eventually, run_server
from nodehelp import scenario
from pycrdt import Doc, Text
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from yclient import connect

import palimpsest
from palimpsest import Client, Event, Extension, Identity, Origin, Palimpsest, Room
from palimpsest.backend import Backend
from palimpsest.errors import StoreUnavailable
from palimpsest.features import builtin_extensions
from palimpsest.maintenance import verify_doc
from palimpsest.recovery import recovery_marker
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent


def _backend(settings: Settings, *mine: Extension) -> Backend:
    return Backend(settings, extensions=[*mine, *builtin_extensions(settings, others=mine)])


class Consumer(Extension):
    """Empties every batch it is handed (a `while events: events.pop()` loop)."""

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        while events:
            events.pop()  # type: ignore[attr-defined]

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        while events:
            events.pop(0)  # type: ignore[attr-defined]


class Copy(Extension):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.logged: list[int] = []

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        self.logged.extend(e.seq for e in events)

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        self.seen.extend((doc, e.seq) for e in events)


async def test_a_hook_that_empties_its_batch_takes_nothing_from_the_others(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Every hook was handed the same list: one that emptied it left the next
    extensions nothing (for good: the feed's own error log indexed the empty list and
    its task died), and the room's built-in on_logged failed, dropping the room (1013)."""
    copy = Copy()
    async with run_server(settings, _backend(settings, Consumer(), copy)) as srv:
        async with connect(srv.ws_url, "a", "alice") as alice:
            for i, ch in enumerate("hello"):
                alice.insert(i, ch)
                await asyncio.sleep(0.02)
            await eventually(lambda: len(copy.seen) == 5, what="copy saw alice's edits")
            assert copy.seen == [("a", s) for s in range(1, 6)]
            assert copy.logged == [1, 2, 3, 4, 5]
            assert alice.close_code is None, (alice.close_code, alice.close_reason)
        async with connect(srv.ws_url, "b", "bob") as bob:
            bob.insert(0, "x")
            await eventually(lambda: ("b", 1) in copy.seen, what="and bob's, another doc")
    assert "pipeline failed" not in caplog.text


class Flaky(Extension):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        if doc == "flaky":
            helper = asyncio.ensure_future(asyncio.sleep(10))
            helper.cancel()
            await helper  # raises CancelledError, a BaseException, out of the hook
        self.seen.extend((doc, e.seq) for e in events)


async def test_a_cancelled_error_out_of_on_committed_does_not_end_its_feed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky()
    async with run_server(settings, _backend(settings, flaky)) as srv:
        for doc in ("before", "flaky", "after"):
            async with connect(srv.ws_url, doc, "alice") as c:
                c.insert(0, "x")
                if doc != "flaky":
                    await eventually(lambda: (doc, 1) in flaky.seen, what=f"{doc} delivered")  # noqa: B023
    assert "on_committed(flaky, seq 1..1) raised CancelledError" in caplog.text


def test_an_async_def_where_a_plain_hook_is_called_is_refused_when_built(
    settings: Settings,
) -> None:
    """An `async def on_update` guard was never run (a coroutine nobody awaited): the
    edits it meant to refuse were logged."""

    class AsyncGuard(Extension):
        name = "archive-guard"

        async def on_update(self, room: Room, client: Client, update: bytes) -> None:  # type: ignore[override]
            raise AssertionError("never run")

    with pytest.raises(TypeError, match="archive-guard.*on_update is an async def"):
        _backend(settings, AsyncGuard())


async def test_a_plain_def_where_a_hook_is_awaited_says_so(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain `def on_connect` passed the build (a plain def may return a coroutine, and
    then works) and refused every websocket with "object NoneType can't be used in
    'await' expression"."""

    class PlainConnect(Extension):
        def on_connect(self, client: Client) -> None:  # type: ignore[override]
            pass

    class Deferred(Extension):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_committed(self, doc: str, events: Sequence[Event]) -> Any:  # a coroutine
            return self._save(events)

        async def _save(self, events: Sequence[Event]) -> None:
            self.seen.extend(e.seq for e in events)

    deferred = Deferred()
    async with run_server(settings, _backend(settings, PlainConnect(), deferred)) as srv:
        with pytest.raises(BaseException):  # noqa: B017 (closed before its sync)
            async with connect(srv.ws_url, "doc", "alice"):
                pass
    assert "on_connect returned NoneType, not an awaitable: make it an async def" in caplog.text
    async with run_server(settings, _backend(settings, deferred)) as srv:
        async with connect(srv.ws_url, "doc", "alice") as alice:
            alice.insert(0, "x")
            await eventually(lambda: deferred.seen == [1], what="on_committed ran")


class Hangs(Extension):
    """A hook awaiting something that never answers (a dead database connection)."""

    def __init__(self, hook: str) -> None:
        self.name = f"hangs-in-{hook}"
        self.hook = hook
        self.seen: list[int] = []

    async def _maybe_hang(self, hook: str) -> None:
        if hook == self.hook:
            await asyncio.Event().wait()

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        await self._maybe_hang("authenticate")
        return Identity(conn.query_params.get("user", "anon"), "admin")

    async def on_connect(self, client: Client) -> None:
        await self._maybe_hang("on_connect")

    async def on_load(self, room: Room) -> None:
        await self._maybe_hang("on_load")

    async def on_disconnect(self, client: Client) -> None:
        await self._maybe_hang("on_disconnect")

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        if events[0].seq == 1:
            await self._maybe_hang("on_committed")
        self.seen.extend(e.seq for e in events)


@pytest.mark.parametrize(
    "hook", ["authenticate", "on_connect", "on_load", "on_disconnect", "on_committed"]
)
async def test_a_hook_that_never_returns_times_out(
    settings: Settings, hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No hook had a timeout: the client waited for ever, and so did a SIGTERM (the
    lifespan's shutdown, which flushes the rooms, never ran)."""
    settings.hook_timeout_seconds = 0.5
    ext = Hangs(hook)
    t0 = time.monotonic()
    async with run_server(settings, _backend(settings, ext)) as srv:
        if hook in ("authenticate", "on_connect"):  # deciding: the client is refused
            with pytest.raises(BaseException):  # noqa: B017 (closed before its sync)
                async with connect(srv.ws_url, "doc", "alice"):
                    pass
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.get("/api/docs/doc/versions/head", params={"user": "alice"})
            if hook == "authenticate":
                assert r.status_code == 500, r.text
                assert r.json()["detail"] == f"the server's extension {ext.name} failed in {hook}"
        else:  # logged, and the room goes on
            async with connect(srv.ws_url, "doc", "alice") as alice:
                alice.insert(0, "a")
                await asyncio.sleep(0.05)
                alice.insert(1, "b")
                if hook == "on_committed":  # the batch after the one given up is delivered
                    await eventually(lambda: 2 in ext.seen, what="the next batch")
                    assert 1 not in ext.seen
    assert time.monotonic() - t0 < 20  # the server stopped
    assert f"{hook}" in caplog.text and "0.5 s" in caplog.text, caplog.text


async def test_shutdown_counts_the_batch_whose_on_committed_is_running(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook that hangs on its first batch while two more wait: the shutdown said "1
    batches not delivered": the one running, given up with the feed's task, was not
    counted (nor logged anywhere as given up)."""
    monkeypatch.setattr("palimpsest.dispatch.DRAIN_SECONDS", 0.3)
    settings.hook_timeout_seconds = 60

    class Stuck(Copy):
        async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
            await asyncio.Event().wait()

    stuck = Stuck()
    async with run_server(settings, _backend(settings, stuck)) as srv:
        async with connect(srv.ws_url, "doc", "alice") as alice:
            for i in range(3):  # three batches: each one logged before the next is typed
                alice.insert(i, "x")
                await eventually(lambda: len(stuck.logged) == i + 1, what=f"batch {i + 1}")  # noqa: B023
    assert "on_committed did not catch up within 0.3 s on shutdown; 3 batches not " \
        "delivered" in caplog.text, caplog.text  # fmt: skip
    assert "doc, seq 1..1 (running)" in caplog.text


async def test_a_failing_hook_logs_its_traceback_once_a_minute_then_a_count(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in on_update, when it closed its socket with 1011 and y-websocket,
    reconnecting, sent the same update again: 26 full tracebacks in 8 s (it now refuses
    nothing, but still fails at every frame). A bug in on_applied logged
    one per event, naming the hook `<bound method Buggy.on_applied of <extension
    Buggy>>`. Each (extension, hook) now logs its traceback once a minute (the window is
    shortened here) and then how many more times it failed, in one line."""
    monkeypatch.setattr("palimpsest.hook_failures.TRACEBACK_EVERY_SECONDS", 1.0)

    class Buggy(Extension):
        def on_update(self, room: Room, client: Client, update: bytes) -> None:
            if room.name == "guarded":
                raise RuntimeError("update bug")

        def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
            if room.name == "doc":
                raise RuntimeError("applied bug")

    async with run_server(settings, _backend(settings, Buggy())) as srv:
        async with connect(srv.ws_url, "doc", "alice") as alice:
            for i in range(10):
                alice.insert(i, "x")

            async def logged() -> bool:
                return await srv.backend.store.head("doc") == 10

            await eventually(logged, what="the edits, logged")
        async with connect(srv.ws_url, "guarded", "alice") as c:
            for i in range(3):
                c.insert(i, "x")

            async def kept() -> bool:
                return await srv.backend.store.head("guarded") == 3

            await eventually(kept, what="the edits a failing on_update saw, logged")
            assert c.close_code is None

        def said(start: str) -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage().startswith(start)]

        await eventually(lambda: said("Buggy.on_applied failed 9 more times"), what="a count")
        await eventually(lambda: said("Buggy.on_update failed 2 more times"), what="a count")
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in tracebacks] == [
        "Buggy.on_applied(doc@1) failed",
        "Buggy.on_update(guarded) failed; the update goes on",
    ], tracebacks
    counts = said("Buggy.on_applied failed") + said("Buggy.on_update failed")
    assert len(counts) == 2 and not any(r.exc_info for r in counts)
    assert "RuntimeError: applied bug" in counts[0].getMessage()
    assert "bound method" not in caplog.text
    assert srv.backend.extensions.failures.total == {"Buggy.on_applied": 10, "Buggy.on_update": 3}


class FixesTypos(Extension):
    """Writes into the live document from a hook: "teh" becomes "the"."""

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        text = room.doc.get("content", type=Text)
        i = str(text).find("teh")
        if i >= 0:
            del text[i : i + 3]
            text.insert(i, "the")


async def test_a_hook_that_writes_into_the_document_is_undone_and_said(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The write was in no event: connected clients never got it, a later joiner did,
    the next snapshot stored it (head != log; `palimpsest verify`: "snapshot @2 renders
    differently from the log"), and nothing was logged. Now the room is reloaded from
    the log (its clients come back), the hook is no longer called, and an error names
    it and says what to use instead."""
    settings.unload_after_seconds = 0.2
    async with run_server(settings, _backend(settings, FixesTypos())) as srv:
        store = srv.backend.store
        async with connect(srv.ws_url, "mut", "alice") as alice:
            alice.insert(0, "fix teh typo")
            await eventually(lambda: alice.close_code == 1013, what="the room reloads")
        wrote = said_wrote(caplog)
        assert len(wrote) == 1 and wrote[0].startswith("FixesTypos.on_applied wrote into"), wrote
        assert "room.server_change" in wrote[0] and "no longer called" in wrote[0]
        async with connect(srv.ws_url, "mut", "carol") as carol:  # what the log holds
            await eventually(lambda: carol.content == "fix teh typo", what="the log's text")
            carol.insert(len(carol.content), " more")

            async def logged() -> bool:
                return await store.head("mut") == 2

            await eventually(logged, what="carol's edit")
        await eventually(lambda: srv.backend.rooms.get_loaded("mut") is None, what="unloaded")
        assert await store.latest_snapshot("mut") is not None
        assert await verify_doc(store, "mut") == []
        doc = await srv.backend.doc_at("mut")
        assert str(doc.get("content", type=Text)) == "fix teh typo more"
    assert len(said_wrote(caplog)) == 1  # the hook is off: not at the reload, nor since


class Stamps(Extension):
    """Writes into the live document from on_server_change: a mark before each one."""

    def on_server_change(self, room: Room, actor: str, kind: str) -> None:
        room.doc.get("content", type=Text).insert(0, "!")


async def test_writes_into_the_document_from_on_server_change_or_while_loading(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The same from a hook outside the pipeline (on_server_change, in the request's task), and
    from on_applied while the document loads (its replayed events): the load starts
    again, from the log, without the hook."""
    async with run_server(settings, _backend(settings, FixesTypos(), Stamps())) as srv:
        typed = Doc()
        typed["content"] = Text("fix teh typo")  # an event no snapshot covers: replayed
        await srv.backend.store.append(
            [("loaded", [NewEvent("alice", "edit", typed.get_update())])]
        )
        async with connect(srv.ws_url, "loaded", "bob") as bob:  # loads: replays seq 1
            await eventually(lambda: bob.content == "fix teh typo", what="the log's text")
            assert bob.close_code is None
        assert said_wrote(caplog)[0].startswith("FixesTypos.on_applied wrote into")
        async with connect(srv.ws_url, "stamped", "carol") as carol:
            carol.insert(0, "hi")

            async def head(n: int) -> bool:
                return await srv.backend.store.head("stamped") == n

            await eventually(lambda: head(1), what="carol's edit")
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.post("/api/docs/stamped/undo", params={"user": "carol"})
            assert r.status_code != 200, r.text
            await eventually(lambda: carol.close_code == 1013, what="the room reloads")
        assert said_wrote(caplog)[1].startswith("Stamps.on_server_change wrote into")
        async with connect(srv.ws_url, "stamped", "carol") as carol:
            await eventually(lambda: carol.content == "hi", what="the log's text")
            assert (await carol.request({"type": "undo"}))["ok"] is True  # the hook is off
            await eventually(lambda: head(2), what="the undo")
            assert "!" not in str((await srv.backend.doc_at("stamped")).get("content", type=Text))
            assert "!" not in carol.content
    assert len(said_wrote(caplog)) == 2


def said_wrote(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "palimpsest.extensions" and "wrote into" in r.getMessage()
    ]


async def test_authenticate_returning_something_else_than_an_identity(
    settings: Settings,
) -> None:
    class WrongType(Extension):
        name = "session-auth"

        async def authenticate(self, conn: HTTPConnection) -> Identity | None:
            return conn.query_params.get("user")  # type: ignore[return-value]

    async with run_server(settings, _backend(settings, WrongType())) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get("/api/docs", params={"user": "alice"})
    assert r.status_code == 500
    # JSON naming the extension (by its name, not its class), not a bare 500
    assert r.json() == {
        "error": "ExtensionFailed",
        "detail": "the server's extension session-auth failed in authenticate",
    }


async def test_authenticate_returning_an_invalid_identity_is_a_bug_of_the_extension(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """``Identity("ada", "owner")`` (no such role) made in an app's ``authenticate`` reached
    the client as 401 AuthError with the validation's text, as if its credentials were
    bad: it is a bug of the app, a 500 ExtensionFailed (1011 on a websocket) like its
    other bugs, the log naming the extension and what was wrong."""

    class BadRole(Extension):
        name = "session-auth"

        async def authenticate(self, conn: HTTPConnection) -> Identity | None:
            return Identity(conn.query_params.get("user", "ada"), "owner")

    async with run_server(settings, _backend(settings, BadRole())) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get("/api/docs", params={"user": "ada"})
        assert r.status_code == 500, r.text
        assert r.json() == {
            "error": "ExtensionFailed",
            "detail": "the server's extension session-auth failed in authenticate",
        }
        async with websockets.connect(f"{srv.ws_url}/doc?user=ada") as ws:
            code, reason = await closed_with(ws)
        assert code == 1011, (code, reason)
        assert reason == "the server's extension session-auth failed in authenticate"
    failed = [r for r in caplog.records if "session-auth.authenticate" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert "role must be one of read, edit, write, admin; got 'owner'" in str(failed[0].exc_info[1])


async def test_snapshot_meta_that_is_not_json_loses_only_its_own_entries(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A datetime in one extension's snapshot meta failed the write of every snapshot
    (the built-in undo stacks with it), and the warning did not say whose it was."""
    import datetime

    class LastSeen(Extension):
        def snapshot_meta(self, room: Room) -> Mapping[str, Any]:
            return {"last_seen": datetime.datetime.now()}

    settings.snapshot_every = 5
    settings.snapshot_quiet_seconds = 0.1
    async with run_server(settings, _backend(settings, LastSeen())) as srv:
        async with connect(srv.ws_url, "doc", "alice") as alice:
            for i in range(8):
                alice.insert(i, "x")
                await asyncio.sleep(0.01)

            async def snapshotted() -> bool:
                return bool(await srv.backend.store.snapshots("doc"))

            await eventually(snapshotted, what="a snapshot written")
        snap = await srv.backend.store.latest_snapshot("doc")
        assert snap is not None and "last_seen" not in snap.meta and "undo" in snap.meta, snap.meta
    assert "LastSeen.snapshot_meta(doc) failed" in caplog.text


async def test_hello_answer_adds_keys_but_not_the_cores_and_a_failing_one_is_left_out(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An extension's keys in the answer to ``hello`` (as undo's ``can_undo``): its own
    go in; ``ok``, ``user``, ``role``, ``ops`` (and the envelope) stay the core's; one
    whose hook raises loses its keys, logged, and the answer still comes."""

    class Claims(Extension):
        def hello_answer(self, room: Room, client: Client) -> Mapping[str, Any]:
            return {"plan": "pro", "role": "nobody", "user": "root", "ok": False, "id": 0}

    class Broken(Extension):
        def hello_answer(self, room: Room, client: Client) -> Mapping[str, Any]:
            raise RuntimeError("boom")

    async with run_server(settings, _backend(settings, Claims(), Broken())) as srv:
        async with connect(srv.ws_url, "doc", "alice") as alice:
            r = await alice.request({"type": "hello"})
    # (open mode: every user an admin)
    assert r == {**r, "type": "result", "ok": True, "user": "alice", "role": "admin"}, r
    assert r["plan"] == "pro" and r["id"] != 0, r
    assert r["can_undo"] is False and r["can_redo"] is False, r  # (the built-in undo's)
    assert "Broken.hello_answer(doc) failed" in caplog.text


def test_a_route_palimpsest_has_already_is_refused(settings: Settings) -> None:
    """An extension's `/api/docs` was never called (Palimpsest's own routes come first);
    its `/api/docs/{name}/blame` hid the history's (the extensions' routes are in order,
    the built-in features after the app's)."""

    async def mine(request: Request) -> JSONResponse:
        return JSONResponse({"mine": True})

    class Shadowed(Extension):
        def __init__(self, path: str) -> None:
            self.path = path

        def routes(self) -> Sequence[BaseRoute]:
            return [Route("/api/mine", mine), Route(self.path, mine)]

    with pytest.raises(ValueError, match=r"two routes answer one path.*/api/docs/\{name\}/blame"):
        Palimpsest(
            settings=settings, backend=_backend(settings, Shadowed("/api/docs/{name}/blame"))
        )
    with pytest.raises(ValueError, match=r"two routes answer one path.*path='/api/docs'"):
        Palimpsest(settings=settings, backend=_backend(settings, Shadowed("/api/docs")))

    class Fine(Extension):
        def routes(self) -> Sequence[BaseRoute]:
            # (DELETE /api/docs/{doc} is Palimpsest's: a GET of that path is free)
            return [Route("/api/docs", mine, methods=["POST"]), Route("/api/docs/{doc}", mine)]

    Palimpsest(settings=settings, backend=_backend(settings, Fine()))


def test_service_is_exported() -> None:
    from palimpsest.lifecycle import Service

    assert palimpsest.Service is Service  # extending.md's Stats(Extension, Service)


def test_operation_is_exported() -> None:
    """The type of a websocket operation (extending.md's ``operations()``) was only in
    ``palimpsest.extensions``, unlike the other types a hook is written with."""
    from palimpsest.extensions import Operation

    assert palimpsest.Operation is Operation
    assert "Operation" in palimpsest.__all__ and "Operation" in dir(palimpsest)


async def test_a_restored_backups_marker_is_read_for_an_embedded_store(tmp_path: Path) -> None:
    """The marker was looked for beside settings.db, not beside the store an embedding
    app passes: a restored backup opened no recovery window."""
    db = tmp_path / "app.db"
    recovery_marker(str(db.resolve())).write_text("60")
    collab = Palimpsest(store=f"sqlite:///{db}")
    async with collab.lifespan(collab):
        assert collab.backend.rooms.relay_until > time.monotonic() + 50 * 60


async def test_two_apps_on_one_sqlite_file_in_one_process(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    first, second = Palimpsest(store=f"sqlite:///{db}"), Palimpsest(store=f"sqlite:///{db}")
    async with first.lifespan(first):
        with pytest.raises(StoreUnavailable, match="another Palimpsest in this process"):
            async with second.lifespan(second):
                pass


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


#: alice types with y-websocket into a document whose on_update always fails; what she
#: saw of her socket once her text is logged (or after three closes), and what a reader
#: who joins later reads
ON_UPDATE_FAILS = """
const alice = connect('alice')
const closes = []
alice.provider.on('connection-close', (e) => closes.push(e ? e.code : null))
await alice.synced
alice.ydoc.getText('content').insert(0, 'hello')
alice.ydoc.getText('content').insert(5, ' world')
await until('logged, or refused three times',
  async () => closes.length >= 3 || (await head()).seq === 2)
const seq = (await head()).seq
alice.ydoc.getText('content').insert(11, '!')
if (closes.length === 0) await logged(3)
const closed = [...closes]
const connected = alice.provider.wsconnected
alice.provider.destroy()
const reader = connect('reader')
await reader.synced
process.stdout.write(JSON.stringify({
  seq, closes: closed, connected, read: reader.ydoc.getText('content').toString(),
}))
reader.provider.destroy()
process.exit(0)
"""


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_a_bug_in_on_update_neither_closes_the_socket_nor_loses_the_edit(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An on_update that always raises (a bug, not a PalimpsestError) closed its
    sender's socket with 1011; y-websocket reconnected and sent the same update again,
    for ever, and the user's text was never logged (closing the tab lost it). The
    failure is now the extension's: logged and counted, the update goes on through the
    other checks, and is logged, broadcast and kept; the socket stays open."""

    class AlwaysFails(Extension):
        def __init__(self) -> None:
            self.calls = 0

        def on_update(self, room: Room, client: Client, update: bytes) -> None:
            self.calls += 1
            raise RuntimeError("update bug")

    ext = AlwaysFails()
    async with run_server(settings, _backend(settings, ext)) as srv:
        out = json.loads(await node_scenario(scenario(ON_UPDATE_FAILS), srv.ws_url, srv.url, "d"))
        assert out == {
            "seq": 2, "closes": [], "connected": True, "read": "hello world!"
        }, out  # fmt: skip
        assert await srv.backend.store.head("d") == 3
        assert ext.calls >= 3
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{srv.url}/metrics")).text
        series = 'palimpsest_extension_hook_failures_total{hook="AlwaysFails.on_update"}'
        counted = f"{series} {ext.calls}.0"
        assert counted in metrics, metrics
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == ["AlwaysFails.on_update(d) failed; the update goes on"], tracebacks


#: a y-websocket client on a document whose on_connect never lets it in: each of its
#: first `ATTEMPTS` closes (one per connection attempt), as "code reason"
CONNECT_REFUSED = """
const alice = connect('alice')
const closes = []
alice.provider.on('connection-close', (e) => closes.push(e ? `${e.code} ${e.reason}` : null))
await until('8 attempts', () => closes.length >= 8)
alice.provider.destroy()
process.stdout.write(JSON.stringify(closes.slice(0, 8)))
process.exit(0)
"""


class RefusesToConnect(Extension):
    """An on_connect that never lets anyone in: by a bug (`crash`), or on purpose."""

    def __init__(self, crash: bool) -> None:
        self.crash = crash
        self.calls = 0

    async def on_connect(self, client: Client) -> None:
        self.calls += 1
        if self.crash:
            raise KeyError("session")  # a bug: a dict without the key it expected
        raise palimpsest.Forbidden("this app's pages are closed for maintenance")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
@pytest.mark.parametrize("crash", [True, False], ids=["crash", "refusal"])
async def test_an_on_connect_that_always_refuses_is_not_hammered(
    settings: Settings, caplog: pytest.LogCaptureFixture, crash: bool
) -> None:
    """An on_connect that raised a bug (not a PalimpsestError) closed every attempt with
    1011 after the socket opened; y-websocket counts an opened socket as a success and
    comes back 100 ms later, so one tab made 10 attempts a second, each calling the
    hook and logging a line, for as long as the page was open. Now a request refused
    so three times is refused at the handshake (HTTP 500) until the window passes, as a
    44xx refusal (a Forbidden raised on purpose) is: the provider's back-off applies.
    The first attempts still read why; the traceback is logged once."""
    ext = RefusesToConnect(crash)
    async with run_server(settings, _backend(settings, ext)) as srv:
        out = json.loads(await node_scenario(scenario(CONNECT_REFUSED), srv.ws_url, srv.url, "d"))
    if crash:
        said = "1011 the server's extension RefusesToConnect failed in on_connect"
    else:
        said = "4403 this app's pages are closed for maintenance"
    assert out == [said] * 3 + ["1006 "] * 5, out
    assert ext.calls == 3
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == (["RefusesToConnect.on_connect(d) failed"] if crash else []), tracebacks
    said_refused = [  # (those at the handshake are said at DEBUG)
        r.getMessage() for r in caplog.records
        if r.levelno >= logging.INFO and r.getMessage().startswith("refused websocket for 'd'")
    ]  # fmt: skip
    assert len(said_refused) == 3, said_refused


#: a @hocuspocus/provider 3.x socket whose on_connect never lets it in: its first 6
#: closes (one per attempt), as "code reason"; `ws` throws an error of its own when the
#: provider gives up an attempt refused at the handshake, which is not the test's
HOCUSPOCUS_REFUSED = """
import * as Y from 'yjs'
import WebSocket from 'ws'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from 'hocuspocus-provider-3'
const { WS, DOC } = process.env
process.on('uncaughtException', () => {})
const socket = new HocuspocusProviderWebsocket(
  { url: WS, WebSocketPolyfill: WebSocket, quiet: true })
const closes = []
socket.on('close', ({ event }) => closes.push(`${event.code} ${event.reason}`))
const provider = new HocuspocusProvider(
  { websocketProvider: socket, name: DOC, document: new Y.Doc(), token: 't' })
provider.attach()
const end = Date.now() + 20000
while (closes.length < 6 && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
provider.destroy()
socket.destroy()
process.stdout.write(JSON.stringify(closes.slice(0, 6)))
process.exit(0)
"""


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_a_hocuspocus_socket_whose_on_connect_fails_is_held_back_too(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A /hocuspocus socket refused by a bug in on_connect was never held back: the
    provider came back about twice a second, each attempt running the hook and logging
    a WARNING. Past the third in 30 s it is refused at the handshake."""
    ext = RefusesToConnect(True)
    async with run_server(settings, _backend(settings, ext)) as srv:
        url = srv.ws_url.removesuffix("/ws") + "/hocuspocus"
        out = json.loads(await node_scenario(HOCUSPOCUS_REFUSED, url, srv.url, "d"))
    said = "1011 the server's extension RefusesToConnect failed in on_connect"
    # the hook ran 3 times, then every attempt was refused at the handshake (1006 to
    # the provider). Under load the provider may open its next socket as the last one
    # closes (two refusals logged 1 ms apart; CI failed on it once): it then tells of
    # one 1011 fewer, so the closes it tells are the 1011s, up to 3, and then 1006s
    n = out.count(said)
    assert 2 <= n <= 3 and out == [said] * n + ["1006 "] * (6 - n), out
    assert ext.calls == 3
    warned = [r for r in caplog.records if r.getMessage().startswith("refused hocuspocus socket")]
    assert len(warned) == 3, warned
