"""The Hocuspocus endpoint frame by frame, over a real socket to an in-process server: the
step-1 reply, write-ahead order of echo and sync status, stateless requests, closing one
document, malformed frames. The real providers are in tests/test_hocuspocus_node.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import eventually, free_port, run_server
from pycrdt import Doc, Text
from yclient import connect

from palimpsest import hocuspocus as H
from palimpsest import protocol as P
from palimpsest.backend import Backend
from palimpsest.errors import ProtocolError
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent
from palimpsest.store.sqlite import SQLiteStore


class GatedStore(SQLiteStore):
    """A real SQLite store whose appends wait while the gate is closed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = 0

    async def append(self, batches: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[Event]]:
        if not self.gate.is_set():
            self.held += 1
            await self.gate.wait()
        return await super().append(batches)


class Raw:
    """A Hocuspocus client at the frame level."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[H.Frame] = []
        #: the socket's pings and pongs (no document)
        self.heartbeats: list[H.Heartbeat] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                frame = H.decode(data)
                if isinstance(frame, H.Heartbeat):
                    self.heartbeats.append(frame)
                else:
                    self.frames.append(frame)
        except websockets.ConnectionClosed:
            pass

    async def send(self, doc: str, mtype: int, body: bytes = b"") -> None:
        await self.ws.send(H.prefix(doc) + P.write_var_uint(mtype) + body)

    async def auth(self, doc: str, token: str, version: str | None = None) -> None:
        body = bytes([H.AUTH_TOKEN]) + P.write_var_string(token)
        if version is not None:
            body += P.write_var_string(version)
        await self.send(doc, H.AUTH, body)

    def of(self, doc: str, *types: int) -> list[H.Frame]:
        return [f for f in self.frames if f.doc == doc and (not types or f.type in types)]

    def authed(self, doc: str) -> list[H.Frame]:
        """The Authenticated answers `doc` got."""
        return [f for f in self.of(doc, H.AUTH) if f.body[:1] == bytes([H.AUTH_AUTHENTICATED])]

    def refusals(self, doc: str) -> list[H.Frame]:
        """The PermissionDenied answers `doc` got, a refused frame's too (a close
        message, which a 2.x provider cannot read, answers only the client's close),
        each with the reason as its body."""
        denied = bytes([H.AUTH_PERMISSION_DENIED])
        return [H.Frame(f.doc, f.type, f.body[1:]) for f in self.of(doc, H.AUTH)
                if f.body[:1] == denied]  # fmt: skip


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Any]:
    settings = Settings(db=str(tmp_path / "p.db"), port=free_port(), unload_after_seconds=0.5)
    store = GatedStore(tmp_path / "p.db")
    async with run_server(settings, Backend(settings, store=store)) as s:
        try:
            yield s
        finally:
            store.gate.set()  # a failed test must not leave the shutdown flush waiting


@contextlib.asynccontextmanager
async def raw_client(srv: Any) -> AsyncIterator[Raw]:
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/hocuspocus") as ws:
        raw = Raw(ws)
        yield raw
        raw.task.cancel()


def test_frames_decode_and_say_what_is_wrong() -> None:
    frame = H.decode(H.prefix("notes") + bytes([H.AUTH, 0]) + P.write_var_string("tok"))
    assert isinstance(frame, H.Frame)
    assert (frame.doc, frame.type) == ("notes", H.AUTH)
    assert H.decode_auth(frame.body) == H.Auth("tok", None)
    # 4.x providers append their version to the token
    v4 = bytes([0]) + P.write_var_string("tok") + P.write_var_string("4.7.0")
    assert H.decode_auth(v4) == H.Auth("tok", "4.7.0")
    assert H.encode_sync_status("d", True) == b"\x01d\x08\x01"
    assert H.encode_authenticated("d", read_only=True) == b"\x01d\x02\x02\x08readonly"
    assert H.from_y_websocket("d", P.encode_sync_update(b"\x00\x00")) == (
        b"\x01d" + P.encode_sync_update(b"\x00\x00")
    )
    assert H.from_y_websocket("d", P.encode_extension({"ok": True})) == H.encode_json(
        "d", {"ok": True}
    )
    for bad, expected in [
        (b"", "empty frame"),
        (b"\x05abc", "declares 5 bytes"),
        (b"\x01d", "truncated message type"),
        (b"\x01d\xc8", "truncated message type"),
        (b"\x08", "declares 8 bytes"),
    ]:
        with pytest.raises(ProtocolError, match=expected):
            H.decode(bad)
    # a type this server does not know is still a frame of its document (Hocuspocus
    # ignores it); 4.x's ping and pong are the type's one byte, no document name
    assert H.decode(b"\x01d\x09\x00") == H.Frame("d", 9, b"\x00")
    assert H.decode(b"\x01d\xc8\x01") == H.Frame("d", 200, b"")
    assert H.decode(b"\x09") == H.Heartbeat(H.PING)
    assert H.decode(b"\x0a") == H.Heartbeat(H.PONG)
    assert H.encode_pong() == b"\x0a"
    with pytest.raises(ProtocolError, match="expected 0"):
        H.decode_auth(b"\x01\x00")
    assert H.parse_request('{"type": "undo", "id": 1}') == {"type": "undo", "id": 1}
    assert H.parse_request("cursor moved") is None
    assert H.parse_request('{"no": "type"}') is None


async def test_step1_reply_echo_and_sync_status_come_after_the_commit(srv: Any) -> None:
    store: GatedStore = srv.backend.store
    async with raw_client(srv) as raw:
        await raw.auth("wa", "alice", version="4.7.0")
        await raw.send("wa", H.SYNC, bytes([P.SYNC_STEP1]) + P.write_var_bytes(b"\x00"))
        # Authenticated, then the server's step 1, then the step 2 (Hocuspocus's order)
        got = await eventually(lambda: len(raw.of("wa")) >= 3 and raw.of("wa"), what="sync")
        assert [f.type for f in got[:3]] == [H.AUTH, H.SYNC, H.SYNC]
        assert got[0].body == bytes([H.AUTH_AUTHENTICATED]) + P.write_var_string("read-write")
        assert isinstance(H.decode_sync(got[1].body), P.SyncStep1)
        assert isinstance(H.decode_sync(got[2].body), P.SyncStep2)

        async with connect(srv.ws_url, "wa", user="bob") as bob:
            doc: Doc[Any] = Doc()
            updates: list[bytes] = []
            doc.observe(lambda e: updates.append(e.update))
            doc.get("content", type=Text).insert(0, "held")
            store.gate.clear()
            await raw.send("wa", H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(updates[0]))
            await raw.send("wa", H.STATELESS, P.write_var_string('{"type":"hello","id":1}'))
            # the request after the update is answered: the update was read and queued
            await eventually(lambda: raw.of("wa", H.STATELESS), what="hello answered")
            assert json.loads(H.decode_string(raw.of("wa", H.STATELESS)[0].body, "p"))["ok"]
            await eventually(lambda: store.held, what="the commit is held")
            # one socket, one send queue: an acknowledgement or echo sent before the
            # commit would have come before the answer
            before = len(raw.frames)
            assert [f.type for f in raw.frames[-1:]] == [H.STATELESS]
            assert raw.of("wa", H.SYNC_STATUS) == []
            assert bob.content == ""
            store.gate.set()
            await eventually(lambda: raw.of("wa", H.SYNC_STATUS), what="sync status")
            assert bob.content == "held"
        after = raw.frames[before:]
        kinds = [(f.type, f.body[:1]) for f in after]
        # the echo of the update to its sender, then its sync status
        assert kinds.index((H.SYNC, bytes([P.SYNC_UPDATE]))) < kinds.index((H.SYNC_STATUS, b"\x01"))


async def test_close_one_document_and_malformed_frames(srv: Any) -> None:
    async with raw_client(srv) as raw:
        await raw.auth("one", "alice")
        await raw.auth("two", "alice")
        await raw.auth("bad name/", "alice")
        await eventually(lambda: len(raw.of("two", H.AUTH)) == 1, what="two authenticated")
        denied = await eventually(lambda: raw.of("bad name/", H.AUTH), what="denied")
        assert denied[0].body[0] == H.AUTH_PERMISSION_DENIED
        assert "not allowed" in H.decode_string(denied[0].body[1:], "reason")

        await eventually(lambda: "one" in srv.backend.rooms.loaded, what="one loaded")
        await raw.send("one", H.CLOSE)
        room = srv.backend.rooms.loaded["two"]
        await eventually(lambda: len(room.peers) == 1, what="two still open")
        await eventually(lambda: "one" not in srv.backend.rooms.loaded, what="one unloaded")

        # a refused frame of one document closes that document, as Hocuspocus does: a
        # PermissionDenied saying why; the socket and its other documents stay open
        await raw.auth("three", "alice")
        await eventually(lambda: len(raw.of("three", H.AUTH)) == 1, what="three authenticated")
        three = srv.backend.rooms.loaded["three"]
        await raw.ws.send(b"\x03two\x00\x07")  # sync message type 7
        closed = await eventually(lambda: raw.refusals("two"), what="two closed")
        assert "unknown sync message type 7" in H.decode_string(closed[0].body, "reason")
        await eventually(lambda: len(room.peers) == 0, what="two left")
        assert raw.ws.close_code is None and len(three.peers) == 1
        # an update of 0 bytes (no Yjs client sends one) is refused with a plain reason
        await raw.send("three", H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(b""))
        empty = await eventually(lambda: raw.refusals("three"), what="three closed")
        assert "empty update: 0 bytes" in H.decode_string(empty[0].body, "reason")
        await raw.auth("three", "alice")
        await eventually(lambda: len(raw.authed("three")) == 2, what="three open again")
        # its frames are dropped until a new auth message opens it again
        await raw.send("two", H.SYNC, P.encode_sync_step1(b"\x00")[1:])
        await raw.send("three", H.SYNC, P.encode_sync_step1(b"\x00")[1:])
        await eventually(lambda: raw.of("three", H.SYNC), what="three answers")
        assert raw.of("two", H.SYNC) == []
        assert not getattr(srv.backend.rooms.loaded.get("two"), "peers", None)
        await raw.auth("two", "alice")
        await eventually(lambda: len(raw.authed("two")) == 2, what="two open again")
        await raw.send("two", H.SYNC, P.encode_sync_step1(b"\x00")[1:])
        await eventually(lambda: raw.of("two", H.SYNC), what="two answers again")

        # a frame whose document cannot even be read closes the socket
        await raw.ws.send(b"\x05two")  # a name of 5 bytes, 3 of them sent
        await eventually(lambda: raw.ws.close_code is not None, what="closed")
        assert raw.ws.close_code == H.RESET_CONNECTION
        assert "document name declares 5 bytes" in raw.ws.close_reason
    # the server keeps serving everyone else
    async with raw_client(srv) as raw:
        await raw.auth("two", "bob")
        await eventually(lambda: raw.of("two", H.AUTH), what="authenticated again")


async def test_unknown_message_types_are_ignored_and_a_ping_is_answered(srv: Any) -> None:
    """A readable frame of a type the server has no handler for (9 and 10 with a document
    name, as a 4.x provider's types would be if sent to a document; a newer provider's
    11) is ignored, as Hocuspocus's server ignores it: the socket and its documents
    stay, and a document it names that is not open yet opens later as any other. The
    socket's own ping (the one byte 9) is answered with a pong (10), as a 4.x provider
    answers a server's; a pong is taken quietly."""
    async with raw_client(srv) as raw:
        await raw.auth("open", "alice", version="4.7.0")
        await eventually(lambda: raw.of("open", H.AUTH), what="open authenticated")
        for mtype in (H.PING, H.PONG, 11, 200):
            await raw.send("open", mtype, b"\x00")
        await raw.send("later", 11, b"\x01\x02")  # not open: neither opened nor refused
        await raw.ws.send(bytes([H.PONG]))
        await raw.ws.send(bytes([H.PING]))
        await eventually(lambda: raw.heartbeats, what="pong")
        assert raw.heartbeats == [H.Heartbeat(H.PONG)]

        doc: Doc[Any] = Doc()
        updates: list[bytes] = []
        doc.observe(lambda e: updates.append(e.update))
        doc.get("content", type=Text).insert(0, "still here")
        await raw.send("open", H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(updates[0]))
        await eventually(lambda: raw.of("open", H.SYNC_STATUS), what="update saved")
        assert raw.refusals("open") == [] and raw.ws.close_code is None
        assert raw.of("later") == [] and "later" not in srv.backend.rooms.loaded
        await raw.auth("later", "alice", version="4.7.0")
        await raw.send("later", H.SYNC, P.encode_sync_step1(b"\x00")[1:])
        await eventually(lambda: raw.of("later", H.SYNC), what="later opens")
        assert raw.of("later", H.AUTH)[0].body[0] == H.AUTH_AUTHENTICATED
    async with connect(srv.ws_url, "open", user="bob") as bob:
        assert bob.content == "still here"


