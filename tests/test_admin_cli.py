"""The admin commands (export, import, snapshot, inspect, verify, compact, delete) on
stores written by a real server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually, free_port, run_server
from pycrdt import Array, Map, Text
from serverproc import REPO_ROOT
from sqlitehelp import sqlite_conn
from yclient import YClient, connect

from palimpsest.cli import main
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore
from palimpsest.util import iso


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"<exit {self.code}; out={self.out[-500:]!r}; err={self.err[-500:]!r}>"


async def cli(capfd: pytest.CaptureFixture[str], *argv: str) -> Ran:
    """Run `palimpsest ARGV` in this process (in a thread: the command runs its own loop)."""
    capfd.readouterr()
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capfd.readouterr()
    return Ran(code, out, err)


def settings_for(db: Path, **kw: Any) -> Settings:
    kw.setdefault("unload_after_seconds", 0.2)
    return Settings(db=str(db), port=free_port(), **kw)


async def type_each(srv: RunningServer, c: YClient, doc: str, parts: list[str]) -> None:
    """Type each part as its own event, waiting for it to be durable."""
    for part in parts:
        room = srv.backend.rooms.get_loaded(doc)
        want = (room.seq if room else 0) + 1
        c.insert(len(c.content), part)
        await eventually(lambda w=want: srv.backend.rooms.get_loaded(doc).seq >= w)  # type: ignore[union-attr,misc]


async def version(http: httpx.AsyncClient, doc: str, ref: str | int) -> str:
    r = await http.get(f"/api/docs/{doc}/versions/{ref}")
    assert r.status_code == 200, r.text
    return str(r.json()["roots"]["content"]["value"])


async def test_export_as_text_of_a_document_without_text_prints_its_roots_as_json(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """It printed nothing and exited 0, as for an empty text (`cat` printed the JSON)."""
    db = tmp_path / "e.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "sheet", user="ann") as c:
            c.doc.get("cells", type=Map)["A1"] = 1
            await eventually(lambda: srv.backend.store.head("sheet"), what="logged")
        async with connect(srv.ws_url, "nb", user="ann") as c:
            with c.doc.transaction():
                c.doc.get("title", type=Text).insert(0, "Notes")
                c.doc.get("cells", type=Array).append(Map({"source": Text("print(1)")}))
            await eventually(lambda: srv.backend.store.head("nb"), what="logged")
    r = await cli(capfd, "export", "sheet", "--db", str(db))
    assert r.code == 0 and json.loads(r.out) == {"A1": 1}, r
    assert "'sheet' has no text root: its cells (map) printed as JSON" in r.err, r
    # beside a text, the text; stderr names what it left out
    r = await cli(capfd, "export", "nb", "--db", str(db))
    assert r.code == 0 and r.out == "Notes", r
    assert "left out cells (array), not text" in r.err, r


async def test_compact_before_a_local_time_a_dst_change_skipped_or_repeated_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`TZ=Europe/Paris palimpsest compact d --before 2026-03-29T02:30` (no such local
    time: the clocks went from 02:00 to 03:00) was read an hour off with no word, and
    2026-10-25T02:30 (twice that night) as one of the two: refused, saying to add an
    offset, and nothing folded."""
    db = tmp_path / "c.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "log", user="ann") as c:
            c.text.insert(0, "one")
            await eventually(lambda: srv.backend.store.head("log"), what="logged")
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        for when, said in (("2026-03-29T02:30", "no time here"), ("2026-10-25T02:30", "twice")):
            r = await cli(capfd, "compact", "log", "--before", when, "--yes", "--db", str(db))
            assert r.code == 1 and said in r.err and "add an offset" in r.err, r
        r = await cli(capfd, "compact", "log", "--before", "2026-10-25T02:30+01:00", "--yes",
                      "--db", str(db))  # fmt: skip
        assert r.code == 0, r
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_every_admin_command_has_help(capfd: pytest.CaptureFixture[str]) -> None:
    for cmd in ("export", "import", "snapshot", "inspect", "verify", "compact", "delete"):
        r = await cli(capfd, cmd, "--help")
        assert r.code == 0, r
        assert "--db" in r.out and "--store" in r.out
        if cmd == "compact":  # it may run beside a server, as docs/operations.md says
            said = " ".join(r.out.split())
            assert "stopped server" not in said and "May run beside a running server" in said
            assert "COMPACTION_CHECK_SECONDS (1 s) and reloads the room" in said
        else:
            assert "stopped server" in " ".join(r.out.split()), cmd
    # the installed entry point, as an operator runs it
    r2 = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "palimpsest", "verify", "--help"], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r2.returncode == 0, r2.stderr
    assert "compare the result with every snapshot" in " ".join(r2.stdout.split())


