"""pycrdt's own `Provider` (pycrdt 0.14) against the real server, beside an unmodified
y-websocket client under Node.js.

The Provider sends every transaction of its document to the channel, the remote ones it
applied included: each update it receives comes straight back. Those echoes add nothing
and must not become events (they used to be logged as edits by the Provider's user).

pycrdt ships the Provider and the `Channel` protocol, not a websocket transport: the
channel below is the few lines its docs ask for, over the `websockets` client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from pycrdt import Doc, Provider, Text
from serverproc import ServerProcess
from test_interop_node import (  # noqa: F401 (fixtures)
    ClientFactory,
    client,
    node_modules,
    read_events,
    server,
)


@pytest.fixture
def y_websocket() -> str:
    """The Node client beside the Provider: y-websocket 3.0 (the interop tests cover 2.1)."""
    return "3.0"


class WebsocketChannel:
    """pycrdt's `Channel` over a `websockets` client connection."""

    def __init__(self, ws: websockets.ClientConnection, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except websockets.ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self._ws.send(message)

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        assert isinstance(message, bytes), "the server sends binary frames"
        return message


@contextlib.asynccontextmanager
async def pycrdt_provider(srv: ServerProcess, doc_name: str, user: str) -> AsyncIterator[Doc]:
    doc: Doc[Any] = Doc()
    url = f"{srv.ws_url}/{doc_name}?user={user}"
    async with websockets.connect(url, compression=None) as ws:
        async with Provider(doc, WebsocketChannel(ws, doc_name)) as provider:
            await asyncio.wait_for(provider.synced.wait(), 10)
            yield doc


async def wait_for(check: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_pycrdt_provider_converges_with_node_and_its_echoes_are_not_logged(
    client: ClientFactory,  # noqa: F811
    server: ServerProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    node = await client("provider", "nodebob")
    await node.call("insert", pos=0, text="node first. ")
    async with pycrdt_provider(server, "provider", "pyalice") as doc:
        text = doc.get("content", type=Text)
        await wait_for(lambda: str(text) == "node first. ", "the Provider gets Node's text")
        text += "python. "  # the Provider's own edit: one event
        await node.wait_text(equals="node first. python. ")
        for word in ["node", "again", "and again. "]:  # each one echoed back by the Provider
            await node.call("insert", pos="end", text=f"{word} ")
        final = "node first. python. node again and again.  "
        await wait_for(lambda: str(text) == final, "the Provider gets Node's edits")
        # A marker edit: the Provider sent its echoes of Node's edits before it, on the
        # same socket, so once it is logged every echo has been judged.
        text += "end"
        await node.wait_text(equals=final + "end")
        await wait_for(
            lambda: any(b"end" in e["data"] for e in read_events(server.db_path, "provider")),
            "the marker is logged",
        )
    events = read_events(server.db_path, "provider")
    actors = [e["actor"] for e in events]
    assert actors == ["nodebob", "pyalice", "nodebob", "nodebob", "nodebob", "pyalice"], [
        (e["seq"], e["actor"], e["kind"], e["data"].hex()) for e in events
    ]
    assert {e["kind"] for e in events} == {"edit"}
    assert [e["seq"] for e in events] == list(range(1, 7))
    assert await node.text() == final + "end"
