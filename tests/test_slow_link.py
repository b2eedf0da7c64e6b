"""A large document over a slow link: its first sync is one websocket message (the
whole document), which a client must receive before it gives up on the connection.

- `serve --ws-per-message-deflate` (PALIMPSEST_WS_PER_MESSAGE_DEFLATE) negotiates
  permessage-deflate with a real y-websocket client (Node's ws offers it), and a
  repetitive 1 MB document reaches it in a fraction of the bytes; off (the default), it
  is not negotiated and the bytes are the document's;
- the Python client's keepalive does not end its own connection while that message is
  still arriving (the server's pong is behind it on the same stream): a session on a
  link slower than its ping timeout opens, on its first connection;
- nor does the server's (server.keepalive), while the client takes the server's bytes
  or, having taken them, sends its own (a large step 2 on a slow uplink); a peer that
  does neither is still cut, and so is one that sends but never reads.

The bytes are counted by a small TCP proxy between the client and the server (and the
slow link is that proxy passing the server's bytes at a bounded rate)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually
from pycrdt import Doc, Text
from serverproc import ServerProcess
from test_interop_node import (
    node_modules,  # noqa: F401  (a fixture)
    node_scenario,
)
from test_ops import scrape, val

from palimpsest import client

#: the document: 1 MB of a repetitive text
TEXT = "all work and no play makes jack a dull boy\n" * 24_000


class Link:
    """A TCP proxy on a free loopback port to `target_port`, counting the bytes it
    passes from the server to the client (`down`); `rate`: bytes per second at most
    that way (none: as fast as they come), `up_rate` the other way."""

    def __init__(
        self, target_port: int, rate: float | None = None, up_rate: float | None = None
    ) -> None:
        self.target_port = target_port
        self.rate = rate
        self.up_rate = up_rate
        self.down = 0
        #: set while the server's bytes pass; cleared, they are held
        self.passing = asyncio.Event()
        self.passing.set()
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, down: bool) -> None:
        rate = self.rate if down else self.up_rate
        try:
            while data := await r.read(16384 if rate else 65536):
                if down:
                    self.down += len(data)
                    await self.passing.wait()
                w.write(data)
                await w.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sock = socket.socket()
        if self.rate:
            # a slow link holds little in flight: with loopback's buffers (megabytes)
            # the proxy's kernel took a whole document at once, and acknowledged the
            # server's bytes in bursts seconds apart, as it freed half of them
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
        sr, sw = await asyncio.open_connection(sock=sock)
        ups = asyncio.create_task(self._pipe(cr, sw, down=False))
        downs = asyncio.create_task(self._pipe(sr, cw, down=True))
        self._tasks |= {ups, downs}
        await asyncio.gather(ups, downs)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Link]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def fill(srv: ServerProcess, doc: str) -> None:
    async with client.connect(srv.http_url, doc, user="ann") as ann:
        ann.text().insert(0, TEXT)
        await ann.flush(timeout=30)


#: a y-websocket client through the link: what was negotiated, and the text's length
#: once synced
FIRST_SYNC = """
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
const { WS, DOC } = process.env
const ydoc = new Y.Doc()
const provider = new WebsocketProvider(WS, DOC, ydoc,
  { params: { user: 'bob' }, WebSocketPolyfill: WebSocket, disableBc: true })
await new Promise((resolve) => provider.once('synced', resolve))
console.log(JSON.stringify({ extensions: provider.ws.extensions,
                             length: ydoc.getText('content').length }))
