"""Helpers for tests that go over the websocket rate limit (max_events_per_second)."""

from __future__ import annotations

import contextlib

import websockets
from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection

from palimpsest import protocol as P


async def flood(url: str, edits: int = 200) -> tuple[ClientConnection, str]:
    """Connect a raw websocket to `url` and send `edits` sync updates as fast as it takes
    them, each appending one character to the text "content" ("0123456789" over and
    over); the server closing it midway (the rate limit) ends the sending. The socket,
    and the text all of them write in order (what was accepted is a prefix of it)."""
    ws = await websockets.connect(url, compression=None)
    d: Doc = Doc()
    text = d.get("content", type=Text)
    frames = []
    for i in range(edits):
        sv = d.get_state()
        text.insert(len(text), str(i % 10))
        frames.append(P.encode_sync_update(d.get_update(sv)))
    with contextlib.suppress(websockets.ConnectionClosed):
        for f in frames:
            await ws.send(f)
    return ws, str(text)
