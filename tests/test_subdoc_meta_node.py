"""A Yjs subdocument's options (``new Y.Doc({meta})``) reach everyone as their writer
wrote them: a client that joins later, a version read as an update, a client after a
restart (the document loaded from its snapshot), peers after a restore, its undo and redo.
yrs (pycrdt) keeps no ``meta`` when it writes a subdocument again: all of them used to
read ``meta: null`` (server/subdoc_options.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, run_server
from nodehelp import scenario
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture

from palimpsest import subdoc_options
from palimpsest.settings import Settings

META = {"title": "Report", "mime": "text/markdown", "n": [1, {"deep": True}]}

#: what a Y.Doc reads of the subdocuments, and of a version read as an update
READ = """
const sub = (d) => {
  const x = d.getMap('files').get('x')
  const p = d.getArray('pages').get(0)
  return { x: x ? { guid: x.guid, meta: x.meta, autoLoad: x.autoLoad } : null,
           page: p ? { guid: p.guid, meta: p.meta, autoLoad: p.autoLoad } : null }
}
const asUpdate = async (version) => {
  const r = await fetch(`${HTTP}/api/docs/${DOC}/versions/${version}?format=update`)
  const d = new Y.Doc()
  Y.applyUpdate(d, new Uint8Array(await r.arrayBuffer()))
  return sub(d)
}
const joiner = async (user) => {
  const c = connect(user)
  await c.synced
  const got = sub(c.ydoc)
  c.provider.destroy()
  return got
}
"""

WRITE = scenario(
    READ
    + """
const alice = connect('alice')
const bob = connect('bob')
await alice.synced
await bob.synced
alice.ydoc.getMap('files').set('x', new Y.Doc({ guid: 'sub-x', meta: META }))
alice.ydoc.getArray('pages').push([new Y.Doc({ guid: 'page-1', autoLoad: true })])
await logged(2)
await until('bob has both', () => sub(bob.ydoc).page !== null)
const out = { writer: sub(alice.ydoc), peer: sub(bob.ydoc) }
out.joiner = await joiner('carol')
out.head = await asUpdate('head')
// deleted, then restored by someone else, that restore undone, then redone
alice.ydoc.getMap('files').delete('x')
await logged(3)
out.restore = (await post('restore?user=carol', { seq: 2 })).status
await logged(4)
await until('bob has x back', () => sub(bob.ydoc).x !== null)
out.restored = sub(bob.ydoc)
out.restoredJoiner = await joiner('dave')
out.undo = (await post('undo?user=carol')).status
await logged(5)
await until('restore undone', () => sub(bob.ydoc).x === null)
out.redo = (await post('redo?user=carol')).status
await logged(6)
await until('restore redone', () => sub(bob.ydoc).x !== null)
out.undone = sub(bob.ydoc)
out.undoneJoiner = await joiner('erin')
out.undoneHead = await asUpdate('head')
alice.provider.destroy()
bob.provider.destroy()
process.stdout.write(JSON.stringify(out))
process.exit(0)
""".replace("META", json.dumps(META))
)

AFTER_RESTART = scenario(
    READ
    + """