provider.destroy()
process.exit(0)
"""


@pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "default"])
async def test_a_large_first_sync_travels_compressed_when_deflate_is_on(
    tmp_path: Path,
    node_modules: Path,  # noqa: F811
    deflate: bool,
) -> None:
    env = {"PALIMPSEST_WS_PER_MESSAGE_DEFLATE": "1"} if deflate else {}
    async with ServerProcess(tmp_path / "srv", env=env) as srv:
        await fill(srv, "big")
        async with Link(srv.port).running() as link:
            out = await node_scenario(
                FIRST_SYNC, f"ws://127.0.0.1:{link.port}/ws", srv.http_url, "big"
            )
    got = json.loads(out.decode().strip().splitlines()[-1])
    assert got["length"] == len(TEXT)
    if deflate:
        assert got["extensions"] == "permessage-deflate"
        assert link.down < len(TEXT) // 20, link.down  # (repetitive: far below the text)
    else:
        assert got["extensions"] == ""
        assert link.down > len(TEXT), link.down


async def test_the_flag_turns_deflate_on(
    tmp_path: Path,
    node_modules: Path,  # noqa: F811
) -> None:
    async with ServerProcess(tmp_path / "srv", extra_args=["--ws-per-message-deflate"]) as srv:
        await fill(srv, "big")
        async with Link(srv.port).running() as link:
            out = await node_scenario(
                FIRST_SYNC, f"ws://127.0.0.1:{link.port}/ws", srv.http_url, "big"
            )
    got = json.loads(out.decode().strip().splitlines()[-1])
    assert (got["extensions"], got["length"]) == ("permessage-deflate", len(TEXT))


async def test_the_python_client_keeps_a_connection_whose_first_sync_is_still_arriving(
    tmp_path: Path,
) -> None:
    """1 MB at 200 kB/s: some 5 s of one message, against a ping every 0.5 s and a
    timeout of 1 s. The pong comes only after the message; the bytes arriving before it
    say the connection is alive."""
    async with ServerProcess(tmp_path / "srv") as srv:
        await fill(srv, "big")
        async with Link(srv.port, rate=200_000).running() as link:
            session = client.connect(
                f"http://127.0.0.1:{link.port}", "big", user="bob", connect_timeout=120,
                reconnect=False, ping_interval=0.5, ping_timeout=1.0,
            )  # fmt: skip
            async with session as bob:
                assert bob.text() == TEXT
                assert bob.connections == 1
            assert link.down > len(TEXT)


async def test_the_python_client_still_gives_up_a_silent_connection(tmp_path: Path) -> None:
    """A link that stops passing anything: no pong, no byte; the keepalive ends the
    connection ping_timeout after the last byte."""
    async with ServerProcess(tmp_path / "srv") as srv:
        link = Link(srv.port)
        async with link.running():
            session = client.connect(
                f"http://127.0.0.1:{link.port}", "small", user="bob",
                ping_interval=0.2, ping_timeout=0.5,
            )  # fmt: skip
            async with session as bob:
                assert bob.connected
                link.passing.clear()  # nothing from the server arrives, its pongs neither
                await bob.wait_for(lambda: not bob.connected, timeout=30)
                link.passing.set()


#: the server's keepalive, far shorter than the first sync takes on the slow link
FAST_PINGS = {"PALIMPSEST_WS_PING_INTERVAL": "0.3", "PALIMPSEST_WS_PING_TIMEOUT": "1.0"}


async def connections(srv: ServerProcess) -> float:
    return val(await scrape(srv.http_url), "palimpsest_connections")


async def test_the_server_keeps_a_connection_whose_first_sync_is_still_arriving(
    tmp_path: Path,
) -> None:
    """1 MB at 200 kB/s: some 5 s of one message, against the server's ping every 0.3 s
    and its timeout of 1 s. The client's pong comes only after the message, which is
    behind the ping on the same stream: the server closed the connection with 1011
    "keepalive ping timeout" while it was still arriving, and again on every reconnect.
    The server's bytes being taken by the peer say the connection is alive."""
    async with ServerProcess(tmp_path / "srv", env=FAST_PINGS) as srv:
        await fill(srv, "big")
        async with Link(srv.port, rate=200_000).running() as link:
            session = client.connect(
                f"http://127.0.0.1:{link.port}", "big", user="bob", connect_timeout=120,
                reconnect=False, ping_interval=None,
            )  # fmt: skip
            async with session as bob:
                assert bob.text() == TEXT
                assert bob.connections == 1
                # (pings, answered, go on: the connection stays)
                await asyncio.sleep(1.0)
                assert bob.connected
                await bob.flush()
            assert link.down > len(TEXT)


