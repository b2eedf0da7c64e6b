"""What the server imports on its first connection and request, it imports at start: a
module imported on the event loop (anyio's backend took 16-30 ms) holds every other
connection meanwhile (server/app.py, _warm_up)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).parent

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    import websockets.asyncio.client  # the client's own modules, imported up front
    from conftest import run_server
    from yclient import connect
    from palimpsest.settings import Settings

    async def get(port, path):
        # plain HTTP over asyncio streams: an HTTP client library would import anyio
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"GET {{path}} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n"
        writer.write(head.encode())
        await writer.drain()
        status = await reader.readline()
        await reader.read()
        writer.close()
        return status

    async def main():
        async with run_server(Settings(db={db!r})) as server:
            before = set(sys.modules)
            async with connect(server.ws_url, "first", "client") as c:
                c.insert(0, "y")
                await asyncio.sleep(0.2)
            assert b" 200 " in await get(server.port, "/metrics")
            print(sorted(set(sys.modules) - before))

    asyncio.run(main())
    """
)


def test_the_first_connection_imports_nothing_new(tmp_path: Path) -> None:
    """In a fresh interpreter, the server started: a first websocket connection, an edit
    and an HTTP request import no module of the server's stack."""
    script = SCRIPT.format(tests=str(HERE), db=str(tmp_path / "w.db"))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    new = eval(out.stdout.strip().splitlines()[-1])
    ours = [m for m in new if m.split(".")[0] in ("anyio", "starlette", "uvicorn", "palimpsest")]
    assert ours == [], ours
