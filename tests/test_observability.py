"""What an on-call engineer alerts on, scraped from /metrics over HTTP from a running
server after doing the thing: the process's own collectors and the build, the event
loop's lag and stalls, HTTP requests by route template, websocket disconnects by cause
(and their log line), with label sets that document names cannot grow."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import platform
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import closed_with, eventually, free_port, run_server
from floodhelp import flood
from scaleout import fresh_schema
from test_ops import scrape, val
from yclient import connect

from palimpsest import protocol as P
from palimpsest.closes import CAUSES
from palimpsest.logs import JSONFormatter
from palimpsest.metrics import Metrics
from palimpsest.settings import Settings
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent

#: the commit checked out where the tests run from (the server's code is this checkout's)
HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True,
                      capture_output=True, check=True).stdout.strip()  # fmt: skip

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(m: Scrape, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in m.items() if n == name}


def _started() -> float:
    """When this process started, in Unix seconds, from /proc (its start in clock ticks
    after the boot, and the boot's time)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))  # fmt: skip
    return boot + ticks / os.sysconf("SC_CLK_TCK")


async def test_process_gc_and_build_info_tell_processes_apart(tmp_path: Path) -> None:
    a = Settings(db=str(tmp_path / "a.db"), port=free_port(), instance="edit-a:1")
    b = Settings(db=str(tmp_path / "b.db"), port=free_port(), instance="edit-b:2")
    async with run_server(a) as sa, run_server(b) as sb:
        ma, mb = await scrape(sa.url), await scrape(sb.url)
        for m, instance in ((ma, "edit-a:1"), (mb, "edit-b:2")):
            info = series(m, "palimpsest_build_info")
            assert len(info) == 1, info
            labels, one = next(iter(info.items()))
            assert one == 1
            assert dict(labels) == {"instance_id": instance, "version": version("palimpsest"),
                                    "python": platform.python_version(),
                                    "revision": HEAD[:12]}  # fmt: skip
            assert val(m, "process_resident_memory_bytes") > 10 * 2**20
            assert val(m, "process_cpu_seconds_total") > 0
            # this process's start (the servers run in it), however long the suite has run
            assert abs(val(m, "process_start_time_seconds") - _started()) < 2
            assert val(m, "process_max_fds") > 0
            assert ("python_gc_collections_total", (("generation", "0"),)) in m
        # open fds are the process's: 12 more sockets show
        fds = val(ma, "process_open_fds")
        async with contextlib.AsyncExitStack() as stack:
            for i in range(12):
                await stack.enter_async_context(connect(sa.ws_url, f"fd{i}", user="ann"))
            during = await scrape(sa.url)
        assert val(during, "process_open_fds") >= fds + 12


async def test_event_loop_tasks_counted_at_scrape(tmp_path: Path) -> None:
    """palimpsest_event_loop_tasks is the loop's tasks at the scrape: positive, and
    up by at least one a connection while 8 are open."""
    settings = Settings(db=str(tmp_path / "t.db"), port=free_port())
    async with run_server(settings) as srv:
        before = val(await scrape(srv.url), "palimpsest_event_loop_tasks")
        assert before > 0
        async with contextlib.AsyncExitStack() as stack:
            for i in range(8):
                await stack.enter_async_context(connect(srv.ws_url, f"tasks{i}", user="ann"))
            during = await scrape(srv.url)
        assert val(during, "palimpsest_connections") == 8
        assert val(during, "palimpsest_event_loop_tasks") >= before + 8


async def test_loop_lag_and_stalls_are_counted(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "l.db"), port=free_port())
    async with run_server(settings) as srv:

        async def probing() -> Scrape | None:
            m = await scrape(srv.url)
            return m if val(m, "palimpsest_loop_lag_seconds_count") >= 3 else None

        before = await eventually(probing, what="the probe observing")
        time.sleep(0.45)  # noqa: ASYNC251  # the server's loop is this one: held 450 ms
        stalls = val(before, "palimpsest_loop_stalls_total")

        async def stalled() -> Scrape | None:
            m = await scrape(srv.url)
            return m if val(m, "palimpsest_loop_stalls_total") > stalls else None

        after = await eventually(stalled, what="the stall counted")
    over_quarter = val(after, "palimpsest_loop_lag_seconds_count") - val(
        after, "palimpsest_loop_lag_seconds_bucket", le="0.25"
    )
    assert over_quarter >= 1  # the probe due during the hold was >= 400 ms late
    assert val(after, "palimpsest_loop_lag_seconds_sum") >= 0.4


