"""pycrdt-websocket peer for the benchmarks: one WebsocketServer whose rooms persist to
pycrdt-store's SQLiteYStore (one SQLite file, one row per update), served by uvicorn with
the `websockets` implementation and permessage-deflate off, as Palimpsest is.

A room is loaded from its store before it is marked ready (what jupyter-collaboration
does); rooms stay in memory once loaded (auto_clean_rooms=False, so that closing the last
client never cancels pending store writes). pycrdt-websocket broadcasts an update first
and writes it to the store afterwards, in a background task.

Usage: python pycrdt_runner.py --port P --db FILE
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import warnings

import uvicorn
from pycrdt.store import SQLiteYStore, YDocNotFound
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    args = ap.parse_args()

    # the ignores: pycrdt-store and pycrdt-websocket are in bench/.peers/venv, not in the
    # project's, so mypy sees their classes as Any
    class Store(SQLiteYStore):  # type: ignore[misc,unused-ignore]
        db_path = args.db

    class Server(WebsocketServer):  # type: ignore[misc,unused-ignore]
        def __init__(self) -> None:
            super().__init__(
                rooms_ready=False,
                auto_clean_rooms=False,
                exception_handler=lambda exc, log: log.error("%r", exc) or True,
            )
            self._loading: dict[str, asyncio.Lock] = {}

        async def get_room(self, name: str) -> YRoom:
            lock = self._loading.setdefault(name, asyncio.Lock())
            async with lock:
                if name not in self.rooms:
                    store = Store(path=name)
                    room = YRoom(ready=False, ystore=store, log=self.log)
                    self.rooms[name] = room
                    await self.start_room(room)
                    await store.started.wait()
                    try:
                        await store.apply_updates(room.ydoc)
                    except YDocNotFound:
                        pass
                    room.ready = True
                    await room.ydoc_observed.wait()
            room = self.rooms[name]
            await self.start_room(room)
            return room

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message="The `websockets` implementation is deprecated")
    ws_server = Server()
    app = ASGIServer(ws_server)

    async def serve() -> None:
        async with ws_server:
            config = uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                ws="websockets",
                ws_per_message_deflate=False,
                ws_max_size=64 * 1024 * 1024,
                log_level="warning",
                lifespan="off",
            )
            server = uvicorn.Server(config)
            config.load()
            server.lifespan = config.lifespan_class(config)
            await server.startup()
            print(f"listening on http://{args.host}:{args.port}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await server.shutdown()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
