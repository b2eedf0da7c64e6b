"""Two Palimpsest instances in one process (two mounts, docs/extending.md) say which of
them each log line comes from when named (``Palimpsest(name=...)``): a field
``instance`` of a JSON line, ``[name]`` after the logger in text. Unnamed, lines are as
they were; the host's own lines never carry an instance's name."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from conftest import eventually
from serverproc import REPO_ROOT, free_port
from starlette.applications import Starlette
from starlette.routing import Mount
from test_embedding import running
from yclient import connect

from palimpsest import Palimpsest
from palimpsest.logs import JSONFormatter, TextFormatter
from palimpsest.settings import Settings


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_two_named_instances_say_which_each_line_is_from(tmp_path: Path) -> None:
    def instance(name: str | None, db: str) -> Palimpsest:
        return Palimpsest(
            store=f"sqlite:///{tmp_path / db}",
            settings=Settings(unload_after_seconds=0.2),
            name=name,
        )

    a, b, plain = instance("left", "a.db"), instance("right", "b.db"), instance(None, "c.db")
    host_log = logging.getLogger("host")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with a.lifespan(app), b.lifespan(app), plain.lifespan(app):
            host_log.info("host ready")
            yield

    app = Starlette(
        routes=[Mount("/a", app=a), Mount("/b", app=b), Mount("/c", app=plain)],
        lifespan=lifespan,
    )
    keep = Keep()
    for name in ("palimpsest", "host"):
        logging.getLogger(name).addHandler(keep)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        async with running(app) as host:
            for mount, pal in (("a", a), ("b", b), ("c", plain)):
                async with connect(f"ws://{host}/{mount}/ws", "same", user="ada") as c:
                    c.insert(0, "hi")
                    await eventually(
                        lambda pal=pal: (
                            (room := pal.backend.rooms.get_loaded("same")) is not None
                            and room.seq == 1
                        )
                    )
            b._stop_signal("SIGTERM")  # (what the app server's SIGTERM calls)
    finally:
        for name in ("palimpsest", "host"):
            logging.getLogger(name).removeHandler(keep)

    def lines(start: str) -> list[logging.LogRecord]:
        return [r for r in keep.records if r.getMessage().startswith(start)]

    loaded = lines("loaded same")
    assert sorted(str(getattr(r, "instance", None)) for r in loaded) == ["None", "left", "right"]
    for r in loaded:
        name = getattr(r, "instance", None)
        line = json.loads(JSONFormatter().format(r))
        text = TextFormatter().format(r)
        if name is None:
            assert "instance" not in line
            assert f" {r.name}: loaded same" in text
        else:
            assert line["instance"] == name
            assert f" {r.name} [{name}]: loaded same" in text
    # lines said as the instances stop, and one said from a signal handler (any context)
    written = lines("snapshot same@1 written")
    assert sorted(str(getattr(r, "instance", None)) for r in written) == ["None", "left", "right"]
    (stop,) = lines("received SIGTERM")
    assert getattr(stop, "instance", None) == "right"
    (ready,) = lines("host ready")
    assert not hasattr(ready, "instance")


# a host app with one named instance and extensions whose on_update fails or blocks,
# run as its own process as an app is (under pytest the test's own context leaks the
# instance's name into uvicorn's callbacks, and hid what a real process lacked)
NAMED_APP = """
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from palimpsest import Extension, Palimpsest, Settings


class Raiser(Extension):
    def on_update(self, room, client, update):
        raise RuntimeError("boom in on_update")


class Blocking(Extension):
    def on_update(self, room, client, update):
        time.sleep(0.3)


pal = Palimpsest(store=f"sqlite:///{sys.argv[1]}", extensions=[Raiser(), Blocking()],
                 settings=Settings(stall_report_ms=200), name="p1")
app = Starlette(routes=[Mount("/collab", app=pal)], lifespan=pal.lifespan)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


async def test_an_extensions_and_the_stall_watchs_lines_carry_the_instance_name(
    tmp_path: Path,
) -> None:
    """Field test: with Palimpsest(name="p1") the lines of a failed or slow on_update
    ("Raiser.on_update(raise-a) failed; the update goes on", "Blocking.on_update took
    0.50 s…", made as uvicorn parses the frame: wire_write.direct_reader) and the stall
    watch's (a thread of its own) lacked the "[p1]" every other line had."""
    app = tmp_path / "app.py"
    app.write_text(NAMED_APP)
    port = free_port()
    out = tmp_path / "out.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: ASYNC220  # (started once, before any await)
            [sys.executable, str(app), str(tmp_path / "p.db"), str(port)],
            cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            await eventually(lambda: _listening(port), timeout=20, what="the app listening")
            async with connect(f"ws://127.0.0.1:{port}/collab/ws", "raise-a", user="ada") as c:
                await asyncio.sleep(0.3)  # (read as uvicorn parses it by now)
                c.insert(0, "hi")
                await eventually(
                    lambda: "event loop held" in out.read_text(), what="the stall watch's line"
                )
        finally:
            proc.terminate()
            proc.wait(15)
    lines = [
        line
        for line in out.read_text().splitlines()
        if " palimpsest.extensions" in line or " palimpsest.stalls" in line
    ]
    for said in ("Raiser.on_update(raise-a) failed", "Blocking.on_update took", "event loop held"):
        assert any(said in line for line in lines), (said, lines)
    assert all("[p1]: " in line for line in lines), lines


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False
