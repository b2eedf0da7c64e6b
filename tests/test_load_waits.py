"""How long a load and a socket took, as the log says, when the store made them wait."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
import websockets
from conftest import PG_PORT, eventually, free_port, run_server
from scaleout import fresh_schema
from stallproxy import StallingProxy

from palimpsest.settings import Settings

pytestmark = pytest.mark.postgres


async def test_a_load_and_a_socket_that_waited_for_a_stalled_store_say_how_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL stalled while a socket opens a document: the room waited ~35 s for the
    store and the log said `loaded … in 21.5 ms` (timed from the read of the snapshot,
    after the document's tombstone and compaction base, which had waited); the socket,
    open ~36 s, said `closed by the client after 0.0 s` (timed from when its room was
    ready, not from the accept). Both are timed from the start now. (The bound is the
    stall the test holds, not a speed.)"""
    caplog.set_level(logging.INFO)
    held = 1.5
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as url:
            via = url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
            async with run_server(Settings(store=via, port=free_port())) as srv:
                await asyncio.to_thread(proxy.stall)
                ws = await websockets.connect(f"{srv.ws_url}/stalled")
                # accepted, its room's load under way (it began before the accept
                # returned here): both wait for the store from now on at least `held`
                try:
                    await asyncio.sleep(held)
                    await asyncio.to_thread(proxy.resume)
                    await asyncio.wait_for(ws.recv(), 30)  # the server's sync step 1: loaded
                finally:
                    await ws.close()
                await eventually(lambda: "disconnect" in caplog.text, what="disconnect said")
    loaded = re.search(r"loaded stalled: .* in ([0-9.]+) ms", caplog.text)
    assert loaded is not None, caplog.text
    assert float(loaded.group(1)) >= held * 1000, loaded.group(0)
    closed = re.search(
        r"disconnect \S+ doc=stalled .*\(closed by .* after ([0-9.]+) s\)", caplog.text
    )
    assert closed is not None, caplog.text
    assert float(closed.group(1)) >= held, closed.group(0)
