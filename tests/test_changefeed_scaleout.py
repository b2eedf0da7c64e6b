"""The changefeed with several processes on PostgreSQL + Redis: events committed by
another process arrive on a stream live (woken by the fan-out's messages: the store
poll and heartbeat are set far beyond the test's patience), in order; and a webhook
configured on every process is delivered once, by whichever holds its lease."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from conftest import PG_PORT, eventually, free_port, run_server
from feedhelp import RawStream, type_into
from scaleout import cluster, fanout_url, fresh_schema, open_store
from serverproc import ServerProcess
from stallproxy import StallingProxy
from webhook_receiver import Receiver

from palimpsest.settings import Settings

pytestmark = pytest.mark.postgres

FAST_RETRY = ["--webhook-retry-max", "0.3"]


async def test_events_from_another_process_arrive_live_in_order(tmp_path: Path) -> None:
    async with fresh_schema() as url, cluster(
        tmp_path, 2, store_url=url, fanout=fanout_url(),
    ) as c:  # fmt: skip
        for p in c.procs:  # restart with a poll and heartbeat of 60 s
            p.env.update({"PALIMPSEST_CHANGEFEED_POLL": "60",
                          "PALIMPSEST_CHANGEFEED_HEARTBEAT": "60"})  # fmt: skip
            await p.arestart()
        p0, p1 = c.procs
        async with RawStream(f"{p0.http_url}/api/events/stream") as everything, RawStream(
            f"{p0.http_url}/api/docs/shared/events/stream"
        ) as one:  # fmt: skip
            await asyncio.gather(
                type_into(p1.ws_url, "shared", [f"p1-{i} " for i in range(6)], user="bo"),
                type_into(p0.ws_url, "local", [f"p0-{i} " for i in range(4)], user="al"),
            )
            got = await everything.events(10, timeout=10)
            mine = await one.events(6, timeout=10)
        async with open_store(url) as store:
            log = [(e.doc, e.seq, e.pos) for e in await store.read_all()]
    assert [(e["doc"], e["seq"], e["pos"]) for e in got] == log
    assert [e["seq"] for e in mine] == [1, 2, 3, 4, 5, 6]
    assert {e["actor"] for e in mine} == {"bo"}


async def test_a_webhook_on_every_process_is_delivered_once(tmp_path: Path) -> None:
    with Receiver() as rx:
        async with fresh_schema() as url, cluster(
            tmp_path, 2, store_url=url, fanout=fanout_url(),
            extra=["--webhook", rx.url, *FAST_RETRY],
        ) as c:  # fmt: skip
            await asyncio.gather(
                type_into(c.procs[0].ws_url, "d0", [f"x{i}" for i in range(15)]),
                type_into(c.procs[1].ws_url, "d1", [f"y{i}" for i in range(15)]),
            )
            async with open_store(url) as store:
                log = [(e.doc, e.seq, e.pos) for e in await store.read_all()]
                await eventually(lambda: len(rx.accepted_events()) >= len(log), timeout=20,
                                 what="everything delivered")  # fmt: skip
                (row,) = await store.webhook_cursors().list()
    got = [(e["doc"], e["seq"], e["pos"]) for e in rx.accepted_events()]
    assert got == log  # once each, in commit order
    assert row.cursor == log[-1][2] and row.delivered == len(log)


async def test_without_redis_the_poll_still_brings_other_processes_events(
    tmp_path: Path,
) -> None:
    from serverproc import free_port

    dead_redis = f"redis://127.0.0.1:{free_port()}/0?prefix=nobody"  # nothing listens there
    async with fresh_schema() as url, cluster(tmp_path, 2, store_url=url, fanout=dead_redis) as c:
        p0, p1 = c.procs
        p0.env["PALIMPSEST_CHANGEFEED_POLL"] = "0.3"
        await p0.arestart()
        async with RawStream(f"{p0.http_url}/api/docs/solo/events/stream") as s:
            await type_into(p1.ws_url, "solo", ["one", "two", "three"])
            got = await s.events(3, timeout=15)
    assert [e["seq"] for e in got] == [1, 2, 3]


async def test_a_cursor_past_a_bigint_is_refused_not_sent_to_postgresql(tmp_path: Path) -> None:
    """`?after=` (or Last-Event-ID) beyond 2**63-1 went to asyncpg, which raised once the
    stream had started: a traceback in the log and a broken stream. It is a 400 now, on
    every route that takes a cursor."""
    async with fresh_schema() as url, ServerProcess(tmp_path, extra_args=["--store", url]) as p:
        base = p.http_url
        await type_into(p.ws_url, "notes", ["a", "b"], user="al")
        huge = str(2**63)
        async with httpx.AsyncClient(timeout=5) as http:
            for path, headers in (
                (f"/api/events/stream?after={huge}", {}),
                ("/api/events/stream", {"Last-Event-ID": huge}),
                (f"/api/docs/notes/events/stream?after={huge}", {}),
                (f"/api/docs/notes/events?after={huge}", {}),
                (f"/api/docs/notes/sessions?after={huge}", {}),
            ):
                r = await http.get(base + path, headers=headers)
                assert r.status_code == 400, (path, r.status_code, r.text)
                assert "between 0 and 9223372036854775807" in r.json()["detail"], r.text
            # the largest bigint reaches PostgreSQL as a cursor like any other: past this
            # log's end, it is refused as such (409), not with a traceback
            r = await http.get(f"{base}/api/events/stream?after={2**63 - 1}")
            assert r.status_code == 409 and "past this log's last position" in r.text, r.text
            async with http.stream("GET", f"{base}/api/events/stream?after=1") as r:
                assert r.status_code == 200
        assert "Traceback" not in p.log_text()


async def test_a_store_outage_ends_open_streams_cleanly_and_new_ones_get_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL unreachable (every connection cut): open streams, global and of one
    document, end their bodies cleanly with one warning each (they died with "Exception
    in ASGI application" and an incomplete chunked body), a stream asked for meanwhile
    is refused with 503 and Retry-After (it was 200, then died), and once the store is
    back a follower resumes after its last id with nothing lost."""
    uvicorn_errors = logging.getLogger("uvicorn.error")  # does not propagate to the root
    uvicorn_errors.addHandler(caplog.handler)
    try:
        with StallingProxy(PG_PORT) as proxy:
            async with fresh_schema() as url:
                via = url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
                settings = Settings(store=via, port=free_port(), changefeed_heartbeat=0.2)
                async with run_server(settings) as srv:
                    await outage_and_back(srv.url, f"ws://127.0.0.1:{srv.port}/ws", proxy)
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
    assert "Exception in ASGI application" not in caplog.text
    ended = [r.getMessage() for r in caplog.records if "changefeed stream" in r.getMessage()]
    assert len(ended) == 2, ended
    assert all(r.levelno == logging.WARNING for r in caplog.records if "stream" in r.getMessage())


async def outage_and_back(http_url: str, ws_url: str, proxy: StallingProxy) -> None:
    await type_into(ws_url, "notes", ["a", "b"])
    every, one = f"{http_url}/api/events/stream", f"{http_url}/api/docs/notes/events/stream"
    async with RawStream(every) as g, RawStream(one) as d:
        seen = await g.events(2)
        await d.events(2)
        await asyncio.to_thread(proxy.cut)
        for stream in (g, d):  # the body ends: no error while reading it
            with pytest.raises(StopAsyncIteration):
                while True:
                    await stream.next()
    for url in (every, one):
        async with RawStream(url) as refused:
            assert refused.status == 503, refused.body
            assert refused.response_headers["retry-after"] == "1"
    await asyncio.to_thread(proxy.resume)
    last = {"Last-Event-ID": str(seen[-1]["_id"])}

    async def answers() -> bool:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{http_url}/readyz")).status_code == 200

    await eventually(answers, timeout=30, what="the store answers again")
    async with RawStream(every, headers=last) as g:
        await type_into(ws_url, "notes", ["c"])
        [ev] = await g.events(1)
    assert (ev["doc"], ev["seq"]) == ("notes", 3)
