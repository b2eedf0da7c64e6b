"""`palimpsest import-from`: every document of a Hocuspocus SQLite database, a
pycrdt-websocket SQLiteYStore or a directory, in one run; then served by a real server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import free_port, run_server
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText
from pycrdt.store import SQLiteYStore
from serverproc import REPO_ROOT
from sqlitehelp import sqlite_conn
from yclient import connect

from palimpsest.settings import Settings
from palimpsest.util import iso

#: @hocuspocus/extension-sqlite 4.7.0's schema (packages/extension-sqlite/src/SQLite.ts)
HOCUSPOCUS_SCHEMA = """CREATE TABLE IF NOT EXISTS "documents" (
  "name" varchar(255) NOT NULL,
  "data" blob NOT NULL,
  UNIQUE(name)
)"""


async def palimpsest(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`palimpsest ARGV` as its own process, as a user runs it (`env`: variables added)."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "palimpsest", *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def hocuspocus_db(path: Path, docs: dict[str, bytes]) -> Path:
    """A database as the extension writes it: the whole document as one update per name."""
    with sqlite_conn(path) as conn:
        conn.execute(HOCUSPOCUS_SCHEMA)
        for name, data in docs.items():
            conn.execute(
                'INSERT INTO "documents" ("name", "data") VALUES (?, ?) '
                "ON CONFLICT(name) DO UPDATE SET data = excluded.data",
                (name, data),
            )
    conn.close()
    return path


def text_doc() -> Doc:
    d: Doc = Doc()
    t = d.get("content", type=Text)
    t += "Hello from alice. "
    t.insert(len(t), "Bob adds é 😀 中文.", {"bold": True})
    del t[0:6]
    return d


def xml_doc() -> Doc:
    d: Doc = Doc()
    frag = d.get("default", type=XmlFragment)
    h = frag.children.append(XmlElement("heading", {"level": "1"}))
    h.children.append(XmlText("Title"))
    p = frag.children.append(XmlElement("paragraph"))
    p.children.append(XmlText("Hello from a Tiptap editor."))
    return d


def map_doc() -> Doc:
    d: Doc = Doc()
    m = d.get("meta", type=Map)
    m["title"] = "board"
    m["tags"] = ["x", "y"]
    items = d.get("items", type=Array)
    items.append("plain")
    items.append(Map({"done": False, "label": "first"}))
    return d


def settings_for(db: Path) -> Settings:
    return Settings(db=str(db), port=free_port(), unload_after_seconds=0.2)


async def served(http: httpx.AsyncClient, doc: str) -> Doc:
    """The document as a real server serves it: its head as a Yjs update."""
    r = await http.get(f"/api/docs/{doc}/versions/head", params={"format": "update"})
    assert r.status_code == 200, r.text
    d: Doc = Doc()
    d.apply_update(r.content)
    return d


def content(d: Doc) -> dict[str, Any]:
    return {
        "text": str(d.get("content", type=Text)),
        "formats": d.get("content", type=Text).diff(),
        "xml": str(d.get("default", type=XmlFragment)),
        "meta": d.get("meta", type=Map).to_py(),
        "items": d.get("items", type=Array).to_py(),
    }


async def events(http: httpx.AsyncClient, doc: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/docs/{doc}/events", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


async def test_hocuspocus_documents_come_over_in_one_run(tmp_path: Path) -> None:
    originals = {"org/team/notes": text_doc(), "tiptap": xml_doc(), "board/7": map_doc()}
    big: Doc = Doc()
    bt = big.get("content", type=Text)
    for i in range(3000):  # a long-edited document: many items, merged into one update
        with big.transaction():
            bt.insert(len(bt) if i % 3 else 0, f"w{i} ")
        if i % 7 == 0:
            del bt[0:2]
    originals["big"] = big
    src = hocuspocus_db(tmp_path / "hocuspocus.sqlite",
                        {n: d.get_update() for n, d in originals.items()})  # fmt: skip
    db = tmp_path / "p.db"

    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db),
                         "--user", "migrator")  # fmt: skip
    assert r.returncode == 0, r
    # progress on stderr, the name mapping said; the summary on stdout
    assert "[4/4]" in r.stderr and "org/team/notes -> org:team:notes: 1 event" in r.stderr, r
    assert "4 documents from" in r.stdout and "4 imported (4 events by migrator" in r.stdout, r

    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for name, original in originals.items():
            doc = name.replace("/", ":")
            assert content(await served(http, doc)) == content(original), name
            assert [(e["kind"], e["actor"]) for e in await events(http, doc)] == [
                ("import", "migrator")
            ]
        # and a y-websocket client syncs the same text
        async with connect(srv.ws_url, "org:team:notes", user="alice") as c:
            assert c.content == str(originals["org/team/notes"].get("content", type=Text))

    # again: every document has events, so each is skipped, saying so
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db))
    assert r.returncode == 0, r
    assert "big: skipped: already has 1 events (--append adds to them)" in r.stderr, r
    assert "0 imported" in r.stdout and "4 skipped" in r.stdout, r
    # with --append: each holds all of it already
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db),
                         "--append")  # fmt: skip
    assert r.returncode == 0 and "tiptap: nothing imported: holds all of it already" in r.stderr
    assert "4 with nothing to import" in r.stdout, r
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert len(await events(http, "big")) == 1


async def ystore_write(path: Path, room: str, updates: list[bytes]) -> None:
    """Write `updates` as pycrdt-websocket's YRoom does: through SQLiteYStore.write."""

    class Store(SQLiteYStore):
        db_path = str(path)

    async with Store(path=room) as ystore:
        for u in updates:
            await ystore.write(u)