async def test_awareness_echo_query_and_broadcast_stateless(srv: Any) -> None:
    async with raw_client(srv) as one, raw_client(srv) as two:
        for raw, user in ((one, "alice"), (two, "bob")):
            await raw.auth("aw", user)
        await eventually(lambda: one.of("aw", H.AUTH) and two.of("aw", H.AUTH), what="auth")
        presence = P.encode_awareness_entries([(4242, 1, '{"user":{"name":"alice"}}')])
        await one.send("aw", H.AWARENESS, P.write_var_bytes(presence))
        # relayed to the other client and echoed to the sender
        for raw in (one, two):
            got = await eventually(lambda r=raw: r.of("aw", H.AWARENESS), what="awareness")
            assert H.decode_awareness(got[0].body) == presence
        await two.send("aw", H.QUERY_AWARENESS)
        await eventually(lambda: len(two.of("aw", H.AWARENESS)) == 2, what="query answered")

        await two.send("aw", H.BROADCAST_STATELESS, P.write_var_string("cursor moved"))
        for raw in (one, two):
            got = await eventually(lambda r=raw: r.of("aw", H.STATELESS), what="stateless")
            assert H.decode_string(got[0].body, "payload") == "cursor moved"
        # an application's own stateless message is not a request: nothing answers it
        await one.send("aw", H.STATELESS, P.write_var_string("just for my app"))
        await one.send("aw", H.STATELESS, P.write_var_string('{"type":"hello","id":9}'))
        got = await eventually(lambda: len(one.of("aw", H.STATELESS)) == 2 and one.of("aw", 5))
        assert json.loads(H.decode_string(got[1].body, "payload"))["id"] == 9
        # a broadcast shaped as the server's answer is refused (a reader could answer
        # everyone's undo requests in the server's name): that document closes
        forged = '{"type":"result","id":1,"ok":true,"seq":99}'
        await two.send("aw", H.BROADCAST_STATELESS, P.write_var_string(forged))
        closed = await eventually(lambda: two.refusals("aw"), what="closed")
        assert "result" in H.decode_string(closed[0].body, "reason")
        await asyncio.sleep(0.2)
        assert len(one.of("aw", H.STATELESS)) == 2  # nothing relayed
        # however it is written (JSON.parse skips leading whitespace and reads what
        # Python will not: a 5,000-digit integer), and never a crash on deep nesting
        for i, forged in enumerate(
            (
                ' {"type": "result", "id": 1, "ok": true}',
                '\n{"type": "result", "id": 1, "ok": true}',
                '{"type": "result", "id": 1, "ok": true, "n": ' + "9" * 5000 + "}",
                "{" + '"a":[' * 100_000 + "]" * 100_000 + "}",
            )
        ):
            await two.auth("aw", "bob")
            await eventually(lambda i=i: len(two.authed("aw")) == i + 2, what="open again")
            await two.send("aw", H.BROADCAST_STATELESS, P.write_var_string(forged))
            closed = await eventually(
                lambda i=i: len(two.refusals("aw")) == i + 2 and two.refusals("aw"),
                what="closed",
            )
            assert "result" in H.decode_string(
                closed[-1].body, "reason"
            ) or "JSON" in H.decode_string(closed[-1].body, "reason")
        # a request with NaN is no JSON: not answered (an answer echoed the NaN)
        await one.send("aw", H.STATELESS, P.write_var_string('{"type":"hello","id":NaN}'))
        await one.send("aw", H.STATELESS, P.write_var_string('{"a":' + "[" * 200_000))
        await one.send("aw", H.STATELESS, P.write_var_string('{"type":"hello","id":10}'))
        got = await eventually(lambda: len(one.of("aw", H.STATELESS)) == 3 and one.of("aw", 5))
        assert json.loads(H.decode_string(got[2].body, "payload"))["id"] == 10
        assert two.ws.close_code is None and one.ws.close_code is None
        assert len(one.of("aw", H.STATELESS)) == 3  # nothing of the forged ones relayed


