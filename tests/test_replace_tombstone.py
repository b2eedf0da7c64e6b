"""``palimpsest copy --replace`` leaves the replaced document's state vector in the name's
tombstone, as a deletion does: a client that kept the old Y.Doc and reconnects (y-websocket
does within ~250 ms of the 4409 unless the app disconnects it at once) is refused (4409)
instead of syncing the replaced content back into the new document. Real parts: a
`palimpsest serve` process, an unmodified y-websocket client under Node, the copy run by
the CLI on the server's SQLite file beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from nodehelp import scenario
from pycrdt import Doc, Text
from scaleout import fresh_schema
from serverproc import ServerProcess
from test_admin_cli import cli
from test_interop_node import node_modules, node_scenario  # noqa: F401  (a fixture)
from test_replace_open import source_with
from test_undo import edit, make_settings, serving
from yclient import connect

from palimpsest import protocol as P
from palimpsest.deletion import REPLACES, replaces_in
from palimpsest.snapshots import load, server_client_id
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent

#: the stale tab: it keeps its Y.Doc across the 4409 and lets y-websocket reconnect;
#: the copy runs (the CLI, a process of its own) while it is connected
STALE_TAB = scenario("""
import { execFileSync } from 'child_process'
const closes = []
const a = connect('ann')
a.provider.on('connection-close', (e) => { if (e) closes.push({ code: e.code, reason: e.reason }) })
await a.synced
a.ydoc.getText('content').insert(0, 'OLD words of the target ')
await logged(1)
execFileSync(process.env.PY, ['-m', 'palimpsest', 'copy', '--from', process.env.SRC,
  '--to', process.env.DST, '--doc', DOC, '--replace', '--quiet'],
  { stdio: ['ignore', 'ignore', 'inherit'] })
// an edit of the old copy after the replace: the room's commit runs into it (4409)
a.ydoc.getText('content').insert(0, 'MORE ')
await until('closed with 4409', () => closes.some((c) => c.code === 4409))
// y-websocket reconnects with the old Y.Doc by itself: refused, or its content is taken
await until('a reconnect refused or the old content logged',
  async () => closes.length >= 2 || (await head()).seq > 1)
a.provider.disconnect()
const b = connect('bob')
await b.synced
const seen = b.ydoc.getText('content').toString()
const before = (await head()).seq
b.ydoc.getText('content').insert(0, 'fresh ')
await until('the fresh edit logged', async () => (await head()).seq > before)
b.provider.disconnect()
console.log(JSON.stringify({ closes, seen, head: await head() }))
process.exit(0)
""")


async def test_a_stale_y_websocket_tab_does_not_bring_a_replaced_document_back(
    tmp_path: Path,
    node_modules: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, the tab's reconnect synced the whole old document into the new one (a
    field test saw 1,558 old tokens beside the new content). Now its reconnect is
    refused with 4409 at its sync step 1; a fresh client sees exactly the source's
    content and edits it."""
    src = await source_with(tmp_path / "src.db", "d", "new text")
    async with ServerProcess(tmp_path / "srv") as srv:
        monkeypatch.setenv("PY", sys.executable)
        monkeypatch.setenv("SRC", src)
        monkeypatch.setenv("DST", f"sqlite:///{srv.db_path}")
        out = json.loads(await node_scenario(STALE_TAB, srv.ws_url, srv.http_url, "d"))
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            text = (await http.get("/api/docs/d/versions/head")).text
    assert out["seen"] == "new text", out
    codes = [c["code"] for c in out["closes"]]
    assert codes[:2] == [4409, 4409], out["closes"]
    refused = out["closes"][1]["reason"]
    assert "replaced" in refused and "deleted" not in refused, refused
    assert "OLD" not in text and "MORE" not in text, text
    assert "fresh new text" in text, text


def _doc(client_id: int, text: str) -> Doc:
    d: Doc = Doc(client_id=client_id)
    d["content"] = Text(text)
    return d


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_replace_records_the_replaced_state_vector_in_the_tombstone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """The copy writes the tombstone with the document (one transaction): the old
    document's state vector merged with the tombstone the name had, and one more
    replace counted (REPLACES), which tells it from a deletion's."""
    if kind == "sqlite":
        await _records_the_tombstone(tmp_path, capfd, f"sqlite:///{tmp_path / 'dst.db'}")
    else:
        async with fresh_schema() as url:
            await _records_the_tombstone(tmp_path, capfd, url)