def edits(d: Doc, parts: list[str]) -> list[bytes]:
    """Each part typed as its own transaction: the updates a YRoom stores."""
    out: list[bytes] = []
    t = d.get("content", type=Text)
    for part in parts:
        before = d.get_state()
        t += part
        out.append(d.get_update(before))
    return out


async def test_ystore_rows_keep_their_times_and_empty_ones_are_left_out(tmp_path: Path) -> None:
    src = tmp_path / "ystore.db"
    notes: Doc = Doc()
    plan: Doc = Doc()
    first = edits(notes, ["one ", "two "])
    # a 2-byte empty update between them (a client's empty transaction), and an echo
    await ystore_write(src, "/notes", [*first, b"\x00\x00", first[1], *edits(notes, ["three"])])
    await ystore_write(src, "/team/plan", edits(plan, ["a", "b"]))
    # the rows were written a year ago
    with sqlite_conn(src) as conn:
        conn.execute("UPDATE yupdates SET timestamp = timestamp - 365 * 86400")
        rows = conn.execute(
            "SELECT path, length(yupdate), timestamp FROM yupdates ORDER BY timestamp, rowid"
        ).fetchall()
    conn.close()
    assert len(rows) == 7
    db = tmp_path / "p.db"

    r = await palimpsest("import-from", "ystore", str(src), "--db", str(db))
    assert r.returncode == 0, r
    assert "/notes -> notes: 3 events, 2 updates that added nothing left out" in r.stderr, r
    assert "/team/plan -> team:plan: 2 events" in r.stderr, r
    assert "2 imported (5 events by import, 2 updates that added nothing left out)" in r.stdout

    def times(path: str) -> list[str]:
        # each kept row's own time (ms), in order: the empty row and the echo are not events
        kept = [ts for p, size, ts in rows if p == path and size > 2]
        if path == "/notes":
            del kept[2]  # the echo of "two "
        return [iso(round(ts * 1000)) for ts in kept]

    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for path, doc, original in (("/notes", "notes", notes), ("/team/plan", "team:plan", plan)):
            evs = await events(http, doc)
            assert [(e["kind"], e["actor"]) for e in evs] == [("import", "import")] * len(evs)
            assert [e["ts"] for e in evs] == times(path)
            assert content(await served(http, doc)) == content(original)
        # the history is the YStore's: the document as it was after its second update
        r = await http.get("/api/docs/notes/versions/2")
        assert r.json()["roots"]["content"]["value"] == "one two "

    # the old server went on a little; a second run with --append takes only the new rows
    await ystore_write(src, "/notes", edits(notes, [" four"]))
    r = await palimpsest("import-from", "ystore", str(src), "--db", str(db), "--append")
    assert r.returncode == 0, r
    assert "/notes -> notes: 1 event, 5 updates that added nothing left out" in r.stderr, r
    assert "/team/plan -> team:plan: nothing imported: holds all of it already" in r.stderr, r
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert str((await served(http, "notes")).get("content", type=Text)) == "one two three four"
        assert len(await events(http, "notes")) == 4