async def test_frames_are_handled_as_they_are_parsed(srv: Any) -> None:
    """/hocuspocus reads like /ws (wire_write.direct_reader): a socket's frames go from
    uvicorn's parser to its dispatch with no task in between, for every document on it,
    and a refused frame still closes only its own document."""
    async with raw_client(srv) as raw:
        await raw.auth("da", "alice")
        await raw.auth("db", "alice")
        await eventually(lambda: raw.of("da", H.AUTH) and raw.of("db", H.AUTH), what="auth")
        room = await eventually(lambda: srv.backend.rooms.get_loaded("da"), what="loaded")
        peer = await eventually(lambda: next(iter(room.peers.values()), None), what="joined")
        sock = peer.sock
        handled = sock.direct_messages
        assert handled >= 2, "the auth messages came the direct way"
        doc: Doc[Any] = Doc()
        updates: list[bytes] = []
        doc.observe(lambda e: updates.append(e.update))
        doc.get("content", type=Text).insert(0, "direct")
        await raw.send("da", H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(updates[0]))
        text = room.doc.get("content", type=Text)
        await eventually(lambda: str(text) == "direct", what="applied")
        assert sock.direct_messages == handled + 1
        # a frame that does not decode, for "db" only: that document is closed, not the socket
        await raw.send("db", H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(b"\xff" * 9))
        await eventually(lambda: raw.refusals("db"), what="db closed")
        assert sock._close is None
        doc.get("content", type=Text).insert(6, "!")
        await raw.send("da", H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(updates[1]))
        await eventually(lambda: str(text) == "direct!", what="the other document goes on")


