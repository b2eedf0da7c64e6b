"""The Yjs client id the server makes its own changes under (PUT /text, `palimpsest
import`, undo, redo, restore) differs between independent stores: a salt each store
makes when it is created is part of it (snapshots.server_client_id). Before, it was a
hash of the document's name alone, so two stores that each got server-made content for
one name held items of the same ids and different content: a copy of one into the other
was taken for a stale copy of a replaced document (or, merged, kept one side's text and
dropped the other's). It stays fixed within one store: after a reload, and on every
process that shares the store, the server's changes continue one client's clock."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import eventually
from pycrdt import Doc, Text
from scaleout import fanout_url, fresh_schema
from sqlitehelp import sqlite_conn
from test_admin_cli import cli
from test_undo import make_settings, serving
from yclient import connect

from palimpsest.snapshots import load, server_client_id
from palimpsest.store import open_store
from palimpsest.updates import decode_update_meta


async def _clients(url: str, doc: str) -> set[int]:
    """The Yjs client ids of the items of `doc` in the store at `url`."""
    store = open_store(url)
    await store.start()
    try:
        return {c for ev in await store.read(doc) for c in decode_update_meta(ev.update).structs}
    finally:
        await store.stop()


async def _content(url: str, doc: str) -> str:
    store = open_store(url)
    await store.start()
    try:
        return str((await load(store, doc)).doc.get("content", type=Text))
    finally:
        await store.stop()


async def test_a_copy_from_another_store_made_the_same_way_replaces_the_document(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The field test's steps, by the CLI: `other` written by the server of the target,
    replaced from src.db, then from src2.db, each made by `palimpsest import` with other
    text. Before, the second copy said "not copied: it was deleted in the target (or
    replaced there) and this copy holds the content it had" (exit 1): src2's items had
    the ids of src's, which the replace's tombstone recorded."""
    sec, src, src2 = (f"sqlite:///{tmp_path / n}" for n in ("sec.db", "src.db", "src2.db"))
    for url, text in ((sec, "written on the target"), (src, "replacement"),
                      (src2, "second replacement")):  # fmt: skip
        txt = tmp_path / "rep.txt"
        txt.write_text(text)
        r = await cli(capfd, "import", "other", str(txt), "--db", url.removeprefix("sqlite:///"))
        assert r.code == 0, r
    r = await cli(capfd, "copy", "--from", src, "--to", sec, "--doc", "other", "--replace",
                  "--quiet")  # fmt: skip
    assert r.code == 0, r
    assert await _content(sec, "other") == "replacement"
    r = await cli(capfd, "copy", "--from", src2, "--to", sec, "--doc", "other", "--replace",
                  "--quiet")  # fmt: skip
    assert r.code == 0, r
    assert "not copied" not in r.err, r.err
    assert await _content(sec, "other") == "second replacement"


async def test_two_new_sqlite_stores_write_a_name_under_disjoint_client_ids(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    urls = [f"sqlite:///{tmp_path / n}" for n in ("one.db", "two.db")]
    txt = tmp_path / "t.txt"
    txt.write_text("same name, its own text")
    for url in urls:
        r = await cli(capfd, "import", "d", str(txt), "--db", url.removeprefix("sqlite:///"))
        assert r.code == 0, r
    one, two = [await _clients(url, "d") for url in urls]
    assert one and two
    assert not one & two, (one, two)


async def test_two_new_postgresql_schemas_write_a_name_under_disjoint_client_ids(
    tmp_path: Path,
) -> None:
    async with fresh_schema() as a, fresh_schema() as b:
        for url in (a, b):
            async with serving(make_settings(tmp_path / "unused.db", store=url)) as srv:
                async with httpx.AsyncClient(base_url=srv.url) as http:
                    r = await http.put("/api/docs/d/text", json={"text": "server-made"})
                    assert r.status_code == 200, r.text
        one, two = await _clients(a, "d"), await _clients(b, "d")
        assert one and two
        assert not one & two, (one, two)


async def test_two_memory_stores_write_a_name_under_disjoint_client_ids(tmp_path: Path) -> None:
    seen = []
    for _ in range(2):
        async with serving(make_settings(tmp_path / "unused.db", store="memory://")) as srv:
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.put("/api/docs/d/text", json={"text": "server-made"})
                assert r.status_code == 200, r.text
            seen.append(
                {
                    c
                    for ev in await srv.backend.store.read("d")
                    for c in decode_update_meta(ev.update).structs
                }
            )
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1], seen


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_after_a_reload_the_server_continues_its_own_clock(
    tmp_path: Path, backend: str
) -> None:
    """One store, two server runs one after the other (and, on PostgreSQL, a second
    process beside the first): every server change of the document is under one client
    id, each continuing the clock of the one before."""
    async with fresh_schema() as pg:
        url = pg if backend == "postgresql" else f"sqlite:///{tmp_path / 'db'}"
        settings = make_settings(tmp_path / "db", store=url)
        for text in ("first", "second"):
            async with serving(settings) as srv:
                async with httpx.AsyncClient(base_url=srv.url) as http:
                    r = await http.put("/api/docs/d/text", json={"text": text})
                    assert r.status_code == 200, r.text
            settings = make_settings(tmp_path / "db", store=url)
        if backend == "postgresql":
            from test_replace_open import REDIS_9

            bus = fanout_url(REDIS_9, check=0.1)
            async with (
                serving(make_settings(tmp_path / "x.db", store=url, fanout=bus)) as one,
                serving(make_settings(tmp_path / "y.db", store=url, fanout=bus)) as two,
            ):
                for srv, text in ((one, "third"), (two, "fourth")):
                    async with httpx.AsyncClient(base_url=srv.url) as http:
                        r = await http.put("/api/docs/d/text", json={"text": text})
                        assert r.status_code == 200, r.text
        store = open_store(url)
        await store.start()
        try:
            events = await store.read("d")
            assert str((await load(store, "d")).doc.get("content", type=Text)) == (
                "fourth" if backend == "postgresql" else "second"
            )
        finally:
            await store.stop()
        runs = [decode_update_meta(ev.update).structs for ev in events]
        assert all(len(r) == 1 for r in runs), runs
        assert len({c for r in runs for c in r}) == 1, runs
        ends = [next(iter(r.values())) for r in runs]
        for before, after in zip(ends, ends[1:], strict=False):
            assert after[0][0] == before[-1][1], ends  # continues the clock, no gap


