"""Which Yjs clients wrote an event (issue 19 fault 4): derived from the update, checked
against Yjs itself.

The log used to store ``meta.clients`` from the update's state vector, which Yjs and
yrs compute only for clients whose structs start at clock 0: ``[]`` for almost every
keystroke of a real client. Now nothing is stored (issue 13: no meta field that the
update already says) and ``Event.clients`` / the history API's ``meta.clients`` are read
from the update. The oracle is ``Y.decodeUpdate`` under Node.js, and the clientID each
real y-websocket client reports for itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
from conftest import free_port, run_server
from test_interop_node import NODE_DIR, NodeClient, node_modules  # noqa: F401 - the fixture
from test_store_outage import InProcessServer

from palimpsest.settings import Settings
from palimpsest.store.sqlite import events_in_file
from palimpsest.store.update_clients import update_clients

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_modules")]

#: Yjs's own reading of each update: the clients of its structs (Skip is nobody's)
ORACLE = """
import * as Y from 'yjs'
let input = ''
process.stdin.on('data', (d) => { input += d })
process.stdin.on('end', () => {
  const out = JSON.parse(input).map((b64) => {
    const { structs } = Y.decodeUpdate(new Uint8Array(Buffer.from(b64, 'base64')))
    const own = structs.filter((s) => s.constructor.name !== 'Skip')
    const ids = new Set(own.map((s) => s.id.client))
    return [...ids].sort((a, b) => a - b)
  })
  process.stdout.write(JSON.stringify(out))
})
"""


async def yjs_clients(updates: list[bytes]) -> list[list[int]]:
    proc = await asyncio.create_subprocess_exec(
        "node", "--input-type=module", "-e", ORACLE, cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    data = json.dumps([base64.b64encode(u).decode() for u in updates]).encode()
    out, err = await asyncio.wait_for(proc.communicate(data), 60)
    assert proc.returncode == 0, err.decode()
    result: list[list[int]] = json.loads(out)
    return result


async def test_event_clients_are_the_yjs_clients_of_the_update(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    settings = Settings(db=str(db), port=free_port())
    async with run_server(settings) as srv:
        fake = InProcessServer(srv.ws_url, tmp_path / "server.log")
        a = await NodeClient(fake, "who", "ann", tmp_path / "a.log").start()  # type: ignore[arg-type]
        b = await NodeClient(fake, "who", "bob", tmp_path / "b.log").start()  # type: ignore[arg-type]
        try:
            id_a = (await a.connect())["clientID"]
            id_b = (await b.connect())["clientID"]
            await a.call("type", text="hello")
            await b.wait_text(equals="hello")
            await b.call("insert", pos=5, text=" world")
            await a.wait_text(equals="hello world")
            await b.call("delete", pos=0, len=1)  # a deletion only: no struct of anyone
            await a.wait_text(equals="ello world")
            await a.call("insert", pos=0, text="H")
            await b.wait_text(equals="Hello world")
        finally:
            await a.aclose()
            await b.aclose()
        events = await srv.backend.store.read("who")
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get("/api/docs/who/events", params={"limit": 1000})
        assert r.status_code == 200, r.text
        listed = r.json()["events"]
    assert len(events) == 8, [e.update for e in events]  # 5 keystrokes, insert, delete, insert
    oracle = await yjs_clients([e.update for e in events])
    assert [e.clients for e in events] == oracle
    assert [update_clients(e.update) for e in events] == oracle
    assert [ev["meta"]["clients"] for ev in listed] == oracle
    # and what Yjs says is who typed: each client's own id, none for the deletion
    assert oracle == [[id_a]] * 5 + [[id_b], [], [id_a]]
    # nothing derived is stored: the log's meta holds the connection only
    metas = [e.meta for e in events_in_file(db, "who")]
    assert all(set(m) == {"conn"} for m in metas), metas


#: updates of every content kind Yjs writes, from several clients, with Yjs's answer
KINDS = """
import * as Y from 'yjs'
const out = []
const ids = (u) => {
  const own = Y.decodeUpdate(u).structs.filter((s) => s.constructor.name !== 'Skip')
  return [...new Set(own.map((s) => s.id.client))].sort((x, y) => x - y)
}
const b64 = (u) => Buffer.from(u).toString('base64')
const docs = [1, 2, 3].map((id) => {
  const d = new Y.Doc()
  d.clientID = 1000 * id + 7
  return d
})
const sync = () => {
  for (const x of docs) {
    for (const y of docs) {
      if (x !== y) Y.applyUpdate(y, Y.encodeStateAsUpdate(x, Y.encodeStateVector(y)))
    }
  }
}
const record = (d, f) => {
  const before = Y.encodeStateVector(d)
  f(d)
  const u = Y.encodeStateAsUpdate(d, before)
  out.push({ u: b64(u), clients: ids(u) })
  sync()
}
const [a, b, c] = docs
record(a, (d) => d.getText('t').insert(0, 'héllo ✓ wörld'))
record(b, (d) => d.getText('t').format(1, 4, { bold: true, color: '#f00', n: 3.5 }))
record(c, (d) => d.getText('t').insertEmbed(2, { image: 'x.png', size: [1, 2] }))
record(a, (d) => d.getMap('m').set('k', { deep: [1, -2, 3.25, 2n ** 40n, true, false, null] }))
record(b, (d) => d.getMap('m').set('bin', new Uint8Array([0, 1, 255])))
record(c, (d) => d.getArray('a').insert(0, [1, 'two', { three: 3 }, [4], -123456789, 1e300]))
record(a, (d) => {
  const m = new Y.Map()
  d.getMap('m').set('sub', m)
  m.set('x', 1)
})
record(b, (d) => {
  const e = new Y.XmlElement('p')
  d.getXmlFragment('x').insert(0, [e])
  e.setAttribute('class', 'c')
  e.insert(0, [new Y.XmlText('in p')])
})
record(c, (d) => d.getMap('m').set('doc', new Y.Doc({ guid: 'sub-guid', meta: { a: 1 } })))
record(a, (d) => d.getText('t').delete(0, 3))
record(b, (d) => {
  d.getArray('a').delete(1, 2)
  d.getText('t').insert(1, 'Z')
})
record(c, (d) => d.getMap('m').set('k', 'replaced'))
const merged = Y.mergeUpdates(out.slice(0, 4).map((o) => Buffer.from(o.u, 'base64')))
out.push({ u: b64(merged), clients: ids(merged) })
const full = Y.encodeStateAsUpdate(a)
out.push({ u: b64(full), clients: ids(full) })
process.stdout.write(JSON.stringify(out))
"""


async def test_update_clients_reads_every_content_kind_as_yjs_does() -> None:
    proc = await asyncio.create_subprocess_exec(
        "node", "--input-type=module", "-e", KINDS, cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    cases = json.loads(out)
    assert len(cases) == 14
    for i, case in enumerate(cases):
        assert update_clients(base64.b64decode(case["u"])) == case["clients"], i
    assert cases[-1]["clients"] == [1007, 2007, 3007]
