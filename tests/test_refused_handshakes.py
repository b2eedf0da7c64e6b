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
import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import eventually
from serverproc import ServerProcess

from palimpsest import client
from palimpsest.handshake import SPARE_PER_ADDRESS, RefusedAddresses

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


async def _raw_from_127_0_0_2(srv: ServerProcess, request: bytes) -> bytes:
    """What the server answers `request`, sent whole on a socket of 127.0.0.2's, until
    it closes the socket."""
    reader, writer = await asyncio.open_connection(srv.host, srv.port, local_addr=("127.0.0.2", 0))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def _fill_the_spare_slots(
    srv: ServerProcess,
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Every spare slot of 127.0.0.2 taken by a socket whose head never ends."""
    slow = [
        await asyncio.open_connection(srv.host, srv.port, local_addr=("127.0.0.2", 0))
        for _ in range(SPARE_PER_ADDRESS)
    ]
    for _, w in slow:
        w.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        await w.drain()
    return slow


def _is_the_limits_429(response: Any, limit: int) -> None:
    """`response` (httpx's or websockets') is the 429 of MAX_CONNECTIONS_PER_IP =
    `limit`: ``Retry-After: 1`` (docs/security.md's refusal table) and the API's JSON
    error, saying the limit (it was plain text, "too many connections from your
    address", without Retry-After)."""
    assert response.status_code == 429, response.status_code
    assert response.headers["retry-after"] == "1", response.headers
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.body if hasattr(response, "body") else response.content
    said = json.loads(body)
    assert said["error"] == "TooManyConnections", said
    assert f"at most {limit} connections at once from one address" in said["detail"], said


async def test_the_429_says_the_limit_in_json_with_retry_after(tmp_path: Path) -> None:
    """Every 429 of the per-address limit: a websocket over it, its own address's or one
    a trusted proxy forwards, and a socket over the limit with no spare slot left."""
    env = {"PALIMPSEST_MAX_CONNECTIONS_PER_IP": "2"}
    async with (
        ServerProcess(tmp_path / "srv", env=env) as srv,
        contextlib.AsyncExitStack() as held,
    ):
        direct = {"local_addr": ("127.0.0.2", 0)}
        forwarded = {"additional_headers": {"X-Forwarded-For": "10.0.0.9"}}
        for how in (direct, forwarded):
            for _ in range(2):
                await held.enter_async_context(await _open(srv, **how))
            with pytest.raises(websockets.InvalidStatus) as e:
                await _open(srv, **how)
            _is_the_limits_429(e.value.response, 2)
        # every spare slot taken: refused before its request is read
        slow = await _fill_the_spare_slots(srv)
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=srv.http_url, transport=transport) as http:
            _is_the_limits_429(await http.get("/api/docs"), 2)
        for _, w in slow:
            w.close()


async def test_the_python_client_says_the_limit_of_the_429(tmp_path: Path) -> None:
    """The Python client's error for that 429 reads its JSON as the other answers' are
    read ("TooManyConnections: at most 1 connection …"), not the body's raw text; and a
    limit of one says "connection", not "connections"."""
    env = {"PALIMPSEST_MAX_CONNECTIONS_PER_IP": "1"}
    async with ServerProcess(tmp_path / "srv", env=env) as srv:
        held: list[websockets.ClientConnection] = []

        async def one_open() -> bool:
            # (the start's readiness probe from this address may not be closed yet)
            with contextlib.suppress(websockets.InvalidStatus):
                held.append(await _open(srv))
            return bool(held)

        await eventually(one_open, what="one websocket open")
        try:
            with pytest.raises(client.RateLimited) as e:
                async with client.connect(srv.ws_url, "notes", user="bob"):
                    pass
        finally:
            await held[0].close()
    said = str(e.value)
    assert "TooManyConnections: at most 1 connection at once from one address" in said, said
    assert "{" not in said, said


async def test_plain_http_is_served_to_an_address_at_its_limit(tmp_path: Path) -> None:
    """An office behind one NAT address whose websockets hold every slot of
    MAX_CONNECTIONS_PER_IP: the next person still loads the page and its script, lists
    and reads documents, and a scraper or health check behind that address still sees
    the server (all of these were 429 but /metrics, /healthz and /readyz). Only a
    websocket upgrade is refused, and a request served over the limit does not keep
    its socket for another (which could then be an upgrade)."""
    env = {"PALIMPSEST_MAX_CONNECTIONS_PER_IP": "2"}
    direct = {"local_addr": ("127.0.0.2", 0)}
    # a socket per request (one kept from under the limit is not counted again)
    transport = httpx.AsyncHTTPTransport(
        local_address="127.0.0.2", limits=httpx.Limits(max_keepalive_connections=0)
    )
    async with (
        ServerProcess(tmp_path / "srv", env=env) as srv,
        contextlib.AsyncExitStack() as held,
        httpx.AsyncClient(base_url=srv.http_url, transport=transport) as http,
    ):
        r = await http.put("/api/docs/notes/text?user=ann", json={"text": "hello"})
        assert r.status_code == 200, r.text
        for _ in range(2):
            await held.enter_async_context(await _open(srv, **direct))
        r = await http.get("/api/docs/notes/versions/head?user=ann")
        assert r.status_code == 200 and "hello" in r.text, (r.status_code, r.text)
        # a write too (its own rate limit, MAX_HTTP_WRITES_PER_SECOND, still holds)
        r = await http.put("/api/docs/notes/text?user=ann", json={"text": "hello, all"})
        assert r.status_code == 200, r.text
        for path in (
            "/metrics", "/healthz", "/readyz", "/metrics?name[]=x", "/", "/static/palimpsest.js",
            "/api/docs?user=ann", "/api/docs/notes/events?user=ann",
        ):  # fmt: skip
            r = await http.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            assert r.headers["connection"] == "close", (path, r.headers)
        assert "palimpsest_" in (await http.get("/metrics")).text
        r = await http.head("/healthz")
        assert r.status_code == 200, r.status_code
        # no route: answered as it is under the limit, not refused
        r = await http.get("/api/nothing-here")
        assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
        # a websocket is still refused
        with pytest.raises(websockets.InvalidStatus) as e:
            await _open(srv, **direct)
        _is_the_limits_429(e.value.response, 2)
        # a request served over the limit does not keep its socket: a keep-alive socket
        # would carry a websocket upgrade past the limit's count
        answer = await _raw_from_127_0_0_2(
            srv,
            b"GET /api/docs?user=ann HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
            b"GET /ws/notes?user=ann HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: upgrade\r\n"
            b"upgrade: websocket\r\nsec-websocket-version: 13\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        # an upgrade that asks to be kept alive as well is still an upgrade
        answer = await _raw_from_127_0_0_2(
            srv,
            b"GET /ws/notes?user=ann HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"connection: keep-alive, Upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        # sockets over the limit that stop before their head is whole are bounded (8 per
        # address, each until the handshake timeout): one more is refused at once
        slow = await _fill_the_spare_slots(srv)
        r = await http.get("/healthz")
        assert r.status_code == 429, r.status_code
        for _, w in slow:
            w.close()

        async def healthz() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await eventually(healthz, what="/healthz once the slow sockets are gone")
        # and once a websocket leaves, the address gets its slot back as before
        await held.aclose()
        async with await _open(srv, **direct):
            pass