async def test_a_bug_in_a_deciding_hook_refuses_with_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception that is not a PalimpsestError (a bug) in on_connect or
    authenticate: the connection is refused as a server error (1011 / HTTP 500 JSON)
    that names the hook, and the traceback is logged. It used to end the whole socket
    with no reason (1000 or 1006), an ASGI traceback, and an HTTP text/plain 500. A bug
    in on_update refuses nothing (it closed the socket, or on a Hocuspocus socket the
    document, and the provider sent the same update again at every reconnect): the
    update is logged, on /ws and on a Hocuspocus socket alike."""
    import httpx

    from palimpsest import Extension, Identity

    class Buggy(Extension):
        async def authenticate(self, conn: Any) -> Identity | None:
            if conn.query_params.get("user") == "crash":
                raise ValueError("bug in authenticate")
            return None

        async def on_connect(self, client: Any) -> None:
            if client.doc.startswith("crash-conn"):
                raise ZeroDivisionError("bug in on_connect")

        def on_update(self, room: Any, client: Any, update: bytes) -> None:
            if room.name.startswith("buggy"):
                raise KeyError("bug in on_update")

    from palimpsest.features import builtin_extensions

    settings = Settings(db=str(tmp_path / "b.db"), port=free_port())
    backend = Backend(settings, extensions=[Buggy(), *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        async with connect(srv.ws_url, "buggy-1", "ann") as a:
            a.insert(0, "typed")

            async def logged() -> bool:
                return await srv.backend.store.head("buggy-1") == 1

            await eventually(logged, what="the update a bug saw, logged")
            assert a.close_code is None
        with pytest.raises(websockets.ConnectionClosed) as refused:
            async with connect(srv.ws_url, "crash-conn-1", "ann"):
                pass
        assert refused.value.rcvd is not None
        assert (refused.value.rcvd.code, refused.value.rcvd.reason) == (
            1011, "the server's extension Buggy failed in on_connect")  # fmt: skip
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{srv.url}/api/docs/any/events", params={"user": "crash"})
            assert r.status_code == 500 and r.json() == {
                "error": "ExtensionFailed",
                "detail": "the server's extension Buggy failed in authenticate",
            }
        assert "bug in on_update" in caplog.text and "bug in authenticate" in caplog.text
        assert "Exception in ASGI application" not in caplog.text

        async with raw_client(srv) as raw:
            await raw.auth("buggy-2", "alice")
            await raw.auth("fine", "alice")
            await eventually(lambda: len(raw.of("fine", H.AUTH)) == 1, what="authenticated")
            for name in ("buggy-2", "fine"):
                doc: Doc[Any] = Doc()
                updates: list[bytes] = []
                doc.observe(lambda e, u=updates: u.append(e.update))
                doc.get("content", type=Text).insert(0, "x")
                await raw.send(name, H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(updates[0]))
            await eventually(lambda: raw.of("buggy-2", H.SYNC_STATUS), what="buggy saved")
            await eventually(lambda: raw.of("fine", H.SYNC_STATUS), what="fine saved")
            assert not raw.refusals("buggy-2") and raw.ws.close_code is None
        assert await srv.backend.store.head("buggy-2") == 1
        assert await srv.backend.store.head("fine") == 1


async def test_authenticate_sees_which_document_of_the_socket_it_is_for(tmp_path: Path) -> None:
    """Hocuspocus's onAuthenticate gets the document name (a per-document read-only
    connection is a common use): each auth message reaches `authenticate` with its
    document as ``conn.path_params["doc"]``, where ``/ws/{doc}`` has it too."""
    from palimpsest import Extension, Identity

    seen: list[tuple[str, str | None]] = []

    class PerDoc(Extension):
        async def authenticate(self, conn: Any) -> Identity | None:
            doc = conn.path_params.get("doc")
            seen.append((conn.url.path, doc))
            return Identity("ann", "read" if doc and doc.startswith("ro-") else "write")

    settings = Settings(db=str(tmp_path / "a.db"), port=free_port())
    async with run_server(settings, Backend(settings, extensions=[PerDoc()])) as srv:
        async with raw_client(srv) as raw:
            await raw.auth("ro-1", "t")
            await raw.auth("rw-1", "t")
            for name, scope in (("ro-1", "readonly"), ("rw-1", "read-write")):
                got = await eventually(lambda n=name: raw.of(n, H.AUTH), what=name)
                assert got[0].body == bytes([H.AUTH_AUTHENTICATED]) + P.write_var_string(scope)
        async with connect(srv.ws_url, "ro-2", "x") as c:
            assert c.close_code is None
    assert ("/hocuspocus", "ro-1") in seen and ("/hocuspocus", "rw-1") in seen
    assert ("/ws/ro-2", "ro-2") in seen


async def test_a_step_2_carrying_a_queued_update_is_not_logged_twice(srv: Any) -> None:
    """An editor that writes as its provider connects sends the update, then its step 2
    carrying the same items; both arrived before the first commit and both were logged
    (5 of 12 cold documents in a field test). The no-op rule now counts queued updates."""
    store: GatedStore = srv.backend.store
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    doc.get("content", type=Text).insert(0, "early")
    async with connect(srv.ws_url, "twice", user="bob") as bob:
        store.gate.clear()
        async with websockets.connect(f"{srv.ws_url}/twice?user=ann") as ws:
            await ws.send(P.encode_sync_update(updates[0]))
            await eventually(lambda: store.held, what="the update's commit held")
            await ws.send(P.encode_sync_step2(doc.get_update()))
            await ws.send(P.encode_sync_update(updates[0]))  # and once more, as an update
            room = srv.backend.rooms.get_loaded("twice")
            await eventually(lambda: room.queued_bytes == len(updates[0]), what="read")
            await asyncio.sleep(0.2)
            store.gate.set()
            await eventually(lambda: bob.content == "early", what="bob sees it")
            await room.flush()
    events = await store.read("twice")
    assert [e.actor for e in events] == ["ann"], events


async def test_a_document_the_client_closed_is_acknowledged_and_waits_for_its_auth(
    srv: Any,
) -> None:
    """As Hocuspocus 3.x: the client's close (7) is answered with a close message,
    ``provider_initiated``; a frame for that document sent after it waits for an auth
    message opening the document again, and is handled then, as that auth's user. It
    used to open the document at once as the socket's user (``anonymous`` in open mode),
    whose edit of alice's Yjs client was refused: 'client id … belongs to another user'."""

    def update_of(doc: Doc[Any], sv: bytes = b"\x00") -> bytes:
        return bytes([P.SYNC_UPDATE]) + P.write_var_bytes(doc.get_update(sv))

    async with raw_client(srv) as raw:
        d: Doc[Any] = Doc(client_id=9401)
        text = d.get("content", type=Text)
        await raw.auth("ac", "alice")
        text += "one "
        await raw.send("ac", H.SYNC, update_of(d))
        await eventually(lambda: raw.of("ac", H.SYNC_STATUS), what="one saved")
        await raw.send("ac", H.CLOSE)
        ack = await eventually(lambda: raw.of("ac", H.CLOSE), what="the close answered")
        assert H.decode_string(ack[0].body, "reason") == "provider_initiated"
        sv = d.get_state()
        text += "two"
        await raw.send("ac", H.SYNC, update_of(d, sv))
        await raw.send("ac", H.AWARENESS, P.write_var_bytes(P.encode_awareness_entries([])))

        await raw.auth("ac", "alice")
        await eventually(lambda: len(raw.of("ac", H.SYNC_STATUS)) == 2, what="two saved")
        assert [f.body for f in raw.of("ac", H.AUTH)][-1][0] == H.AUTH_AUTHENTICATED
        assert len(raw.of("ac", H.CLOSE)) == 1
    async with connect(srv.ws_url, "ac", user="bob") as bob:
        assert bob.content == "one two"
    events = await srv.backend.store.read("ac")
    assert {e.actor for e in events} == {"alice"}


