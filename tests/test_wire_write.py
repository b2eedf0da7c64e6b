"""Frames written straight to the socket (server/routes/wire_write.py): valid websocket
frames, used under uvicorn's sansio protocol, and in order with the frames a backlog
sent through the sender task."""

from __future__ import annotations

import pytest
from conftest import eventually, run_server
from pycrdt import Doc, Text
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from yclient import connect

from palimpsest import protocol as P
from palimpsest.room import Room
from palimpsest.routes.wire_write import frame_binary, protocol_of
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
        assert conn._queue.qsize() + conn._sending == 5, "a backlog for the reader"
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
        assert conn._queue.empty() and not conn._sending


def _client_frame(payload: bytes) -> bytes:
    """A client's binary frame as it comes off the socket (masked, final)."""
    return Frame(Opcode.BINARY, payload).serialize(mask=True)


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
        proto.data_received(_client_frame(P.encode_sync_update(updates[1])))
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
        await bad.send_raw(b"\x07")  # unknown message type
        await eventually(lambda: bad.close_code is not None, what="the bad client closed")
        assert bad.close_code == 4400
        assert conn.direct_messages == direct + 1
        good.insert(0, "still here")
        await eventually(lambda: watcher.content == "still here", what="the others go on")
