"""Each cause of ``palimpsest_disconnects_total{cause}`` that test_observability.py does
not bring on, brought on by a real client doing what causes it: the close code and
reason it sees, and the one series that counts it (scraped from /metrics)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import RunningServer, closed_with, eventually, run_server
from pycrdt import Doc, Text
from serverproc import ServerProcess
from test_hostile import SECRET, TWO_SECTIONS, token
from test_limits import SMALL_BUFFER, connection_of, transport_of
from test_ops import scrape, val
from test_wire_write import raw_client
from websockets.frames import Frame, Opcode
from yclient import YClient, connect

from palimpsest import Client, Extension, PalimpsestError, Room
from palimpsest import protocol as P
from palimpsest.auth.tokens import LEEWAY
from palimpsest.backend import Backend
from palimpsest.closes import CAUSES
from palimpsest.features import builtin_extensions
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore

METRIC = "palimpsest_disconnects_total"


@asynccontextmanager
async def counts_one(srv: RunningServer, cause: str) -> AsyncIterator[None]:
    """The block ends one connection, counted under `cause` and no other (those the
    block opens and closes itself, as ``client_closed``, aside)."""
    before = await scrape(srv.url)
    yield

    async def counted() -> dict[str, float] | None:
        m = await scrape(srv.url)
        got = {c: val(m, METRIC, cause=c) - val(before, METRIC, cause=c) for c in CAUSES}
        got.pop("client_closed")
        return got if got == {c: (c == cause) * 1.0 for c in got} else None

    await eventually(counted, what=f"one disconnect counted as {cause}")


async def first_edit(srv: RunningServer, doc: str, client: YClient, text: str) -> None:
    """`client` (of `doc`) types `text`; until the room logged it, as its first event."""
    client.insert(0, text)
    room = await eventually(lambda: srv.backend.rooms.get_loaded(doc))
    await eventually(lambda: room.seq == 1, what=f"{text!r} logged")


async def closed(client: YClient) -> tuple[int | None, str | None]:
    """Until the server closed `client`: its close code and reason."""
    await eventually(lambda: client.close_code is not None, what="closed")
    return client.close_code, client.close_reason


async def test_a_client_that_does_not_read_is_closed_as_slow_client(settings: Settings) -> None:
    """It stops reading (its receive buffer small, its websocket library pausing the
    socket once a frame waits unread) while another writes; once its send queue is over
    its bound and it reads again, it gets the frames queued, then 1013."""
    settings.max_events_per_second = 0
    settings.send_queue_frames = 8
    async with run_server(settings) as srv, connect(srv.ws_url, "slow", "writer") as writer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        sock.connect(("127.0.0.1", srv.port))
        async with counts_one(srv, "slow_client"):
            ws = await websockets.connect(f"{srv.ws_url}/slow?user=snail", sock=sock,
                                          compression=None, max_queue=1)  # fmt: skip
            conn = await eventually(lambda: connection_of(srv, "slow", "snail"), what="joined")
            # a fixed send buffer on the server's end (no autotuning to megabytes)
            transport_of(conn).get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER
            )
            room = srv.backend.rooms.get_loaded("slow")
            assert room is not None
            for i in range(400):
                writer.insert(0, "x" * 32_000)
                await eventually(lambda n=i + 1: room.seq >= n, what=f"edit {i} logged")  # type: ignore[misc]
                if conn._close is not None:
                    break
            assert conn._close is not None, "never over its send queue's bound"
            code, reason = await closed_with(ws)
        assert (code, reason) == (1013, "send queue overflow: reconnect and re-sync")


async def test_a_token_that_expires_while_open_is_closed_as_auth_expired(
    settings: Settings,
) -> None:
    settings.jwt_secret = SECRET
    async with run_server(settings) as srv:
        short = token("w", "write", ttl=-LEEWAY + 2)  # valid for two more seconds
        async with counts_one(srv, "auth_expired"):
            ws = await websockets.connect(f"{srv.ws_url}/exp?token={short}", compression=None)
            code, reason = await closed_with(ws)
        assert (code, reason) == (4401, "token expired: reconnect with a fresh token")


async def test_items_under_another_users_client_id_close_as_forbidden(
    server: RunningServer,
) -> None:
    async with connect(server.ws_url, "owned", "alice") as alice:
        await first_edit(server, "owned", alice, "hers")
        forged: Doc[Any] = Doc(client_id=alice.doc.client_id)
        forged.apply_update(alice.doc.get_update())
        sv = forged.get_state()
        forged.get("content", type=Text).insert(0, "not ")
        async with counts_one(server, "forbidden"):
            ws = await websockets.connect(f"{server.ws_url}/owned?user=mallory",
                                          compression=None)  # fmt: skip
            await ws.send(P.encode_sync_update(forged.get_update(sv)))
            code, reason = await closed_with(ws)
    assert code == 4403 and "belongs to another user" in reason, (code, reason)


async def test_a_deleted_document_closes_its_clients_as_doc_deleted(
    server: RunningServer,
) -> None:
    async with counts_one(server, "doc_deleted"), connect(server.ws_url, "gone", "ann") as ann:
        await first_edit(server, "gone", ann, "soon gone")
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.delete("/api/docs/gone", params={"user": "root"})
        assert r.status_code == 200 and r.json()["closed"] == 1, r.text
        code, reason = await closed(ann)
    # who deleted it is not said to everyone connected (the server's log says it)
    assert (code, reason) == (4404, "the document was deleted ('gone')")


async def test_a_document_that_breaks_closes_its_clients_as_reloading(
    server: RunningServer,
) -> None:
    """An event in the log that breaks the document (test_broken_event.py): the room is
    dropped and its clients told to come back."""
    async with connect(server.ws_url, "breaks", "alice") as alice:
        await first_edit(server, "breaks", alice, "hello")
        async with counts_one(server, "reloading"):
            breaking = NewEvent("mallory", "edit", TWO_SECTIONS, {})
            await server.backend.store.append([("breaks", [breaking])])
            alice.insert(5, " world")
            code, reason = await closed(alice)
    assert (code, reason) == (1013, "the document is being reloaded, reconnect")


async def test_edits_the_store_refuses_for_good_close_as_store_error(
    server: RunningServer,
) -> None:
    """Not a moment's trouble (those are held, test_store_outage.py): a refusal that is
    final (a constraint; a trigger's here) closes the sender with 1011 to re-send."""
    store = server.backend.store
    assert isinstance(store, SQLiteStore)
    async with connect(server.ws_url, "refused", "alice") as alice:
        await first_edit(server, "refused", alice, "kept")
        await store.on_writer(lambda c: c.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON log "
            "BEGIN SELECT RAISE(ABORT, 'no more edits'); END"
        ))  # fmt: skip
        async with counts_one(server, "store_error"):
            alice.insert(0, "refused ")
            code, reason = await closed(alice)
    assert (code, reason) == (1011, "the store failed to log your edits; reconnect to re-send")


