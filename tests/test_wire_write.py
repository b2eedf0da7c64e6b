"""Frames written straight to the socket (server/routes/wire_write.py): valid websocket
frames, used under uvicorn's sansio protocol, and in order with the frames a backlog
sent through the sender task."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import websockets
from conftest import eventually, run_server
from pycrdt import Doc, Text
from serverproc import ServerProcess
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from yclient import connect

from palimpsest import protocol as P
from palimpsest.handshake import ReceiveQueue
from palimpsest.room import Room
from palimpsest.routes.wire_write import _between_frames, frame_binary, protocol_of, stats
from palimpsest.routes.ws import Connection
from palimpsest.settings import Settings


def connection_of(room: Room, actor: str) -> Connection:
    """The server side of `actor`'s connection to `room`."""
    conn = next(p for p in room.peers.values() if p.actor == actor)
    assert isinstance(conn, Connection)
    return conn


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    gen = Frame.parse(reader.read_exact, mask=False)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        frame: Frame = done.value
    return frame


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_frame_binary_is_a_final_unmasked_binary_frame(n: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    framed = frame_binary(payload)
    frame = parse(framed)
    assert frame.opcode is Opcode.BINARY and frame.fin
    assert frame.data == payload
    # what websockets itself would send for it
    assert framed == frame.serialize(mask=False)
    # the same object again: the cached bytes, still right
    assert frame_binary(payload) is framed
    assert parse(frame_binary(bytes(payload))).data == payload


async def test_frames_keep_their_order_across_a_backlog(settings: Settings) -> None:
    """While the transport says it is over its high-water mark (pause_writing), frames
    queue for the sender task; once it resumes, frames written directly must not overtake
    them: every update reaches the reader in commit order."""
    settings.max_events_per_second = 0
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "order", "writer") as writer,
        connect(server.ws_url, "order", "reader") as reader,
    ):
        room = server.backend.rooms.get_loaded("order")
        assert room is not None
        conn = connection_of(room, "reader")
        assert conn._direct is not None, "uvicorn's sansio protocol: frames go out directly"
        proto = protocol_of(conn.ws)
        base = len(reader.frames)
        writer_state_before = reader.doc.get_update()
        seq0 = room.seq
        proto.pause_writing()  # what asyncio does over the transport's high-water mark
        for i in range(5):
            writer.insert(len(writer.content), str(i))
            # one commit (and one frame) per edit
            await eventually(lambda n=seq0 + i + 1: room.seq >= n, what=f"edit {i} committed")  # type: ignore[misc]
        assert conn.queued_frames == 5, "a backlog for the reader"
        assert len(reader.frames) == base, "nothing reached the reader while paused"
        proto.resume_writing()
        for i in range(5, 10):
            writer.insert(len(writer.content), str(i))
        await eventually(lambda: reader.content == "0123456789", what="the reader has it all")
        # applied one by one in arrival order, each frame extends the writer's clock (an
        # update that overtook an earlier one would wait as pending instead)
        replica: Doc = Doc()
        replica.apply_update(writer_state_before)
        clocks = []
        for f in reader.frames[base:]:
            if isinstance(f, P.SyncUpdate):
                replica.apply_update(f.update)
                clocks.append(P.decode_state_vector(replica.get_state())[writer.doc.client_id])
        # (the last edits may share a commit, and so a frame)
        assert clocks[:5] == [1, 2, 3, 4, 5] and clocks[-1] == 10, clocks
        assert all(a < b for a, b in zip(clocks, clocks[1:], strict=False)), clocks
        assert conn.queued_frames == 0


def client_frame(opcode: Opcode, payload: bytes) -> bytes:
    """A client's frame as it comes off the socket (masked, final)."""
    return Frame(opcode, payload).serialize(mask=True)


