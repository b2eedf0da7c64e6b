"""Palimpsest under the app servers people run it with besides `palimpsest serve`
(docs/operations.md, "Under another ASGI server"): gunicorn with uvicorn's worker, and
uvicorn's own command line with the factory. Real processes, real sockets, real SQLite."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from conftest import eventually
from serverproc import free_port

from palimpsest import client
from palimpsest.auth.tokens import mint

BIN = Path(sys.executable).parent


def _children(pid: int) -> set[int]:
    """The processes `pid` started that are alive (gunicorn's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def app_server(
    tmp_path: Path, cmd: list[str], env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`cmd` run in `tmp_path` with `env` added, its output in a log file; stopped
    (SIGTERM, then SIGKILL) at the end."""
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_a_gunicorn_reload_with_a_stream_open_hands_the_database_over(
    tmp_path: Path,
) -> None:
    """gunicorn's HUP (a reload: a new worker started, then the old one stopped) on the
    default SQLite store with a changefeed stream open stopped the whole service: the old
    worker waited out --graceful-timeout for the stream, holding the database's serving
    lock; the new one was refused at once, exited 3, and the master shut down ("Worker
    failed to boot"). The old worker ends its streams on the stop signal now, the new
    one waits for the lock, and the service goes on with everything written before."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "-w", "1",
           "-b", f"127.0.0.1:{port}", "--graceful-timeout", "600",
           "palimpsest.app:create_app()"]  # fmt: skip
    env = {"PALIMPSEST_DB": str(tmp_path / "team.db")}
    with app_server(tmp_path, cmd, env) as (master, log):
        await eventually(lambda: _up(url), timeout=60, what="gunicorn serving")
        [old] = _children(master.pid)
        async with client.connect(f"ws://127.0.0.1:{port}/ws", "notes", user="al") as c:
            c.text().insert(0, "before the reload")
            await c.flush()
        opened = asyncio.Event()

        async def follow() -> None:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
                stream = http.stream("GET", f"{url}/api/events/stream?user=feed")
                async with stream as r:
                    assert r.status_code == 200
                    async for _ in r.aiter_bytes():
                        opened.set()

        following = asyncio.create_task(follow())
        await asyncio.wait_for(opened.wait(), 30)
        os.kill(master.pid, signal.SIGHUP)
        # the old worker ended the stream (it waited for it up to --graceful-timeout)
        await asyncio.wait_for(following, 120)

        def served_by_a_new_worker() -> bool:
            workers = _children(master.pid)
            return bool(workers) and old not in workers and _up(url)

        await eventually(served_by_a_new_worker, timeout=120, what="a new worker serving")
        assert master.poll() is None, log.read_text()[-3000:]
        async with client.connect(f"ws://127.0.0.1:{port}/ws", "notes", user="bo") as c:
            assert str(c.text()) == "before the reload"
        text = log.read_text()
        assert "Worker failed to boot" not in text, text[-3000:]
        assert "received SIGTERM: the server stops; ending streams" in text, text[-3000:]


def _wait_up(url: str, log: Path) -> None:
    for _ in range(600):
        if _up(url):
            return
        time.sleep(0.1)
    raise AssertionError(f"not serving: {log.read_text()[-3000:]}")


def test_uvicorn_factory_reads_the_settings_from_the_environment(tmp_path: Path) -> None:
    """`uvicorn --factory palimpsest.app:create_app` ("the app palimpsest serve runs")
    read no PALIMPSEST_* variable: with PALIMPSEST_JWT_SECRET set it served everyone,
    on ./palimpsest.db rather than PALIMPSEST_DB. It reads them as `serve` does now."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = "0123456789abcdef0123456789abcdef0123"
    env = {"PALIMPSEST_JWT_SECRET": secret, "PALIMPSEST_DB": str(tmp_path / "mine.db")}
    cmd = [str(BIN / "uvicorn"), "--factory", "palimpsest.app:create_app",
           "--port", str(port), "--no-access-log"]  # fmt: skip
    with app_server(tmp_path, cmd, env) as (_, log):
        _wait_up(url, log)
        assert httpx.get(f"{url}/api/docs").status_code == 401, log.read_text()
        token = mint(secret, "al", docs=["*"], role="admin")
        r = httpx.get(f"{url}/api/docs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert sorted(p.name for p in tmp_path.glob("*.db")) == ["mine.db"]


async def test_palimpsest_logs_its_info_lines_under_a_plain_app_server(tmp_path: Path) -> None:
    """Under uvicorn (gunicorn, hypercorn) nothing set up Python's logging for the app:
    Palimpsest's INFO lines (connections, loads, snapshots) were lost, only its warnings
    came out. The app sets its log up as `serve` does when nobody else has."""
    port = free_port()
    cmd = [str(BIN / "uvicorn"), "--factory", "palimpsest.app:create_app",
           "--port", str(port), "--no-access-log"]  # fmt: skip
    env = {"PALIMPSEST_DB": str(tmp_path / "p.db")}
    with app_server(tmp_path, cmd, env) as (_, log):
        await eventually(lambda: _up(f"http://127.0.0.1:{port}"), timeout=60)
        async with client.connect(f"ws://127.0.0.1:{port}/ws", "notes", user="al") as c:
            c.text().insert(0, "x")
            await c.flush()
        await eventually(lambda: "disconnect " in log.read_text(), timeout=30,
                         what="the disconnect line")  # fmt: skip
        text = log.read_text()
        assert re.search(r"INFO +palimpsest\.ws: connect ", text), text[-3000:]
