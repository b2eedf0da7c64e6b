"""Writing a websocket message straight to the socket, from the code that makes it; and
reading one straight from the socket into the code that handles it.

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

:func:`direct_reader` is the other direction. The ASGI way to read is ``await
websocket.receive()`` in a task: uvicorn parses the frame in its ``data_received``, puts
the message on a queue, pauses reading the socket, and wakes the task, which resumes
reading once the queue is empty: a task wake-up and two changes of the socket's poll
registration per message. From the frame's bytes to its handler took 174 µs (p50) after
a pause in typing, 123 µs without them (bench/latency_timeline.py). A direct reader is
called with each binary message from ``data_received`` itself, in order; text messages,
the close, and anything that arrives while messages it did not take are still queued go
the ASGI way, so nothing overtakes. It also parses the commonest frame itself, without
websockets' parser (:func:`_parse_binary_frames`): 66-69 µs from the bytes to the
handler after a pause, against 125-140 µs on the same machine.

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
    from websockets.frames import apply_mask  # type: ignore[attr-defined]
    from websockets.protocol import State
    from websockets.streams import StreamReader
except ImportError:  # pragma: no cover
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]
    State = None  # type: ignore[assignment,misc]
    StreamReader = None  # type: ignore[assignment,misc]

Writer = Callable[[bytes], bool]


class Stats:
    #: binary frames parsed by ``direct_reader``'s own path, not websockets' (all
    #: connections of the process; tests compare it before and after)
    parsed_here = 0


stats = Stats()

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


Reader = Callable[[bytes], None]


def direct_reader(ws: Any, on_message: Reader) -> bool:
    """From now on, hand each binary message of `ws` to `on_message` as it is parsed, on
    the event loop's thread, instead of queueing it for ``ws.receive()``. False (nothing
    changed) unless the server is uvicorn's sansio protocol. `on_message` must not raise:
    what it cannot handle it records, and wakes the reading task (``wake_reader``).
    Once the connection has closed, :func:`detach_reader` takes this away again."""
    proto = protocol_of(ws)
    if WebSocketsSansIOProtocol is None or not isinstance(proto, WebSocketsSansIOProtocol):
        return False
    if type(proto).send_receive_event_to_app is not _ASGI_DELIVER:  # pragma: no cover
        return False  # another uvicorn than the one this was written against
    queue = proto.queue

    def deliver() -> None:
        # uvicorn's own method, minus the queue, when nothing is queued ahead of it
        if proto.curr_msg_data_type != "bytes" or not queue.empty() or proto.close_sent:
            _ASGI_DELIVER(proto)
            return
        frames = proto.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        proto.frames = []
        on_message(data)

    proto.send_receive_event_to_app = deliver  # type: ignore[method-assign]
    _parse_binary_frames(proto, on_message)
    return True


def _parse_binary_frames(proto: Any, on_message: Reader) -> None:
    """Parse the common frame here, not in websockets' parser: a whole, final, masked
    binary frame (0x82) within the size limit, on a connection that is open, has no
    extension and is not inside a fragmented message. Its payload is unmasked
    (websockets' C ``apply_mask``) and delivered like any message
    (``send_receive_event_to_app``), or handed to `on_message` right here when nothing is
    queued ahead of it (what ``direct_reader``'s ``deliver`` would do, two calls fewer
    per message).

    websockets' sans-I/O parser is a chain of generators: a frame's header, length, mask
    and payload are four resumptions of them, then an event object, a list and uvicorn's
    dispatch on the opcode, about 5 µs per message (of a keystroke's ~75 µs in the
    server: README, Benchmarks). Every other frame goes to websockets, one whole frame at a
    time, in order: a ping (answered as before), the close, a text frame, fragments, an
    unmasked or too big frame (refused as before). A binary frame cut short by the end
    of the read (a backlog is read 64 kB at a time, wherever that cuts) is kept here
    until the rest arrives and parsed then; any other frame cut short goes to websockets
    with everything after it, and while websockets' parser is inside a frame, all that
    arrives goes to it. So websockets' parser is only ever fed from a frame boundary,
    and makes every check and state change it made before. (Before the binary frames
    were kept, a cut one handed websockets the rest of the stream: the next read was
    likely cut too, and under a sustained backlog most frames went through it.)"""
    conn = proto.conn
    if conn.extensions or _AT_EOF is None:
        return  # pragma: no cover  (deflate, or no websockets: its own parser reads)
    websockets_received = proto.data_received
    queue = proto.queue
    open_ = State.OPEN
    from_bytes = int.from_bytes
    # the smaller of websockets' two limits (a message's, a fragment's): a frame over it
    # goes to websockets, which closes with 1009 as before
    limits = [x for x in (conn.max_message_size, conn.max_fragment_size) if x is not None]
    limit = min(limits) if limits else None

    #: the start of a binary frame cut short by the end of a read, as read (websockets'
    #: parser has not seen it: it is between frames); joined once the frame is whole,
    #: so a big frame read 64 kB at a time is copied once, not once per read
    held: list[bytes] = []
    held_size = 0
    #: how many bytes the held frame needs in all (0: its header is not whole yet)
    held_need = 0
    #: the bound on what all connections hold of large frames (handshake.py), if any
    bound_held: Callable[[int], bool] | None = getattr(proto, "bound_held", None)

    def data_received(data: bytes) -> None:
        nonlocal held, held_size, held_need
        if held:
            held.append(data)
            held_size += len(data)
            if held_size < held_need:
                # the frame is still not whole
                if bound_held is not None and not bound_held(held_size):
                    held, held_size, held_need = [], 0, 0
                return
            data = b"".join(held)
            held, held_size, held_need = [], 0, 0
        elif not _between_frames(conn):
            # websockets' parser holds part of a frame (or is past the close): its own
            websockets_received(data)
            return
        n = len(data)
        i = 0
        cut = False  # the frame at i is a binary one the read cut short
        end = 0
        while n - i >= 6:  # a masked frame's smallest: 2 bytes of header, 4 of mask
            size = data[i + 1] ^ 0x80  # the mask bit, which a client's frame must set
            at = i + 2
            if size == 126:
                size = from_bytes(data[at : at + 2], "big")
                at += 2
            elif size == 127:
                size = from_bytes(data[at : at + 8], "big")
                at += 8
            elif size > 127:
                break  # unmasked: websockets refuses it
            end = at + 4 + size
            if limit is not None and size > limit:
                break  # too big: websockets refuses it
            if end > n:  # cut short by the read (a short header's size is short too)
                cut = True
                break
            if data[i] != 0x82 or conn.state is not open_ or conn.current_size is not None:
                # anything else (a ping, the close, a fragment...): websockets judges
                # that one frame, whole; then this path goes on if its parser is still
                # between frames (not after the close, nor after an error)
                websockets_received(data[i:end])
                i = end
                if not _between_frames(conn):
                    break
                continue
            payload = apply_mask(data[at + 4 : end], data[at : at + 4])
            i = end
            stats.parsed_here += 1
            if queue.empty() and not proto.close_sent:
                on_message(payload)
            else:  # behind what the reading task has not taken yet: queued, in order
                proto.curr_msg_data_type = "bytes"
                proto.frames = [payload]
                proto.send_receive_event_to_app()
        if i < n:
            if (
                (cut or (n - i < 6 and (n - i < 2 or data[i + 1] & 0x80)))
                and data[i] == 0x82
                and conn.state is open_
                and conn.current_size is None
            ):
                held = [data[i:] if i else data]  # parsed here when the rest comes
                held_size = n - i
                held_need = end - i if cut else 0
                if bound_held is not None and not bound_held(held_size):
                    held, held_size, held_need = [], 0, 0
            else:
                websockets_received(data[i:] if i else data)
        elif bound_held is not None and proto.taken:
            bound_held(0)  # a large frame ended: its share of the budget goes back

    proto.data_received = data_received
    # uvloop's transport keeps the bound data_received it was given: hand it the new one
    if proto.transport is not None:
        proto.transport.set_protocol(proto)


def detach_reader(ws: Any) -> None:
    """Take :func:`direct_reader`'s functions off `ws`'s protocol object, whose own
    methods then serve again. Each of them refers to the protocol object, which refers to
    them: a cycle that only a full collection of the cyclic collector frees, rare on a
    quiet server (serve.py's _tune_gc), and it held the connection, its buffers and the
    last frames read (a refused 16 MiB frame, many times over, GBs within seconds)."""
    proto = protocol_of(ws)
    d = getattr(proto, "__dict__", None)
    if d is None or ("data_received" not in d and "send_receive_event_to_app" not in d):
        return
    d.pop("send_receive_event_to_app", None)
    if d.pop("data_received", None) is not None and proto.transport is not None:
        proto.transport.set_protocol(proto)  # (uvloop keeps the bound method it was given)


_AT_EOF = StreamReader.at_eof.__code__ if StreamReader is not None else None


def _between_frames(conn: Any) -> bool:
    """Whether websockets' parser waits for the first byte of a frame: its innermost
    generator (ServerProtocol.parse delegates to Protocol.parse) is in ``at_eof()``, the
    wait at the top of its loop, with nothing buffered."""
    gen = conn.parser
    while (sub := getattr(gen, "gi_yieldfrom", None)) is not None:
        gen = sub
    return getattr(gen, "gi_code", None) is _AT_EOF and not conn.reader.buffer


def wake_reader(ws: Any) -> None:
    """Wake the task awaiting ``ws.receive()`` with an empty binary message: a direct
    reader that refused a message makes the reading task look at why."""
    proto = protocol_of(ws)
    queue = getattr(proto, "queue", None)
    if queue is not None:
        queue.put_nowait({"type": "websocket.receive", "bytes": b""})


_ASGI_DELIVER: Any = getattr(WebSocketsSansIOProtocol, "send_receive_event_to_app", None)

__all__ = [
    "Reader",
    "Writer",
    "detach_reader",
    "direct_reader",
    "direct_writer",
    "frame_binary",
    "protocol_of",
    "stats",
    "wake_reader",
]