async def _records_the_tombstone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], dst: str
) -> None:
    src = await source_with(tmp_path / "src.db", "d", "new text")
    store = open_store(dst)
    await store.start()
    try:
        old = _doc(77, "old")
        await store.append([("d", [NewEvent("ann", "edit", old.get_update())])])
    finally:
        await store.stop()
    for _ in range(2):
        r = await cli(capfd, "copy", "--from", src, "--to", dst, "--replace", "--quiet")
        assert r.code == 0, r
    store = open_store(dst)
    await store.start()
    try:
        tomb = await store.tombstone("d")
        assert tomb is not None
        sv = P.decode_state_vector(tomb)
        assert sv[77] == 3, sv
        assert replaces_in(sv) == 2, sv  # each replace counted
        assert sv[REPLACES] == 2
        text = str((await load(store, "d")).doc.get("content", type=Text))
        assert text == "new text"
    finally:
        await store.stop()


async def test_legitimate_content_is_not_refused_after_a_replace(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The target was once a copy of the source (the same client ids, the old
    document further along one of them): items the new document has are taken (a
    client holding exactly the source's document, a client that goes on editing from
    it), so are fresh clients' edits; what only the replaced document had is refused
    with 4409."""
    shared = _doc(501, "shared ")
    base = shared.get_update()
    src_path = tmp_path / "src.db"
    src = f"sqlite:///{src_path}"
    db = tmp_path / "db"
    # the target's own further edit, by the same client
    more: Doc = Doc(client_id=501)
    more.apply_update(base)
    sv = more.get_state()
    more.get("content", type=Text).insert(0, "target only ")
    target_only = more.get_update(sv)
    for url, extra in ((src, None), (f"sqlite:///{db}", target_only)):
        store = open_store(url)
        await store.start()
        try:
            await store.append([("d", [NewEvent("ann", "edit", base)])])
            if extra is not None:
                await store.append([("d", [NewEvent("ann", "edit", extra)])])
        finally:
            await store.stop()
    async with serving(make_settings(db)) as srv:
        r = await cli(capfd, "copy", "--from", src, "--to", f"sqlite:///{db}", "--doc", "d",
                      "--replace", "--quiet")  # fmt: skip
        assert r.code == 0, r
        # a client that holds the source's document, and edits on from it
        async with connect(srv.ws_url, "d", "ann", ydoc=_with(base)) as same:
            await edit(same, srv, "d", lambda: same.insert(0, "on "))
            assert same.content == "on shared ", same.content
        async with connect(srv.ws_url, "d", "cat") as fresh:
            assert fresh.content == "on shared ", fresh.content
            await edit(fresh, srv, "d", lambda: fresh.insert(0, "new "))
        # one that holds what only the replaced document had
        stale = _with(base)
        stale.apply_update(target_only)
        async with connect(srv.ws_url, "d", "dan", ydoc=stale, wait_sync=False) as c:
            await eventually(lambda: c.close_code is not None, what="the stale copy refused")
            assert c.close_code == 4409, (c.close_code, c.close_reason)
            assert "replaced" in (c.close_reason or ""), c.close_reason
        async with connect(srv.ws_url, "d", "eve") as after:
            assert after.content == "new on shared ", after.content
        # replaced again from the same source: what it holds is not the replaced content
        # (the tombstone knows client 501, the target's document has its items already)
        await eventually(lambda: srv.backend.rooms.get_loaded("d") is None, what="unloaded")
        r = await cli(capfd, "copy", "--from", src, "--to", f"sqlite:///{db}", "--doc", "d",
                      "--replace", "--quiet")  # fmt: skip
        assert r.code == 0 and "not copied" not in r.err, r
        async with connect(srv.ws_url, "d", "fay") as again:
            assert again.content == "shared ", again.content


def _with(update: bytes) -> Doc:
    d: Doc = Doc()
    d.apply_update(update)
    return d


async def test_after_a_replace_the_server_writes_under_another_yjs_client_id(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The tombstone is the name's generation (snapshots.new_doc): a replace changes it,
    as a deletion does, so the server's own changes to the new document take another
    Yjs client id than the replaced document's. Both documents here were written under
    the first generation's id (the source's shorter): continuing it would give the new
    document's items ids the old copies hold. A server change after the replace lands
    under the new id, and a client holding the old document is still refused."""
    src_path = tmp_path / "src.db"
    src = f"sqlite:///{src_path}"
    db = tmp_path / "db"
    async with serving(make_settings(db)) as srv:
        # (the target's own id: the source's document was made of a copy of the target's)
        salt = srv.backend.store.server_salt
        first = server_client_id("d", None, salt)
        store = open_store(src)
        await store.start()
        try:
            update = _doc(first, "new").get_update()
            await store.append([("d", [NewEvent("admin", "edit", update)])])
        finally:
            await store.stop()
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.put("/api/docs/d/text", json={"text": "old words of the target"})
            assert r.status_code == 200, r.text
            async with connect(srv.ws_url, "d", "ann") as old:
                assert P.decode_state_vector(old.doc.get_state())[first] > 3
                old_update = old.doc.get_update()
            # unloaded (final snapshot written): the next load is the new document's
            await eventually(lambda: srv.backend.rooms.get_loaded("d") is None, what="unloaded")
            r2 = await cli(capfd, "copy", "--from", src, "--to", f"sqlite:///{db}", "--doc",
                           "d", "--replace", "--quiet")  # fmt: skip
            assert r2.code == 0, r2
            store = open_store(f"sqlite:///{db}")
            await store.start()
            try:
                tomb = await store.tombstone("d")
            finally:
                await store.stop()
            second = server_client_id("d", tomb, salt)
            assert second != first
            r = await http.put("/api/docs/d/text", json={"text": "new text"})
            assert r.status_code == 200, r.text
            async with connect(srv.ws_url, "d", "bob") as fresh:
                assert fresh.content == "new text", fresh.content
                sv = P.decode_state_vector(fresh.doc.get_state())
                assert sv[first] == 3, sv  # the source's items of it, none after
                assert sv.get(second, 0) > 0, sv
            async with connect(srv.ws_url, "d", "cat", ydoc=_with(old_update),
                               wait_sync=False) as stale:  # fmt: skip
                await eventually(lambda: stale.close_code is not None, what="refused")
                assert stale.close_code == 4409, (stale.close_code, stale.close_reason)


async def test_scale_out_a_stale_copy_is_refused_on_every_process(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL and Redis, two processes (the field test's set-up, one fewer): the
    copy replaces a document both have open; a client that kept the old copy and
    reconnects, to either process, is refused with 4409 and nothing of it is logged."""
    from scaleout import fanout_url
    from test_replace_open import REDIS_9

    src = await source_with(tmp_path / "src.db", "d", "new text")
    async with fresh_schema() as url:

        def settings(i: int):  # type: ignore[no-untyped-def]
            return make_settings(tmp_path / f"unused{i}.db", store=url,
                                 fanout=fanout_url(REDIS_9, check=0.1))  # fmt: skip

        async with serving(settings(1)) as one, serving(settings(2)) as two:
            async with connect(one.ws_url, "d", "ann") as a, connect(two.ws_url, "d", "bob") as b:
                await edit(a, one, "d", lambda: a.insert(0, "words "))
                await edit(a, one, "d", lambda: a.insert(0, "old "))  # (a longer log)
                await eventually(lambda: b.content == "old words ", what="bob has it")
                old = a.doc.get_update()
                r = await cli(capfd, "copy", "--from", src, "--to", url, "--doc", "d",
                              "--replace", "--quiet")  # fmt: skip
                assert r.code == 0, r
                await eventually(lambda: a.close_code is not None and b.close_code is not None,
                                 what="both closed")  # fmt: skip
                assert (a.close_code, b.close_code) == (4409, 4409)
            for srv in (one, two):
                async with connect(srv.ws_url, "d", "cat", ydoc=_with(old),
                                   wait_sync=False) as stale:  # fmt: skip
                    await eventually(lambda: stale.close_code is not None, what="refused")
                    assert stale.close_code == 4409, (stale.close_code, stale.close_reason)
            async with connect(two.ws_url, "d", "dan") as fresh:
                assert fresh.content == "new text", fresh.content
