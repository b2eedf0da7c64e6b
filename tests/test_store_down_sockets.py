"""Websockets while PostgreSQL is down: what the client, the metrics and the log see.

A field test stopped the PostgreSQL of two processes and opened one y-websocket client
on a document not loaded: the socket opened and was closed with 1013 (the document
cannot be loaded), which made y-websocket reset its back-off and come back about seven
times a second; each attempt logged an unthrottled ``WARNING cannot load DOC`` (650 lines
in 20 s under load) and was counted twice, in ``palimpsest_refused_total{reason=
"store_unavailable"}`` and ``palimpsest_disconnects_total{cause="store_error"}``.

A private PostgreSQL cluster (scaleout.PrivatePostgres, on a port of 21590-21599), stopped
and started by the test: the machine's shared one is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import eventually, free_port, run_server
from prometheus_client.parser import text_string_to_metric_families
from scaleout import PrivatePostgres
from yclient import connect

from palimpsest import hocuspocus as H
from palimpsest import protocol as P
from palimpsest.routes import ws as ws_route
from palimpsest.settings import Settings

#: the loopback ports this file's PostgreSQL may take
PORTS = range(21590, 21600)


def _free_of(ports: range) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports}")


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.port = _free_of(PORTS)
    pg.init()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


def _counts(text: str) -> tuple[float, float]:
    """(refused_total{store_unavailable}, disconnects_total{store_error})"""
    refused = disconnects = 0.0
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == "palimpsest_refused_total" and s.labels["reason"] == "store_unavailable":
                refused = s.value
            if s.name == "palimpsest_disconnects_total" and s.labels["cause"] == "store_error":
                disconnects = s.value
    return refused, disconnects


async def _attempt(url: str) -> str:
    """One websocket to `url`: "503" when refused at the handshake, else the close code
    the server closed it with."""
    try:
        async with websockets.connect(url, open_timeout=10) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return str(ws.close_code)
    except websockets.InvalidStatus as e:
        assert e.response.headers.get("Retry-After"), e.response.headers
        return str(e.response.status_code)


async def test_a_store_known_down_refuses_new_sockets_at_the_handshake_counted_once_said_once(
    tmp_path: Path,
    pg: PrivatePostgres,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="palimpsest")
    settings = Settings(store=pg.url, port=free_port(), unload_after_seconds=600)
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, "warm", user="ann") as c:
            c.insert(0, "kept")

            async def logged() -> bool:
                return await srv.backend.store.head("warm") >= 1

            await eventually(logged, what="the edit committed")
        assert _counts((await http.get("/metrics")).text) == (0, 0)
        await asyncio.to_thread(pg.stop)
        # (the window in which the store counts as down, long here: no test of timings)
        monkeypatch.setattr(ws_route, "STORE_DOWN_SECONDS", 3600.0)
        seen = [await _attempt(f"{srv.ws_url}/cold?user=zed") for _ in range(5)]
        # the first is accepted and closed (the load fails); the next are refused at the
        # handshake with 503, which a y-websocket client backs off from
        assert seen == ["1013", "503", "503", "503", "503"], seen
        # each socket counted once: the accepted one as a disconnect, the refused ones
        # as refusals (docs/operations.md: handshakes refused are not disconnects)
        assert _counts((await http.get("/metrics")).text) == (4, 1)
        said = [r for r in caplog.records if r.getMessage().startswith("cannot load cold")]
        assert len(said) == 1 and said[0].levelno == logging.WARNING, said
        assert getattr(said[0], "doc", None) == "cold", said[0].__dict__
        # a /hocuspocus socket whose document cannot load is closed: counted once too
        for _ in range(2):
            async with websockets.connect(f"ws://127.0.0.1:{srv.port}/hocuspocus") as hws:
                body = bytes([H.AUTH_TOKEN]) + P.write_var_string("zed")
                await hws.send(H.prefix("hcold") + P.write_var_uint(H.AUTH) + body)
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        await asyncio.wait_for(hws.recv(), 10)
                assert hws.close_code == 1013, hws.close_code

        async def counted() -> bool:  # (the socket's end is counted after its close)
            return _counts((await http.get("/metrics")).text) == (4, 3)

        await eventually(counted, what="each /hocuspocus socket counted once, as a disconnect")
        said = [r for r in caplog.records if r.getMessage().startswith("cannot load hcold")]
        assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG], said
        assert getattr(said[0], "doc", None) == "hcold", said[0].__dict__
        # a document loaded here is still served: only loads need the store
        async with connect(srv.ws_url, "warm", user="bob") as c:
            assert c.content == "kept"
        await asyncio.to_thread(pg.start)
        monkeypatch.setattr(ws_route, "STORE_DOWN_SECONDS", 0.0)

        async def served() -> bool:
            try:
                async with connect(srv.ws_url, "cold", user="zed") as c:
                    return c.ws.close_code is None
            except Exception:
                return False

        await eventually(served, what="the document served once PostgreSQL is back")


async def test_the_compaction_base_checks_that_fail_while_the_store_is_down_are_said_once(
    tmp_path: Path, pg: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """`compaction bases not checked: PostgreSQL is unavailable` was logged once a second
    (each check) for as long as the store was down. Now the first failure is a WARNING,
    the next ones DEBUG (counted, and said again with their count once a minute), and
    the check that works again says after how many."""
    from palimpsest.base_watch import BaseWatch

    caplog.set_level(logging.DEBUG, logger="palimpsest")
    settings = Settings(store=pg.url, port=free_port(), unload_after_seconds=600)
    async with run_server(settings) as srv:
        watch = srv.backend.extension(BaseWatch)
        assert watch is not None and watch.interval > 0
        async with connect(srv.ws_url, "open", user="ann") as c:
            c.insert(0, "x")
            await asyncio.to_thread(pg.stop)
            checks = watch.checks
            await eventually(lambda: watch.checks >= checks + 4, what="4 failed checks")
            said = [r for r in caplog.records if r.getMessage().startswith("compaction bases")]
            assert said[0].levelno == logging.WARNING, said
            assert [r.levelno for r in said[1:]] == [logging.DEBUG] * (len(said) - 1), said
            assert len(said) >= 3, said
            await asyncio.to_thread(pg.start)

            def again() -> bool:
                return any("checked again after" in r.getMessage() for r in caplog.records)

            await eventually(again, timeout=30, what="the checks working again, said")


async def test_documents_healed_from_the_store_after_a_redis_outage_are_said_per_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, the gap check applies the other process's events from the store:
    it said `fan-out: DOC behind the log by N events; applying them from the store` once
    per document per check (300 lines for 220 documents in a field test). Now one INFO
    line per check says how many documents, how many events, and names a few; each
    document's line is at DEBUG."""
    import re

    from scaleout import PrivateRedis, fanout_url, fresh_schema

    caplog.set_level(logging.DEBUG, logger="palimpsest")
    redis = PrivateRedis()
    redis.port = _free_of(PORTS)
    docs = [f"d{i}" for i in range(6)]
    with redis:
        bus = fanout_url(redis.url, check=0.5)
        async with (
            fresh_schema() as store,
            run_server(Settings(store=store, fanout=bus, port=free_port(), instance="a",
                                unload_after_seconds=600)) as a,
            run_server(Settings(store=store, fanout=bus, port=free_port(), instance="b",
                                unload_after_seconds=600)) as b,
            contextlib.AsyncExitStack() as stack,
        ):  # fmt: skip
            readers = [
                await stack.enter_async_context(connect(a.ws_url, d, user="r")) for d in docs
            ]
            redis.kill()  # (the outage: the bus carries nothing from here on)
            for d in docs:
                async with connect(b.ws_url, d, user="w") as w:
                    w.insert(0, f"from b in {d}")

                    async def logged(d: str = d) -> bool:
                        return await b.backend.store.head(d) >= 1

                    await eventually(logged, what=f"{d} committed by b")
            for d, r in zip(docs, readers, strict=True):
                await eventually(lambda r=r, d=d: r.content == f"from b in {d}", timeout=30,
                                 what=f"{d} healed from the store on a")  # fmt: skip
    per_doc = re.compile(r"^fan-out: d\d behind the log by \d+ events")
    each = [r for r in caplog.records if per_doc.match(r.getMessage())]
    assert {r.getMessage().split()[1] for r in each} == set(docs), each
    assert all(r.levelno == logging.DEBUG for r in each), [r.getMessage() for r in each]
    summed = [
        r for r in caplog.records
        if r.levelno == logging.INFO and re.match(r"fan-out: \d+ documents? behind", r.getMessage())
    ]  # fmt: skip
    assert summed and len(summed) < len(each) + 1, [r.getMessage() for r in summed]
    assert sum(int(r.getMessage().split()[1]) for r in summed) == len(each), summed