async def test_names_that_stay_invalid_are_refused_before_anything_is_imported(
    tmp_path: Path,
) -> None:
    upd = text_doc().get_update()
    names = ["ok", "my notes", "a/b", "a:b", "-x"]
    src = hocuspocus_db(tmp_path / "h.sqlite", dict.fromkeys(names, upd))
    db = tmp_path / "p.db"
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db))
    assert r.returncode == 1, r
    assert "3 document name(s) cannot be imported as they are; nothing was imported" in r.stderr
    assert "'my notes' -> 'my notes': document name 'my notes' has characters" in r.stderr, r
    assert "'-x' -> '-x': document name '-x' must start with" in r.stderr, r
    assert "'a/b', 'a:b' -> 'a:b': one name for 2 documents" in r.stderr, r
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.get("/api/docs")).json()["docs"] == []

    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db),
                         "--rename", "my notes=my-notes", "--rename=-x=x",
                         "--slash", ".", "--rename", "nope=n")  # fmt: skip
    assert r.returncode == 1 and "--rename 'nope': the source has no such document" in r.stderr
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db),
                         "--rename", "my notes=my-notes", "--rename=-x=x",
                         "--slash", ".")  # fmt: skip
    assert r.returncode == 0, r
    assert "a/b -> a.b: 1 event" in r.stderr and "a:b: 1 event" in r.stderr, r
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        names = sorted(d["doc"] for d in (await http.get("/api/docs")).json()["docs"])
        assert names == ["a.b", "a:b", "my-notes", "ok", "x"]


async def test_a_directory_and_a_document_that_fails(tmp_path: Path) -> None:
    d = tmp_path / "dump"
    (d / "org").mkdir(parents=True)
    (d / "notes.yjs").write_bytes(text_doc().get_update())
    (d / "org" / "plan.bin").write_bytes(map_doc().get_update())
    (d / "letter.txt").write_text("Dear all,\nplease read.\n")
    (d / ".DS_Store").write_bytes(b"\x00junk")
    (d / "readme.md").write_text("not a document")
    db = tmp_path / "p.db"
    r = await palimpsest("import-from", "dir", str(d), "--db", str(db))
    # nothing is left out without a word: those files are not documents, and none is read
    assert r.returncode == 1 and "readme.md: unknown extension" in r.stderr, r
    assert ".DS_Store: unknown extension" in r.stderr and "notes.yjs" not in r.stderr, r
    (d / "readme.md").unlink()
    (d / ".DS_Store").unlink()
    (d / "broken.yjs").write_bytes(b"\x01\x02 not an update")

    r = await palimpsest("import-from", "dir", str(d), "--db", str(db))
    # the broken one fails, saying why; the others are imported; the exit status says so
    assert r.returncode == 1, r
    assert "broken: FAILED: update 1: it is not a Yjs v1 update" in r.stderr, r
    assert "org/plan -> org:plan: 1 event" in r.stderr and "3 imported" in r.stdout, r
    assert "1 failed" in r.stdout, r
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert content(await served(http, "notes")) == content(text_doc())
        assert content(await served(http, "org:plan")) == content(map_doc())
        letter = await served(http, "letter")
        assert str(letter.get("content", type=Text)) == "Dear all,\nplease read.\n"
        assert (await http.get("/api/docs/broken/events")).status_code == 404