@pytest.mark.parametrize("typed", [2, 0])
async def test_a_document_the_server_closed_syncs_when_an_auth_message_opens_it(
    srv: Any, typed: int
) -> None:
    """A renewal with another user's token closes the document (PermissionDenied); the
    updates sent meanwhile are dropped. An auth message alone opens it again (what
    ``sendToken()`` sends: no sync step 1 follows), and the server syncs: its step 1
    (answered with a step 2 carrying the dropped updates) and a step 2 with what others
    wrote meanwhile. The provider counted the dropped updates, not that step 2: one sync
    status for each of them, none for the step 2 itself. It used to send nothing: the
    dropped updates never came, nor any later one (past their gap)."""

    def sync(sub: int, payload: bytes) -> bytes:
        return bytes([sub]) + P.write_var_bytes(payload)

    d: Doc[Any] = Doc(client_id=9402)
    text = d.get("content", type=Text)
    async with raw_client(srv) as raw:
        await raw.auth("rs", "alice")
        await raw.send("rs", H.SYNC, sync(P.SYNC_STEP1, b"\x00"))
        await eventually(lambda: len(raw.of("rs", H.SYNC)) >= 2, what="the server's sync")
        await raw.send("rs", H.SYNC, sync(P.SYNC_STEP2, b"\x00\x00"))
        sv = d.get_state()
        text += "one "
        await raw.send("rs", H.SYNC, sync(P.SYNC_UPDATE, d.get_update(sv)))
        await eventually(lambda: len(raw.of("rs", H.SYNC_STATUS)) == 2, what="one saved")
        await raw.auth("rs", "eve")
        denied = await eventually(lambda: raw.of("rs", H.AUTH)[1:], what="the refusal")
        assert denied[0].body[0] == H.AUTH_PERMISSION_DENIED
        for word in ("two ", "three ")[:typed]:
            sv = d.get_state()
            text += word
            await raw.send("rs", H.SYNC, sync(P.SYNC_UPDATE, d.get_update(sv)))
        async with connect(srv.ws_url, "rs", user="bob") as bob:
            await eventually(lambda: bob.content == "one ", what="bob synced")
            bob.insert(0, "bob ")
            room = srv.backend.rooms.get_loaded("rs")
            await eventually(lambda: room.seq == 2, what="bob's edit logged")
        seen = len(raw.of("rs", H.SYNC))
        await raw.auth("rs", "alice")
        got = await eventually(lambda: raw.of("rs", H.SYNC)[seen:][:2], what="the sync")
        assert len(got) == 2
        step1, step2 = (H.decode_sync(f.body) for f in got)
        assert isinstance(step1, P.SyncStep1) and isinstance(step2, P.SyncStep2)
        d.apply_update(step2.update)
        assert str(text).startswith("bob one "), "what others wrote meanwhile"
        await raw.send("rs", H.SYNC, sync(P.SYNC_STEP2, d.get_update(step1.state_vector)))
        want = "bob one two three " if typed else "bob one "
        async with connect(srv.ws_url, "rs", user="carol") as carol:
            await eventually(lambda: carol.content == want, what="carol sees every edit")
        assert str(text) == want
        await srv.backend.rooms.get_loaded("rs").flush()
        await raw.send("rs", H.STATELESS, P.write_var_string('{"type": "hello"}'))
        await eventually(lambda: raw.of("rs", H.STATELESS), what="hello")
        # the first step 2 and "one ", then one for each dropped update
        assert [f.body for f in raw.of("rs", H.SYNC_STATUS)] == [b"\x01"] * (2 + typed)


