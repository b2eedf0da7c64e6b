"""Frames written straight to the socket (server/routes/wire_write.py): valid websocket
frames, used under uvicorn's sansio protocol, and in order with the frames a backlog
sent through the sender task."""

from __future__ import annotations

import pytest
from conftest import eventually, run_server
from pycrdt import Doc
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from yclient import connect

from palimpsest import protocol as P
from palimpsest.routes.wire_write import frame_binary, protocol_of
from palimpsest.routes.ws import Connection
from palimpsest.settings import Settings


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
        conn = next(p for p in room.peers.values() if p.actor == "reader")
        assert isinstance(conn, Connection)
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