async def test_export_of_a_stopped_server_takes_a_tag_or_a_time_as_cat_does(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`cat` takes --seq, --tag and --at but needs a server; `export`, which reads a
    stopped server's store, took --seq only: `--seq draft-1` was "invalid int value"
    and no time could be given. It takes --tag (in any Unicode spelling, as the API)
    and --at (the last event at or before it)."""
    db = tmp_path / "t.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "notes", user="ann") as c:
            await type_each(srv, c, "notes", ["Hello", ", "])
            async with httpx.AsyncClient(base_url=srv.url, params={"user": "ann"}) as http:
                for name in ("draft-1", "vers\u00e3o"):
                    r = await http.post("/api/docs/notes/tags", json={"name": name, "seq": 1})
                    assert r.status_code == 201, r.text
                at = (await http.get("/api/docs/notes/events")).json()["events"][1]["ts"]
            await asyncio.sleep(0.01)
            await type_each(srv, c, "notes", ["world"])
    r = await cli(capfd, "export", "notes", "--tag", "draft-1", "--db", str(db))
    assert r.code == 0 and r.out == "Hello", r
    r = await cli(capfd, "export", "notes", "--tag", "versa\u0303o", "--db", str(db))
    assert r.code == 0 and r.out == "Hello", r
    r = await cli(capfd, "export", "notes", "--at", at, "--db", str(db))
    assert r.code == 0 and r.out == "Hello, ", r
    r = await cli(capfd, "export", "notes", "--at", "2000-01-01T00:00Z", "--db", str(db))
    assert r.code == 1 and "had no events at that time" in r.err, r
    r = await cli(capfd, "export", "notes", "--tag", "nope", "--db", str(db))
    assert r.code == 1 and "no tag named 'nope'" in r.err, r
    r = await cli(capfd, "export", "notes", "--at", "soon", "--db", str(db))
    assert r.code == 1 and "not an ISO-8601 time" in r.err, r
    r = await cli(capfd, "export", "notes", "--tag", "draft-1", "--seq", "1", "--db", str(db))
    assert r.code == 2 and "not allowed with" in r.err, r


async def test_export_and_import(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "e.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "notes", user="ann") as c:
            await type_each(srv, c, "notes", ["Hello", ", ", "world"])
    r = await cli(capfd, "export", "notes", "--db", str(db))
    assert r.code == 0 and r.out == "Hello, world", r
    r = await cli(capfd, "export", "notes", "--seq", "2", "--db", str(db))
    assert r.out == "Hello, ", r
    r = await cli(capfd, "export", "notes", "--format", "json", "--db", str(db))
    body = json.loads(r.out)
    assert body["seq"] == 3
    assert body["roots"] == {"content": {"type": "text", "value": "Hello, world"}}
    r = await cli(capfd, "export", "notes", "--seq", "9", "--db", str(db))
    assert r.code == 1 and "not 9" in r.err, r
    r = await cli(capfd, "export", "nothing-here", "--db", str(db))
    assert r.code == 1 and "no document named 'nothing-here'" in r.err, r

    # an update round-trips into another document, as one event of kind import
    upd = tmp_path / "notes.yjs"
    r = await cli(capfd, "export", "notes", "--format", "update", "-o", str(upd), "--db", str(db))
    assert r.code == 0 and upd.stat().st_size > 0, r
    r = await cli(capfd, "import", "copy", str(upd), "--user", "ops", "--db", str(db))
    assert r.code == 0 and "copy@1" in r.out, r
    assert (await cli(capfd, "export", "copy", "--db", str(db))).out == "Hello, world"
    # the same update again adds nothing: no second (empty) event
    r = await cli(capfd, "import", "copy", str(upd), "--user", "ops", "--db", str(db))
    assert r.code == 0 and r.err == "", r
    assert r.out == "palimpsest import: copy already holds all of notes.yjs: nothing imported\n"
    r = await cli(capfd, "inspect", "copy", "--json", "--db", str(db))
    assert json.loads(r.out)["events"] == 1, r

    # plain text becomes the first event of a new document, and only the first
    txt = tmp_path / "draft.txt"
    txt.write_text("Dear all,\nplease read.\n")
    r = await cli(capfd, "import", "draft", str(txt), "--db", str(db))
    assert r.code == 0, r
    r = await cli(capfd, "import", "draft", str(txt), "--db", str(db))
    assert r.code == 1 and "only as the first event" in r.err, r

    # a server serves what was imported, and the event says who and what
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, "draft", user="bob") as c:
            assert c.content == "Dear all,\nplease read.\n"
        evs = (await http.get("/api/docs/copy/events")).json()["events"]
        assert [(e["kind"], e["actor"]) for e in evs] == [("import", "ops")]


async def test_inspect_and_snapshot(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "i.db"
    async with run_server(settings_for(db, snapshot_every=100_000,
                                       snapshot_quiet_seconds=0)) as srv:  # fmt: skip
        async with connect(srv.ws_url, "memo", user="ann") as a:
            await type_each(srv, a, "memo", ["a1 ", "a2 ", "a3 "])
            async with connect(srv.ws_url, "memo", user="bob") as b:
                await eventually(lambda: b.content == "a1 a2 a3 ")
                await type_each(srv, b, "memo", ["b1 "])
        # the server snapshots on unload; drop its snapshots to see `snapshot` write one
        await eventually(lambda: "memo" not in srv.backend.rooms)
    with sqlite_conn(db) as con:
        con.execute("DELETE FROM snapshots")
    r = await cli(capfd, "inspect", "memo", "--json", "--db", str(db))
    info = json.loads(r.out)
    assert info["head"] == 4 and info["events"] == 4
    assert info["actors"] == {"ann": 3, "bob": 1} and info["kinds"] == {"edit": 4}
    assert info["snapshots"] == [] and info["events_bytes"] > 0

    r = await cli(capfd, "snapshot", "memo", "--db", str(db))
    assert r.code == 0 and "memo@4" in r.out, r
    said = re.search(r"\((\d+) B of state, (\d+) B stored\)", r.out)
    assert said is not None, r
    r = await cli(capfd, "inspect", "memo", "--db", str(db))
    assert "@4" in r.out and "ann 3, bob 1" in r.out and "DAMAGED" not in r.out, r
    # the size it reports is the one inspect lists, not only the document's state
    r = await cli(capfd, "inspect", "memo", "--json", "--db", str(db))
    (snap,) = json.loads(r.out)["snapshots"]
    assert int(said[2]) == snap["bytes"] > int(said[1]) > 0, (said[0], snap)

    # the forced snapshot carries the undo stacks: after a restart, loading from it (and
    # no event after it), ann's undo still reverts ann's last change group (her three
    # quick edits) and keeps bob's
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "memo", user="ann") as a:
            answer = await a.request({"type": "undo"})
            assert answer["ok"], answer
            await eventually(lambda: a.content == "b1 ", what="ann's edits undone")


async def test_inspect_shows_the_tag_history(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """inspect counts the records of the tags' changes (a deleted tag's included) and
    lists the last five, oldest first; --json the same. A document no tag ever named
    says 0."""
    db = tmp_path / "t.db"
    # the events a few minutes ahead: every record's ts is raised to the last event's,
    # so they share one ms and come in the store's order (by tag name, then each
    # tag's own order)
    ahead = int(time.time() * 1000) + 5 * 60_000
    async with SQLiteStore(db) as store:
        await store.append([("notes", [NewEvent("ann", "edit", b"\x00\x00", {}, ahead)] * 4)])
        await store.append([("plain", [NewEvent("ann", "edit", b"\x00\x00", {}, ahead)])])
        await store.put_tag("notes", "old", 1, "cy")
        assert await store.delete_tag("notes", "old", "dee")
        await store.put_tag("notes", "v1", 1, "ann")
        for seq in (2, 3, 4, 2):
            await store.put_tag("notes", "v1", seq, "bob")
        await store.put_tag("notes", "v1", 3, "eve")
    at = iso(ahead)
    r = await cli(capfd, "inspect", "notes", "--db", str(db))
    assert r.code == 0, r
    tail = r.out[r.out.index("tags       ") :]
    assert tail == (
        "tags       1\n"
        "  v1                   @3  by eve\n"
        "history    8 tag changes, the last 5:\n"
        f"  {at}  move    v1                   @1 -> @2  by bob\n"
        f"  {at}  move    v1                   @2 -> @3  by bob\n"
        f"  {at}  move    v1                   @3 -> @4  by bob\n"
        f"  {at}  move    v1                   @4 -> @2  by bob\n"
        f"  {at}  move    v1                   @2 -> @3  by eve\n"
    ), r.out
    r = await cli(capfd, "inspect", "notes", "--json", "--db", str(db))
    got = json.loads(r.out)["tag_history"]
    assert got["changes"] == 8
    assert got["last"][0] == {"name": "v1", "action": "move", "seq": 2, "was": 1,
                              "actor": "bob", "at": at}  # fmt: skip
    assert [(c["action"], c["seq"], c["was"]) for c in got["last"]] == [
        ("move", 2, 1),
        ("move", 3, 2),
        ("move", 4, 3),
        ("move", 2, 4),
        ("move", 3, 2),
    ]
    # five or fewer: all of them, no "the last"; a deletion says where the tag was
    async with SQLiteStore(db) as store:
        await store.put_tag("plain", "v0", 1, "ann")
        assert await store.delete_tag("plain", "v0", "bob")
    r = await cli(capfd, "inspect", "plain", "--db", str(db))
    assert r.out.endswith(
        "tags       0\n"
        "history    2 tag changes\n"
        f"  {at}  create  v0                   @1  by ann\n"
        f"  {at}  delete  v0                   @1 -> deleted  by bob\n"
    ), r.out
    r = await cli(capfd, "inspect", "plain", "--json", "--db", str(db))
    assert json.loads(r.out)["tag_history"]["last"][1] == {
        "name": "v0",
        "action": "delete",
        "seq": None,
        "was": 1,
        "actor": "bob",
        "at": at,
    }
    async with SQLiteStore(db) as store:
        await store.append([("bare", [NewEvent("ann", "edit", b"\x00\x00")])])
    r = await cli(capfd, "inspect", "bare", "--db", str(db))
    assert r.out.endswith("tags       0\nhistory    0 tag changes\n"), r.out
    r = await cli(capfd, "inspect", "bare", "--json", "--db", str(db))
    assert json.loads(r.out)["tag_history"] == {"changes": 0, "last": []}


def _plant_in_bad(
    db: Path, seq: int, state: bytes | None = None, flip: bool = False, stored: str = ""
) -> None:
    with sqlite_conn(db) as con:
        where = "WHERE doc = 'bad' AND seq = ?"
        (old,) = con.execute(f"SELECT state FROM snapshots {where}", (seq,)).fetchone()
        if flip:
            bad = bytearray(old)
            bad[len(bad) // 2] ^= 0xFF
            con.execute(f"UPDATE snapshots SET state = ? {where}", (bytes(bad), seq))
        else:
            assert state is not None
            con.execute(f"UPDATE snapshots SET state = ?, checksum = ? {where}",
                        (state, stored or hashlib.sha256(state).hexdigest(), seq))  # fmt: skip


async def test_verify_of_a_database_without_documents_fails(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A SQLite file copied with `cp` while a server ran, without its -wal, held no
    document, and verify said "0 documents OK": a backup restored from it would have
    lost everything. It says so now, and fails."""
    db = tmp_path / "live.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "notes", user="ann") as c:
            await type_each(srv, c, "notes", ["one ", "two "])
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)  # the file alone, as `cp` copies it
        r = await cli(capfd, "verify", "--db", str(copy))
    assert r.code == 1 and "0 documents OK" not in r.out, r
    assert "holds no documents at all" in r.err and "palimpsest backup" in r.err, r
    r = await cli(capfd, "verify", "--db", str(db))
    assert r.code == 0 and "1 document OK" in r.out, r
    empty = tmp_path / "fresh.db"
    async with run_server(settings_for(empty)):
        r = await cli(capfd, "verify", "--db", str(empty))
        assert r.code == 1 and "holds no documents at all" in r.err, r
        r = await cli(capfd, "verify", "--allow-empty", "--db", str(empty))
    assert r.code == 0 and "0 documents OK" in r.out, r