const out = { joiner: await joiner('frank'), head: await asUpdate('head') }
process.stdout.write(JSON.stringify(out))
process.exit(0)
"""
)

X = {"guid": "sub-x", "meta": META, "autoLoad": False}
PAGE = {"guid": "page-1", "meta": None, "autoLoad": True}
BOTH = {"x": X, "page": PAGE}


@pytest.fixture
def settings(db_path: Path) -> Settings:
    # every event its own undo step
    return Settings(db=str(db_path), unload_after_seconds=0.5, undo_capture_ms=0)


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_subdoc_meta_reaches_joiners_versions_restores_and_undos(
    server: RunningServer,
) -> None:
    out = json.loads(await node_scenario(WRITE, server.ws_url, server.url, "subdocs"))
    assert out == {
        "writer": BOTH, "peer": BOTH, "joiner": BOTH, "head": BOTH,
        "restore": 200, "restored": BOTH, "restoredJoiner": BOTH,
        "undo": 200, "redo": 200, "undone": BOTH, "undoneJoiner": BOTH,
        "undoneHead": BOTH,
    }, json.dumps(out)  # fmt: skip


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_subdoc_meta_survives_a_restart_from_a_snapshot(settings: Settings) -> None:
    async with run_server(settings) as first:
        await node_scenario(WRITE, first.ws_url, first.url, "subdocs")
    # (the room unloads with the server: a snapshot of it is written)
    async with run_server(dataclasses.replace(settings)) as second:
        snap = await second.backend.store.latest_snapshot("subdocs")
        assert snap is not None and snap.seq == 6  # loaded from it, no event replayed
        out: dict[str, Any] = json.loads(
            await node_scenario(AFTER_RESTART, second.ws_url, second.url, "subdocs")
        )
    assert out == {"joiner": BOTH, "head": BOTH}, json.dumps(out)


#: Yjs's update of ``files.set('x', new Y.Doc({guid: 'g1', meta: {title: 'Report'}}))``
#: by client 7: its options ``{meta: {title: 'Report'}}``
YJS_SUBDOC = bytes.fromhex(
    "0101070029010566696c657301780267317601046d6574617601057469746c6577065265706f727400"
)
YJS_OPTIONS = bytes.fromhex("7601046d6574617601057469746c6577065265706f7274")


def test_restored_puts_back_what_yjs_wrote_and_nothing_else() -> None:
    """Unit: yrs writes the subdocument without its meta; restored() puts the logged
    options back; a document that never had a meta keeps yrs's bytes (the same object)."""
    from pycrdt import Doc, Map

    doc: Doc[Any] = Doc()
    doc.apply_update(YJS_SUBDOC)
    assert YJS_OPTIONS not in doc.get_update()  # what the tester saw
    subdoc_options.note(doc, YJS_SUBDOC)
    again = subdoc_options.restored(doc, doc.get_update())
    assert again == YJS_SUBDOC
    assert subdoc_options.merge(YJS_SUBDOC, b"\x00\x00") == YJS_SUBDOC

    plain: Doc[Any] = Doc()
    plain.get("files", type=Map)["x"] = Doc()
    state = plain.get_update()
    assert subdoc_options.restored(plain, state) is state


#: a subdocument with a meta, text typed and deleted (what a purge erases), more after it
WRITE_FOR_PURGE = scenario(
    READ
    + """
const alice = connect('alice')
await alice.synced
alice.ydoc.getMap('files').set('x', new Y.Doc({ guid: 'sub-x', meta: META }))
alice.ydoc.getArray('pages').push([new Y.Doc({ guid: 'page-1', autoLoad: true })])
await logged(2)
alice.ydoc.getText('t').insert(0, 'SECRET')
await logged(3)
alice.ydoc.getText('t').delete(0, 6)
await logged(4)
alice.ydoc.getText('t').insert(0, 'kept')
await logged(5)
alice.provider.destroy()
process.exit(0)
""".replace("META", json.dumps(META))
)

AFTER_PURGE = scenario(
    READ
    + """
const c = connect('frank')
await c.synced
const out = { joiner: sub(c.ydoc), text: c.ydoc.getText('t').toString(),
              base: await asUpdate(4), head: await asUpdate('head'), above: await asUpdate(5) }
c.provider.destroy()
process.stdout.write(JSON.stringify(out))
process.exit(0)
"""
)


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_subdoc_meta_survives_a_purge_of_deleted_content(settings: Settings) -> None:
    """Erasure (compact --purge-deleted) writes the base again through a document with
    gc on, and folds the snapshots above it again: both are written by yrs, which keeps
    no meta. A client loading the purged document, and the versions at and above the
    base, used to read ``meta: null``."""
    async with run_server(settings) as first:
        await node_scenario(WRITE_FOR_PURGE, first.ws_url, first.url, "purged")
    # (the room unloaded with the server: a snapshot at 5, above the base to come)
    async with run_server(dataclasses.replace(settings)) as second:
        store = second.backend.store
        assert [s.seq for s in await store.snapshots("purged")] == [5]
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
            r = await http.post("/api/docs/purged/compact", params={"user": "ops"},
                                json={"before": 4, "purge_deleted": True})  # fmt: skip
            assert r.status_code == 200, r.text
        base = await store.latest_snapshot("purged", 4)
        assert base is not None and base.seq == 4 and b"SECRET" not in base.state
        above = await store.latest_snapshot("purged", 5)
        assert above is not None and above.seq == 5 and b"SECRET" not in above.state
        assert b"text/markdown" in base.state  # the meta, written back
        assert b"text/markdown" in above.state
        out = json.loads(await node_scenario(AFTER_PURGE, second.ws_url, second.url, "purged"))
    assert out == {"joiner": BOTH, "text": "kept", "base": BOTH, "head": BOTH, "above": BOTH}, (
        json.dumps(out)
    )