async def test_the_server_keeps_a_connection_whose_step_2_is_still_arriving(
    tmp_path: Path,
) -> None:
    """The other way: 1 MB typed offline, the client's sync step 2, sent at 200 kB/s.
    Its pong waits behind it; the bytes arriving say the connection is alive."""
    async with ServerProcess(tmp_path / "srv", env=FAST_PINGS) as srv:
        async with Link(srv.port, up_rate=200_000).running() as link:
            offline: Doc[Any] = Doc()
            offline.get("content", type=Text).insert(0, TEXT)
            session = client.connect(
                f"http://127.0.0.1:{link.port}", "up", user="bob", ydoc=offline,
                connect_timeout=120, reconnect=False, ping_interval=None,
            )  # fmt: skip
            async with session as bob:
                await bob.flush(timeout=120)
                assert bob.connections == 1 and bob.connected
        async with client.connect(srv.http_url, "up", user="ann") as ann:
            assert ann.text() == TEXT


async def test_the_server_still_cuts_a_peer_that_takes_nothing(tmp_path: Path) -> None:
    """The same first sync, and the link stops passing anything in the middle of it
    (the peer takes none of the server's bytes any more, sends none): the keepalive
    ends the connection within its timeout of the last progress, and frees its place."""
    async with ServerProcess(tmp_path / "srv", env=FAST_PINGS) as srv:
        await fill(srv, "big")
        link = Link(srv.port, rate=200_000)
        async with link.running():
            session = client.connect(
                f"http://127.0.0.1:{link.port}", "big", user="bob", connect_timeout=120,
                reconnect=False, ping_interval=None,
            )  # fmt: skip
            opening = asyncio.create_task(session.open())
            try:
                await eventually(lambda: link.down > 200_000, what="a part of the sync")
                assert await connections(srv) == 1
                link.passing.clear()  # nothing from the server arrives any more

                async def cut() -> bool:
                    return await connections(srv) == 0

                await eventually(cut, timeout=60, what="bob's connection cut")
                m = await scrape(srv.http_url)
                assert val(m, "palimpsest_disconnects_total", cause="keepalive_timeout") == 1
                assert val(m, "palimpsest_disconnects_total", cause="slow_client") == 0
                link.passing.set()
            finally:
                opening.cancel()
                with contextlib.suppress(BaseException):
                    await opening
                await session.close()


async def test_the_server_cuts_a_peer_that_sends_but_never_reads(tmp_path: Path) -> None:
    """A raw socket, its receive buffer made small, that never reads and sends a sync
    step 1 every 0.2 s (a field test: 20 such sockets on a 4.3 MB document stayed open
    until they left, RSS 135 -> 397 MB). Its bytes arriving counted as progress, so the
    keepalive gave it its timeout again and again, though it took none of the server's
    (the answer queued once stays: its send queue never overflows). What the peer sends
    keeps it only while it also takes what was sent before the ping: this one is cut
    within the keepalive's timeout, whatever it sends."""
    async with ServerProcess(tmp_path / "srv", env=FAST_PINGS) as srv:
        await fill(srv, "big")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", srv.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            f"GET /ws/big?user=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13"
            "\r\n\r\n".encode(),
        )  # fmt: skip

        def step1() -> bytes:  # a masked binary frame: sync step 1, an empty state vector
            mask = os.urandom(4)
            payload = b"\x00\x00\x01\x00"
            return (
                bytes([0x82, 0x80 | len(payload)])
                + mask
                + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            )

        async def keep_sending() -> None:
            with contextlib.suppress(OSError):
                while True:
                    await loop.sock_sendall(sock, step1())
                    await asyncio.sleep(0.2)

        sending = asyncio.create_task(keep_sending())
        try:
            await eventually(
                lambda: _is(connections(srv), 1), timeout=10, what="the socket connected"
            )

            async def cut() -> bool:
                return await connections(srv) == 0

            await eventually(cut, timeout=20, what="the non-reading socket cut")
            assert not sending.done(), "it was sending all along"
            m = await scrape(srv.http_url)
            assert val(m, "palimpsest_disconnects_total", cause="keepalive_timeout") == 1
        finally:
            sending.cancel()
            with contextlib.suppress(BaseException):
                await sending
            sock.close()


async def _is(value: Awaitable[float], want: float) -> bool:
    return await value == want


def test_keepalive_options_are_checked() -> None:
    with pytest.raises(ValueError, match="ping_timeout"):
        client.connect("http://127.0.0.1:1", "d", ping_timeout=0)
    with pytest.raises(ValueError, match="ping_interval"):
        client.connect("http://127.0.0.1:1", "d", ping_interval=-1)
