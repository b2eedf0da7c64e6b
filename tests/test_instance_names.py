"""Two Palimpsest instances in one process (two mounts, docs/extending.md) say which of
them each log line comes from when named (``Palimpsest(name=...)``): a field
``instance`` of a JSON line, ``[name]`` after the logger in text. Unnamed, lines are as
they were; the host's own lines never carry an instance's name."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from conftest import eventually
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