async def test_a_directory_never_follows_a_link_nor_reads_what_is_no_regular_file(
    tmp_path: Path,
) -> None:
    # an operator imports a directory someone else supplied: a link in it to a file of
    # theirs (or to /etc) must not make that file a document; a FIFO, a device, a file
    # larger than a document may be are listed, by their kind or size, unread
    outside = tmp_path / "secret_outside.txt"
    outside.write_text("top secret operator file")
    d = tmp_path / "dump"
    (d / "sub").mkdir(parents=True)
    (d / "ok.txt").write_text("hello")
    (d / "stolen.txt").symlink_to(outside)
    (d / "passwd.txt").symlink_to("/etc/passwd")
    (d / "etc").symlink_to("/etc", target_is_directory=True)
    os.mkfifo(d / "sub" / "pipe.yjs")
    (d / "big.yjs").touch()
    os.truncate(d / "big.yjs", 2048)  # sparse: its size is what it says, not its disk
    db = tmp_path / "p.db"
    r = await palimpsest("import-from", "dir", str(d), "--db", str(db),
                         env={"PALIMPSEST_MAX_DOC_BYTES": "1024"})  # fmt: skip
    assert r.returncode == 1, r
    for said in (
        "stolen.txt: a symbolic link, not a regular file",
        "passwd.txt: a symbolic link, not a regular file",
        "etc: a symbolic link, not a regular file",
        "sub/pipe.yjs: a FIFO, not a regular file",
        "big.yjs: 2048 bytes, over MAX_DOC_BYTES (1024)",
        "nothing was imported",
    ):
        assert said in r.stderr, (said, r.stderr)
    assert "ok.txt" not in r.stderr, r.stderr
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for doc in ("ok", "stolen", "passwd"):
            assert (await http.get(f"/api/docs/{doc}/events")).status_code == 404, doc

    # what is left, regular files, comes in; the links' targets were never opened
    for f in ("stolen.txt", "passwd.txt", "etc", "sub/pipe.yjs", "big.yjs"):
        (d / f).unlink()
    r = await palimpsest("import-from", "dir", str(d), "--db", str(db))
    assert r.returncode == 0 and "1 imported" in r.stdout, r


async def test_a_crafted_sqlite_file_is_refused_not_run(tmp_path: Path) -> None:
    # a 4 KB "Hocuspocus file" whose documents is a view over an endless recursive CTE
    # ran forever (SELECT DISTINCT name ...): a view is no store's table, so it is
    # refused before any query of it; the same for a YStore's yupdates, and for stored
    # columns made generated ones (an expression the file chooses, run on each read)
    loop = (
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
        "SELECT 'doc' || i AS {name}, x'00' AS {data}, 1.0 AS timestamp FROM r"
    )
    files = {
        "hocuspocus-sqlite": [f"CREATE VIEW documents AS {loop.format(name='name', data='data')}"],
        "ystore": [f"CREATE VIEW yupdates AS {loop.format(name='path', data='yupdate')}"],
    }
    db = tmp_path / "p.db"
    for kind, ddl in files.items():
        src = tmp_path / f"{kind}.sqlite"
        with sqlite_conn(src) as conn:
            for sql in ddl:
                conn.execute(sql)
        conn.close()
        before = src.read_bytes()
        r = await palimpsest("import-from", kind, str(src), "--db", str(db), timeout=60)
        table = "documents" if kind == "hocuspocus-sqlite" else "yupdates"
        assert r.returncode == 1 and f"has {table} as a view, not a table" in r.stderr, r
        assert src.read_bytes() == before  # opened read-only

    gen = tmp_path / "generated.sqlite"
    with sqlite_conn(gen) as conn:
        conn.execute("CREATE TABLE documents (name TEXT, n INT, data BLOB AS (zeroblob(n)))")
        conn.execute("INSERT INTO documents (name, n) VALUES ('a', 1000000000)")
    conn.close()
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(gen), "--db", str(db))
    assert r.returncode == 1 and "with generated columns" in r.stderr, r

    # a real table, but a row larger than a document may be: refused by SQLite's own
    # length limit, before the value is made in memory
    big = hocuspocus_db(tmp_path / "big.sqlite", {"small": text_doc().get_update()})
    with sqlite_conn(big) as conn:
        conn.execute("INSERT INTO documents (name, data) VALUES ('huge', zeroblob(4096))")
    conn.close()
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(big), "--db", str(db),
                         env={"PALIMPSEST_MAX_DOC_BYTES": "2048"})  # fmt: skip
    assert r.returncode == 1, r
    assert "huge: FAILED: update 1:" in r.stderr and "larger than MAX_DOC_BYTES" in r.stderr, r
    assert "small: 1 event" in r.stderr, r