async def test_an_update_taken_before_the_server_closes_its_document_is_acknowledged(
    srv: Any,
) -> None:
    """The server closes a document (here a renewal refused) while an update it took is
    on its way to the log: its sync status still goes out once it is durable (the
    provider counts it among its unsynced changes). It used to be forgotten with the
    document, and the provider's count never came back to 0."""
    store: GatedStore = srv.backend.store
    d: Doc[Any] = Doc(client_id=9403)
    async with raw_client(srv) as raw:
        await raw.auth("ak", "alice")
        await raw.send("ak", H.SYNC, bytes([P.SYNC_STEP1]) + P.write_var_bytes(b"\x00"))
        await eventually(lambda: len(raw.of("ak", H.SYNC)) >= 2, what="the server's sync")
        await raw.send("ak", H.SYNC, bytes([P.SYNC_STEP2]) + P.write_var_bytes(b"\x00\x00"))
        await eventually(lambda: raw.of("ak", H.SYNC_STATUS), what="the step 2 saved")
        store.gate.clear()
        d.get("content", type=Text).insert(0, "in flight")
        await raw.send("ak", H.SYNC, bytes([P.SYNC_UPDATE]) + P.write_var_bytes(d.get_update()))
        await eventually(lambda: store.held, what="the commit is held")
        await raw.auth("ak", "eve")
        await eventually(lambda: raw.of("ak", H.AUTH)[1:], what="the refusal")
        store.gate.set()
        await eventually(lambda: len(raw.of("ak", H.SYNC_STATUS)) == 2, what="saved")
    assert [e.actor for e in await store.read("ak")] == ["alice"]


