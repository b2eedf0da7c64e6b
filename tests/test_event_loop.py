"""`palimpsest serve` runs on uvloop by default and on asyncio's loop when asked; either
way it serves the same edits. The loop is read from the running process (/healthz
names the class of its running loop), not from the flag."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from serverproc import ServerProcess
from yclient import connect as raw_connect


@pytest.mark.parametrize(
    ("args", "env", "loop"),
    [
        ([], {}, "uvloop"),
        (["--event-loop", "asyncio"], {}, "asyncio"),
        ([], {"PALIMPSEST_EVENT_LOOP": "asyncio"}, "asyncio"),
    ],
)
async def test_serve_runs_on_the_loop_asked_for(
    tmp_path: Path, args: list[str], env: dict[str, str], loop: str
) -> None:
    srv = ServerProcess(tmp_path, extra_args=args, env=env)
    await srv.astart()
    try:
        assert f"loop {loop}" in srv.log_text()
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            r = await http.get("/healthz")
        assert r.json() == {"status": "alive", "event_loop": loop}
        # and it serves: an edit reaches an observer and the log
        async with (
            raw_connect(srv.ws_url, "loop", "ann") as ann,
            raw_connect(srv.ws_url, "loop", "obs") as obs,
        ):
            for i in range(50):
                ann.insert(len(ann.content), str(i % 10))
                await asyncio.sleep(0)
            await eventually(lambda: len(obs.content) == 50, what="the observer has it all")
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            events = (await http.get("/api/docs/loop/events")).json()["events"]
        assert len(events) >= 50  # every keystroke was logged (sync handshakes add none)
    finally:
        await srv.astop()


def test_an_unknown_event_loop_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "palimpsest", "serve", "--event-loop", "trio"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "invalid choice: 'trio'" in r.stderr
