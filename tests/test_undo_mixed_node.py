"""What docs/undo.md says of the server's undo beside an editor's own (Yjs's
Y.UndoManager) and beside client-side attribution, played with real Yjs clients under
Node.js: mixing the two undos on one document doubles text (and every replica
converges on it), and text a server undo brought back is under the server's client id,
which Y.PermanentUserData names nobody for, while blame names its writer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import RunningServer, run_server
from nodehelp import scenario
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture

from palimpsest.auth.tokens import mint
from palimpsest.settings import Settings

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_modules")]


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db=str(db_path), undo_capture_ms=0)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings) as s:
        yield s


#: alice keeps a Y.UndoManager on her text (as an editor binding does) and also uses the
#: server's undo: she deletes "two ", the server's undo brings it back, then her Ctrl-Z
#: (the manager's undo, which still holds the deletion) brings the original back too
MIXED = scenario("""
const alice = connect('alice')
const bob = connect('bob')
await Promise.all([alice.synced, bob.synced])
const ta = alice.ydoc.getText('content')
const text = (c) => c.ydoc.getText('content').toString()
const um = new Y.UndoManager(ta, { captureTimeout: 0 })
const everywhere = async (what, want) => {
  await until(`${what}: alice`, () => text(alice) === want)
  await until(`${what}: bob`, () => text(bob) === want)
  await until(`${what}: server`, async () => (await head()).roots.content.value === want)
}
ta.insert(0, 'one two three')
await everywhere('typed', 'one two three')
ta.delete(4, 4)
await everywhere('deleted', 'one three')
const undone = await post('undo?user=alice')
await everywhere('server undo', 'one two three')
const managerHad = um.undoStack.length
um.undo()
await until('the manager undid', () => text(alice) !== 'one two three')
const after = text(alice)
await everywhere('converged', after)
process.stdout.write(JSON.stringify({ undone, managerHad, after, bob: text(bob) }))
for (const c of [alice, bob]) c.provider.destroy()
process.exit(0)
""")


async def test_mixing_yjs_undo_manager_and_the_servers_undo_doubles_text(
    server: RunningServer,
) -> None:
    out = json.loads(await node_scenario(MIXED, server.ws_url, server.url, "mixed"))
    assert out["undone"]["status"] == 200, out
    assert out["managerHad"] == 2, out  # her typing and her deletion
    assert out["after"] == out["bob"] == "one two two three", out


#: alice keeps a PermanentUserData; she deletes a word of hers and the server's undo
#: brings it back: PUD names nobody for the copy (the server's client id), blame names
#: alice
ATTRIBUTED = scenario("""
const alice = connect('alice')
await alice.synced
const pud = new Y.PermanentUserData(alice.ydoc, alice.ydoc.getMap('users'))
pud.setUserMapping(alice.ydoc, alice.ydoc.clientID, 'alice')
const ta = alice.ydoc.getText('content')
ta.insert(0, 'Alice wrote this.')
await until('typed', async () => (await head()).roots.content?.value === 'Alice wrote this.')
ta.delete(6, 6)
await until('deleted', async () => (await head()).roots.content.value === 'Alice this.')
const undone = await post('undo?user=alice')
await until('undone', () => ta.toString() === 'Alice wrote this.')
const pudRuns = []
for (let item = ta._start; item; item = item.right) {
  if (!item.deleted && item.content.constructor.name === 'ContentString') {
    pudRuns.push({ text: item.content.str, user: pud.getUserByClientId(item.id.client) ?? null })
  }
}
const blame = await (await fetch(`${HTTP}/api/docs/${DOC}/blame`)).json()
process.stdout.write(JSON.stringify({ undone, pudRuns,
  blame: blame.roots.content.runs.map((r) => ({ text: r.text, actor: r.actor })) }))
alice.provider.destroy()
process.exit(0)
""")


async def test_a_server_undos_text_is_nobodys_to_pud_and_its_writers_to_blame(
    server: RunningServer,
) -> None:
    out = json.loads(await node_scenario(ATTRIBUTED, server.ws_url, server.url, "ychange"))
    assert out["undone"]["status"] == 200, out
    assert out["pudRuns"] == [
        {"text": "Alice ", "user": "alice"},
        {"text": "wrote ", "user": None},
        {"text": "this.", "user": "alice"},
    ], out
    assert "".join(r["text"] for r in out["blame"]) == "Alice wrote this."
    assert {r["actor"] for r in out["blame"]} == {"alice"}, out


#: the page module's undo (static/palimpsest.js ServerUndo) in token mode, its socket
#: closed: it goes over HTTP with the token, and the display name it was given (not the
#: token's user) is not sent as ?user= (which names the token's user only: 400)
TOKEN_FALLBACK = scenario("""
import { ServerUndo } from '../../static/palimpsest.js'
const ydoc = new Y.Doc()
const provider = new WebsocketProvider(WS, DOC, ydoc,
  { params: { token: process.env.TOKEN }, WebSocketPolyfill: WebSocket, disableBc: true })
await new Promise((resolve) => provider.once('synced', resolve))
const undo = new ServerUndo(provider, { doc: DOC, user: 'Alice Liddell',
  token: process.env.TOKEN, baseUrl: HTTP })
ydoc.getText('content').insert(0, 'hello')
const auth = { headers: { authorization: `Bearer ${process.env.TOKEN}` } }
const text = async () => (await (await fetch(`${HTTP}/api/docs/${DOC}/versions/head`,
  auth)).json()).roots.content?.value
await until('typed', async () => (await text()) === 'hello')
provider.disconnect()
const answer = await undo.undo()
process.stdout.write(JSON.stringify({ answer, after: await text() }))
provider.destroy()
process.exit(0)
""")


async def test_the_page_modules_undo_over_http_with_a_token_sends_no_display_name(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a-secret-of-at-least-thirty-two-bytes-long!"
    settings = Settings(db=str(db_path), undo_capture_ms=0, jwt_secret=secret)
    token = mint(secret, "alice", "write", ["*"], 600)
    monkeypatch.setenv("TOKEN", token)  # (node_scenario passes the environment on)
    async with run_server(settings) as s:
        out = json.loads(await node_scenario(TOKEN_FALLBACK, s.ws_url, s.url, "fallback"))
    assert out["answer"]["ok"] is True, out
    assert out["after"] == "", out