@pytest.mark.parametrize("renewal", ["read", "another_document", "write", "edit"])
async def test_frames_after_a_renewal_are_judged_under_its_outcome(
    tmp_path: Path, renewal: str
) -> None:
    """A writer sends, in one burst, an auth message renewing its open document and an
    update. The renewal was decided on a task of its own while the read loop went on:
    the update was taken under the OLD session (answered Authenticated readonly, then a
    sync status "saved" for that very update; or logged before the PermissionDenied of
    a token no longer granting the document). Frames after an auth message now wait for
    its outcome, as those before a document's first auth message do: refused under a
    read-only token, dropped with the document under a refused one, taken under a good
    one."""
    from palimpsest.auth.tokens import mint

    secret = "renewal-test-secret-" + "x" * 32
    settings = Settings(db=str(tmp_path / "r.db"), port=free_port(), jwt_secret=secret)
    renewed = {
        "read": mint(secret, "dora", "read", ["race-*"]),
        "another_document": mint(secret, "dora", "write", ["elsewhere"]),
        "write": mint(secret, "dora", "write", ["race-*"]),
        # the edit role (below write: no restore or revert) edits as write does here
        "edit": mint(secret, "dora", "edit", ["race-*"]),
    }[renewal]
    d: Doc[Any] = Doc(client_id=9404)
    text = d.get("content", type=Text)

    def update(sv: bytes) -> bytes:
        return bytes([P.SYNC_UPDATE]) + P.write_var_bytes(d.get_update(sv))

    async with run_server(settings) as srv, raw_client(srv) as raw:
        await raw.auth("race-1", mint(secret, "dora", "write", ["race-*"]))
        sv = d.get_state()
        text += "ok "
        await raw.send("race-1", H.SYNC, update(sv))
        await eventually(lambda: raw.of("race-1", H.SYNC_STATUS), what="ok saved")
        sv = d.get_state()
        text += "AFTER-RENEWAL"
        # one burst: the update sent before any answer to the auth message
        await raw.auth("race-1", renewed)
        await raw.send("race-1", H.SYNC, update(sv))
        answers = await eventually(lambda: raw.of("race-1", H.AUTH)[1:], what="the renewal")
        if renewal == "another_document":
            assert answers[0].body[0] == H.AUTH_PERMISSION_DENIED
        else:
            scope = "readonly" if renewal == "read" else "read-write"
            assert answers[0].body == bytes([H.AUTH_AUTHENTICATED]) + P.write_var_string(scope)
            statuses = await eventually(
                lambda: raw.of("race-1", H.SYNC_STATUS)[1:], what="the update's status"
            )
            assert statuses[0].body == (b"\x00" if renewal == "read" else b"\x01")
        room = srv.backend.rooms.get_loaded("race-1")
        if room is not None:
            await room.flush()
        # (a frame after it, to be sure the burst's update was read and handled)
        await raw.send("race-1", H.STATELESS, P.write_var_string('{"type": "hello"}'))
        await asyncio.sleep(0.2)
        if room is not None:
            await room.flush()
        logged = await srv.backend.store.read("race-1")
    assert len(logged) == (2 if renewal in ("write", "edit") else 1), logged


