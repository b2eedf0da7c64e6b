"""Connections refused with HTTP 429 by the per-address limit (MAX_CONNECTIONS_PER_IP,
server/handshake.py), a client's own or one a trusted proxy forwards, are counted in
``palimpsest_refused_total{reason="too_many_connections"}`` as docs/operations.md says
of every handshake refused before the socket opens, and logged as RepeatLines logs a
refusal that comes straight back: the first in a minute from an address at WARNING,
its repeats counted and said in one line (a reconnect storm made 1,052 WARNING lines
in 14 s, one per refusal)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import eventually
from serverproc import ServerProcess

from palimpsest.handshake import OPS_SPARE_PER_ADDRESS, RefusedAddresses

METRIC = 'palimpsest_refused_total{reason="too_many_connections"}'


async def _open(srv: ServerProcess, **kw: object) -> websockets.ClientConnection:
    return await websockets.connect(f"{srv.ws_url}/notes?user=ann", ping_interval=None, **kw)  # type: ignore[arg-type]


async def test_429s_of_the_per_address_limit_are_counted_and_said_once(tmp_path: Path) -> None:
    env = {"PALIMPSEST_MAX_CONNECTIONS_PER_IP": "2"}
    async with ServerProcess(tmp_path / "srv", env=env) as srv:
        async with contextlib.AsyncExitStack() as held:
            # a client's own address, 127.0.0.2 (the metrics are read from 127.0.0.1)
            direct = {"local_addr": ("127.0.0.2", 0)}
            for _ in range(2):
                await held.enter_async_context(await _open(srv, **direct))
            for _ in range(5):
                with pytest.raises(websockets.InvalidStatus) as e:
                    await _open(srv, **direct)
                assert e.value.response.status_code == 429
            # an address a trusted proxy (loopback) forwards
            forwarded = {"additional_headers": {"X-Forwarded-For": "10.0.0.9"}}
            for _ in range(2):
                await held.enter_async_context(await _open(srv, **forwarded))
            for _ in range(3):
                with pytest.raises(websockets.InvalidStatus) as e:
                    await _open(srv, **forwarded)
                assert e.value.response.status_code == 429
            async with httpx.AsyncClient(base_url=srv.http_url) as http:
                metrics = (await http.get("/metrics")).text
        log = srv.log_text()
    assert f"{METRIC} 8.0" in metrics, [m for m in metrics.splitlines() if "refused" in m]
    said = re.findall(r"refused a (?:connection|websocket) from (\S+) with 429", log)
    assert sorted(said) == ["10.0.0.9", "127.0.0.2"], log


def test_the_repeats_are_said_in_one_line_with_their_count() -> None:
    now = [0.0]
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.refused_addresses")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        lines = RefusedAddresses(logger, clock=lambda: now[0])
        assert lines.refused_address("10.0.0.1")
        assert [lines.refused_address("10.0.0.1") for _ in range(4)] == [False] * 4
        assert lines.refused_address("10.0.0.2")  # another address: its own
        assert records == []
        now[0] = 61.0
        assert not lines.refused_address("10.0.0.1")  # said, and a new interval begins
        assert [r.getMessage() for r in records] == [
            "4 more connections from 10.0.0.1 refused with 429 in the last 61 s: too many "
            "connections"
        ]
        assert records[0].levelno == logging.WARNING
        lines.close()  # the server stops: what is held back is said
        assert records[-1].getMessage().startswith("1 more connections from 10.0.0.1")
    finally:
        logger.removeHandler(handler)


async def test_the_operations_routes_answer_an_address_at_its_limit(tmp_path: Path) -> None:
    """A Prometheus scraper or a load balancer's health check behind the same address
    (a NAT) as clients whose websockets hold every slot of MAX_CONNECTIONS_PER_IP still
    gets /metrics, /healthz and /readyz; anything else from that address is still 429,
    and so is an ops connection's next request on the same socket."""
    env = {"PALIMPSEST_MAX_CONNECTIONS_PER_IP": "2"}
    direct = {"local_addr": ("127.0.0.2", 0)}
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with (
        ServerProcess(tmp_path / "srv", env=env) as srv,
        contextlib.AsyncExitStack() as held,
        httpx.AsyncClient(base_url=srv.http_url, transport=transport) as http,
    ):
        for _ in range(2):
            await held.enter_async_context(await _open(srv, **direct))
        for path in ("/metrics", "/healthz", "/readyz", "/metrics?name[]=x", "/healthz"):
            r = await http.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text)
        assert "palimpsest_" in (await http.get("/metrics")).text
        r = await http.head("/healthz")
        assert r.status_code != 429, r.status_code
        # the limit holds for everything else
        for path in ("/api/docs", "/", "/metricsx", "/healthz/../api/docs"):
            r = await http.get(path)
            assert r.status_code == 429, (path, r.status_code)
        r = await http.post("/metrics")
        assert r.status_code == 429, r.status_code
        with pytest.raises(websockets.InvalidStatus) as e:
            await _open(srv, **direct)
        assert e.value.response.status_code == 429
        # an ops connection is not kept for another request: a keep-alive socket would
        # carry anything past the limit
        reader, writer = await asyncio.open_connection(
            srv.host, srv.port, local_addr=("127.0.0.2", 0)
        )
        writer.write(
            b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
            b"GET /api/docs HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        # sockets over the limit that stop before their head is whole are bounded (8 per
        # address, each until the handshake timeout): one more is refused at once
        slow = [
            await asyncio.open_connection(srv.host, srv.port, local_addr=("127.0.0.2", 0))
            for _ in range(OPS_SPARE_PER_ADDRESS)
        ]
        for _, w in slow:
            w.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            await w.drain()
        r = await http.get("/healthz")
        assert r.status_code == 429, r.status_code
        for _, w in slow:
            w.close()

        async def healthz() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await eventually(healthz, what="/healthz once the slow sockets are gone")
        # and once a websocket leaves, the address gets its slot back as before
        await held.aclose()
        r = await http.get("/api/docs")
        assert r.status_code == 200, r.text
