"""The real server under resource limits (`prlimit`): file descriptors, memory."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys

import httpx
import pytest
import websockets
from serverproc import ServerProcess
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("prlimit") is None, reason="needs Linux's prlimit"
)


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_websockets_past_the_descriptor_reserve_get_503_and_health_answers(tmp_path):
    """With 128 descriptors, 150 websockets filled the table: /healthz, /metrics and
    history went unanswered for the whole run (uvloop accepts and closes at once), with
    nothing logged or counted. Past the reserve, upgrades are refused with 503."""
    async with ServerProcess(tmp_path, prefix=("prlimit", "--nofile=128:128")) as srv:
        opened: list[websockets.ClientConnection] = []
        refused = 0
        try:
            for i in range(150):
                url = f"{srv.ws_url}/fd-{i % 5}?user=u{i}"
                try:
                    opened.append(await websockets.connect(url, compression=None, open_timeout=10))
                except InvalidStatus as e:
                    assert e.response.status_code == 503, e
                    assert e.response.headers.get("retry-after") == "5"
                    assert b"file descriptors" in e.response.body
                    refused += 1
            assert opened and refused, (len(opened), refused)
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http:
                for path in ("/healthz", "/readyz"):
                    assert (await http.get(path)).status_code == 200, path
                # answered (the document has no events yet: 404, not a dropped socket)
                history = await http.get("/api/docs/fd-0/events?limit=5&user=h")
                assert history.status_code == 404, history.text
                metrics = (await http.get("/metrics")).text
            # the websockets that opened are served
            await opened[0].send(b"\x00\x00\x01\x00")  # sync step 1, empty state vector
            assert await asyncio.wait_for(opened[0].recv(), 10)
        finally:
            for ws in opened:
                await ws.close()
        assert _metric(metrics, 'palimpsest_refused_total{reason="fd_limit"}') == refused
    log = srv.log_text()
    assert "open files: limit 128" in log
    assert re.search(r"refused \d+ websockets? with 503: \d+ of 128 file descriptors", log), log


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path):
    with ServerProcess(tmp_path, prefix=("prlimit", "--nofile=200:300")) as srv:
        metrics = httpx.get(f"{srv.http_url}/metrics", timeout=10).text
    assert _metric(metrics, "process_max_fds") == 300
    assert "open files: limit 300 (raised from 200)" in srv.log_text()


async def test_accept_failing_for_want_of_descriptors_is_logged_and_counted(tmp_path):
    """Without a reserve (fd_reserve 0) the table fills and accept() fails with EMFILE:
    on asyncio's loop it is counted and logged in one line (uvloop's libuv accepts and
    closes such connections itself, unseen)."""
    srv = ServerProcess(
        tmp_path, prefix=("prlimit", "--nofile=128:128"), extra_args=["--event-loop", "asyncio"],
        env={"PALIMPSEST_FD_RESERVE": "0"},
    )  # fmt: skip

    async def connect(i: int) -> websockets.ClientConnection | None:
        try:
            return await websockets.connect(
                f"{srv.ws_url}/fd-{i % 5}?user=u{i}", compression=None, open_timeout=4
            )
        except (TimeoutError, OSError, websockets.InvalidHandshake):
            return None

    async with srv:
        opened = [ws for ws in await asyncio.gather(*map(connect, range(150))) if ws]
        assert 0 < len(opened) < 150
        for ws in opened:  # room again
            await ws.close()
        async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http:
            for _ in range(100):
                metrics = (await http.get("/metrics")).text
                if _metric(metrics, 'palimpsest_refused_total{reason="accept_failed"}'):
                    break
                await asyncio.sleep(0.1)
    assert _metric(metrics, 'palimpsest_refused_total{reason="accept_failed"}') > 0
    log = srv.log_text()
    assert re.search(r"accept\(\) failed \d+ times? \(\[Errno 24\] Too many open files\)", log), log
    assert "Traceback" not in log


#: `palimpsest serve` with one more extension, whose on_connect raises MemoryError for
#: the document "hungry" (what a hook that allocates meets under a memory limit)
HUNGRY_SERVER = """
import sys
import palimpsest.app
from palimpsest.cli import main
from palimpsest.extensions import Extension


class Hungry(Extension):
    async def on_connect(self, client):
        if client.doc == "hungry":
            raise MemoryError


def create_app(settings=None, backend=None):
    return palimpsest.app.Palimpsest(settings=settings, backend=backend, extensions=[Hungry()])


palimpsest.app.create_app = create_app
sys.exit(main(["serve", *sys.argv[1:]]))
"""


class HungryServer(ServerProcess):
    def command(self) -> list[str]:
        script = self.workdir / "hungry_server.py"
        script.write_text(HUNGRY_SERVER)
        return [sys.executable, str(script), *super().command()[4:]]


async def test_a_memory_error_on_the_serving_path_stops_the_server_with_status_4(tmp_path):
    """After a burst of MemoryErrors a server stayed alive and never accepted another
    connection. Now the first one stops it (clients closed with 1001, rooms flushed)
    and it exits non-zero, for its supervisor to start a fresh one."""
    srv = HungryServer(tmp_path)
    async with srv:
        async with websockets.connect(f"{srv.ws_url}/fine?user=ann", compression=None) as fine:
            with pytest.raises(websockets.ConnectionClosed):
                async with websockets.connect(f"{srv.ws_url}/hungry?user=ann") as ws:
                    await ws.recv()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(fine.recv(), 20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        code = await asyncio.to_thread(srv.proc.wait, 30)
    assert code == 4, srv.log_tail()
    log = srv.log_text()
    assert "CRITICAL palimpsest: out of memory (MemoryError" in log, log
    assert "palimpsest: stopped" in log
