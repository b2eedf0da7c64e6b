"""Operating the server: /metrics, /healthz, /readyz and the log lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import PG_PORT, REDIS_URL, eventually, free_port, run_server
from prometheus_client.parser import text_string_to_metric_families
from scaleout import PrivateRedis, fanout_url, fresh_schema
from stallproxy import StallingProxy
from yclient import connect

from palimpsest import protocol as P
from palimpsest.fanout import Fanout
from palimpsest.settings import Settings


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        r = await http.get(url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_change_as_events_flow(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "m.db"), port=free_port(), snapshot_every=5,
                        unload_after_seconds=0.3)  # fmt: skip
    async with run_server(settings) as srv:
        before = await scrape(srv.url)
        assert all(k[0].startswith(("palimpsest_", "process_", "python_gc_")) for k in before)
        assert val(before, "palimpsest_events_appended_total", kind="edit") == 0
        assert val(before, "palimpsest_connections") == 0
        async with connect(srv.ws_url, "metered", user="ann") as c:
            for i in range(12):
                c.insert(len(c.content), f"{i},")
            await eventually(lambda: srv.backend.rooms.get_loaded("metered") is not None
                             and srv.backend.rooms.get_loaded("metered").seq == 12)  # fmt: skip
            answer = await c.request({"type": "undo"})
            assert answer["ok"], answer

            async def during() -> dict | None:  # type: ignore[type-arg]
                m = await scrape(srv.url)
                return m if val(m, "palimpsest_snapshots_total") >= 1 else None

            mid = await eventually(during, what="a snapshot at every=5")
        assert val(mid, "palimpsest_events_appended_total", kind="edit") == 12
        assert val(mid, "palimpsest_events_appended_total", kind="undo") == 1
        assert val(mid, "palimpsest_undo_operations_total", op="undo") == 1
        assert val(mid, "palimpsest_connections") == 1
        assert val(mid, "palimpsest_rooms_open") == 1
        assert val(mid, "palimpsest_commit_batch_events_count") >= 1
        assert val(mid, "palimpsest_commit_batch_events_sum") == 13
        assert val(mid, "palimpsest_commit_batch_seconds_count") >= 1
        assert val(mid, "palimpsest_room_load_seconds_count") == 1
        assert val(mid, "palimpsest_snapshot_seconds_count") >= 1
        assert val(mid, "palimpsest_snapshot_bytes_total") > 0

        # a refused connection is counted by reason

        with contextlib.suppress(websockets.ConnectionClosed):
            async with websockets.connect(srv.ws_url + "/bad%20name!") as ws:
                await ws.recv()

        async def after() -> dict | None:  # type: ignore[type-arg]
            m = await scrape(srv.url)
            done = val(m, "palimpsest_connections") == 0 and val(m, "palimpsest_rooms_open") == 0
            return (
                m if done and val(m, "palimpsest_refused_total", reason="doc_name_error") else None
            )

        end = await eventually(after, what="disconnect, unload and a refusal seen")
        assert val(end, "palimpsest_refused_total", reason="doc_name_error") == 1


REPO = Path(__file__).resolve().parent.parent


def metric_names(text: str) -> set[str]:
    """The metric names `text` gives in backticks, as a scrape spells them (a counter
    with `_total`): `x_{a,b}_y` spelled out, labels at the end (`{route,method}`) left off."""
    names: set[str] = set()
    for name in re.findall(r"`((?:palimpsest|process|python_gc)_[a-z_{},]+)`", text):
        name = re.sub(r"(?<=[a-z])\{[^}]*\}$", "", name)  # its labels: {route,method,status}
        some = re.fullmatch(r"(.*)\{(.*)\}(.*)", name)  # palimpsest_x_{a,b}_total
        names.update([some[1] + part + some[3] for part in some[2].split(",")] if some else [name])
    return names


async def test_every_metric_served_is_in_the_operations_table(tmp_path: Path) -> None:
    """Five metrics (sealed events, stored attribution indexes, their upkeep's CPU, the
    disk's warm syncs, changefeed streams) were served and named nowhere in the table,
    and docs/changefeed.md named two counters without their `_total`. A server with
    everything that adds metrics (SQLite with fsync and a warm disk, a fan-out bus, a
    webhook) is scraped: each family it serves is in the table of docs/operations.md,
    and no page names a metric it does not serve."""
    settings = Settings(db=str(tmp_path / "m.db"), port=free_port(), fanout=fanout_url(),
                        webhooks=(f"http://127.0.0.1:{free_port()}/hook",))  # fmt: skip
    async with run_server(settings) as srv, httpx.AsyncClient() as http:
        r = await http.get(srv.url + "/metrics")
    served = {
        f.name + "_total" if f.type == "counter" else f.name
        for f in text_string_to_metric_families(r.text)
    }
    assert "palimpsest_disk_warm_syncs_total" in served and "palimpsest_webhook_cursor" in served
    ops = (REPO / "docs" / "operations.md").read_text()
    table = ops[ops.index("### Metrics") :]
    table = "\n".join(re.findall(r"^\|.*", table[: table.index("\n###", 1)], re.M))
    missing = served - metric_names(table)
    assert not missing, f"served, not in docs/operations.md's table: {missing}"
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        unknown = metric_names(page.read_text()) - served
        assert not unknown, f"{page.name} names metrics not served: {unknown}"


async def test_metrics_registries_are_per_backend(tmp_path: Path) -> None:
    a = Settings(db=str(tmp_path / "a.db"), port=free_port())
    b = Settings(db=str(tmp_path / "b.db"), port=free_port())
    async with run_server(a) as sa, run_server(b) as sb:
        async with connect(sa.ws_url, "only-a", user="ann") as c:
            c.insert(0, "x")
            await eventually(lambda: sa.backend.rooms.get_loaded("only-a").seq == 1)  # type: ignore[union-attr]
        ma, mb = await scrape(sa.url), await scrape(sb.url)
    assert val(ma, "palimpsest_events_appended_total", kind="edit") == 1
    assert val(mb, "palimpsest_events_appended_total", kind="edit") == 0


async def test_healthz_and_readyz(server) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "alive", "event_loop": "asyncio"}
        r = await http.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "store": "ok", "commits": "ok", "fanout": "off"}


# --- readiness when the store goes away: PostgreSQL behind a TCP relay we can cut ----------


class Relay:
    """A TCP relay to a real server; cut() drops every connection and stops listening."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self._writers |= {w, uw}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()


@contextlib.asynccontextmanager
async def relay_to(port: int) -> AsyncIterator[Relay]:
    relay = Relay(port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.cut()


@pytest.mark.postgres
async def test_readyz_fails_when_the_store_is_down(tmp_path: Path) -> None:
    async with fresh_schema() as url, relay_to(PG_PORT) as relay:
        settings = Settings(store=url.replace(f":{PG_PORT}/", f":{relay.port}/"), port=free_port())
        async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get("/readyz")
            assert r.status_code == 200, r.text
            await relay.cut()

            async def down() -> httpx.Response | None:
                r = await http.get("/readyz", timeout=10)
                return r if r.status_code == 503 else None

            r = await eventually(down, what="/readyz turns 503")
            body = r.json()
            assert body["status"] == "not ready" and body["store"] != "ok", body
            # alive is not ready: the process still serves HTTP
            assert (await http.get("/healthz")).status_code == 200


@pytest.mark.postgres
async def test_readyz_answers_503_at_once_when_the_store_stalls(tmp_path: Path) -> None:
    """PostgreSQL stalled (connections open, nothing answers): the first /readyz took
    32 s to say 503, as asyncio.wait_for waited for the cancelled asyncpg ping to give
    its connection back (command_timeout). It answers within its ping bound now, again
    and again (one ping is out at a time), and is ready again once the store answers."""
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as url:
            via = url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
            settings = Settings(store=via, port=free_port())
            async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
                assert (await http.get("/readyz")).status_code == 200
                await asyncio.to_thread(proxy.stall)
                for _ in range(3):  # 10 s: well past the 2 s bound, far from the 30 s
                    r = await http.get("/readyz", timeout=10)
                    assert r.status_code == 503, r.text
                    assert r.json()["store"] == "no answer within 2 s", r.text
                await asyncio.to_thread(proxy.resume)

                async def ready() -> bool:
                    return (await http.get("/readyz", timeout=10)).status_code == 200

                await eventually(ready, timeout=40, what="ready once the store answers")


@pytest.mark.redis
async def test_readyz_stays_ready_without_the_fanout_bus(tmp_path: Path) -> None:
    """Redis down: edits still commit (other processes read them from the log), so the
    process is ready, and the body says fan-out is degraded."""
    redis = PrivateRedis().start()
    try:
        settings = Settings(db=str(tmp_path / "f.db"), port=free_port(),
                            fanout=f"{redis.url}?prefix=t-ops&check=0.5")  # fmt: skip
        async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            fanout = srv.backend.extension(Fanout)
            assert fanout is not None
            await eventually(lambda: fanout.connected, what="subscribed to Redis")
            redis.kill()
            await eventually(lambda: not fanout.connected, what="Redis gone")
            async with connect(srv.ws_url, "busless", user="ann") as c:
                c.insert(0, "still durable")
                await eventually(lambda: srv.backend.committer.store is not None
                                 and srv.backend.rooms.get_loaded("busless") is not None
                                 and srv.backend.rooms.get_loaded("busless").seq == 1)  # fmt: skip
            assert [e.update for e in await srv.backend.store.read("busless")]
            r = await http.get("/readyz")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["store"] == "ok" and body["commits"] == "ok", body
            assert body["fanout"].startswith("degraded"), body
            m = await scrape(srv.url)
            assert val(m, "palimpsest_fanout_connected") == 0
    finally:
        redis.kill()
    settings = Settings(db=str(tmp_path / "f.db"), port=free_port(),
                        fanout=f"{REDIS_URL}?prefix=test-ops")  # fmt: skip
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await eventually(ready, what="ready once subscribed to Redis")
        assert val(await scrape(srv.url), "palimpsest_fanout_connected") == 1


@pytest.mark.redis
async def test_readyz_says_a_hung_fanout_bus_is_degraded(tmp_path: Path) -> None:
    """Redis hung (stopped: its connections stay open, nothing answers, nothing fails by
    itself): the subscription answers no ping and publishes time out. The subscription
    was reported up throughout, and the log blamed the configuration for what the bus
    never delivered; now /readyz and the metric say degraded, as with Redis down, until
    it answers again."""
    with PrivateRedis() as redis:
        settings = Settings(db=str(tmp_path / "h.db"), port=free_port(),
                            fanout=f"{redis.url}?prefix=t-hung&check=0.5")  # fmt: skip
        async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            fanout = srv.backend.extension(Fanout)
            assert fanout is not None
            await eventually(lambda: fanout.connected, what="subscribed to Redis")

            async def fanout_says(start: str) -> dict[str, str] | None:
                r = await http.get("/readyz", timeout=10)
                assert r.status_code == 200, r.text  # edits commit all the same
                body: dict[str, str] = r.json()
                return body if body["fanout"].startswith(start) else None

            redis.pause()
            try:
                async with connect(srv.ws_url, "hung-bus", user="ann") as c:
                    c.insert(0, "published to nobody")
                    rooms = srv.backend.rooms
                    await eventually(lambda: getattr(rooms.get_loaded("hung-bus"), "seq", 0) == 1)

                    async def both_said() -> dict[str, str] | None:
                        body = await fanout_says("degraded")
                        if body is None or "publishes to it fail" not in body["fanout"]:
                            return None
                        return body

                    body = await eventually(both_said, timeout=30, what="degraded, both ways")
                    said = body["fanout"]
                    assert "not subscribed to the fan-out bus (no answer on the" in said, said
                    assert val(await scrape(srv.url), "palimpsest_fanout_connected") == 0
            finally:
                redis.resume()
            await eventually(lambda: fanout_says("ok"), timeout=30, what="ok once Redis answers")
            assert val(await scrape(srv.url), "palimpsest_fanout_connected") == 1


@pytest.mark.postgres
@pytest.mark.redis
async def test_fanout_metrics_across_two_processes(tmp_path: Path) -> None:
    """Two backends share a log and a bus: the one that applies the other's edits
    measures their lag; the writer publishes."""
    async with fresh_schema() as url:
        bus = fanout_url()
        a = Settings(store=url, fanout=bus, port=free_port(), instance="ops-a")
        b = Settings(store=url, fanout=bus, port=free_port(), instance="ops-b")
        async with run_server(a) as sa, run_server(b) as sb:
            fa = sa.backend.extension(Fanout)
            fb = sb.backend.extension(Fanout)
            assert fa is not None and fb is not None
            await eventually(lambda: fa.connected and fb.connected, what="both subscribed")
            t0 = asyncio.get_running_loop().time()  # before anything is published
            async with connect(sb.ws_url, "shared", user="bob") as cb:
                async with connect(sa.ws_url, "shared", user="ann") as ca:
                    ca.insert(0, "from a")
                    await eventually(lambda: cb.content == "from a", what="fan-out")
                    took = asyncio.get_running_loop().time() - t0
            ma, mb = await scrape(sa.url), await scrape(sb.url)
    assert val(mb, "palimpsest_fanout_lag_seconds_count") >= 1
    # each lag lies within what this test saw (timestamps are in ms: 2 ms of rounding)
    lags = val(mb, "palimpsest_fanout_lag_seconds_count")
    assert 0 <= val(mb, "palimpsest_fanout_lag_seconds_sum") <= lags * (took + 0.002)
    assert val(mb, "palimpsest_fanout_received_messages_total") >= 1
    assert val(mb, "palimpsest_events_appended_total", kind="edit") == 0
    assert val(ma, "palimpsest_fanout_lag_seconds_count") == 0
    assert val(ma, "palimpsest_fanout_published_messages_total") >= 1
    assert val(ma, "palimpsest_events_appended_total", kind="edit") == 1


# --- logs --------------------------------------------------------------------------------


async def test_log_lines_say_what_happened_but_never_the_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="palimpsest")
    secret = "SECRET-CONTENT-7f3a"
    settings = Settings(db=str(tmp_path / "l.db"), port=free_port(), unload_after_seconds=0.2)
    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "logged", user="bob") as c:
            c.insert(0, secret)
            await eventually(lambda: srv.backend.rooms.get_loaded("logged").seq == 1)  # type: ignore[union-attr]
            # an update that does not decode, carrying the secret: refused with a reason,
            # and its bytes are not in the log either
            await c.send_raw(P.encode_sync_update(b"\x01\x01" + secret.encode()))
            await eventually(lambda: c.close_code is not None, what="refusal")
        await eventually(lambda: "logged" not in srv.backend.rooms, what="unload")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "connect " in text and "doc=logged user=bob" in text
    assert "disconnect " in text
    assert "loaded logged" in text and "unloaded logged" in text
    assert "snapshot logged@1 written" in text
    assert "closing with 4400: update does not" in text
    assert secret not in text
    assert secret.encode().hex() not in text
