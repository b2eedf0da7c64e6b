"""A document replaced under a server that has it open (``palimpsest copy --replace``,
the one way a store's import_doc(replace=True) is reached): its clients are told it was
replaced, never that it was deleted, and what they load next is the new document alone.
Real websocket clients on a real server over a SQLite file; the copy is the CLI's."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REDIS_URL, eventually
from pycrdt import Doc, Text
from scaleout import fanout_url, fresh_schema
from serverproc import REPO_ROOT, ServerProcess
from test_admin_cli import cli
from test_undo import edit, make_settings, serving
from yclient import connect

from palimpsest import client
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent

#: the Redis database these tests use
REDIS_9 = REDIS_URL.rsplit("/", 1)[0] + "/9"


async def source_with(path: Path, doc: str, text: str) -> str:
    """A SQLite store at `path` holding `doc` with `text`; its URL."""
    d: Doc = Doc()
    d["content"] = Text(text)
    url = f"sqlite:///{path}"
    store = open_store(url)
    await store.start()
    try:
        await store.append([(doc, [NewEvent("importer", "edit", d.get_update())])])
    finally:
        await store.stop()
    return url


async def test_a_document_replaced_while_open_closes_its_clients_as_replaced_not_deleted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the room's next commit was refused by the store (another generation of
    the name) and its clients were closed with 4404 "the document was deleted": the
    Python client raised Deleted, y-websocket apps showed a deleted document. Now 4409
    with a reason that says it was replaced and to reconnect; the edit that ran into
    the replace is not logged (the close says so), and a client that reconnects with
    an empty copy gets the new content, none of the old. The server's log says replaced
    too: the store's refusal of the append was logged first as "the document's log was
    deleted under the room" (a field report, 7 Dec), a cause it cannot know."""
    caplog.set_level("INFO", logger="palimpsest")
    src = await source_with(tmp_path / "src.db", "d", "new text")
    db = tmp_path / "db"
    async with serving(make_settings(db)) as srv:
        async with connect(srv.ws_url, "d", "ann") as a, connect(srv.ws_url, "d", "bob") as b:
            await edit(a, srv, "d", lambda: a.insert(0, "old text"))
            # (not --quiet: it says nothing but errors)
            r = await cli(
                capfd, "copy", "--from", src, "--to", f"sqlite:///{db}", "--doc", "d", "--replace"
            )
            assert r.code == 0, r
            assert "d: replaced: the target's 1 events of it are gone" in r.err, r.err
            a.insert(8, "!")  # an edit of the old document, after the replace
            await eventually(lambda: a.close_code is not None and b.close_code is not None,
                             what="both clients closed")  # fmt: skip
            for c in (a, b):
                assert c.close_code == 4409, (c.close_code, c.close_reason)
                assert "replaced" in (c.close_reason or ""), c.close_reason
                assert "deleted" not in (c.close_reason or ""), c.close_reason
                assert "reconnect" in (c.close_reason or ""), c.close_reason
        async with connect(srv.ws_url, "d", "ann") as again:
            assert again.content == "new text"
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r2 = await http.get("/api/docs/d/versions/head")
            assert r2.status_code == 200, r2.text
            assert "new text" in r2.text, r2.text
            assert "old" not in r2.text and "!" not in r2.text, r2.text
            m = (await http.get("/metrics")).text
        assert 'palimpsest_disconnects_total{cause="doc_replaced"} 2.0' in m, m
    said = [r.getMessage() for r in caplog.records if r.name.startswith("palimpsest")]
    assert [m for m in said if "'d' was replaced" in m], said
    assert not [m for m in said if "deleted" in m and "replaced" not in m], said


