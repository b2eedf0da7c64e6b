"""A log nobody reads must not stop the server. `palimpsest serve ... 2>&1 | sleep 1000`:
the pipe filled after ~255 connect/disconnect cycles, and the event loop, which wrote
every log line to stderr itself, blocked in the write; clients and /healthz timed out,
and SIGTERM did nothing (the signal handler's own log line waited for the same lock).
The loop now only queues its lines (bounded; past that they are dropped and counted), a
thread writes them out, and a shutdown waits for that thread a bounded time."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from serverproc import REPO_ROOT, free_port

from palimpsest import client, logs

#: Linux's fcntl to resize a pipe (not in the fcntl module before Python 3.10 everywhere)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def small_pipe() -> tuple[int, int]:
    """A pipe as small as Linux makes one (a page): a few dozen log lines fill it."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    except OSError:  # not Linux: 64 KiB, ten times the cycles below still fill it
        pass
    return r, w


async def test_a_full_log_pipe_does_not_stop_the_server(tmp_path: Path) -> None:
    r, w = small_pipe()
    port = free_port()
    cmd = [sys.executable, "-m", "palimpsest", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--db", str(tmp_path / "p.db")]  # fmt: skip
    proc = subprocess.Popen(  # noqa: ASYNC220  # (started once, before any await)
        cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip
    os.close(w)  # the server holds the only write end; nobody reads r
    try:
        http = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=10) as h:
            for _ in range(400):
                try:
                    if (await h.get(f"{http}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            # each cycle logs a connect and a disconnect line (and loads, unloads): far
            # more than the pipe holds
            for i in range(150):
                async with client.connect(
                    f"ws://127.0.0.1:{port}/ws", f"d{i % 5}", user=f"u{i}", connect_timeout=10
                ) as s:
                    s.text().insert(0, "x")
                    await asyncio.wait_for(s.flush(), 10)
                if i % 25 == 0:
                    assert (await h.get(f"{http}/healthz")).status_code == 200
            assert (await h.get(f"{http}/healthz")).status_code == 200
            metrics = (await h.get(f"{http}/metrics")).text
            assert "palimpsest_log_lines_dropped_total" in metrics
        proc.send_signal(signal.SIGTERM)
        # the shutdown is bounded (docs/operations.md: 15 s, and 2 s for the log's
        # writer); generous here: a loaded machine
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(r)


def test_lines_past_the_queue_are_dropped_counted_and_said_once_writing_resumes() -> None:
    """In-process: the handler `configure` installs, on a pipe nobody reads yet, with a
    queue of 20 lines. Logging never blocks; what does not fit is counted; once the pipe
    is read again, a line says how many were dropped."""
    r, w = small_pipe()
    logger = logging.getLogger("test-log-pipe")
    logger.propagate = False
    out = os.fdopen(w, "w", encoding="utf-8")
    writer = logs.QueuedOutput(out, logging.Formatter("%(levelname)s %(message)s"), capacity=20)
    logger.addHandler(writer.handler)
    try:
        dropped_before = logs.dropped()
        done = threading.Event()

        def log_many() -> None:
            for i in range(2000):
                logger.warning("line %d %s", i, "x" * 100)
            done.set()

        t = threading.Thread(target=log_many, daemon=True)
        t.start()
        assert done.wait(60), "logging blocked on a full pipe"
        lost = logs.dropped() - dropped_before
        assert lost > 1000
        # read everything: the writer resumes and says what it dropped, in one line or
        # several (it says so after each line it writes, while the queue fills meanwhile)
        seen, said, written = b"", 0, 0
        while said < lost or written + lost < 2000:
            ready, _, _ = select.select([r], [], [], 30)
            assert ready, f"{said} of {lost} said dropped, {written} written: {seen[-500:]!r}"
            seen += os.read(r, 65536)
            lines = seen.decode().splitlines()
            said = sum(int(ln.split()[1]) for ln in lines if "log lines dropped" in ln)
            written = len([ln for ln in lines if ln.startswith("WARNING line ")])
        assert (said, written + lost) == (lost, 2000)
        assert lines[0].startswith("WARNING line 0 ")
    finally:
        logger.removeHandler(writer.handler)
        writer.stop(timeout=5)
        out.close()
        os.close(r)
