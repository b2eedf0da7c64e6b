"""A deleted document's bytes on disk: what deleting it leaves in the store's files."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import eventually
from test_admin_cli import cli
from test_undo import edit, make_settings, serving
from yclient import connect

from palimpsest.store import open_store

MARKER = b"ZQXERASEMARK"


def on_disk(db: Path, marker: bytes = MARKER) -> list[str]:
    """The files of the SQLite database at `db` (the file, its -wal) holding `marker`."""
    return [
        p.name
        for p in (db, db.with_name(db.name + "-wal"))
        if p.exists() and marker in p.read_bytes()
    ]


async def test_a_deleted_document_leaves_no_bytes_in_the_sqlite_files(tmp_path: Path) -> None:
    """Its log rows, sealed segments, snapshots and stored attribution are overwritten
    with zeros (secure_delete), as are the tail rows an earlier seal moved out (their
    page stays in use: the deletion does not touch it), and the WAL frames that held
    them are checkpointed and truncated before the DELETE answers, while the server runs
    (they stayed in the -wal file until the server stopped)."""
    db = tmp_path / "db"
    async with serving(make_settings(db)) as srv, httpx.AsyncClient() as http:
        q = {"user": "root"}
        async with connect(srv.ws_url, "other", "bob") as b:
            await edit(b, srv, "other", lambda: b.insert(0, "ZQXKEPTMARK stays"))
        async with connect(srv.ws_url, "secret", "ann") as a:
            for i in range(8):
                text = f"{MARKER.decode()} {i} "
                await edit(a, srv, "secret", lambda t=text: a.insert(len(a.content), t))
        # sealed whole: the tail rows it moved out leave the log's page, which the other
        # document's rows keep in use
        assert await srv.backend.store.seal("secret", run=4) == 8
        r = await http.get(f"{srv.url}/api/docs/secret/blame", params=q)
        assert r.status_code == 200 and MARKER.decode() in r.text, r.text
        await eventually(
            lambda: srv.backend.store.latest_snapshot("secret"), what="a snapshot at unload"
        )
        assert on_disk(db), "the marker is written"

        r = await http.delete(f"{srv.url}/api/docs/secret", params=q)
        assert r.status_code == 200, r.text
        assert on_disk(db) == []
        assert on_disk(db, b"ZQXKEPTMARK") != []  # the other document is untouched
        async with connect(srv.ws_url, "other", "bob") as b:
            assert b.content == "ZQXKEPTMARK stays"


async def test_palimpsest_delete_leaves_no_bytes_in_the_sqlite_files(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The same for the admin command, beside a server that keeps the file open (the
    command's own close does not delete the WAL then)."""
    db = tmp_path / "db"
    async with serving(make_settings(db)) as srv:
        async with connect(srv.ws_url, "secret", "ann") as a:
            await edit(a, srv, "secret", lambda: a.insert(0, MARKER.decode()))
        async with connect(srv.ws_url, "other", "bob") as b:
            await edit(b, srv, "other", lambda: b.insert(0, "kept"))
            assert on_disk(db)
            r = await cli(capfd, "delete", "secret", "--yes", "--db", str(db))
            assert r.code == 0, r
            assert on_disk(db) == []
            await edit(b, srv, "other", lambda: b.insert(4, "!"))
    async with open_store(f"sqlite:///{db}") as store:
        assert [e.actor for e in await store.read("other")] == ["bob", "bob"]
