"""The signals `palimpsest serve` is sent besides SIGTERM and Ctrl-C. SIGHUP (a closed
terminal, `systemctl kill -s HUP`), SIGQUIT (Ctrl-\\), SIGUSR1 and SIGUSR2 killed the
process at once and silently: no log line, no 1001 to the clients, no final snapshot.
SIGHUP and SIGQUIT now shut down as SIGTERM does; SIGUSR1 and SIGUSR2 are ignored, with a
log line (docs/operations.md, "Graceful shutdown")."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from serverproc import ServerProcess
from test_ops_shutdown import stored
from yclient import connect


@pytest.mark.parametrize(
    ("sig", "status"),
    [(signal.SIGHUP, -signal.SIGHUP), (signal.SIGQUIT, 128 + signal.SIGQUIT),
     (signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 0)],
    ids=["SIGHUP", "SIGQUIT", "SIGTERM", "SIGINT"],
)  # fmt: skip
async def test_a_stopping_signal_shuts_down_gracefully(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    # SIGHUP as a terminal's hangup finds it: at its default (the suite may run under
    # nohup, which the server inherits and keeps: the test below)
    srv = await ServerProcess(tmp_path, prefix=with_sighup("SIG_DFL")).astart()
    try:
        async with connect(srv.ws_url, "sig", user="ann") as c:
            c.insert(0, "kept")
            async with connect(srv.ws_url, "sig", user="obs") as obs:
                await eventually(lambda: obs.content == "kept", what="the edit acknowledged")
            assert srv.proc is not None
            srv.proc.send_signal(sig)
            code = await asyncio.to_thread(srv.proc.wait, 60)
            await eventually(lambda: c.close_code is not None, what="the client closed")
            assert c.close_code == 1001, (c.close_code, c.close_reason)
        assert code == status
        log = srv.log_text()
        assert f"received {sig.name}: shutting down" in log, log
        assert "going away: closed 1 connections" in log and "stopped" in log, log
        content, head, snaps = await stored(srv.db_path, "sig")
        assert content == "kept" and snaps and snaps[-1] == head, (content, head, snaps)
    finally:
        await srv.astop()


def with_sighup(action: str) -> list[str]:
    """A prefix that runs the server with SIGHUP at `action` (SIG_DFL, SIG_IGN)."""
    code = (
        f"import os, signal, sys; signal.signal(signal.SIGHUP, signal.{action}); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", code]


async def test_a_server_started_under_nohup_keeps_serving_on_sighup(tmp_path: Path) -> None:
    """nohup starts a program with SIGHUP ignored so that a closed terminal leaves it
    running. The server took SIGHUP over and stopped on it all the same (and then exited
    0, its SIGHUP raised again being ignored: a CI run under nohup showed it). It keeps
    the inherited SIG_IGN now, and says so; SIGTERM still stops it."""
    srv = await ServerProcess(tmp_path, prefix=with_sighup("SIG_IGN")).astart()
    try:
        async with connect(srv.ws_url, "hup", user="ann") as c:
            c.insert(0, "kept")
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)  # (a stop would have begun: the close comes at once)
            c.insert(4, "!")
            async with connect(srv.ws_url, "hup", user="obs") as obs:
                await eventually(lambda: obs.content == "kept!", what="still serving")
            assert c.close_code is None and srv.proc.poll() is None
        log = srv.log_text()
        assert "SIGHUP is ignored: the server was started with it ignored (nohup)" in log, log
        assert "received SIGHUP" not in log, log
        srv.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(srv.proc.wait, 60) == -signal.SIGTERM
    finally:
        await srv.astop()


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2], ids=["SIGUSR1", "SIGUSR2"])
async def test_sigusr_is_ignored_and_said(tmp_path: Path, sig: signal.Signals) -> None:
    srv = await ServerProcess(tmp_path).astart()
    try:
        assert srv.proc is not None
        srv.proc.send_signal(sig)
        await eventually(lambda: f"received {sig.name}: ignored" in srv.log_text(),
                         what="the signal logged")  # fmt: skip
        assert srv.running
        async with httpx.AsyncClient(timeout=10) as h:
            assert (await h.get(f"{srv.http_url}/healthz")).status_code == 200
        async with connect(srv.ws_url, "usr", user="ann") as c:
            c.insert(0, "still")
            async with connect(srv.ws_url, "usr", user="obs") as obs:
                await eventually(lambda: obs.content == "still", what="still serving")
    finally:
        code = await srv.astop()
    assert code == -signal.SIGTERM
