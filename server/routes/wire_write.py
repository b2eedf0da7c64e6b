"""Writing a websocket message straight to the socket, from the code that makes it.

The ASGI way to send is ``await websocket.send_bytes(frame)``, from a task: every
connection then needs its own sender task, and each broadcast costs one task wake-up per
connection before the first byte leaves. When the server is uvicorn with its
``websockets-sansio`` protocol (what ``palimpsest serve`` runs), a message can instead be
framed and handed to the transport synchronously, exactly as uvicorn's own ``send`` does
when the socket is writable (its ``send`` only ever waits for ``writable``).

:func:`direct_writer` returns such a writer for a starlette ``WebSocket``, or None for any
other server or protocol: callers then keep their sender task. The writer refuses (returns
False) whenever uvicorn's ``send`` would have to wait or would fail: the transport's buffer
is over its high-water mark, the socket is closing, a close frame was sent. The caller
queues the message then, and its sender task writes it later, in order.

A broadcast hands the same ``bytes`` object to every connection: the frame header is
built once for it (a one-entry cache keyed by the object itself), so fanning one update
out to 50 connections is 50 ``transport.write`` calls and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

try:  # uvicorn is the server `palimpsest serve` runs, but the app mounts anywhere
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]
    State = None  # type: ignore[assignment,misc]

Writer = Callable[[bytes], bool]

_last: list[Any] = [None, b""]  # [payload object, its framed bytes]


def frame_binary(payload: bytes) -> bytes:
    """An unmasked, final, binary websocket frame (a server's, no extensions)."""
    if _last[0] is payload:
        return _last[1]  # type: ignore[no-any-return]
    n = len(payload)
    if n < 126:
        head = bytes((0x82, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    framed = head + payload
    _last[0], _last[1] = payload, framed
    return framed


def protocol_of(ws: Any) -> Any:
    """uvicorn's protocol object behind a starlette WebSocket (the owner of the ASGI
    receive callable; starlette wraps send, not receive), or None."""
    return getattr(getattr(ws, "_receive", None), "__self__", None)


def direct_writer(ws: Any) -> Writer | None:
    proto = protocol_of(ws)
    if WebSocketsSansIOProtocol is None or not isinstance(proto, WebSocketsSansIOProtocol):
        return None
    conn = proto.conn
    writable = proto.writable
    open_ = State.OPEN

    def write(frame: bytes) -> bool:
        transport = proto.transport
        if (
            proto.close_sent
            or proto.disconnected
            or not writable.is_set()
            or conn.state is not open_
            or transport is None
            or transport.is_closing()
        ):
            return False
        if conn.extensions:  # never with `palimpsest serve` (deflate is off)
            conn.send_binary(frame)
            transport.write(b"".join(conn.data_to_send()))
        else:
            transport.write(frame_binary(frame))
        return True

    return write


__all__ = ["Writer", "direct_writer", "frame_binary", "protocol_of"]