class QuotaServiceDown(PalimpsestError):
    """An embedder's own error, a server error (a bug in on_update refuses nothing:
    docs/extending.md)."""

    close_code = 1011


class Quota(Extension):
    """An embedder's on_update that refuses as a server error of its own."""

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        raise QuotaServiceDown("the quota service does not answer")


async def test_an_extension_that_refuses_with_1011_closes_as_error(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "e.db"))
    ext = Quota()
    backend = Backend(settings, extensions=[ext, *builtin_extensions(settings, others=[ext])])
    async with run_server(settings, backend) as srv:
        async with counts_one(srv, "error"), connect(srv.ws_url, "bug", "ann") as ann:
            ann.insert(0, "x")
            code, reason = await closed(ann)
    assert (code, reason) == (1011, "the quota service does not answer")


async def test_the_close_the_asgi_server_makes_at_its_shutdown_is_the_servers(
    settings: Settings, caplog: Any
) -> None:
    """uvicorn closes the websockets still open when it shuts down (under gunicorn or
    hypercorn, or `uvicorn app:app`, nothing of Palimpsest's closes them first) with
    1012 itself, and reports it to the app as a disconnect: it was logged
    ``cause=client_closed code=1012 … (closed by the client …)``. It is the server's."""
    caplog.set_level(logging.INFO, "palimpsest")
    async with run_server(settings) as srv, connect(srv.ws_url, "doc", user="al") as c:
        await srv.stop()  # as uvicorn's own signal handler does: no going_away first
        assert (await closed(c))[0] == 1012
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("disconnect ")]
    assert len(lines) == 1, lines
    assert "cause=server_shutdown code=1012" in lines[0], lines
    assert "(closed by the server after" in lines[0], lines


