"""Limits: a slow consumer never stalls the others, connections per address, document
size, rates, awareness size. Real server, real sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import time
from typing import Any

import websockets
from conftest import RunningServer, eventually, run_server
from pycrdt import Doc, Text
from yclient import connect

from server import protocol as P
from server.errors import RateLimited
from server.routes.ws import Connection
from server.settings import Settings


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


def write_buffer(conn: Connection) -> int:
    transport = getattr(getattr(conn.ws, "_receive", None), "__self__", None)
    transport = getattr(transport, "transport", None)
    return int(transport.get_write_buffer_size()) if transport is not None else 0


def received(client: Any) -> int:
    return sum(isinstance(f, P.SyncUpdate) for f in client.frames)


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def test_slow_consumer_is_dropped_and_nobody_waits(settings: Settings) -> None:
    settings.send_queue_frames = 64
    settings.max_events_per_second = 0
    chunk = "x" * 32000  # the kernel buffers a few MB before the server's queue fills
    async with run_server(settings) as server, \
            connect(server.ws_url, "slow", "writer") as writer, \
            connect(server.ws_url, "slow", "reader") as reader:  # fmt: skip
        # blocking socket calls: in a thread, the server shares this event loop
        slow = await asyncio.to_thread(raw_handshake, server.port, "/ws/slow?user=snail")
        try:
            conn = await eventually(lambda: connection_of(server, "slow", "snail"), what="joined")
            rss0 = rss()
            latencies: list[float] = []
            queued: list[int] = []
            buffered: list[int] = []
            dropped_at: int | None = None
            for i in range(800):
                t0 = time.perf_counter()
                writer.insert(0, chunk)  # at 0: no need to measure the growing text
                await eventually(lambda n=i + 1: received(reader) >= n, timeout=5,  # type: ignore[misc]
                                 interval=0.001, what=f"the reader gets edit {i}")
                latencies.append(time.perf_counter() - t0)
                queued.append(conn._queue.qsize())
                buffered.append(write_buffer(conn))
                if dropped_at is None and conn.closed.is_set():
                    dropped_at = i
                if dropped_at is not None and i > dropped_at + 30:
                    break
            assert dropped_at is not None, (
                f"the slow consumer was never dropped: queue {queued[-1]} frames, "
                f"write buffer {buffered[-1]} bytes"
            )
            # the slow one is gone from the room; the others were never held up
            assert connection_of(server, "slow", "snail") is None
            assert conn._close is not None and conn._close[0] == 1013
            assert max(queued) <= settings.send_queue_frames
            assert max(buffered) <= 256 * 1024, "the transport buffer stays near its high water"
            before, after = latencies[: dropped_at // 2 + 1], latencies[dropped_at:]
            p50_before, p50_after = statistics.median(before), statistics.median(after)
            assert max(latencies) < 2.0, max(latencies)
            assert p50_after < 5 * p50_before + 0.02, (p50_before, p50_after)
            # everything the writer wrote is in the log and at the reader
            assert reader.content == writer.content
            # memory: the server held at most a bounded backlog for the slow client
            grown = rss() - rss0
            sent = len(latencies) * len(chunk)
            # (this process also holds the writer's, the reader's and the room's copies)
            assert grown < 64 * 2**20 + 6 * sent, (grown, sent)
            # the slow client's socket was torn down (abort: RST, or a close after its data)
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

            await eventually(torn_down, timeout=10, what="the slow socket is closed")
            print(f"\nslow consumer dropped after {dropped_at + 1} edits of {len(chunk)} bytes; "
                  f"p50 latency before {p50_before * 1e3:.1f} ms, after {p50_after * 1e3:.1f} ms; "
                  f"max queue {max(queued)} frames, max write buffer {max(buffered)} bytes; "
                  f"RSS +{grown / 2**20:.1f} MiB")
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
    loopback by default) that is the X-Forwarded-For address."""
    settings.max_connections_per_ip = 3
    async with run_server(settings) as server:
        first = [await _open(server, "c", "10.0.0.1") for _ in range(3)]
        for ws in first:
            assert isinstance(P.decode(await ws.recv()), P.SyncStep1)
        over = await _open(server, "c", "10.0.0.1")
        assert await _close_code(over) == 4429
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
            await eventually(lambda: late._reader is not None and late._reader.done(),
                             what="closed")
            assert late.close_code == 4413
        assert await store.head("big") == head


async def test_rate_limit_closes_and_loses_nothing_accepted(settings: Settings) -> None:
    settings.max_events_per_second = 20  # burst 40
    async with run_server(settings) as server:
        ws = await websockets.connect(f"{server.ws_url}/rate?user=flood", compression=None)
        d: Doc = Doc()
        text = d.get("content", type=Text)
        frames = []
        for i in range(200):
            sv = d.get_state()
            text.insert(len(text), str(i % 10))
            frames.append(P.encode_sync_update(d.get_update(sv)))
        try:
            for f in frames:
                await ws.send(f)
        except websockets.ConnectionClosed:
            pass
        assert await _close_code(ws) == RateLimited.close_code  # transient: re-sync and go on
        room = server.backend.rooms.get_loaded("rate")
        if room is not None:
            await room.flush()  # what was accepted before the close is still committed
        head = await server.backend.store.head("rate")
        assert 20 <= head < 200
        async with connect(server.ws_url, "rate", "late") as late:
            assert late.content == str(text)[:head], "a prefix: accepted in order, none lost"


async def test_awareness_size_limit(settings: Settings) -> None:
    settings.max_awareness_bytes = 500
    async with run_server(settings) as server, connect(server.ws_url, "aw", "a") as a:
        big = P.encode_awareness(P.encode_awareness_entries([(1, 1, "z" * 600)]))
        await a.send_raw(big)
        await eventually(lambda: a._reader is not None and a._reader.done(), what="closed")
        assert a.close_code == 4413
