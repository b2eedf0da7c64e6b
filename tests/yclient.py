"""A minimal y-websocket client for the server's own tests (the real one is client/)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import httpx
import websockets
from pycrdt import Doc, Text, TransactionEvent

from palimpsest import protocol as P


class YClient:
    def __init__(self, ws: Any, doc: Doc) -> None:
        self.ws = ws
        self.doc = doc
        self.text = doc.get("content", type=Text)
        self.synced = asyncio.Event()
        self.frames: list[P.Message] = []
        self.ext: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reader: asyncio.Task[None] | None = None
        #: local updates on their way: a request or a raw frame goes after them (with
        #: Python 3.13 an awaited send may reach the socket before a task made earlier)
        self._sends: set[asyncio.Task[None]] = set()
        doc.observe(self._on_local)

    def _on_local(self, e: TransactionEvent) -> None:
        with contextlib.suppress(Exception):
            if self._applying:
                return
            upd = e.update
            task = asyncio.get_running_loop().create_task(self.ws.send(P.encode_sync_update(upd)))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    _applying = False

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                msg = P.decode(raw)
                self.frames.append(msg)
                if isinstance(msg, P.SyncStep1):
                    await self.ws.send(P.encode_sync_step2(self.doc.get_update(msg.state_vector)))
                elif isinstance(msg, P.SyncStep2 | P.SyncUpdate):
                    self._applying = True
                    try:
                        self.doc.apply_update(msg.update)
                    finally:
                        self._applying = False
                    if isinstance(msg, P.SyncStep2):
                        self.synced.set()
                elif isinstance(msg, P.Extension):
                    self.ext.append(msg.body)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason

    async def _sent(self) -> None:
        if self._sends:
            await asyncio.gather(*list(self._sends), return_exceptions=True)

    async def send_raw(self, frame: bytes) -> None:
        await self._sent()
        await self.ws.send(frame)

    def insert(self, pos: int, s: str) -> None:
        self.text.insert(pos, s)

    @property
    def content(self) -> str:
        return str(self.text)

    async def request(self, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        rid = len(self.ext) + 1000 + id(body) % 1000
        await self._sent()
        await self.ws.send(P.encode_extension({**body, "id": rid}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for b in self.ext:
                if b.get("id") == rid:
                    return b
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no answer to {body}")


@contextlib.asynccontextmanager
async def connect(
    base: str,
    doc: str,
    user: str | None = None,
    ydoc: Doc | None = None,
    wait_sync: bool = True,
    headers: dict[str, str] | None = None,
    **q: str,
) -> AsyncIterator[YClient]:
    params = dict(q)
    if user:
        params["user"] = user
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    url = f"{base}/{doc}" + (f"?{qs}" if qs else "")
    async with websockets.connect(
        url, max_size=None, compression=None, additional_headers=headers
    ) as ws:
        client = YClient(ws, ydoc or Doc())
        await ws.send(P.encode_sync_step1(client.doc.get_state()))
        client._reader = asyncio.create_task(client.run())
        if wait_sync:
            await asyncio.wait_for(client.synced.wait(), 10)
        try:
            yield client
        finally:
            client._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await client._reader


class People(NamedTuple):
    """Two people's documents, connected to one server document, with its HTTP API."""

    ann: Doc
    bob: Doc
    http: httpx.AsyncClient
    #: the document's head seq, as the store has it
    head: Callable[[], Awaitable[int]]
    #: whether the store holds at least n events of the document
    logged: Callable[[int], Awaitable[bool]]


@contextlib.asynccontextmanager
async def two_people(
    server: Any, doc: str, names: tuple[str, str] = ("ann", "bob")
) -> AsyncIterator[People]:
    """Two websocket clients named `names` on `doc` of `server` (conftest.RunningServer),
    and an HTTP client of it."""
    ann: Doc = Doc()
    bob: Doc = Doc()
    async with (
        connect(server.ws_url, doc, names[0], ydoc=ann),
        connect(server.ws_url, doc, names[1], ydoc=bob),
        httpx.AsyncClient(base_url=server.url) as c,
    ):

        async def head() -> int:
            return int(await server.backend.store.head(doc))

        async def logged(n: int) -> bool:
            return await head() >= n

        yield People(ann, bob, c, head, logged)
