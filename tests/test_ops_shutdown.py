"""Graceful shutdown: SIGTERM to the real server process while a client types."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
from conftest import PG_PORT, eventually
from pycrdt import Doc, Text
from scaleout import fresh_schema
from serverproc import ServerProcess
from stallproxy import StallingProxy
from yclient import connect

from palimpsest.cli.serve import FORCED_EXIT, SHUTDOWN_SECONDS
from palimpsest.snapshots import load
from palimpsest.store import open_store


async def stored(db: Path, doc: str) -> tuple[str, int, list[int]]:
    """Content, head and snapshot seqs of a document, read from the SQLite file."""
    store = open_store(f"sqlite:///{db}")
    async with store:
        loaded = await load(store, doc)
        snaps = [s.seq for s in await store.snapshots(doc) if s.valid]
        return str(loaded.doc.get("content", type=Text)), loaded.seq, snaps


async def test_sigterm_while_typing_loses_nothing(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, extra_args=["--log-json"])
    await srv.astart()
    try:
        ydoc: Doc = Doc()
        async with (
            connect(srv.ws_url, "shut", user="ann", ydoc=ydoc) as typist,
            connect(srv.ws_url, "shut", user="obs") as observer,
        ):
            count = 0

            async def type_() -> None:
                nonlocal count
                while typist.close_code is None and count < 20_000:
                    typist.insert(len(typist.content), f"{count};")
                    count += 1
                    await asyncio.sleep(0.001)

            typing = asyncio.create_task(type_())
            await eventually(lambda: len(observer.content) > 300, what="edits flowing")
            await srv.astop()  # SIGTERM, and wait for the process to exit
            await eventually(lambda: typist.close_code is not None and observer.close_code
                             is not None, what="both clients closed")  # fmt: skip
            typing.cancel()
            seen = observer.content
            assert typist.close_code == 1001, (typist.close_code, typist.close_reason)
            assert observer.close_code == 1001, (observer.close_code, observer.close_reason)
        typed = str(ydoc.get("content", type=Text))
        assert typed.startswith(seen)

        # every edit anybody saw (so: was acknowledged durable) is in the log, and the
        # open room was checkpointed on the way out
        content, head, snaps = await stored(srv.db_path, "shut")
        assert content.startswith(seen) and typed.startswith(content)
        assert len(content) >= len(seen) > 300
        assert snaps and snaps[-1] == head, (snaps, head)

        # the typist comes back (as y-websocket does after 1001) and re-sends the rest
        await srv.astart()
        async with connect(srv.ws_url, "shut", user="ann", ydoc=ydoc) as again:
            assert again.content == typed
            async with connect(srv.ws_url, "shut", user="reader") as reader:
                await eventually(lambda: reader.content == typed, what="server has it all")

        log = srv.log_text()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert any("going away: closed 2 connections" in entry["msg"] for entry in lines), log
        assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
        # with --log-json every log line is JSON (the rest are the banner's print lines)
        others = [ln for ln in log.splitlines() if ln and not ln.startswith(("{", "palimpsest:",
                                                                          "====="))]  # fmt: skip
        assert not others, others
        assert any(entry["msg"] == "stopped" for entry in lines)
        assert "1012" not in log
    finally:
        await srv.astop()


async def test_sigterm_drains_first_readyz_503_while_sockets_work(tmp_path: Path) -> None:
    """--drain-seconds: from SIGTERM on, /readyz answers 503 "draining" while the socket
    open before it, and one opened after it, keep editing; then the shutdown as without
    a drain (1001, everything durable). The drain is long enough for the checks; the
    test asserts no duration."""
    srv = ServerProcess(tmp_path, extra_args=["--drain-seconds", "8"])
    await srv.astart()
    try:
        async with (
            httpx.AsyncClient(base_url=srv.http_url) as http,
            connect(srv.ws_url, "drain", user="ann") as before,
        ):
            assert (await http.get("/readyz")).status_code == 200
            before.insert(0, "a;")
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            r = await eventually(lambda: _draining(http), what="/readyz says draining")
            assert r.status_code == 503
            assert r.json()["status"] == "draining", r.json()
            assert "shutting down in" in r.json()["drain"]
            # the listener still takes connections, and both sockets still edit
            async with connect(srv.ws_url, "drain", user="bob") as after:
                assert after.content == "a;"
                after.insert(2, "b;")
                await eventually(lambda: before.content == "a;b;", what="bob's edit")
                before.insert(4, "c;")
                await eventually(lambda: after.content == "a;b;c;", what="ann's edit")
                assert (await http.get("/healthz")).status_code == 200
                assert before.close_code is None and after.close_code is None
                # then the shutdown proper: every socket gets 1001
                await eventually(lambda: before.close_code and after.close_code,
                                 timeout=30, what="closed after the drain")  # fmt: skip
                assert (before.close_code, after.close_code) == (1001, 1001)
        await asyncio.to_thread(srv.proc.wait, 30)  # (uvicorn re-raises the SIGTERM)
        content, head, snaps = await stored(srv.db_path, "drain")
        assert content == "a;b;c;"
        assert snaps and snaps[-1] == head
        log = srv.log_text()
        assert (
            log.index("draining: /readyz answers 503 for 8 s")
            < log.index("shutting down: no new connections")
            < log.index("stopped")
        ), log
    finally:
        await srv.astop()


async def _draining(http: httpx.AsyncClient) -> httpx.Response | None:
    r = await http.get("/readyz")
    return r if r.status_code != 200 else None


async def _stalled_at_sigterm(tmp_path: Path, proxy: StallingProxy, url: str) -> ServerProcess:
    """A server on PostgreSQL through `proxy`, a client whose first edit is acknowledged
    and whose next ones are held when the store stalls, and the first SIGTERM sent."""
    via = url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
    srv = await ServerProcess(tmp_path, extra_args=["--store", via]).astart()
    async with connect(srv.ws_url, "stall", user="ann") as typist, connect(
        srv.ws_url, "stall", user="obs"
    ) as observer:  # fmt: skip
        typist.insert(0, "acknowledged;")
        await eventually(lambda: observer.content == "acknowledged;", what="a durable edit")
        await asyncio.to_thread(proxy.stall)
        typist.insert(len(typist.content), "held by a stalled store;")
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: "shutting down" in srv.log_text(), what="the shutdown began")
    return srv


async def _stored_after(proxy: StallingProxy, url: str) -> str:
    """The document as the store has it, once the store answers again."""
    await asyncio.to_thread(proxy.resume)
    store = open_store(url)
    async with store:
        return str((await load(store, "stall")).doc.get("content", type=Text))


@pytest.mark.postgres
async def test_a_second_sigterm_exits_at_once_while_the_store_stalls(tmp_path: Path) -> None:
    """A second SIGTERM did nothing (uvicorn took it for the first again) while the
    shutdown waited on a stalled PostgreSQL; it exits at once now, saying what it leaves,
    and what was acknowledged is in the store."""
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as url:
            srv = await _stalled_at_sigterm(tmp_path, proxy, url)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            # 10 s: the process exits at once; before, it waited for the store (83 s)
            status = await asyncio.to_thread(srv.proc.wait, 10)
            await srv.astop()  # (exited: closes its log)
            assert status == 128 + signal.SIGTERM, srv.log_tail()
            assert "a second SIGTERM: exiting now, without waiting for the store" in (
                srv.log_text()
            ), srv.log_tail()
            assert (await _stored_after(proxy, url)).startswith("acknowledged;")


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_shutdown_is_bounded_while_the_store_stalls(tmp_path: Path) -> None:
    """SIGTERM while PostgreSQL stalls took 83 s: the flush gave up after 10 s as
    documented, but uvicorn's shutdown, the commits held, the final snapshots and the
    pool's close then each waited for the store. The process exits SHUTDOWN_SECONDS
    after the signal at most now, and says so."""
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as url:
            srv = await _stalled_at_sigterm(tmp_path, proxy, url)
            assert srv.proc is not None
            # 45 s: past the bound (15 s), well short of what it took before (83 s)
            status = await asyncio.to_thread(srv.proc.wait, 45)
            await srv.astop()  # (exited: closes its log)
            assert status == FORCED_EXIT, srv.log_tail()
            log = srv.log_text()
            assert "flushing the rooms took over 10s" in log, log
            assert (
                f"the shutdown took over {SHUTDOWN_SECONDS}s: exiting now, without waiting "
                "for the store;"
            ) in log, log
            assert (await _stored_after(proxy, url)).startswith("acknowledged;")