@pytest.mark.parametrize(
    ("frame", "code", "cause"),
    [
        # a length past websockets' bound (ws_max_size): refused before it is read
        (b"\x82\xff" + (1 << 40).to_bytes(8, "big") + b"mask", 1009, "too_large"),
        # unmasked: a client must mask (RFC 6455 5.1)
        (Frame(Opcode.BINARY, b"\x00\x00").serialize(mask=False), 1002, "protocol_error"),
    ],
    ids=["over-ws-max-size", "unmasked"],
)
async def test_a_frame_websockets_refuses_is_counted_as_the_servers_refusal(
    settings: Settings, caplog: Any, frame: bytes, code: int, cause: str
) -> None:
    """websockets closes with its own code a frame it will not read (test_wire_write.py)
    and uvicorn reports that close to the app as a disconnect: it was logged
    ``cause=client_closed code=1009 … (closed by the client …)`` and counted so."""
    caplog.set_level(logging.INFO, "palimpsest")
    async with run_server(settings) as srv:
        async with counts_one(srv, cause), raw_client(srv.port, "/ws/raw?user=al") as raw:
            await eventually(lambda: connection_of(srv, "raw", "al"), what="joined")
            raw.writer.write(frame)
            close = await raw.read_until(lambda f: f.opcode is Opcode.CLOSE)
            assert int.from_bytes(close.data[:2], "big") == code
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("disconnect ")]
    assert len(lines) == 1, lines
    assert f"cause={cause} code={code}" in lines[0], lines
    assert "(closed by the server after" in lines[0], lines


async def test_a_client_the_keepalive_closes_is_the_servers_keepalive_timeout(
    tmp_path: Path,
) -> None:
    """A client that stops reading its socket in a busy document (a small receive buffer,
    never read: its window closes) answers no ping and takes nothing: the server's
    keepalive closes it with 1011 "keepalive ping timeout". uvicorn reports that end to
    the app as the client's (1005, no close frame): it was logged ``cause=connection_lost
    code=1005 reason='' (closed by the client after 40.0 s)`` and counted so."""
    env = {"PALIMPSEST_WS_PING_INTERVAL": "0.2", "PALIMPSEST_WS_PING_TIMEOUT": "0.3"}
    async with ServerProcess(tmp_path / "srv", env=env) as srv:
        before = await scrape(srv.http_url)
        async with connect(srv.ws_url, "busy", "writer") as writer:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
            sock.connect(("127.0.0.1", srv.port))
            sock.setblocking(False)
            reader, w = await asyncio.open_connection(sock=sock)
            w.write(
                b"GET /ws/busy?user=slow HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"sec-websocket-version: 13\r\n\r\n"
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            # its sync step 1 (an empty state vector), as a provider's, then no more
            w.write(Frame(Opcode.BINARY, P.encode_sync_step1(b"\x00")).serialize(mask=True))
            w.transport.pause_reading()  # and never again: the window closes

            async def cut() -> dict[str, float] | None:
                writer.insert(0, "x" * 4000)  # (the document stays busy)
                m = await scrape(srv.http_url)
                got = {c: val(m, METRIC, cause=c) - val(before, METRIC, cause=c) for c in CAUSES}
                return got if sum(got.values()) else None

            got = await eventually(cut, timeout=30, interval=0.1, what="the slow reader closed")
            w.close()
        assert got == {c: (c == "keepalive_timeout") * 1.0 for c in CAUSES}, got
        lines = [line for line in srv.log_text().splitlines() if "disconnect " in line]
    slow = [line for line in lines if "user=slow" in line]
    assert len(slow) == 1, lines
    assert "cause=keepalive_timeout code=1011 reason='keepalive ping timeout'" in slow[0], slow
    assert "(closed by the server after" in slow[0], slow