async def test_snapshots_and_generation_reads_that_fail_while_the_store_is_down_are_said_once(
    tmp_path: Path, pg: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """A field test's outage logged `snapshot DOC@N not written: PostgreSQL is
    unavailable` once per document (220 lines), and `DOC: its generation could not be
    read` once per new document (82). Now the first of each is a WARNING, the next ones
    DEBUG, counted with a few names in the next WARNING (once a minute), and the first
    that works again says after how many."""
    caplog.set_level(logging.DEBUG, logger="palimpsest")
    settings = Settings(store=pg.url, port=free_port(), unload_after_seconds=600)
    docs = [f"s{i}" for i in range(8)]
    async with run_server(settings) as srv, contextlib.AsyncExitStack() as stack:
        backend = srv.backend
        for doc in docs:
            c = await stack.enter_async_context(connect(srv.ws_url, doc, user="ann"))
            c.insert(0, f"text of {doc}")

        async def committed() -> bool:
            heads = await backend.store.heads(docs)
            return all(heads.get(d, 0) >= 1 for d in docs)

        await eventually(committed, what="an edit of each document committed")
        rooms = [backend.rooms.live[d] for d in docs]
        await asyncio.to_thread(pg.stop)
        caplog.clear()

        def lines(text: str) -> list[logging.LogRecord]:
            return [r for r in caplog.records if text in r.getMessage()]

        # every room's snapshot fails (as its quiet timer's or its unload's would)
        for room in rooms:
            task = backend.snapshots.take(room)
            assert task is not None
            await task
        said = lines("not written: ")
        assert len(said) == len(docs), said
        assert [r.levelno for r in said] == [logging.WARNING] + [logging.DEBUG] * (len(docs) - 1)
        assert [getattr(r, "doc", None) for r in said] == docs
        # every room's generation read fails (a new document's, after its first append)
        for room in rooms:
            assert room.generation_of is not None
            await room._learn_generation(room.generation_of)
        read = lines("its generation could not be read")
        assert len(read) == len(docs), read
        assert [r.levelno for r in read] == [logging.WARNING] + [logging.DEBUG] * (len(docs) - 1)
        # the next WARNING (once a minute: here at once) counts those held back
        backend.snapshots._failures.every = 0.0
        task = backend.snapshots.take(rooms[0])
        assert task is not None
        await task
        last = lines("not written: ")[-1]
        assert last.levelno == logging.WARNING, last
        assert f"({len(docs) - 1} more snapshots not written" in last.getMessage(), last
        assert "s1, s2, s3, s4, s5, ..." in last.getMessage(), last
        await asyncio.to_thread(pg.start)

        async def written() -> bool:
            task = backend.snapshots.take(rooms[1])
            if task is not None:
                await task
            return bool(lines("snapshots written again"))

        await eventually(written, timeout=30, what="a snapshot written again, said")
        again = lines("snapshots written again")
        assert len(again) == 1 and again[0].levelno == logging.INFO, again
        assert f"after {len(docs) + 1} snapshots not written" in again[0].getMessage(), again
