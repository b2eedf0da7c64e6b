"""Palimpsest under the app servers people run it with besides `palimpsest serve`
(docs/operations.md, "Under another ASGI server"): gunicorn with uvicorn's worker, and
uvicorn's own command line with the factory. Real processes, real sockets, real SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from serverproc import free_port

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