async def test_http_requests_by_route_template_and_status_class(tmp_path: Path) -> None:
    """1,000 document names are one route: the label set does not grow."""
    settings = Settings(db=str(tmp_path / "h.db"), port=free_port())
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.get("/api/docs/first/events")).status_code == 404  # no such doc
        assert (await http.get("/no/such/thing-0")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.post("/api/docs/first/events")).status_code == 405
        # refused by the request guard before any route saw it: still its route
        foreign = {"Origin": "https://elsewhere.example"}
        r = await http.post("/api/docs/first/restore", headers=foreign, json={"seq": 0})
        assert r.status_code == 403, r.text
        await scrape(srv.url)  # (counted by the next)
        first = await scrape(srv.url)
        for i in range(1000):
            r = await http.get(f"/api/docs/doc-{i}-{'x' * (i % 50)}/events")
            assert r.status_code == 404
            if i % 5 == 0:
                await http.get(f"/no/such/thing-{i}")
        after = await scrape(srv.url)
    assert set(after) == set(first), set(after) ^ set(first)
    req = "palimpsest_http_requests_total"
    events = {"route": "/api/docs/{doc}/events", "method": "GET"}
    assert val(first, req, **events, status="4xx") == 1
    assert val(after, req, **events, status="4xx") == 1001
    assert val(after, req, route="unmatched", method="GET", status="4xx") == 201
    assert val(after, req, route="/healthz", method="GET", status="2xx") == 1
    assert val(after, req, **{**events, "method": "POST"}, status="4xx") == 1
    restore = {"route": "/api/docs/{doc}/restore", "method": "POST", "status": "4xx"}
    assert val(after, req, **restore) == 1
    # each scrape is a request too (the first counted by the second)
    assert val(after, req, route="/metrics", method="GET", status="2xx") == 2
    assert not any("doc-" in v for _, labels in after for _, v in labels)


async def test_a_thousand_documents_add_no_series(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "c.db"), port=free_port(), unload_after_seconds=0.05)
    async with run_server(settings) as srv:

        async def visit(doc: str) -> None:
            async with connect(srv.ws_url, doc, user="ann"):
                pass

        await visit("warm-up")
        await eventually(lambda: not srv.backend.rooms.loaded)
        await scrape(srv.url)  # (counted by the next)
        first = await scrape(srv.url)
        for start in range(0, 1000, 50):
            await asyncio.gather(*(visit(f"doc-{i}") for i in range(start, start + 50)))
        await eventually(lambda: not srv.backend.rooms.loaded, timeout=30)
        after = await scrape(srv.url)
    assert set(after) == set(first), set(after) ^ set(first)
    cause = "palimpsest_disconnects_total"
    assert val(after, cause, cause="client_closed") - val(first, cause, cause="client_closed") == (
        1000
    )