async def test_messages_are_handled_as_they_are_parsed(settings: Settings) -> None:
    """Under uvicorn's sansio protocol a binary message goes from the parser to the
    connection's handler with no task in between (wire_write.direct_reader): every edit
    of a burst is handled that way, in the order sent, and logged in that order."""
    settings.max_events_per_second = 0
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "direct", "writer") as writer,
        connect(server.ws_url, "direct", "reader") as reader,
    ):
        room = server.backend.rooms.get_loaded("direct")
        assert room is not None
        conn = connection_of(room, "writer")
        before = conn.direct_messages
        for i in range(50):
            writer.insert(len(writer.content), f"{i},")
        want = "".join(f"{i}," for i in range(50))
        await eventually(lambda: reader.content == want, what="the reader has the burst")
        assert conn.direct_messages - before >= 50
        logged = await server.backend.store.read("direct", after=0)
        replica: Doc = Doc()
        clocks = []
        for ev in logged:
            replica.apply_update(ev.update)
            clocks.append(P.decode_state_vector(replica.get_state()).get(writer.doc.client_id, 0))
        assert clocks == sorted(clocks) and clocks[-1] == len(want), clocks


async def test_a_message_queued_before_is_not_overtaken(settings: Settings) -> None:
    """A message that uvicorn queued for ws.receive() (it arrived before the direct reader
    was installed, or the reading task has not taken it yet) goes first: the next one
    parsed waits behind it in the same queue instead of being handled at once."""
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "queued", "writer") as writer,
    ):
        room = server.backend.rooms.get_loaded("queued")
        assert room is not None
        conn = connection_of(room, "writer")
        proto = protocol_of(conn.ws)
        source: Doc = Doc()
        updates = []
        text = source.get("text", type=Text)
        for s in ("first ", "second"):
            before = source.get_state()
            text += s
            updates.append(source.get_update(before))
        seq0 = room.seq
        # as uvicorn queues a message: the reading task takes it on its next turn...
        first = P.encode_sync_update(updates[0])
        proto.queue.put_nowait({"type": "websocket.receive", "bytes": first})
        # ...and before that turn, the next message comes off the socket
        direct = conn.direct_messages
        proto.data_received(client_frame(Opcode.BINARY, P.encode_sync_update(updates[1])))
        assert conn.direct_messages == direct, "it waited behind the queued one"
        await eventually(lambda: room.seq >= seq0 + 2, what="both logged")
        logged = await server.backend.store.read("queued", after=seq0)
        assert [ev.update for ev in logged] == updates
        assert str(room.doc.get("text", type=Text)) == "first second"
        # the queue drained: the next message is handled directly again
        writer.insert(0, "x")
        await eventually(lambda: conn.direct_messages == direct + 1, what="direct again")


async def test_a_refused_direct_message_closes_only_its_connection(settings: Settings) -> None:
    """A malformed message handled by the direct reader closes its connection with the
    code the reading task would have used, and the server goes on serving the others."""
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "refused", "bad") as bad,
        connect(server.ws_url, "refused", "good") as good,
        connect(server.ws_url, "refused", "watcher") as watcher,
    ):
        room = server.backend.rooms.get_loaded("refused")
        assert room is not None
        conn = connection_of(room, "bad")
        direct = conn.direct_messages
        await bad.send_raw(b"\x00\x07\x00")  # unknown sync message type
        await eventually(lambda: bad.close_code is not None, what="the bad client closed")
        assert bad.close_code == 4400
        assert conn.direct_messages == direct + 1
        good.insert(0, "still here")
        await eventually(lambda: watcher.content == "still here", what="the others go on")


