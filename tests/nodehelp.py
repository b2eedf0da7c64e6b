"""Helpers for tests that drive Node.js y-websocket clients (test_interop_node):
``node_clients`` runs NodeClients for a test; the scenarios run with ``node_scenario``
(WS, HTTP and DOC in their environment) begin alike, and ``scenario(body)`` is `body`
after that opening."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from serverproc import ServerProcess
from test_interop_node import NodeClient


@contextlib.asynccontextmanager
async def node_clients(
    server: ServerProcess, doc: str, log_dir: Path, *users: str, start: bool = True
) -> AsyncIterator[tuple[NodeClient, ...]]:
    """A NodeClient on `doc` of `server` for each of `users` (its log `log_dir`/USER.log),
    each started and connected in turn (not `start`: the test does it when it will),
    and closed after whatever happens."""
    clients = tuple(NodeClient(server, doc, user, log_dir / f"{user}.log") for user in users)
    try:
        if start:
            for c in clients:
                await c.start()
                await c.connect()
        yield clients
    finally:
        for c in clients:
            await c.aclose()


#: what every such scenario begins with; it defines, for the rest of the script:
#:
#: - ``Y``, ``WebSocket``, ``WebsocketProvider``, and ``WS``, ``HTTP``, ``DOC``;
#: - ``until(what, check)``: polls `check` (may be async) every 20 ms until it holds,
#:   and fails with "timed out: `what`" after 10 s;
#: - ``connect(user)``: ``{ ydoc, provider, synced }``, a Y.Doc on DOC as `user`
#:   (BroadcastChannel off), `synced` a promise of its first sync;
#: - ``head()``: the document's head version (``GET versions/head``), parsed;
#: - ``logged(n)``: until the head's seq is `n`;
#: - ``post(path, body)``: ``{ status, body }`` of a POST of JSON `body` (or none) to the
#:   document's `path` (``restore?user=bob``).
PRELUDE = """
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
const { WS, HTTP, DOC } = process.env
const until = async (what, check) => {
  const end = Date.now() + 10000
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out: ' + what)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
const connect = (user) => {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(WS, DOC, ydoc,
    { params: { user }, WebSocketPolyfill: WebSocket, disableBc: true })
  return { ydoc, provider, synced: new Promise((resolve) => provider.once('synced', resolve)) }
}
const head = async () => (await (await fetch(`${HTTP}/api/docs/${DOC}/versions/head`)).json())
const logged = async (n) => until(`${n} events logged`, async () => (await head()).seq === n)
const post = async (path, body) => {
  const r = await fetch(`${HTTP}/api/docs/${DOC}/${path}`, { method: 'POST',
    headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) })
  return { status: r.status, body: await r.json() }
}
"""


def scenario(body: str) -> str:
    """The ES module of a scenario: PRELUDE, then `body`."""
    return PRELUDE + body
