"""The server's keepalive is a setting of `palimpsest serve` (--ws-ping-interval,
--ws-ping-timeout, PALIMPSEST_WS_PING_INTERVAL / _TIMEOUT; 20 s each by default): how
soon a dead connection is noticed is the operator's choice. A websocket client that
never answers pings is closed with 1011 "keepalive ping timeout" after the timeout; the
client here speaks the protocol by hand, so that nothing answers for it."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from pathlib import Path

import pytest
from serverproc import ServerProcess

PING, CLOSE = 0x9, 0x8


async def silent_client(port: int) -> tuple[list[int], int, str]:
    """Open a websocket on a document, read every frame and answer none (no pong): the
    opcodes seen until the server's close, and the close's code and reason."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write(
        f"GET /ws/quiet?user=ann HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    seen: list[int] = []
    try:
        while True:
            first, second = await r.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await r.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await r.readexactly(8))
            payload = await r.readexactly(size)
            seen.append(first & 0x0F)
            if first & 0x0F == CLOSE:
                (code,) = struct.unpack("!H", payload[:2])
                return seen, code, payload[2:].decode()
    finally:
        w.close()


@pytest.mark.parametrize("how", ["env", "flags"])
async def test_a_client_that_never_answers_pings_is_closed_after_the_timeout_set(
    tmp_path: Path, how: str
) -> None:
    if how == "env":
        settings = {
            "env": {"PALIMPSEST_WS_PING_INTERVAL": "0.2", "PALIMPSEST_WS_PING_TIMEOUT": "0.3"}
        }
    else:
        settings = {"extra_args": ["--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3"]}
    async with ServerProcess(tmp_path / "srv", **settings) as srv:  # type: ignore[arg-type]
        # (the defaults, 20 s and 20 s, would close it after 40 s: past this bound)
        async with asyncio.timeout(20):
            seen, code, reason = await silent_client(srv.port)
    assert PING in seen, seen
    assert (code, reason) == (1011, "keepalive ping timeout")
