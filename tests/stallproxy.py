"""A TCP proxy to a real server (PostgreSQL, Redis) that can pass, stall or cut, for the
tests of what a store that stops answering does to the server.

    with StallingProxy(5432) as proxy:            # runs in a thread of its own
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        proxy.stall()    # every byte is held, both ways; connections stay open
        proxy.cut()      # every connection is closed, new ones are accepted and closed
        proxy.refuse()   # every connection is closed, and the port is closed: connecting
                         # is refused (ECONNREFUSED), as with a server that is down
        proxy.resume()   # bytes flow again (held ones first)

A stalled store is what a hung database host, a full network queue or a lost route looks
like to the server: nothing fails, nothing answers.

``StallingProxy(5432, drop_startup={"search_path"})`` also drops those parameters from a
PostgreSQL client's startup message (and declines SSL), as PgBouncer does with the ones
its ``ignore_startup_parameters`` names: the session runs with the server's defaults.
``StallingProxy(5432, hold_queries=True)`` lets a PostgreSQL client connect (trust
authentication: no message of the client's after its startup one) and then never passes
on what it sends: what a client of a pooler whose pool is full sees (PgBouncer accepts
the login, and the first query waits for a server session).
``StallingProxy(5432, delay=0.03)`` holds every chunk that long on its way, each way (a
server 60 ms away, round trip), without holding the ones behind it any longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterable
from types import TracebackType


class StallingProxy:
    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        *,
        drop_startup: Iterable[str] = (),
        hold_queries: bool = False,
        delay: float = 0.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.drop_startup = frozenset(drop_startup)
        self.hold_queries = hold_queries
        self.port = 0
        self.mode = "pass"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed: asyncio.Event

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def stall(self) -> None:
        self._set("stall")

    def cut(self) -> None:
        self._set("cut")

    def refuse(self) -> None:
        self._set("refuse")

    def resume(self) -> None:
        self._set("pass")

    def _set(self, mode: str) -> None:
        asyncio.run_coroutine_threadsafe(self._switch(mode), self._loop).result(10)

    async def _switch(self, mode: str) -> None:
        self.mode = mode
        self._changed.set()  # wakes the held pipes; the next change has an event of its own
        self._changed = asyncio.Event()
        if mode in ("cut", "refuse"):
            for w in list(self._writers):
                w.transport.abort()
        if mode == "refuse" and self._server is not None:
            self._server.close()  # (the same port listens again on resume)
            self._server = None
        elif mode != "refuse" and self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _start(self) -> None:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await self._switch("cut")
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.mode in ("cut", "refuse"):
            cw.transport.abort()
            return
        first = b""
        if self.drop_startup or self.hold_queries:
            try:
                first = await self._startup(cr, cw)
            except (OSError, asyncio.IncompleteReadError):
                cw.transport.abort()
                return
        try:
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        sw.write(first)
        self._writers |= {cw, sw}
        try:
            if self.hold_queries:  # the client's bytes after its startup go nowhere
                await asyncio.gather(self._discard(cr, sw), self._pipe(sr, cw))
            else:
                await asyncio.gather(self._pipe(cr, sw), self._pipe(sr, cw))
        finally:
            self._writers -= {cw, sw}

    async def _startup(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> bytes:
        """The client's startup message without the parameters in drop_startup (an SSL
        or GSS encryption request before it is declined)."""
        while True:
            (size,) = struct.unpack("!i", await cr.readexactly(4))
            body = await cr.readexactly(size - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                cw.write(b"N")
                await cw.drain()
                continue
            if code != 196608:  # (a cancel request: as it is)
                return struct.pack("!i", size) + body
            words = body[4:].split(b"\0")
            kept = b""
            for key, value in zip(words[0::2], words[1::2], strict=False):
                if key and key.decode() not in self.drop_startup:
                    kept += key + b"\0" + value + b"\0"
            out = body[:4] + kept + b"\0"
            return struct.pack("!i", len(out) + 4) + out

    async def _discard(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while await r.read(65536):
                    pass
        finally:
            w.transport.abort()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.delay > 0:
            await self._delayed_pipe(r, w)
            return
        try:
            while data := await r.read(65536):
                while self.mode == "stall" and not w.is_closing():  # held while stalled
                    await self._changed.wait()
                if self.mode == "cut" or w.is_closing():
                    break
                w.write(data)
                await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            w.transport.abort()

    async def _delayed_pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """_pipe, each chunk passed on `delay` seconds after it was read (in order)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await r.read(65536):
                    chunks.put_nowait((loop.time() + self.delay, data))
            chunks.put_nowait((loop.time() + self.delay, b""))

        reader = asyncio.create_task(read())
        try:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                while self.mode == "stall" and not w.is_closing():  # held while stalled
                    await self._changed.wait()
                if not data or self.mode == "cut" or w.is_closing():
                    break
                w.write(data)
                await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            reader.cancel()
            w.transport.abort()