@pytest.mark.parametrize("longer", [False, True])
async def test_an_idle_room_learns_of_the_replace_from_the_gap_check(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], longer: bool
) -> None:
    """With a fan-out (PostgreSQL and Redis), a room that commits nothing after the
    replace learns of it from the gap check: a shorter log than the room's (its head
    went back, which was taken for a deletion: 4404 "deleted") or a longer one (its
    events were applied to the old document as if they were the room's next ones).
    Either way the room is dropped and its clients closed with 4409."""
    async with fresh_schema() as url:
        settings = make_settings(tmp_path / "unused.db", store=url,
                                 fanout=fanout_url(REDIS_9, check=0.1))  # fmt: skip
        src_db = tmp_path / "src.db"
        src = await source_with(src_db, "d", "new text")
        if longer:  # the source's log is longer than the room's
            store = open_store(src)
            await store.start()
            try:
                more: Doc = Doc()
                more["content"] = Text("more")
                for _ in range(5):
                    await store.append([("d", [NewEvent("importer", "edit",
                                                        more.get_update())])])  # fmt: skip
            finally:
                await store.stop()
        async with serving(settings) as srv:
            async with connect(srv.ws_url, "d", "ann") as a:
                for word in ("old ", "text ", "here "):
                    await edit(a, srv, "d", lambda w=word: a.insert(0, w))  # type: ignore[misc]
                r = await cli(capfd, "copy", "--from", src, "--to", url, "--doc", "d",
                              "--replace", "--quiet")  # fmt: skip
                assert r.code == 0, r
                await eventually(lambda: a.close_code is not None, what="closed")
                assert a.close_code == 4409, (a.close_code, a.close_reason)
                assert "replaced" in (a.close_reason or ""), a.close_reason
            async with connect(srv.ws_url, "d", "bob") as b:
                assert "new text" in b.content and "old" not in b.content, b.content


async def test_a_python_session_on_a_replaced_document_raises_replaced(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The Python client's session stops with `Replaced` (not `Deleted`, not a
    reconnection that would send the old document's content into the new one)."""
    src = await source_with(tmp_path / "src.db", "doc-of-a-session", "new text")
    db = tmp_path / "db"
    async with serving(make_settings(db)) as srv:
        async with client.connect(srv.ws_url, "doc-of-a-session", user="bot") as s:
            s.text().append("old text")
            await s.flush()
            r = await cli(capfd, "copy", "--from", src, "--to", f"sqlite:///{db}",
                          "--doc", "doc-of-a-session", "--replace", "--quiet")  # fmt: skip
            assert r.code == 0, r
            s.text().append("!")
            with pytest.raises(client.Replaced, match="was replaced") as closed:
                await s.wait_for(lambda: False, timeout=30)
            assert closed.value.code == 4409
            assert not isinstance(closed.value, client.Deleted)
        async with client.connect(srv.ws_url, "doc-of-a-session", user="bot") as fresh:
            assert str(fresh.text()) == "new text"


@pytest.mark.parametrize("how", ["replaced", "deleted"])
async def test_a_watching_room_learns_of_a_replace_beside_a_single_server(
    tmp_path: Path, how: str
) -> None:
    """A single server on SQLite without a fan-out; `palimpsest copy --replace` (or
    `palimpsest delete`) run on its store beside it. Its room of the document learnt of
    it only at its next commit: one whose clients only watch kept serving the old
    document to everyone who joined. The server's check of its rooms (once a second,
    server.base_watch) now notices the document's generation changed (or is gone) and
    drops the room as a refused commit does: 4409 replaced, 4404 deleted; who joins
    then gets the new document (or an empty one)."""
    src = await source_with(tmp_path / "src.db", "d", "new text")
    async with ServerProcess(tmp_path / "srv") as srv:
        async with connect(srv.ws_url, "d", "ann") as writer:
            writer.insert(0, "old text")
            await eventually(lambda: _head(srv.db_path, "d") >= 1, what="the edit stored")
        async with connect(srv.ws_url, "d", "watcher") as watcher:
            assert watcher.content == "old text"
            if how == "replaced":
                command = ["copy", "--from", src, "--to", f"sqlite:///{srv.db_path}",
                           "--doc", "d", "--replace", "--quiet"]  # fmt: skip
            else:
                command = ["delete", "d", "--db", str(srv.db_path), "--yes"]
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "palimpsest", *command],
                capture_output=True, text=True, cwd=REPO_ROOT,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            await eventually(lambda: watcher.close_code is not None, what="the watcher closed")
            code = 4409 if how == "replaced" else 4404
            assert watcher.close_code == code, (watcher.close_code, watcher.close_reason)
            assert how in (watcher.close_reason or ""), watcher.close_reason
        async with connect(srv.ws_url, "d", "bob") as joiner:
            assert joiner.content == ("new text" if how == "replaced" else "")
        assert "Traceback" not in srv.log_text(), srv.log_tail()


def _head(db: Path, doc: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT head FROM docs WHERE name = ?", (doc,)).fetchone()
    return int(row[0]) if row else 0