class RawClient:
    """A websocket client at the byte level: it writes frames exactly as given (several
    in one write, or one cut in pieces) and reads the server's frames as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames: list[Frame] = []
        self._stream = StreamReader()
        self._parser = self._parse()
        next(self._parser)

    def _parse(self) -> Generator[None, None, None]:
        while True:
            frame = yield from Frame.parse(self._stream.read_exact, mask=False)
            self.frames.append(frame)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until(self, want: Callable[[Frame], bool]) -> Frame:
        """The first frame (read so far or next) that `want` accepts."""
        seen = 0
        while True:
            for f in self.frames[seen:]:
                if want(f):
                    return f
            seen = len(self.frames)
            chunk = await asyncio.wait_for(self.reader.read(65536), 5)
            assert chunk, "the server closed the connection"
            self._stream.feed_data(chunk)
            next(self._parser)


@asynccontextmanager
async def raw_client(port: int, path: str) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()


def keystrokes(n: int, *, paste_at: int = -1) -> tuple[list[bytes], str]:
    """n updates of one writer, each typing `i,` at the end (the one at `paste_at`
    pastes 300 characters: a frame whose length takes 2 more bytes of header); and the
    text they make."""
    doc: Doc = Doc(client_id=4242)
    text = doc.get("content", type=Text)
    updates: list[bytes] = []
    for i in range(n):
        before = doc.get_state()
        text += "p" * 300 if i == paste_at else f"{i},"
        updates.append(doc.get_update(before))
    return updates, str(text)


async def test_frames_of_one_read_are_parsed_in_order_around_a_ping(settings: Settings) -> None:
    """Binary frames that arrive together are parsed by the direct reader's own path
    (wire_write._parse_binary_frames), in order; a ping among them goes to websockets,
    which answers it, and the frames after it are still parsed here."""
    settings.max_events_per_second = 0
    updates, want = keystrokes(40)
    burst = b"".join(
        client_frame(Opcode.BINARY, P.encode_sync_update(u))
        + (client_frame(Opcode.PING, b"are you there") if i == 9 else b"")
        for i, u in enumerate(updates)
    )
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "one-read", "reader") as reader,
        raw_client(server.port, "/ws/one-read?user=writer") as writer,
    ):
        before = stats.parsed_here
        await writer.send(burst)  # one write: one read on loopback
        pong = await writer.read_until(lambda f: f.opcode is Opcode.PONG)
        assert pong.data == b"are you there"
        await eventually(lambda: reader.content == want, what="the reader has every keystroke")
        # the binary frames of the burst, those after the ping too (10 come before it);
        # not == 40: should loopback cut the burst inside a frame, websockets' parser
        # reads from there to the end of that read
        assert stats.parsed_here - before >= 30
        logged = await server.backend.store.read("one-read", after=0)
        assert [ev.update for ev in logged] == updates


async def test_a_frame_cut_across_reads_is_read_whole(settings: Settings) -> None:
    """A binary frame cut anywhere (inside its header, its mask, its payload) is kept by
    the direct reader until the rest arrives, and parsed there then: websockets' parser
    never sees part of it, so the frames after it are parsed here too."""
    settings.max_events_per_second = 0
    updates, want = keystrokes(30, paste_at=1)
    frames = [client_frame(Opcode.BINARY, P.encode_sync_update(u)) for u in updates]
    assert frames[1][1] & 0x7F == 126  # the paste's length is in 2 more bytes
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "cut", "reader") as reader,
        raw_client(server.port, "/ws/cut?user=writer") as writer,
    ):
        first = b"".join(frames[:20])
        # inside a header, a mask, a payload, the paste's 2 bytes of length, the last frame
        start = len(frames[0])
        parsed = stats.parsed_here
        cuts = [1, 3, 7, 12, start + 3, start + 9, len(first) - 2]
        at = 0
        for cut in cuts:
            await writer.send(first[at:cut])
            await asyncio.sleep(0.02)  # its own read
            at = cut
        await writer.send(first[at:])
        await eventually(
            lambda: reader.content == keystrokes(20, paste_at=1)[1], what="the cut frames"
        )
        assert stats.parsed_here - parsed == 20  # every one, cut or not, parsed here
        before = stats.parsed_here
        await writer.send(b"".join(frames[20:]))
        await eventually(lambda: reader.content == want, what="the whole frames after")
        assert stats.parsed_here - before >= 5  # of 10 (see the test above)
        logged = await server.backend.store.read("cut", after=0)
        assert [ev.update for ev in logged] == updates


async def test_a_big_frame_read_in_many_pieces_is_parsed_here_once_whole(
    settings: Settings,
) -> None:
    """A paste of 200 kB (a frame with 8 bytes of length) sent in 50 pieces, each its
    own read: the direct reader keeps the pieces until the frame is whole and parses it
    then, once; the frames after it are parsed here too."""
    settings.max_events_per_second = 0
    settings.max_bytes_per_second = 0
    doc: Doc = Doc(client_id=4343)
    text = doc.get("content", type=Text)
    updates = []
    for piece in ("x" * 200_000, "after"):
        before = doc.get_state()
        text += piece
        updates.append(doc.get_update(before))
    big, small = (client_frame(Opcode.BINARY, P.encode_sync_update(u)) for u in updates)
    assert big[1] & 0x7F == 127  # its length is in 8 more bytes
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "big", "reader") as reader,
        raw_client(server.port, "/ws/big?user=writer") as writer,
    ):
        before = stats.parsed_here
        step = len(big) // 50 + 1
        for at in range(0, len(big), step):
            await writer.send(big[at : at + step])
            await asyncio.sleep(0.005)  # its own read
        await writer.send(small)
        await eventually(lambda: reader.content == str(text), what="the paste and after")
        assert stats.parsed_here - before == 2
        logged = await server.backend.store.read("big", after=0)
        assert [ev.update for ev in logged] == updates


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # unmasked: a client must mask (RFC 6455 5.1)
        (Frame(Opcode.BINARY, P.encode_sync_update(b"\x00\x00")).serialize(mask=False), 1002),
        # a continuation with no message begun
        (client_frame(Opcode.CONT, b"\x00"), 1002),
        # over websockets' size limit (ws_max_size): refused before it is read whole
        (b"\x82\xff" + (1 << 40).to_bytes(8, "big") + b"mask", 1009),
    ],
)
async def test_frames_this_path_does_not_take_are_refused_as_before(
    settings: Settings, frame: bytes, code: int
) -> None:
    """What is not a whole, masked binary frame within the limit is websockets' to judge:
    it closes with the code it always used. The frames before it in the same read are
    handled first (websockets' own path dropped them: uvicorn handles a read's frames only
    when the parser found no error in it)."""
    settings.max_events_per_second = 0
    updates, want = keystrokes(5)
    good = b"".join(client_frame(Opcode.BINARY, P.encode_sync_update(u)) for u in updates)
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "refused-frames", "reader") as reader,
        raw_client(server.port, "/ws/refused-frames?user=writer") as writer,
    ):
        await writer.send(good + frame)
        close = await writer.read_until(lambda f: f.opcode is Opcode.CLOSE)
        assert int.from_bytes(close.data[:2], "big") == code
        await eventually(lambda: reader.content == want, what="the frames before it")


def test_the_parser_is_between_frames_only_at_a_frame_boundary() -> None:
    """What decides whether bytes may be parsed here (wire_write._between_frames), on
    websockets' own server protocol: after the handshake, between frames; not while a
    frame is half read (whatever part of it: header, length, mask, payload); again once
    it is whole."""
    server = ServerProtocol()
    key = base64.b64encode(os.urandom(16)).decode()
    server.receive_data(
        (
            "GET /ws/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    (request,) = server.events_received()
    server.send_response(server.accept(request))
    assert _between_frames(server)
    frame = client_frame(Opcode.BINARY, b"x" * 300)  # 2 + 2 (length) + 4 (mask) + 300
    for cut in (1, 3, 6, 100):
        server.receive_data(frame[:cut])
        assert not _between_frames(server), cut
        server.receive_data(frame[cut:])
        assert _between_frames(server), cut
        (got,) = server.events_received()
        assert got.data == b"x" * 300


def test_the_parser_takes_frames_under_uvloop(settings: Settings) -> None:
    """`palimpsest serve` runs on uvloop, whose transport calls the data_received it was
    given when the connection was made, not the protocol's attribute: the direct reader
    hands the transport the protocol again (set_protocol), so its frames are parsed here
    there too."""
    uvloop = pytest.importorskip("uvloop")
    settings.max_events_per_second = 0
    updates, want = keystrokes(20)
    burst = b"".join(client_frame(Opcode.BINARY, P.encode_sync_update(u)) for u in updates)

    async def main() -> int:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with (
            run_server(settings) as server,
            connect(server.ws_url, "uvloop", "reader") as reader,
            raw_client(server.port, "/ws/uvloop?user=writer") as writer,
        ):
            before = stats.parsed_here
            await writer.send(burst)
            await eventually(lambda: reader.content == want, what="the reader has them all")
            return stats.parsed_here - before

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        parsed = runner.run(main())
    assert parsed >= 15  # of 20 (see test_frames_of_one_read_are_parsed_in_order_around_a_ping)


def server_tasks() -> list[asyncio.Task[object]]:
    """The tasks of this process but the test clients' (yclient, websockets' keepalive)."""
    ours = ("yclient.py", "websockets/asyncio/")
    return [
        t
        for t in asyncio.all_tasks()
        if not any(p in getattr(t.get_coro(), "cr_code", None).co_filename for p in ours)  # type: ignore[union-attr]
    ]


async def test_an_idle_connection_holds_one_task_and_no_handshake(settings: Settings) -> None:
    """What a connection keeps while idle (bench/conn_memory.py): the ASGI task that
    reads it and nothing more. No sender task or send queue while its frames go straight
    to the socket (they are made when a frame must wait, or at the close); uvicorn's
    protocol keeps neither the upgrade request nor its answer, and receives into a
    ReceiveQueue, not an asyncio.Queue."""
    async with (
        run_server(settings) as server,
        connect(server.ws_url, "idle", "first") as first,
    ):
        room = server.backend.rooms.get_loaded("idle")
        assert room is not None
        before = len(server_tasks())
        async with (
            connect(server.ws_url, "idle", "a") as a,
            connect(server.ws_url, "idle", "b"),
            connect(server.ws_url, "idle", "c"),
        ):
            entries = P.encode_awareness_entries([(a.doc.client_id, 1, '{"n":1}')])
            await a.ws.send(P.encode_awareness(entries))
            first.insert(0, "typed")
            await eventually(lambda: a.content == "typed", what="the edit reached a")
            # the three clients' ASGI tasks; nothing else left once they are idle
            await eventually(
                lambda: len(server_tasks()) - before <= 3,
                what=f"at most one task per connection ({server_tasks()})",
            )
            for user in ("a", "b", "c", "first"):
                conn = connection_of(room, user)
                assert conn._sender is None and conn._queue is None, user
                assert conn.queued_frames == 0 and not conn.closed
                proto = protocol_of(conn.ws)
                assert proto.request is None and proto.response is None
                assert isinstance(proto.queue, ReceiveQueue)
            sender = [t for t in asyncio.all_tasks() if t.get_name().startswith("send:")]
            assert sender == []
        # they left: each closed through its sender task, made then
        await eventually(lambda: set(room.peers) == {connection_of(room, "first").id})
        assert first.ws.close_code is None


async def test_serve_negotiates_no_permessage_deflate(tmp_path: Path) -> None:
    """`palimpsest serve` answers a client's offer of permessage-deflate (the Node `ws`
    client and browsers make one) without it: compression stalls the many tiny frames of
    an editing session (DESIGN.md), and a compressor per connection would cost memory
    while it sits idle."""
    async with ServerProcess(tmp_path) as srv:
        async with websockets.connect(f"{srv.ws_url}/deflate", compression="deflate") as ws:
            assert P.decode(await ws.recv()) is not None  # the server's step 1
            assert ws.protocol.extensions == []
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