async def test_disconnects_counted_by_cause_and_logged(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "d.db"), port=free_port(), max_events_per_second=20,
                        max_frame_bytes=100_000)  # fmt: skip
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JSONFormatter())
    ws_log = logging.getLogger("palimpsest.ws")
    ws_log.addHandler(handler)
    old_level = ws_log.level
    ws_log.setLevel(logging.INFO)
    try:
        async with run_server(settings) as srv:
            before = await scrape(srv.url)
            # every cause is a series from the start, at 0
            for cause in CAUSES:
                assert ("palimpsest_disconnects_total", (("cause", cause),)) in before
                assert val(before, "palimpsest_disconnects_total", cause=cause) == 0

            async with connect(srv.ws_url, "calm", user="ann") as c:
                c.insert(0, "hello")
                await eventually(lambda: srv.backend.rooms.get_loaded("calm").seq == 1)  # type: ignore[union-attr]

            # over the rate: 200 updates at 20 a second (bursts of 40)
            ws, _ = await flood(f"{srv.ws_url}/flood?user=flood")
            assert (await closed_with(ws))[0] == 1013

            # a frame over max_frame_bytes: 4413
            async with websockets.connect(f"{srv.ws_url}/big?user=b", compression=None) as ws:
                await ws.send(P.encode_awareness(b"\x00" * 200_000))
                assert (await closed_with(ws))[0] == 4413

            # a text frame: 4400
            async with websockets.connect(f"{srv.ws_url}/text?user=t", compression=None) as ws:
                await ws.send("hello")
                assert (await closed_with(ws))[0] == 4400

            # the socket dropped without a close frame
            ws = await websockets.connect(f"{srv.ws_url}/lost?user=l", compression=None)
            await eventually(lambda: srv.backend.rooms.get_loaded("lost") is not None
                             and srv.backend.rooms.get_loaded("lost").peers)  # fmt: skip
            ws.transport.abort()

            # the server going away: 1001 to each
            async with (
                websockets.connect(f"{srv.ws_url}/bye?user=x", compression=None) as w1,
                websockets.connect(f"{srv.ws_url}/bye?user=y", compression=None) as w2,
            ):
                await eventually(lambda: len(getattr(srv.backend.rooms.get_loaded("bye"),
                                                     "peers", ())) == 2)  # fmt: skip
                await srv.backend.going_away()
                assert [(await closed_with(w))[0] for w in (w1, w2)] == [1001, 1001]

            want = {"client_closed": 1, "rate_limit": 1, "too_large": 1, "protocol_error": 1,
                    "connection_lost": 1, "server_shutdown": 2}  # fmt: skip

            async def counted() -> Scrape | None:
                m = await scrape(srv.url)
                got = {c: val(m, "palimpsest_disconnects_total", cause=c) for c in CAUSES}
                return m if got == {c: want.get(c, 0) for c in CAUSES} else None

            await eventually(counted, what=f"disconnects counted as {want}")
    finally:
        ws_log.removeHandler(handler)
        ws_log.setLevel(old_level)

    said = [json.loads(line) for line in lines.getvalue().splitlines()]
    gone = {r["doc"]: r for r in said if r["msg"].startswith("disconnect ")}
    rated = gone["flood"]
    assert (rated["cause"], rated["code"], rated["user"]) == ("rate_limit", 1013, "flood")
    assert "per second" in rated["reason"] and rated["seconds"] >= 0
    assert rated["peer"].startswith(settings.instance + "/")
    assert "cause=rate_limit code=1013" in rated["msg"] and "closed by the server" in rated["msg"]
    assert (gone["calm"]["cause"], gone["calm"]["code"]) == ("client_closed", 1000)
    assert "closed by the client" in gone["calm"]["msg"]
    assert gone["lost"]["cause"] == "connection_lost" and gone["lost"]["code"] in (1005, 1006)
    assert (gone["big"]["cause"], gone["big"]["code"]) == ("too_large", 4413)
    connects = [r for r in said if r["msg"].startswith("connect ")]
    assert {r["doc"] for r in connects} >= {"calm", "flood", "big", "text", "lost", "bye"}


def _one_update(text: str) -> bytes:
    from pycrdt import Doc, Text

    d: Doc = Doc()
    d["text"] = Text(text)
    return d.get_update()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_documents_in_the_store_are_a_gauge_counted_at_most_every_so_often(
    tmp_path: Path, kind: str
) -> None:
    """palimpsest_documents is the store's documents (20,000 of them here, written
    before the start), counted by the store at a scrape and served from that count for
    docs_seconds: documents made and deleted since show at the next count, not before.
    There was no such gauge: only palimpsest_rooms_open, the loaded ones."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / 'd.db'}"
        else:
            url = await stack.enter_async_context(fresh_schema())
        settings = Settings(store=url, port=free_port(), unload_after_seconds=0.05)
        store = open_store(url)
        await store.start()
        try:
            update = _one_update("x")
            for start in range(0, 20_000, 1000):
                await store.append([(f"seeded-{i}", [NewEvent("ann", "edit", update)])
                                    for i in range(start, start + 1000)])  # fmt: skip
        finally:
            await store.stop()
        srv = await stack.enter_async_context(run_server(settings))
        metrics = srv.backend.extension(Metrics)
        assert metrics is not None
        assert val(await scrape(srv.url), "palimpsest_documents") == 20_000
        for doc in ("made-1", "made-2"):
            async with connect(srv.ws_url, doc, user="ann") as c:
                c.insert(0, "hello")
                await eventually(lambda d=doc: _has_events(srv, d))  # type: ignore[misc]
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.delete("/api/docs/seeded-7")
            assert r.status_code in (200, 204), r.text
        # counted less than docs_seconds ago: the last count is served
        assert val(await scrape(srv.url), "palimpsest_documents") == 20_000
        metrics.docs_seconds = 0  # the next scrape counts again
        m = await scrape(srv.url)
        assert val(m, "palimpsest_documents") == 20_001
        assert ("palimpsest_rooms_open", ()) in m


async def _has_events(srv: Any, doc: str) -> bool:
    return bool(await srv.backend.store.head(doc))