async def test_the_document_past_the_most_one_socket_may_have_open_is_told_why(srv: Any) -> None:
    """The 257th document of a socket was refused with "more than 256 documents on one
    socket", as if 257 were open. The refusal says that 256 are open, the most, and
    what to do; once one is closed, the document opens."""
    from palimpsest.routes.hocuspocus import MAX_DOCS_PER_SOCKET

    async with raw_client(srv) as raw:
        for i in range(MAX_DOCS_PER_SOCKET + 1):
            await raw.auth(f"many-{i}", "mo")
        last = f"many-{MAX_DOCS_PER_SOCKET}"

        def auths() -> list[H.Frame]:
            return [f for f in raw.frames if f.type == H.AUTH]

        await eventually(lambda: len(auths()) == MAX_DOCS_PER_SOCKET + 1, what="answers")
        answers = auths()
        assert [f.doc for f in answers if f.body[0] == H.AUTH_PERMISSION_DENIED] == [last]
        denied = next(f for f in answers if f.doc == last)
        assert H.decode_string(denied.body[1:], "reason") == (
            f"{MAX_DOCS_PER_SOCKET} documents are open on this socket, the most one may have: "
            "close one (or open this one on another socket) first"
        )
        await raw.send("many-0", H.CLOSE)
        await raw.auth(last, "mo")
        opened = await eventually(lambda: raw.of(last, H.AUTH)[1:], what="opened")
        assert opened[0].body[0] == H.AUTH_AUTHENTICATED


async def test_frames_held_through_renewals_are_given_back(tmp_path: Path) -> None:
    """What waits while a renewal is decided counts against the socket's one bound on
    held frames, and is given back when the renewal is decided: taken (a good token) or
    dropped with the document (a token for other documents, then a reopening). Renewal
    after renewal, each under the bound and all of them together well over it, the
    socket is never closed for frames it no longer holds (a leak in that count, taken or
    dropped, would close it, 1013, before the last round)."""
    from palimpsest.auth.tokens import mint

    secret = "renewal-test-secret-" + "x" * 32
    # the bound: 8 frames of 4 KiB, 32 KiB; each round holds about 2.2 KiB
    settings = Settings(
        db=str(tmp_path / "r.db"), port=free_port(), jwt_secret=secret, max_frame_bytes=4096
    )
    good = mint(secret, "dora", "write", ["race-*"])
    other = mint(secret, "dora", "write", ["elsewhere"])
    d: Doc[Any] = Doc(client_id=9405)
    text = d.get("content", type=Text)
    answers = 1
    async with run_server(settings) as srv, raw_client(srv) as raw:
        await raw.auth("race-2", good)
        await eventually(lambda: len(raw.of("race-2", H.AUTH)) >= 1, what="opened")
        for i in range(40):
            sv = d.get_state()
            text += f"{i:02d}" + "x" * 2000
            # (a renewal, and an update read while it is decided)
            await raw.auth("race-2", good if i % 2 == 0 else other)
            update = bytes([P.SYNC_UPDATE]) + P.write_var_bytes(d.get_update(sv))
            await raw.send("race-2", H.SYNC, update)
            answers += 1
            if i % 2 == 1:  # refused: the document closed; an auth message opens it again
                await eventually(lambda n=answers: len(raw.of("race-2", H.AUTH)) >= n,
                                 what=f"renewal {i} refused")  # fmt: skip
                await raw.auth("race-2", good)
                answers += 1
            await eventually(lambda n=answers: len(raw.of("race-2", H.AUTH)) >= n,
                             what=f"round {i}")  # fmt: skip
            assert raw.ws.close_code is None, (i, raw.ws.close_reason)
        # (still open, and still served)
        await raw.send("race-2", H.STATELESS, P.write_var_string('{"type": "hello"}'))
        await asyncio.sleep(0.2)
        assert raw.ws.close_code is None, raw.ws.close_reason


async def test_a_socket_refused_again_on_every_reconnect_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket closed for good for a frame it sent (here one whose document name cannot
    be read, 4400 closed with Hocuspocus's 4205), which its client sends again on every
    reconnect: the first closing is said at INFO; the repeats' closing, connect and
    disconnect lines go to DEBUG, and one line says how many (server.repeat_logs), as
    on /ws. Each socket is still closed with its reason."""
    caplog.set_level(logging.INFO)
    settings = Settings(db=str(tmp_path / "p.db"), port=free_port())
    async with run_server(settings, Backend(settings)) as srv:
        for _ in range(10):
            async with raw_client(srv) as raw:
                await raw.ws.send(b"\x05two")  # a name of 5 bytes, 3 of them sent
                await eventually(lambda: raw.ws.close_code is not None, what="closed")
                assert raw.ws.close_code == H.RESET_CONNECTION
                assert "document name declares 5 bytes" in raw.ws.close_reason
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    closing = [m for m in said if "closing with 4205" in m]
    assert len(closing) == 1, said
    assert sum(m.startswith("connect ") for m in said) == 1, said
    assert sum(m.startswith("disconnect ") for m in said) == 1, said
    summary = [m for m in said if "more connections of (hocuspocus socket)" in m]
    assert len(summary) == 1 and summary[0].startswith("9 more"), said
    assert "document name declares 5 bytes" in summary[0]
