"""Limits: a slow consumer never stalls the others, connections per address, document
size, rates, awareness size. Real server, real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import RunningServer, closed_with, eventually, run_server
from floodhelp import flood
from pycrdt import Doc, Text
from yclient import connect

from palimpsest import client
from palimpsest import protocol as P
from palimpsest.errors import RateLimited
from palimpsest.routes.ws import Connection
from palimpsest.settings import Settings


def raw_handshake(port: int, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A websocket client that completes the handshake and then never reads again, with a
    small receive buffer so that its socket fills up quickly."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    s.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "the server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def connection_of(server: RunningServer, doc: str, actor: str) -> Connection | None:
    room = server.backend.rooms.get_loaded(doc)
    if room is None:
        return None
    for peer in room.peers.values():
        if peer.actor == actor and isinstance(peer, Connection):
            return peer
    return None


def transport_of(conn: Connection) -> asyncio.WriteTransport:
    """The asyncio transport under a connection's websocket. Fails loudly when uvicorn's
    internals move: a silent 0 here would let the backlog checks below pass unchecked."""
    protocol = getattr(getattr(conn.ws, "_receive", None), "__self__", None)
    transport = getattr(protocol, "transport", None)
    if not isinstance(transport, asyncio.WriteTransport):
        raise AssertionError(
            f"no asyncio transport behind the websocket (ws._receive.__self__ is {protocol!r}): "
            "uvicorn's internals moved, update transport_of()"
        )
    return transport


def received(client: Any, kind: type = P.SyncUpdate) -> int:
    return sum(isinstance(f, kind) for f in client.frames)


SMALL_BUFFER = 4096
CHUNK = 32_000


@pytest.mark.parametrize("bound", ["frames", "bytes"])
async def test_slow_consumer_is_dropped_and_nobody_waits(settings: Settings, bound: str) -> None:
    """A client that never reads is dropped (1013) once its send queue is over its bound,
    in frames or in bytes, and the others get every edit meanwhile. No clock and no kernel
    default is involved: the kernel buffers on the slow path are made small and read back,
    the flood is sized from them, and "nobody waits" is causal: the reader gets each edit
    while the slow client's earlier frames are still queued on the server."""
    settings.max_events_per_second = 0
    if bound == "frames":
        settings.send_queue_frames = 64
    else:
        # the byte bound, max_send_queue_bytes = 512 KiB here, reached with presence
        # updates: edits cannot reach it (the log keeps what they delete, so a document
        # grows by what is written and is refused at max_doc_bytes first)
        settings.max_frame_bytes = 64 * 1024
        settings.max_doc_bytes = 512 * 1024
        settings.max_send_queue_bytes = 512 * 1024
        settings.max_awareness_bytes = 40_000
        settings.max_awareness_state_bytes = 40_000
        settings.max_bytes_per_second = 0
    async with run_server(settings) as server, \
            connect(server.ws_url, "slow", "writer") as writer, \
            connect(server.ws_url, "slow", "reader") as reader:  # fmt: skip
        # blocking socket calls: in a thread, the server shares this event loop
        slow = await asyncio.to_thread(
            raw_handshake, server.port, "/ws/slow?user=snail", SMALL_BUFFER
        )
        try:
            conn = await eventually(lambda: connection_of(server, "slow", "snail"), what="joined")
            transport = transport_of(conn)
            sock = transport.get_extra_info("socket")
            # a fixed send buffer (no autotuning up to tcp_wmem's max) on the server's end
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
            kernel = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + slow.getsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF
            )
            high = transport.get_write_buffer_limits()[1]
            frame_max = CHUNK + 64  # a 32 KB insert's update and frame header
            if bound == "frames":
                queue_bound = settings.send_queue_frames * frame_max
            else:
                queue_bound = conn._max_queued_bytes
                assert queue_bound == settings.max_send_queue_bytes
            # the slow path holds at most this much before the server must decide:
            # kernel buffers, the transport up to its high-water mark plus the frame being
            # written, and the queue; twice that is plenty to make the drop certain
            edits = 2 * (2 * (kernel + high + frame_max + queue_bound) // CHUNK) + 8
            chunk = "x" * CHUNK
            kind = P.SyncUpdate if bound == "frames" else P.AwarenessUpdate
            base = received(reader, kind)
            # frames queued for the slow one each time the reader got an update
            backlog_seen: list[int] = []
            dropped_at: int | None = None
            for i in range(edits):
                if bound == "frames":
                    writer.insert(0, chunk)  # at 0: no need to measure the growing text
                else:
                    state = json.dumps({"user": {"name": "writer", "note": chunk}})
                    await writer.send_raw(
                        P.encode_awareness(
                            P.encode_awareness_entries([(writer.doc.client_id, i + 1, state)])
                        )
                    )
                # a generous guard only: a stall here fails loudly, a slow machine does not
                await eventually(
                    lambda n=base + i + 1: received(reader, kind) >= n,  # type: ignore[misc]
                    timeout=30,
                    interval=0.001,
                    what=f"the reader gets update {i}",
                )
                if conn._close is not None:
                    dropped_at = i
                    break
                backlog_seen.append(conn.queued_frames - conn._sending)
                # the server holds a bounded backlog for it, whatever the kernel does
                assert conn.queued_frames - conn._sending <= settings.send_queue_frames
                assert conn._queued_bytes <= conn._max_queued_bytes
                assert transport.get_write_buffer_size() <= high + frame_max
            assert dropped_at is not None, (
                f"the slow consumer was never dropped after {edits} edits: "
                f"queue {conn.queued_frames} frames, {conn._queued_bytes} bytes, "
                f"transport {transport.get_write_buffer_size()} bytes, kernel {kernel} bytes"
            )
            assert conn._close is not None and conn._close[0] == 1013, conn._close
            assert "send queue overflow" in conn._close[1]
            # dropped for its bound, not earlier: the queue was (nearly) full
            if bound == "frames":
                assert backlog_seen[-1] >= settings.send_queue_frames - 1, backlog_seen[-5:]
            # nobody waited: edit after edit reached the reader while the slow client's
            # earlier frames sat in its queue (the queue only grows while its sender is stuck)
            waiting = sum(1 for q in backlog_seen if q >= 1)
            assert waiting >= (queue_bound // frame_max if bound == "frames" else 8), backlog_seen
            assert len(backlog_seen) == dropped_at
            # and it goes on after the drop
            edits_before = received(reader)
            for i in range(8):
                writer.insert(0, "after ")
                await eventually(
                    lambda n=edits_before + 1 + i: received(reader) >= n,  # type: ignore[misc]
                    timeout=30,
                    interval=0.001,
                    what=f"the reader gets edit {i} after",
                )
            await eventually(lambda: reader.content == writer.content, what="reader converged")
            # the slow one is torn down (the close frame cannot go out: aborted after the
            # grace period) and leaves the room
            await eventually(lambda: conn.closed, timeout=30, what="its sender ended")
            await eventually(
                lambda: connection_of(server, "slow", "snail") is None,
                timeout=30,
                what="the slow one left the room",
            )
            slow.settimeout(0.0)

            def torn_down() -> bool:
                try:
                    while True:
                        data = slow.recv(65536)
                        if not data:
                            return True
                except BlockingIOError:
                    return False
                except ConnectionResetError:
                    return True

            await eventually(torn_down, timeout=30, what="the slow socket is closed")
            # everything the writer wrote is in the log
            room = server.backend.rooms.get_loaded("slow")
            assert room is not None
            await room.flush()
            async with connect(server.ws_url, "slow", "late") as late:
                assert late.content == writer.content
            print(
                f"\nslow consumer ({bound}) dropped at edit {dropped_at + 1} of {CHUNK} bytes; "
                f"kernel buffers {kernel} bytes, queue bound {queue_bound} bytes"
            )
        finally:
            slow.close()


async def _open(server: RunningServer, doc: str, xff: str) -> Any:
    return await websockets.connect(
        f"{server.ws_url}/{doc}?user=u", compression=None,
        additional_headers={"X-Forwarded-For": xff},
    )  # fmt: skip


async def _close_code(ws: Any) -> int:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None
        return int(e.rcvd.code)


async def test_connections_per_address(settings: Settings) -> None:
    """Counted per client address; behind a trusted proxy (uvicorn's FORWARDED_ALLOW_IPS,
    loopback by default) that is the X-Forwarded-For address, refused at the handshake
    with HTTP 429 as a direct client is: the handshake counted only the proxy's address,
    and the forwarded one, counted after the accept, got a 4429 close, which brought a
    y-websocket tab straight back, ten times a second (a 429 it backs off from)."""
    settings.max_connections_per_ip = 3
    async with run_server(settings) as server:
        first = [await _open(server, "c", "10.0.0.1") for _ in range(3)]
        for ws in first:
            assert isinstance(P.decode(await ws.recv()), P.SyncStep1)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await _open(server, "c", "10.0.0.1")
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body)["error"] == "TooManyConnections"
        other = await _open(server, "c", "10.0.0.2")
        assert isinstance(P.decode(await other.recv()), P.SyncStep1)
        await first[0].close()

        async def admitted() -> bool:
            ws = await _open(server, "c", "10.0.0.1")
            try:
                return isinstance(P.decode(await ws.recv()), P.SyncStep1)
            except websockets.ConnectionClosed:
                return False
            finally:
                await ws.close()

        await eventually(admitted, what="a slot is free again after a close")
        for ws in [*first[1:], other]:
            await ws.close()


async def test_document_size_limit(settings: Settings) -> None:
    settings.max_doc_bytes = 30_000
    async with run_server(settings) as server, connect(server.ws_url, "big", "r") as watcher:
        store = server.backend.store
        async with connect(server.ws_url, "big", "w") as w:
            for _ in range(40):
                w.insert(len(w.content), "y" * 1000)
                await asyncio.sleep(0)
            await eventually(lambda: w._reader is not None and w._reader.done(), what="closed")
            assert w.close_code == 4413 and "limit" in (w.close_reason or "")
        room = server.backend.rooms.get_loaded("big")
        assert room is not None
        await room.flush()  # what was accepted before the refusal is still committed
        head = await store.head("big")
        size = len(room.doc.get_update())
        assert 20_000 <= size <= settings.max_doc_bytes, size
        # nothing over the limit was logged; the others still read it, and may not grow it
        async with connect(server.ws_url, "big", "late") as late:
            assert late.content == watcher.content
            assert len(late.content) == head * 1000
            late.insert(0, "z" * 2000)
            await eventually(
                lambda: late._reader is not None and late._reader.done(), what="closed"
            )
            assert late.close_code == 4413
        assert await store.head("big") == head


async def test_large_frames_arriving_at_once_are_bounded_across_connections(
    settings: Settings,
) -> None:
    """An update frame may be as large as the document (offline work comes back in one
    sync step 2), and the websocket library holds a frame whole until its last fragment:
    sockets that each sent all of a large frame but its last fragment pinned ~55 MB each,
    and 24 of them took the server from 228 MB to 1.5 GB. What all connections hold of
    frames over max_frame_bytes is now bounded (max_large_frames_bytes): the socket that
    would go over is closed with 1013 (try again), and room comes back as frames end."""
    settings.max_frame_bytes = 64 * 1024
    settings.max_doc_bytes = 1024 * 1024
    settings.max_large_frames_bytes = 1536 * 1024
    settings.max_bytes_per_second = settings.max_events_per_second = 0
    chunk = 64 * 1024
    async with run_server(settings) as server:
        large = server.server.config.ws_protocol_class.large_frames  # type: ignore[union-attr]
        release = asyncio.Event()

        async def fragments(count: int) -> Any:
            yield b"\x00\x01" + b"\x00" * (chunk - 2)  # a sync step 2 (of nothing sound)
            for _ in range(count - 1):
                yield b"\x00" * chunk
            await release.wait()
            yield b"\x00"

        # one hog sends its frame in fragments (websockets' parser and uvicorn keep
        # them), the other one whole frame but its last byte (the server's own parser
        # keeps it: wire_write): each holds ~640 KB over the frame limit, 1.25 MB of 1.5 MiB
        hogs = [await websockets.connect(f"{server.ws_url}/hog0?user=hog0")]
        sending = [asyncio.create_task(hogs[0].send(fragments(11)))]
        raw = await asyncio.to_thread(raw_handshake, server.port, "/ws/hog1?user=hog1")
        size = 11 * chunk
        payload = b"\x00\x01" + b"\x00" * (size - 2)
        head = bytes([0x82, 0xFF]) + size.to_bytes(8, "big") + b"\x00" * 4  # mask of zeros
        await asyncio.to_thread(raw.sendall, head + payload[:-1])
        await eventually(lambda: large.held > 19 * chunk, what="the hogs' frames held")
        third = await websockets.connect(f"{server.ws_url}/third?user=third")
        third_sending = asyncio.create_task(third.send(fragments(11)))
        code, reason = await closed_with(third)
        assert (code, "other large updates" in reason) == (1013, True), (code, reason)
        assert large.held <= large.budget
        third_sending.cancel()
        # the hogs end their frames (refused: they hold nothing sound); room comes back,
        # and a sound large update, alone, is taken
        release.set()
        await asyncio.to_thread(raw.sendall, payload[-1:])
        assert (await closed_with(hogs[0]))[0] == 4400
        await eventually(lambda: large.held == 0, what="the budget given back")
        raw.close()
        await asyncio.gather(*sending, return_exceptions=True)
        await eventually(lambda: large.held == 0, what="the budget given back")
        async with connect(server.ws_url, "third", "third") as w:
            w.insert(0, "x" * (700 * 1024))
            await eventually(lambda: server.backend.rooms.get_loaded("third") is not None)
            room = server.backend.rooms.get_loaded("third")
            assert room is not None
            await eventually(lambda: len(str(room.doc.get("content", type=Text))) == 700 * 1024)


async def test_a_paste_sent_in_parts_is_kept_whole_or_refused_whole(settings: Settings) -> None:
    """The Python client cuts an update over ~1 MiB into parts; each part used to be
    judged by the size limit on its own, so a 5.8 MB paste into a 4 MiB document left
    its first four parts committed (a prefix cut mid-line) and the fifth refused. Now
    the parts are announced and judged together."""
    settings.max_doc_bytes = 4 * 1024 * 1024
    line = "".join(f"line {i:07d} of the pasted file, naïve text\n" for i in range(100))
    async with run_server(settings) as server:
        store = server.backend.store
        async with client.connect(server.ws_url, "paste", user="ada") as s:
            s.text().insert(0, "before\n")
            await s.flush()
        head = await store.head("paste")

        big = line * (5_800_000 // len(line.encode()))
        assert len(big.encode()) > 5_700_000
        s = await client.connect(server.ws_url, "paste", user="ada", reconnect=False).open()
        try:
            s.text().append(big)
            with pytest.raises(client.TooLarge) as refused:
                await s.flush(timeout=60)
        finally:
            await s.close()
        room = server.backend.rooms.get_loaded("paste")
        if room is not None:
            await room.flush()
        assert await store.head("paste") == head  # nothing of it logged
        assert "none of an update sent in parts was applied" in str(refused.value)
        async with client.connect(server.ws_url, "paste", user="bob") as b:
            assert b.text() == "before\n"

            # a paste in parts that fits is kept whole
            fits = line * (2_500_000 // len(line.encode()))
            b.text().append(fits)
            await b.flush(timeout=60)
        async with client.connect(server.ws_url, "paste", user="cy") as c:
            assert c.text() == "before\n" + fits
            events = await store.read("paste")
            assert len(events) > head and all(e.actor in ("ada", "bob") for e in events)


def _paste_parts(chars: int, limit: int = 1 << 20) -> list[bytes]:
    """A paste of about `chars` characters into an empty document, cut as the Python
    client cuts it (client.split)."""
    from palimpsest.client.split import split_update

    d: Doc = Doc()
    d.get("content", type=Text).insert(0, "".join(f"line {i:07d} zz\n" for i in range(chars // 16)))
    return split_update(d.get_update(), limit)


async def _announce(ws: Any, parts: list[bytes], nbytes: int | None = None) -> None:
    body = {"type": "parts", "bytes": nbytes or sum(map(len, parts)), "count": len(parts)}
    await ws.send(P.encode_extension(body))


async def test_announced_parts_are_held_until_the_last_and_judged_whole(
    settings: Settings,
) -> None:
    """The parts announced were let through one by one with a size allowance judged
    when announced: an announcement left waiting let a later update take the document
    past MAX_DOC_BYTES (and then nobody could type), and a connection that ended after
    its first part left that part in the document, a prefix cut mid-line. The parts
    are now held by the connection and handed to the room merged, as one update."""
    settings.max_doc_bytes = 3_000_000
    async with run_server(settings) as server:
        store = server.backend.store
        url = f"{server.ws_url}/full?user=mallory"
        # announced while it fitted, sent after someone else filled the document
        late = _paste_parts(1_500_000)
        ws = await websockets.connect(url, compression=None, max_size=None)
        await _announce(ws, late)
        async with client.connect(server.ws_url, "full", user="alice") as a:
            a.text().append("".join(f"alice {i:07d}\n" for i in range(2_400_000 // 14)))
            await a.flush(timeout=60)
        head = await store.head("full")
        for part in late:
            await ws.send(P.encode_sync_update(part))
        code, reason = await closed_with(ws)
        assert code == 4413, (code, reason)
        room = server.backend.rooms.get_loaded("full")
        assert room is not None
        await room.flush()
        assert await store.head("full") == head
        assert len(room.doc.get_update()) <= settings.max_doc_bytes
        # a connection that ends after its first part leaves nothing of them
        half = _paste_parts(300_000, limit=100_000)
        assert len(half) > 2
        async with websockets.connect(
            f"{server.ws_url}/half?user=mallory", compression=None, max_size=None
        ) as ws:
            await _announce(ws, half)
            await ws.send(P.encode_sync_update(half[0]))
        async with client.connect(server.ws_url, "half", user="bob") as b:
            b.text().append("bob")
            await b.flush()
            assert b.text() == "bob"
        assert [e.actor for e in await store.read("half")] == ["bob"]
        # parts larger than announced are refused
        async with websockets.connect(
            f"{server.ws_url}/liar?user=mallory", compression=None, max_size=None
        ) as ws:
            await _announce(ws, half, nbytes=1000)
            for part in half:
                await ws.send(P.encode_sync_update(part))
            code, reason = await closed_with(ws)
        assert code == 4400 and "larger than the 1000 bytes announced" in reason, reason
        assert await store.head("liar") == 0
        # and parts sent whole are one event
        async with websockets.connect(
            f"{server.ws_url}/whole?user=mallory", compression=None, max_size=None
        ) as ws:
            await _announce(ws, half)
            for part in half:
                await ws.send(P.encode_sync_update(part))
            await eventually(lambda: store.head("whole"), what="the paste logged")
        [ev] = await store.read("whole")
        got: Doc = Doc()
        got.apply_update(ev.update)
        assert str(got.get("content", type=Text)).startswith("line 0000000 zz\n")
        assert len(str(got.get("content", type=Text))) == 300_000 // 16 * 16


async def test_rate_limit_closes_and_loses_nothing_accepted(settings: Settings) -> None:
    settings.max_events_per_second = 20  # burst 40
    async with run_server(settings) as server:
        ws, text = await flood(f"{server.ws_url}/rate?user=flood")
        assert await _close_code(ws) == RateLimited.close_code  # transient: re-sync and go on
        room = server.backend.rooms.get_loaded("rate")
        if room is not None:
            await room.flush()  # what was accepted before the close is still committed
        head = await server.backend.store.head("rate")
        assert 20 <= head < 200
        async with connect(server.ws_url, "rate", "late") as late:
            assert late.content == text[:head], "a prefix: accepted in order, none lost"


async def test_awareness_size_limit(settings: Settings) -> None:
    settings.max_awareness_bytes = 500
    async with run_server(settings) as server, connect(server.ws_url, "aw", "a") as a:
        state = json.dumps({"z": "z" * 600})  # (valid: a state that is not JSON is 4400)
        big = P.encode_awareness(P.encode_awareness_entries([(1, 1, state)]))
        await a.send_raw(big)
        await eventually(lambda: a._reader is not None and a._reader.done(), what="closed")
        assert a.close_code == 4413


@pytest.mark.parametrize("route", ["ws", "hocuspocus"])
async def test_a_refused_frame_is_freed_with_its_connection(settings: Settings, route: str) -> None:
    """A closed connection was kept by cycles only a full collection frees, rare on a
    quiet server (serve.py's _tune_gc): the direct reader's functions on uvicorn's
    protocol object refer to it, and a refused frame's exception (kept by the connection)
    held the frame's bytes in its traceback. Clients resending an oversized paste took
    the server to GBs within seconds. With the collector off, connections must go by
    themselves, refused or not."""
    import gc

    settings.max_frame_bytes = 200_000
    gc.collect()
    gc.disable()
    try:
        async with run_server(settings) as srv:
            base = srv.ws_url.rsplit("/", 1)[0]
            url = f"{srv.ws_url}/big?user=ada" if route == "ws" else f"{base}/hocuspocus"
            for _ in range(3):
                async with websockets.connect(url, max_size=None) as ws:
                    await ws.send(bytes(300_000))  # over the limit: refused whatever it holds
                    with pytest.raises(websockets.ConnectionClosed):
                        async with asyncio.timeout(10):
                            async for _ in ws:
                                pass
                    code, reason = ws.close_code, ws.close_reason or ""
                assert code in (1009, 4413) and "over the limit" in reason, (code, reason)
            # and one that just leaves (another user: the same request refused 3 times
            # is refused at the handshake)
            async with websockets.connect(url.replace("ada", "bea")) as ws:
                await asyncio.sleep(0.2)

            def alive() -> list[Connection]:  # (a weak proxy in the heap fails isinstance)
                return [o for o in gc.get_objects() if issubclass(type(o), Connection)]

            await eventually(lambda: not alive(), what="the refused connections freed")
    finally:
        gc.enable()


async def test_frames_before_a_documents_auth_message_wait_for_it_within_a_bound(
    settings: Settings,
) -> None:
    """/hocuspocus: a document's frames that come before its auth message (a reconnecting
    3.x socket's offline queue) wait for it and are handled as its user's, in open mode
    too (an update opened the document as ``anonymous``, and the auth message after it
    was refused as another user's); past eight frames' worth of bytes on one socket, the
    socket closes (1013)."""
    from palimpsest import hocuspocus as H

    settings.max_frame_bytes = 10_000
    doc = Doc()
    doc["content"] = text = Text()
    text += "offline"
    update = doc.get_update()
    auth = H.prefix("early") + bytes([H.AUTH, H.AUTH_TOKEN]) + P.write_var_string("ann")
    async with run_server(settings) as srv:
        base = srv.ws_url.rsplit("/", 1)[0]
        async with websockets.connect(f"{base}/hocuspocus", max_size=None) as ws:
            await ws.send(H.prefix("early") + P.encode_sync_update(update))
            await ws.send(auth)
            got: list[bytes] = []
            async with asyncio.timeout(10):
                while H.encode_sync_status("early", True) not in got:
                    got.append(bytes(await ws.recv()))
            assert got[0] == H.encode_authenticated("early", read_only=False), got
            denied = H.prefix("early") + bytes([H.AUTH, H.AUTH_PERMISSION_DENIED])
            assert not any(f.startswith(denied) for f in got), got
            assert {e.actor for e in await srv.backend.store.read("early")} == {"ann"}
        async with websockets.connect(f"{base}/hocuspocus", max_size=None) as ws:
            big = H.prefix("later") + bytes([H.STATELESS]) + P.write_var_string("x" * 9000)
            for _ in range(9):
                await ws.send(big)
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    async for _ in ws:
                        pass
            assert ws.close_code == 1013, (ws.close_code, ws.close_reason)
            assert "before their auth message" in (ws.close_reason or "")


async def _held_until_pong(ws: Any) -> tuple[int | None, str]:
    """Send a 4.x ping after what was sent and read until its pong (the socket held it
    all: None) or the close (its code and reason)."""
    from palimpsest import hocuspocus as H

    await ws.send(bytes([H.PING]))
    try:
        async with asyncio.timeout(10):
            async for frame in ws:
                if frame == H.encode_pong():
                    return None, ""
    except websockets.ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason or ""


async def test_frames_held_for_documents_the_client_closed_count_per_socket(
    settings: Settings,
) -> None:
    """/hocuspocus: frames sent for a document after the client closed it wait for an
    auth message opening it again. They had a cap per document only (eight frames'
    worth of bytes), so a socket that closed many documents made the server hold that
    many times over. One bound per socket now covers every frame it holds, for documents
    closed, opening or not opened yet alike: past it the socket closes (1013), saying
    so. Frames with no body (a query awareness) count too."""
    from palimpsest import hocuspocus as H

    settings.max_frame_bytes = 10_000
    settings.max_events_per_second = 100_000.0

    def auth(doc: str) -> bytes:
        return H.prefix(doc) + bytes([H.AUTH, H.AUTH_TOKEN]) + P.write_var_string("ann")

    def stateless(doc: str) -> bytes:
        return H.prefix(doc) + bytes([H.STATELESS]) + P.write_var_string("x" * 9000)

    async def closed(ws: Any, docs: list[str]) -> None:
        for doc in docs:
            await ws.send(auth(doc))
            await ws.send(H.prefix(doc) + bytes([H.CLOSE]))
        want = {H.encode_close(doc, H.CLOSED_BY_CLIENT) for doc in docs}
        async with asyncio.timeout(10):
            while want:
                want.discard(bytes(await ws.recv()))

    async with run_server(settings) as srv:
        url = srv.ws_url.rsplit("/", 1)[0] + "/hocuspocus"
        # within the bound, a closed document's frames are held (and the socket stays);
        # handled as an auth message opens it again, they are held no more
        async with websockets.connect(url, max_size=None) as ws:
            for _ in range(3):
                await closed(ws, ["c0"])
                for _ in range(7):
                    await ws.send(stateless("c0"))
                assert await _held_until_pong(ws) == (None, "")
        # four frames for each of three closed documents: each within its own eight,
        # 108 KB together over the socket's 80 KB
        async with websockets.connect(url, max_size=None) as ws:
            await closed(ws, ["c1", "c2", "c3"])
            for doc in ["c1", "c2", "c3"]:
                for _ in range(4):
                    await ws.send(stateless(doc))
            code, reason = await _held_until_pong(ws)
            assert code == 1013, (code, reason)
            assert "held for documents not open" in reason, reason
        # the frames of a closed document and those before another's auth message: one
        # account
        async with websockets.connect(url, max_size=None) as ws:
            await closed(ws, ["c4"])
            for doc in ["c4", "early"]:
                for _ in range(5):
                    await ws.send(stateless(doc))
            code, reason = await _held_until_pong(ws)
            assert code == 1013, (code, reason)
        # frames of no bytes held are not free
        async with websockets.connect(url, max_size=None) as ws:
            await closed(ws, ["c5"])
            for _ in range(2000):
                await ws.send(H.prefix("c5") + bytes([H.QUERY_AWARENESS]))
            code, reason = await _held_until_pong(ws)
            assert code == 1013, (code, reason)


@pytest.mark.parametrize("path", ["/ws/c?user=ada", "/hocuspocus"])
async def test_over_the_address_limit_without_the_handshake_guard_is_an_http_429(
    tmp_path: Path, path: str
) -> None:
    """The app's own count (Limits.on_connect) refuses as the handshake guard does: with
    an HTTP 429, not an accepted socket closed with 4429. y-websocket 3.1+ stops for
    good on a 44xx close; a 429 it backs off from. The guard counts sockets in their
    handshake, so a burst of sockets (ftsec: 20 at once at 185 of 200) can pass it and
    reach the app's count; under an embedding app's own uvicorn there is no guard."""
    from test_embedding import running

    from palimpsest.app import create_app

    settings = Settings(db=str(tmp_path / "db"), max_connections_per_ip=2)
    async with running(create_app(settings)) as host:
        url = f"ws://{host}{path}"
        first = [await websockets.connect(url) for _ in range(2)]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["Retry-After"] == "1"
        assert refused.value.response.headers["content-type"] == "application/json"
        said = json.loads(refused.value.response.body)
        assert said == {
            "error": "TooManyConnections",
            "detail": "at most 2 connections at once from one address "
            "(MAX_CONNECTIONS_PER_IP): close one, or try again later",
        }, said
        for ws in first:
            await ws.close()