async def test_in_a_copy_the_source_servers_id_stays_a_servers(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A copy into another store keeps the items of the source's server id; the target's
    server writes under its own. The snapshot's record of who wrote the source server's
    runs is not taken for the target server's (its first change was credited to the
    source's last writer), and nobody may write under the source server's id in the
    target (it was anyone's to claim), as under the target server's."""
    src_db, tgt_db = tmp_path / "src.db", tmp_path / "tgt.db"
    async with serving(make_settings(src_db)) as srv:
        source_id = server_client_id("d", None, srv.backend.store.server_salt)
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.put("/api/docs/d/text?user=alice", json={"text": "alice's words"})
            assert r.status_code == 200, r.text
        # unloaded: its final snapshot holds the owners, the server's runs with them
        await eventually(lambda: srv.backend.rooms.get_loaded("d") is None, what="unloaded")
    r = await cli(capfd, "copy", "--from", f"sqlite:///{src_db}", "--to",
                  f"sqlite:///{tgt_db}", "--quiet")  # fmt: skip
    assert r.code == 0, r
    async with serving(make_settings(tgt_db)) as srv:
        target_id = server_client_id("d", None, srv.backend.store.server_salt)
        assert target_id != source_id
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.put("/api/docs/d/text?user=bob", json={"text": "bob's words"})
            assert r.status_code == 200, r.text
        room = srv.backend.rooms.get_loaded("d")
        assert room is not None and room.owners.server == target_id
        assert [tuple(run) for run in room.owners.server_runs] == [(0, "bob")]
        async with connect(srv.ws_url, "d", "mallory", ydoc=Doc(client_id=source_id)) as m:
            assert m.content == "bob's words"
            m.insert(0, "mine ")
            await eventually(lambda: m.close_code is not None, what="refused")
            assert m.close_code == 4403, (m.close_code, m.close_reason)
        assert str(room.doc.get("content", type=Text)) == "bob's words"


async def test_a_store_made_before_stores_had_a_salt_keeps_its_ids(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A file with no store_salt table (as every file made before it was): the server
    writes under the name's id as it did, so the items already written go on with their
    clocks rather than under a new client id. (The table is dropped here to make one.)"""
    db = tmp_path / "old.db"
    r = await cli(capfd, "migrate", "--create", "--db", str(db))
    assert r.code == 0, r
    with sqlite_conn(db) as conn:
        conn.execute("DROP TABLE store_salt")
    txt = tmp_path / "t.txt"
    txt.write_text("old words")
    r = await cli(capfd, "import", "d", str(txt), "--db", str(db))
    assert r.code == 0, r
    assert await _clients(f"sqlite:///{db}", "d") == {server_client_id("d")}
    async with serving(make_settings(db)) as srv:
        assert srv.backend.store.server_salt is None
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.put("/api/docs/d/text", json={"text": "new words"})
            assert r.status_code == 200, r.text
    assert await _clients(f"sqlite:///{db}", "d") == {server_client_id("d")}


async def test_a_backup_keeps_the_salt_and_a_copy_into_a_new_store_does_not(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A restored backup is the same store: its server goes on under the same ids. A
    copy is another store: its server's later changes are its own ids'."""
    db, saved, copied = (tmp_path / n for n in ("db", "saved.db", "copied.db"))
    txt = tmp_path / "t.txt"
    txt.write_text("words")
    r = await cli(capfd, "import", "d", str(txt), "--db", str(db))
    assert r.code == 0, r
    r = await cli(capfd, "backup", "--db", str(db), str(saved), "--quiet")
    assert r.code == 0, r
    r = await cli(capfd, "copy", "--from", f"sqlite:///{db}", "--to", f"sqlite:///{copied}",
                  "--quiet")  # fmt: skip
    assert r.code == 0, r
    salts = []
    for path in (db, saved, copied):
        store = open_store(f"sqlite:///{path}")
        await store.start()
        try:
            salts.append(store.server_salt)
        finally:
            await store.stop()
    assert salts[0] is not None and salts[0] == salts[1]
    assert salts[2] is not None and salts[2] != salts[0]
