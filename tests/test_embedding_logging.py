"""The lifespan of an embedded Palimpsest and the process's logging: it sets up its own
log only when nobody did (neither the ``palimpsest`` logger nor the root logger has a
handler), and puts both loggers back as they were when it ends, so a host that sets up
its logging afterwards gets Palimpsest's lines. Run as a process of its own (pytest's
own handlers on the root logger would turn the default log off): a real SQLite file,
the app's real lifespan, requests through httpx's ASGI transport."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import asyncio, json, logging, sys
import httpx
from starlette.applications import Starlette
from starlette.routing import Mount
from palimpsest import Extension, Identity, Palimpsest

class Alice(Extension):
    reads_cookies = False
    async def authenticate(self, conn):
        return Identity("alice", "write")

collab = Palimpsest(store=sys.argv[1], extensions=[Alice()])
app = Starlette(routes=[Mount("/collab", app=collab)])

def state():
    out = {}
    for name in ("palimpsest", ""):
        lg = logging.getLogger(name)
        out[name or "root"] = [
            [type(h).__name__ for h in lg.handlers], lg.level, lg.propagate
        ]
    return out

async def run(text):
    async with collab.lifespan(app):
        during = state()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.put("/collab/api/docs/d/text", json={"text": text})
            assert r.status_code == 200, r.text
    return during

before = state()
during = asyncio.run(run("one"))
after = state()
# the host sets up its logging now, after the app's first run
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="HOST %(name)s %(message)s")
asyncio.run(run("two"))
print("STATE " + json.dumps({"before": before, "during": during, "after": after}))
"""


def test_lifespan_gives_the_loggers_back(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path}/app.db"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = next(s for s in done.stdout.splitlines() if s.startswith("STATE "))
    state = json.loads(line.removeprefix("STATE "))
    # its own log while it ran (nobody had set one up)...
    assert state["during"]["palimpsest"][2] is False, state
    assert state["during"]["palimpsest"][0], state
    # ...and the loggers as they were once it ended
    assert state["after"] == state["before"], state
    # the host's logging, set up after the first run, gets the second run's lines
    host = [s for s in done.stdout.splitlines() if s.startswith("HOST palimpsest")]
    assert host, (done.stdout, done.stderr)