@pytest.mark.parametrize("kind", ["empty file", "another program's database"])
async def test_an_admin_command_leaves_a_file_that_is_not_a_palimpsest_database_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """verify (or inspect, export…) given a file that holds none of our tables created
    them in it, then said "0 documents OK": the file a careless copy made, or the wrong
    path, came out changed and passed. Now it is refused, unchanged."""
    db = tmp_path / "other.db"
    if kind == "empty file":
        db.write_bytes(b"")
    else:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        conn.commit()
        conn.close()
    before = db.read_bytes()
    for args in (["verify"], ["inspect", "notes"], ["export", "notes"]):
        r = await cli(capfd, *args, "--db", str(db))
        assert r.code == 1 and "OK" not in r.out, (args, r)
        assert "not a Palimpsest database" in r.err and "palimpsest backup" in r.err, r
    assert db.read_bytes() == before
    assert not (tmp_path / "other.db-wal").exists()


async def test_verify_catches_corrupted_snapshots(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "v.db"
    async with run_server(settings_for(db, snapshot_every=4)) as srv:
        for doc in ("good", "bad"):
            async with connect(srv.ws_url, doc, user="ann") as c:
                await type_each(srv, c, doc, [f"{i} " for i in range(12)])
            await eventually(lambda d=doc: d not in srv.backend.rooms)  # type: ignore[misc]
    with sqlite_conn(db) as con:
        seqs = [s for (s,) in con.execute("SELECT seq FROM snapshots WHERE doc='bad' ORDER BY seq")]
        # a whole row (packed state and meta, its checksum): another version's
        other, other_sum = con.execute(
            "SELECT state, checksum FROM snapshots WHERE doc='bad' AND seq=?", (seqs[0],)
        ).fetchone()
    assert len(seqs) >= 3, seqs
    r = await cli(capfd, "verify", "--db", str(db))
    assert r.code == 0 and "2 documents OK" in r.out, r

    # a snapshot whose checksum holds but whose content is another version's
    _plant_in_bad(db, seqs[1], state=other, stored=other_sum)
    r = await cli(capfd, "verify", "--db", str(db))
    assert r.code == 1, r
    assert f"bad: snapshot @{seqs[1]}" in r.out and "good" not in r.out, r
    # and a flipped byte: the checksum catches it
    _plant_in_bad(db, seqs[2], flip=True)
    r = await cli(capfd, "verify", "--store", f"sqlite:///{db}")
    assert r.code == 1, r
    assert f"snapshot @{seqs[2]} is damaged (state checksum" in r.out, r
    # the planted one: its state vector and its text differ from the log's; the flipped
    # one: its checksum; each a PROBLEM line, and the summary counts exactly those
    problems = [line for line in r.out.splitlines() if line.startswith("PROBLEM")]
    assert all(line.startswith("PROBLEM bad: snapshot @") for line in problems), r
    assert sum(f"@{seqs[1]} " in line for line in problems) == 2, r
    assert sum(f"@{seqs[2]} " in line for line in problems) == 1, r
    assert len(problems) == 3 and "3 problems in 2 documents" in r.err, r
    r = await cli(capfd, "verify", "good", "--db", str(db))
    assert r.code == 0 and "1 document OK" in r.out, r
    # a URL of three slashes is a relative path: the message gives the file it looked for
    r = await cli(capfd, "verify", "--store", f"sqlite://{db}")
    assert r.code != 0 and f"no SQLite database at {Path.cwd()}{db}" in r.err, r
    assert "sqlite://// an absolute one" in r.err, r
    r = await cli(capfd, "verify", "nosuch", "--db", str(db))
    assert r.code == 1 and "PROBLEM nosuch: no document of that name" in r.out, r
    assert "1 problem in 1 document" in r.err, r
    # a hole in the log
    with sqlite_conn(db) as con:
        con.execute("DELETE FROM log WHERE doc = (SELECT id FROM docs WHERE name = 'good') "
                    "AND seq = 6")  # fmt: skip
    r = await cli(capfd, "verify", "good", "--db", str(db))
    assert r.code == 1 and "good: events 6..6 are missing from the log" in r.out, r


async def test_compact_keeps_head_and_named_versions(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "c.db"
    async with (
        run_server(settings_for(db, snapshot_every=7)) as srv,
        httpx.AsyncClient(base_url=srv.url) as http,
    ):
        async with connect(srv.ws_url, "log", user="ann") as c:
            await type_each(srv, c, "log", [f"a{i} " for i in range(10)])
            r = await http.post("/api/docs/log/tags", json={"name": "v1", "seq": 10})
            assert r.status_code == 201, r.text
            await type_each(srv, c, "log", [f"b{i} " for i in range(10)])
            del c.text[0:3]  # a deletion too
            await eventually(lambda: srv.backend.rooms.get_loaded("log").seq == 21)  # type: ignore[union-attr]
            await http.post("/api/docs/log/tags", json={"name": "v2", "seq": 21})
            r = await http.post("/api/docs/log/tags", json={"name": "2020-01-01", "seq": 12})
            assert r.status_code == 201, r.text
            await type_each(srv, c, "log", [f"c{i} " for i in range(5)])
        want = {ref: await version(http, "log", ref) for ref in ("v1", "v2", "head", 15)}
        events = (await http.get("/api/docs/log/events")).json()["events"]
        ts = {e["seq"]: e["ts"] for e in events}
    assert want["head"].startswith("a1 ") and want["v1"].endswith("a9 ")
    assert ts[5] < ts[10] < ts[11]  # (each typed after the last was durable)

    r = await cli(capfd, "compact", "log", "--before", "15", "--yes", "--db", str(db))
    assert r.code == 1 and "named version 'v1' is at seq 10" in r.err, r
    r = await cli(capfd, "compact", "log", "--before", "10", "--db", str(db))
    assert r.code == 1 and "--yes" in r.err, r
    r = await cli(capfd, "inspect", "log", "--json", "--db", str(db))
    assert json.loads(r.out)["events"] == 26  # refused: nothing was touched
    r = await cli(capfd, "compact", "log", "--before", "1970-01-01T00:00:00Z", "--yes",
                  "--db", str(db))  # fmt: skip
    assert r.code == 0 and "nothing to do" in r.out, r

    # a name that is a time too is refused, not read as the tag (seq 12) silently
    r = await cli(capfd, "compact", "log", "--before", "2020-01-01", "--yes", "--db", str(db))
    assert r.code == 1 and "both a named version (seq 12) and a time (seq 0)" in r.err, r
    r = await cli(capfd, "compact", "log", "--before", "v1", "--yes", "--db", str(db))
    assert r.code == 0 and "10 events folded" in r.out, r
    r = await cli(capfd, "inspect", "log", "--json", "--db", str(db))
    info = json.loads(r.out)
    assert info["base_seq"] == 10 and info["events"] == 16 and info["head"] == 26
    assert (await cli(capfd, "verify", "--db", str(db))).code == 0
    assert (await cli(capfd, "export", "log", "--db", str(db))).out == want["head"]
    assert (await cli(capfd, "export", "log", "--seq", "10", "--db", str(db))).out == want["v1"]

    # the server after compaction: same document, same named versions, old seqs gone
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for ref in ("v1", "v2", "head", 15):
            assert await version(http, "log", ref) == want[ref], ref
        assert (await http.get("/api/docs/log/versions/5")).status_code == 404
        # by time too: before the base it was compacted away (it answered the base), at
        # the base's time it is the base, whose ts is kept (it was null)
        r = await http.get("/api/docs/log/versions", params={"at": ts[5]})
        assert r.status_code == 404 and "compacted away" in r.json()["detail"], r.text
        r = await http.get("/api/docs/log/versions", params={"at": ts[10]})
        assert (r.status_code, r.json()["seq"], r.json()["ts"]) == (200, 10, ts[10]), r.text
        r = await http.get("/api/docs/log/versions/v1")
        assert r.json()["ts"] == ts[10], r.text
        # a diff from the oldest version kept by default (from=0 was a 404), and the
        # base's text written by nobody known: null, as elsewhere (it was "")
        r = await http.get("/api/docs/log/diff", params={"user": "x"})
        assert r.status_code == 200 and r.json()["from"] == 10, r.text
        ops = r.json()["roots"]["content"]["ops"]
        assert {o["actor"] for o in ops if o["op"] != "equal"} == {"ann"}, ops
        assert "".join(o["text"] for o in ops if o["op"] != "insert") == want["v1"]
        runs = (await http.get("/api/docs/log/blame", params={"user": "x"})).json()
        runs = runs["roots"]["content"]["runs"]
        assert {r["actor"] for r in runs} == {None, "ann"}, runs
        async with connect(srv.ws_url, "log", user="bob") as c:
            assert c.content == want["head"]
            c.insert(len(c.content), "after")
            await eventually(lambda: srv.backend.rooms.get_loaded("log").seq == 27)  # type: ignore[union-attr]


async def test_delete(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "d.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "gone", user="ann") as c:
            await type_each(srv, c, "gone", ["x"])
    r = await cli(capfd, "delete", "gone", "--db", str(db))
    assert r.code == 1 and "--yes" in r.err, r
    assert (await cli(capfd, "export", "gone", "--db", str(db))).out == "x"
    r = await cli(capfd, "delete", "gone", "--yes", "--db", str(db))
    assert r.code == 0, r
    r = await cli(capfd, "export", "gone", "--db", str(db))
    assert r.code == 1 and "no document named" in r.err, r
    r = await cli(capfd, "delete", "bad name!", "--yes", "--db", str(db))
    assert r.code == 1, r


async def test_a_snapshot_with_damaged_meta_is_a_problem_line_and_export_still_works(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 19 fault 1: the newest snapshot's meta JSON cut short. The document loads
    from the log or an older snapshot; verify reports it; nothing raises a traceback."""
    db = tmp_path / "m.db"
    async with run_server(settings_for(db, snapshot_every=4)) as srv:
        async with connect(srv.ws_url, "memo", user="ann") as c:
            await type_each(srv, c, "memo", [f"{i} " for i in range(12)])
        await eventually(lambda: "memo" not in srv.backend.rooms)
    with sqlite_conn(db) as con:
        (seq, meta) = con.execute("SELECT seq, meta FROM snapshots WHERE doc='memo' "
                                  "ORDER BY seq DESC LIMIT 1").fetchone()  # fmt: skip
        con.execute("UPDATE snapshots SET meta = ? WHERE doc='memo' AND seq=?", (meta[:-3], seq))
    r = await cli(capfd, "verify", "--db", str(db))
    assert r.code == 1, r
    assert f"PROBLEM memo: snapshot @{seq} is damaged (meta" in r.out, r
    assert "Traceback" not in r.err, r
    r = await cli(capfd, "export", "memo", "--db", str(db))
    assert r.code == 0 and r.out == "".join(f"{i} " for i in range(12)), r
    # and a server loads it (from the older snapshot and the log), editors see it all
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "memo", user="bob") as c:
            assert c.content == "".join(f"{i} " for i in range(12))


async def test_store_urls_of_no_store_and_a_copy_onto_itself_are_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A mistyped store URL (`redis://`, `postgres+asyncpg://`) used to be taken for a
    file path: `--store foo://bar` created a directory `foo:` with a database `bar` in
    it. Every command that opens a store now refuses it and creates nothing."""
    db = tmp_path / "p.db"
    txt = tmp_path / "t.txt"
    txt.write_text("hello")
    assert (await cli(capfd, "import", "notes", str(txt), "--db", str(db))).code == 0
    before = sorted(os.listdir(tmp_path))
    for argv in (
        ["inspect", "notes", "--store", "redis://127.0.0.1/0"],
        ["export", "notes", "--store", "postgres+asyncpg://127.0.0.1/test"],
        ["migrate", "--store", "mysql://127.0.0.1/test"],
        ["webhooks", "list", "--store", "redis://127.0.0.1/0"],
        ["copy", "--from", str(db), "--to", "redis://127.0.0.1/0", "--quiet"],
    ):
        r = await cli(capfd, *argv)
        assert r.code == 1 and "unknown store URL" in r.err, (argv, r)
        assert "Traceback" not in r.err, r
    # the same file, however it is spelled, is not copied onto itself
    same = f"sqlite:///{tmp_path}/../{tmp_path.name}/p.db"
    r = await cli(capfd, "copy", "--from", str(db), "--to", same, "--quiet")
    assert r.code == 1 and "--from and --to are the same store" in r.err, r
    assert sorted(os.listdir(tmp_path)) == before
    assert (await cli(capfd, "export", "notes", "--db", str(db))).out == "hello"


async def test_copy_and_migrate_refuse_a_sqlite_source_that_does_not_exist(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`copy --from sqlite:///no-such-file.db` printed "copied 0 of 0 documents" and
    exited 0, leaving an empty database behind; `migrate --db typo.db` made one too. Both
    now say there is no database there, as the admin commands do, and create nothing."""
    missing = tmp_path / "no-such-file.db"
    for argv in (
        ["copy", "--from", f"sqlite:///{missing}", "--to", f"sqlite:///{tmp_path}/t.db"],
        ["copy", "--from", str(missing), "--to", "memory://", "--quiet"],
        ["migrate", "--db", str(missing)],
        ["migrate", "--store", f"sqlite:///{missing}"],
    ):
        r = await cli(capfd, *argv)
        assert r.code == 1 and f"no SQLite database at {missing}" in r.err, (argv, r)
        assert "Traceback" not in r.err and "copied" not in r.out, r
        assert os.listdir(tmp_path) == [], (argv, os.listdir(tmp_path))


def test_a_database_on_read_only_media_is_named_as_such(tmp_path: Path) -> None:
    """SQLite in WAL mode writes -shm beside a database even to read it: on read-only
    media every command said only "unable to open database file". It now says the
    directory is read-only and what to do. (A tmpfs mounted read-only: root only.)"""
    with _tmpfs(tmp_path / "media", "4m") as media:
        (tmp_path / "t.txt").write_text("kept on a read-only disk")
        made = _run(
            "import", "notes", str(tmp_path / "t.txt"), "--text", "--db", str(media / "p.db")
        )
        assert made.returncode == 0, made.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
        # the commands that only read open the file read-only: they work there now
        for argv in (["inspect", "notes"], ["verify"], ["export", "notes"]):
            r = _run(*argv, "--db", str(media / "p.db"))
            assert r.returncode == 0, r.stderr
        assert _run("export", "notes", "--db", str(media / "p.db")).stdout == (
            "kept on a read-only disk"
        )
        # one that writes is refused, and says why
        r = _run("snapshot", "notes", "--db", str(media / "p.db"))
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert f"{media} is read-only" in r.stderr and "copy the file" in r.stderr, r.stderr
        # a -wal left without its -shm (a copy, a crash): reading it needs a new -shm,
        # which cannot be made there. Named as such, not as "not a Palimpsest database"
        subprocess.run(["mount", "-o", "remount,rw", str(media)], check=True)
        wal = (
            "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('PRAGMA wal_autocheckpoint=0'); c.execute('CREATE TABLE pad (b)'); "
            "os._exit(0)"
        )
        subprocess.run([sys.executable, "-c", wal, str(media / "p.db")], check=True)
        (media / "p.db-shm").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
        for argv in (["inspect", "notes"], ["verify"], ["export", "notes"]):
            r = _run(*argv, "--db", str(media / "p.db"))
            assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
            assert "not a Palimpsest database" not in r.stderr, r.stderr
            assert f"{media} is read-only" in r.stderr and "copy the file" in r.stderr, r.stderr


def test_a_database_on_a_full_disk_is_named_as_such(tmp_path: Path) -> None:
    """With no room left for its -shm file, SQLite opens nothing and says only "disk
    I/O error". Every command now says the disk is full. (A tmpfs: root only.)"""
    with _tmpfs(tmp_path / "media", "8m") as media:
        (tmp_path / "t.txt").write_text("kept on a full disk")
        made = _run(
            "import", "notes", str(tmp_path / "t.txt"), "--text", "--db", str(media / "p.db")
        )
        assert made.returncode == 0, made.stderr
        # a writer that died with its -wal full of frames (as the server on a disk that
        # filled up): opening the file again means reading that -wal into a new -shm
        wal = (
            "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('PRAGMA wal_autocheckpoint=0'); c.execute('CREATE TABLE pad (b)'); "
            "[c.execute('INSERT INTO pad VALUES (randomblob(4000))') for _ in range(60)]; "
            "os._exit(0)"
        )
        subprocess.run([sys.executable, "-c", wal, str(media / "p.db")], check=True)
        fd = os.open(media / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:  # every block left
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        # the commands that only read need no room: the -shm is there, the -wal is read
        for argv in (["inspect", "notes"], ["export", "notes"]):
            r = _run(*argv, "--db", str(media / "p.db"))
            assert r.returncode == 0, r.stderr
        for argv in (["snapshot", "notes"], ["serve", "--port", "1"]):
            r = _run(*argv, "--db", str(media / "p.db"))
            assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
            assert f"the disk holding {media} is full" in r.stderr, r.stderr


@contextlib.contextmanager
def _tmpfs(media: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `media` for the test (root only: skipped otherwise)."""
    media.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(media)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield media
    finally:
        subprocess.run(["umount", str(media)], check=False)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palimpsest", *argv], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_import_refuses_what_the_websocket_refuses(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An update naming a client id past 2^53 - 1 or a clock past 2^32 - 1 is refused
    over the websocket (the document keeps 53 and 32 bits); `import` took it, and the
    document then lost text to it."""
    from palimpsest import protocol as P

    def item(client: int, clock: int, text: str) -> bytes:
        body = P.write_var_uint(1) + P.write_var_uint(1) + P.write_var_uint(client)
        body += P.write_var_uint(clock) + b"\x04" + P.write_var_uint(1)
        return body + P.write_var_string("content") + P.write_var_string(text) + b"\x00"

    db = tmp_path / "i.db"
    for n, (client, clock) in enumerate(((2**53 + 5, 0), (7, 2**32 + 1))):
        f = tmp_path / f"u{n}.bin"
        f.write_bytes(item(client, clock, "EVIL!"))
        r = await cli(capfd, "import", f"imp{n}", str(f), "--db", str(db))
        assert r.code == 1 and "cannot be imported" in r.err, r
    f = tmp_path / "ok.bin"
    f.write_bytes(item(5, 0, "fine"))
    r = await cli(capfd, "import", "imp-ok", str(f), "--db", str(db))
    assert r.code == 0, r


async def test_a_store_flag_wins_over_both_store_variables(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PALIMPSEST_STORE (set in an operator's profile) beat an explicit --db: `delete notes
    --yes --db scratch.db` deleted the document in the store the variable named, `export
    --db` read it, `serve --db` served it. A flag for the store now makes both variables
    unread; --db with --store is a usage error."""
    from palimpsest.cli import settings_from

    prod, scratch = tmp_path / "prod.db", tmp_path / "scratch.db"
    (tmp_path / "p.txt").write_text("production text")
    (tmp_path / "s.txt").write_text("scratch text")
    for db, txt in ((prod, "p.txt"), (scratch, "s.txt")):
        r = await cli(capfd, "import", "notes", str(tmp_path / txt), "--db", str(db))
        assert r.code == 0, r
    monkeypatch.setenv("PALIMPSEST_STORE", f"sqlite:///{prod}")
    r = await cli(capfd, "export", "notes", "--db", str(scratch))
    assert r.code == 0 and r.out == "scratch text", r
    r = await cli(capfd, "delete", "notes", "--yes", "--db", str(scratch))
    assert r.code == 0, r
    monkeypatch.delenv("PALIMPSEST_STORE")
    assert (await cli(capfd, "export", "notes", "--db", str(prod))).out == "production text"
    r = await cli(capfd, "export", "notes", "--db", str(scratch))
    assert r.code == 1 and "no document named" in r.err, r
    # --store wins over PALIMPSEST_DB; the serve path (settings_from) too
    monkeypatch.setenv("PALIMPSEST_DB", str(scratch))
    monkeypatch.setenv("PALIMPSEST_STORE", f"sqlite:///{scratch}")
    r = await cli(capfd, "export", "notes", "--store", f"sqlite:///{prod}")
    assert r.code == 0 and r.out == "production text", r
    import argparse

    s = settings_from(argparse.Namespace(db=str(prod), store=None), port=1)
    assert s.store_url == f"sqlite:///{prod}"
    r = await cli(capfd, "export", "notes", "--db", str(prod), "--store", f"sqlite:///{prod}")
    assert r.code == 2 and "--db" in r.err and "--store" in r.err, r
    r = await cli(capfd, "serve", "--db", str(prod), "--store", f"sqlite:///{prod}")
    assert r.code == 2, r


@pytest.mark.postgres
async def test_a_read_only_command_leaves_a_postgresql_schema_without_our_tables_alone(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """verify, inspect and export on another application's PostgreSQL schema created
    Palimpsest's ten tables in it (on a SQLite file they refuse): now refused the same
    way, the schema unchanged; one that does not exist is not made either."""
    import asyncpg
    from conftest import PG_URL

    schema = f"foreign_{os.getpid()}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; "
                           f"CREATE TABLE {schema}.notes (body text)")  # fmt: skip
        commands = (["verify"], ["inspect", "notes"], ["export", "notes"], ["delete", "n", "--yes"])
        for args in commands:
            for name in (schema, f"{schema}_none"):
                r = await cli(capfd, *args, "--store", f"{PG_URL}?schema={name}")
                assert r.code == 1 and "OK" not in r.out, (args, r)
                assert "not a Palimpsest database" in r.err and "none of our tables" in r.err, r
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        assert [t["tablename"] for t in tables] == ["notes"]
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", f"{schema}_none"
        )
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema}_none CASCADE")
        await conn.close()


async def test_webhooks_refuses_a_missing_file_and_another_programs_database(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`webhooks --db missing.db` created the file and said "no webhooks" (exit 0); on
    another program's SQLite file it added our 21 tables. Refused now, as the other
    admin commands refuse them, the file not made or left as it was."""
    missing, other = tmp_path / "missing.db", tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE foo (x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    for action in (["list"], ["disable", "h1"]):
        r = await cli(capfd, "webhooks", *action, "--db", str(missing))
        assert r.code == 1 and f"no SQLite database at {missing}" in r.err, r
        assert not missing.exists()
        r = await cli(capfd, "webhooks", *action, "--db", str(other))
        assert r.code == 1 and "not a Palimpsest database" in r.err, r
        assert other.read_bytes() == before


async def test_verify_backup_and_copy_say_what_they_did_as_json(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """verify, backup and copy had no --json, as inspect, history and tail have: one
    JSON object on stdout, the exit status as without it."""
    db = tmp_path / "j.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "notes", user="ann") as c:
            await type_each(srv, c, "notes", ["Hello", ", world"])
    r = await cli(capfd, "verify", "--json", "--db", str(db))
    assert r.code == 0 and json.loads(r.out) == {"ok": True, "documents": 1, "problems": []}, r
    out = tmp_path / "b.db"
    r = await cli(capfd, "backup", str(out), "--json", "--quiet", "--db", str(db))
    said = json.loads(r.out)
    assert r.code == 0 and said["docs"] == 1 and said["out"] == str(out), r
    assert said["size"] == out.stat().st_size and said["source"] == str(db), r
    copied = tmp_path / "c.db"
    r = await cli(capfd, "copy", "--from", f"sqlite:///{db}", "--to", f"sqlite:///{copied}",
                  "--json", "--quiet")  # fmt: skip
    said = json.loads(r.out)
    assert r.code == 0 and said["documents"] == {
        "copied": 1,
        "of": 1,
        "already_there": 0,
        "skipped": 0,
        "replaced": 0,
    }, r
    assert said["events"] == 2, r
    with sqlite_conn(copied) as con:  # a problem: the copy's log has a gap
        con.execute("DELETE FROM log WHERE seq = 1")
    r = await cli(capfd, "verify", "--json", "--db", str(copied))
    said = json.loads(r.out)
    assert r.code == 1 and said["ok"] is False and said["documents"] == 1, r
    assert said["problems"] and all(p.startswith("notes") for p in said["problems"]), r


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata"])
async def test_compact_before_a_time_without_offset_reads_it_as_local_time(
    tmp_path: Path, tz: str
) -> None:
    """`compact --before` with a time typed without an offset read it as UTC (the HTTP
    API's rule): in Kolkata 5.5 hours later than meant, which folded every event up to
    the head. As every command of the CLI, it reads it as the machine's local time."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    db = tmp_path / "tz.db"
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "log", user="ann") as c:
            await type_each(srv, c, "log", [f"a{i} " for i in range(4)])
            await asyncio.sleep(0.05)  # (event 2's ts is not 3's)
        ts = {e.seq: e.ts for e in await srv.backend.store.read("log")}
    assert ts[2] < ts[3], ts
    wall = datetime.fromtimestamp(ts[2] / 1000, UTC).astimezone(ZoneInfo(tz))
    typed = wall.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]  # no offset
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "palimpsest", "compact", "log", "--before", typed, "--yes",
         "--db", str(db)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, TZ=tz),
    )  # fmt: skip
    assert ran.returncode == 0 and "2 events folded" in ran.stdout, ran
    ran = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "palimpsest", "compact", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "local time" in " ".join(ran.stdout.split()), ran.stdout


async def test_a_copy_run_again_to_finish_it_exits_0_and_says_already_there(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`copy` re-run after an interrupted copy (as `copy --help` says to finish one)
    finished the job but exited 1 ("not copied: document … already exists in the
    target"), and so did a re-run of a completed copy. A document the target holds as
    the source does now counts as there ("already there", exit 0); one that differs is
    still not copied, and says so (exit 1)."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    for doc in ("a", "b", "c"):
        txt = tmp_path / f"{doc}.txt"
        txt.write_text(f"text of {doc}")
        assert (await cli(capfd, "import", doc, str(txt), "--db", str(src))).code == 0
    to = ["--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}", "--quiet"]
    r = await cli(capfd, "copy", *to, "--doc", "a")  # a copy cut off after "a"
    assert r.code == 0, r
    r = await cli(capfd, "copy", *to)
    assert r.code == 0, r
    assert "not copied" not in r.err, r
    assert "copied 2 of 3 documents" in r.out and "1 already there, 0 not copied" in r.out, r
    r = await cli(capfd, "copy", *to)  # a completed copy, run again
    assert r.code == 0, r
    assert "copied 0 of 3 documents (0 events), 3 already there, 0 not copied" in r.out, r
    for doc in ("a", "b", "c"):
        assert (await cli(capfd, "export", doc, "--db", str(dst))).out == f"text of {doc}"
    # the target's "b" written since: not the source's, not overwritten, said so
    async with SQLiteStore(dst) as store:
        await store.append([("b", [NewEvent("ann", "edit", b"\x00\x00")])])
    r = await cli(capfd, "copy", *to)
    assert r.code == 1, r
    assert "b: not copied" in r.err and "differs from the source" in r.err, r
    assert "2 already there, 1 not copied" in r.out, r


async def test_a_malformed_database_is_named_with_verify_and_the_io_error_it_may_be(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """SQLite says "database disk image is malformed" (SQLITE_CORRUPT) of a damaged file,
    and also of a read that failed (a transient EIO). The API and the commands said only
    "SQLite query failed: database disk image is malformed", implying damage and naming
    nothing; they now name the document, say it may be an I/O error and suggest
    `palimpsest verify`. The file here is damaged for real (the docs table's page)."""
    db = tmp_path / "d.db"
    txt = tmp_path / "t.txt"
    txt.write_text("hello " * 2000)
    assert (await cli(capfd, "import", "big", str(txt), "--db", str(db))).code == 0
    with sqlite_conn(db) as con:
        [(root,)] = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'docs'")
        [(size,)] = con.execute("PRAGMA page_size")
    damaged = bytearray(db.read_bytes())
    damaged[(root - 1) * size : (root - 1) * size + 64] = b"\x0d" + b"\xff" * 63  # nonsense
    db.write_bytes(bytes(damaged))
    r = await cli(capfd, "export", "big", "--db", str(db))
    assert r.code != 0 and "malformed" in r.err, r
    assert "I/O error" in r.err and "palimpsest verify" in r.err, r
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient() as http:
        resp = await http.get(f"{srv.url}/api/docs/big/events", params={"user": "ann"})
        assert resp.status_code >= 500, resp.text
        detail = resp.json()["detail"]
        assert "'big'" in detail and "malformed" in detail, detail
        assert "I/O error" in detail and "palimpsest verify" in detail, detail


async def test_rename_actor_run_again_after_it_was_done_says_so_and_exits_0(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`rename-actor OLD NEW` run again after a kill that came once it had committed
    said "'zed' is an actor of this store already … choose a name nobody has" (exit 1).
    With OLD no actor any more and NEW one, the rename is done: said so, exit 0. NEW an
    actor while OLD still is one stays refused (no merge of two users)."""
    db = tmp_path / "r.db"
    txt = tmp_path / "t.txt"
    txt.write_text("hello")
    for doc, user in (("a", "ann"), ("b", "bob")):
        r = await cli(capfd, "import", doc, str(txt), "--user", user, "--db", str(db))
        assert r.code == 0, r
    r = await cli(capfd, "rename-actor", "ann", "zed", "--yes", "--db", str(db))
    assert r.code == 0, r
    r = await cli(capfd, "rename-actor", "ann", "zed", "--yes", "--db", str(db))
    assert r.code == 0, r
    assert "already done" in r.out and "choose a name" not in r.err, r
    r = await cli(capfd, "rename-actor", "bob", "zed", "--yes", "--db", str(db))
    assert r.code == 1 and "choose a name nobody has" in r.err, r


async def test_commands_that_print_a_store_url_mask_its_password(
    schema: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`migrate --store postgresql://u:Secret@host/db` (and with PALIMPSEST_STORE) printed
    the URL, password and all, on stdout; `copy` onto the same store said it in its
    refusal. Each writes it as `serve` does: `u:***@`."""
    from urllib.parse import urlsplit

    from conftest import PG_URL

    parts = urlsplit(PG_URL)
    user, host = parts.netloc.split("@")[0].split(":")[0], parts.netloc.split("@")[-1]
    url = f"{parts.scheme}://{user}:Secret@{host}{parts.path}?schema={schema}"
    r = await cli(capfd, "migrate", "--store", url)
    assert r.code == 0 and "at schema version" in r.out, r
    assert "Secret" not in r.out + r.err and f"{user}:***@{host}" in r.out, r
    monkeypatch.setenv("PALIMPSEST_STORE", url)
    r = await cli(capfd, "migrate")
    assert r.code == 0 and "Secret" not in r.out + r.err and ":***@" in r.out, r
    monkeypatch.delenv("PALIMPSEST_STORE")
    r = await cli(capfd, "copy", "--from", url, "--to", url, "--quiet")
    assert r.code == 1 and "the same store" in r.err, r
    assert "Secret" not in r.out + r.err and ":***@" in r.err, r