async def test_an_interrupted_import_is_completed_by_running_it_again(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a document left it truncated, and a re-run skipped it
    ("already has N events", exit 0) though the docs call a run safe to repeat. A
    document whose last event is this source's import by this user now goes on from the
    source row after it; one that anything else wrote to is still skipped."""
    from palimpsest.bulk_import import SOURCES, import_doc
    from palimpsest.maintenance import import_data
    from palimpsest.store import open_store

    src, db = tmp_path / "ystore.db", tmp_path / "p.db"
    notes: Doc = Doc()
    await ystore_write(src, "/notes", edits(notes, ["one ", "two ", "three ", "four "]))
    other: Doc = Doc()
    await ystore_write(src, "/other", edits(other, ["a", "b", "c"]))

    class Interrupted:  # the source as a run that Ctrl-C stops after two rows sees it
        def __init__(self, inner: Any) -> None:
            self.inner, self.label = inner, inner.label

        def items(self, name: str) -> Any:
            for i, item in enumerate(self.inner.items(name)):
                if i == 2:
                    raise KeyboardInterrupt
                yield item

    store = open_store(f"sqlite:///{db}")
    await store.start()
    source = SOURCES["ystore"](str(src))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            await import_doc(store, Interrupted(source), "/notes", "notes", user="import",
                             append=False)  # fmt: skip
        assert await store.head("notes") == 2
        # someone else wrote to "other" after an interrupted import: not resumed
        with contextlib.suppress(KeyboardInterrupt):
            await import_doc(store, Interrupted(source), "/other", "other", user="import",
                             append=False)  # fmt: skip
        await import_data(store, "other", edits(Doc(), ["z"])[0], user="ann", source="x")
    finally:
        source.close()
        await store.stop()

    r = await palimpsest("import-from", "ystore", str(src), "--db", str(db))
    assert r.returncode == 0, r
    assert "/notes -> notes: 2 events, resumed after the 2 imported before" in r.stderr, r
    assert "/other -> other: skipped: already has 3 events" in r.stderr, r
    again = await palimpsest("import-from", "ystore", str(src), "--db", str(db))
    assert again.returncode == 0, again
    assert "/notes -> notes: skipped: imported from this source already" in again.stderr, again
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert len(await events(http, "notes")) == 4
        assert content(await served(http, "notes")) == content(notes)


async def test_import_from_refuses_while_a_server_serves_the_store(tmp_path: Path) -> None:
    """Into a store a running server serves, with one of the documents open in a tab
    (0 events), the import went through silently: the open tab, and new ones, saw the
    document empty until someone typed (the room had loaded it at seq 0). Refused now,
    unless --while-served; nothing is imported by the refused run."""
    src = hocuspocus_db(tmp_path / "hocuspocus.sqlite", {"notes": text_doc().get_update()})
    db = tmp_path / "p.db"
    async with run_server(settings_for(db)) as srv, connect(srv.ws_url, "notes", "early") as tab:
        assert tab.content == ""
        r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db))
        assert r.returncode == 1, r
        assert f"serves {db}" in r.stderr and "--while-served" in r.stderr, r.stderr
        assert "imported" not in r.stdout, r
        assert await srv.backend.store.head("notes") == 0
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db))
    assert r.returncode == 0 and "1 imported" in r.stdout, r
    async with run_server(settings_for(db)) as srv, connect(srv.ws_url, "notes", "late") as tab:
        assert tab.content == str(text_doc().get("content", type=Text))


async def test_import_from_while_served_imports_what_no_server_has_open(tmp_path: Path) -> None:
    src = hocuspocus_db(tmp_path / "hocuspocus.sqlite", {"notes": text_doc().get_update()})
    db = tmp_path / "p.db"
    async with run_server(settings_for(db)) as srv:
        r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db", str(db),
                             "--while-served")  # fmt: skip
        assert r.returncode == 0 and "1 imported" in r.stdout, r
        async with connect(srv.ws_url, "notes", "first") as tab:
            assert tab.content == str(text_doc().get("content", type=Text))


async def test_import_from_a_source_with_no_documents_warns(tmp_path: Path) -> None:
    """Hocuspocus killed (SIGKILL) before its debounced save left its SQLite file with
    no documents: the import said "0 documents … 0 imported" and exited 0, nothing more."""
    src = hocuspocus_db(tmp_path / "hocuspocus.sqlite", {})
    r = await palimpsest("import-from", "hocuspocus-sqlite", str(src), "--db",
                         str(tmp_path / "p.db"))  # fmt: skip
    assert r.returncode == 0 and "0 documents from" in r.stdout, r
    assert f"warning: {src} holds no documents" in r.stderr, r.stderr
    assert "stopped cleanly" in r.stderr, r.stderr
