"""palimpsest rename-actor: a user pseudonymised across a SQLite store written by a real
server (two users typing over real websockets), then served again."""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from pathlib import Path

import httpx
from conftest import eventually, run_server
from feedhelp import RawStream
from test_admin_cli import cli, settings_for, type_each
from yclient import connect

OLD = "annika.lindqvist@example.org"
NEW = "user-7f3a"


def traces(db: Path, name: str) -> list[str]:
    """Where `name` is still in the database: the bytes of the file and its -wal, and every
    row's values, raw and zlib-inflated (snapshots are stored compressed)."""
    mark = name.encode()
    found = [p.name for p in (db, Path(f"{db}-wal")) if p.exists() and mark in p.read_bytes()]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for v in row:
                    b = v if isinstance(v, bytes) else str(v).encode()
                    inflated = b""
                    if isinstance(v, bytes):
                        with contextlib.suppress(zlib.error):
                            inflated = zlib.decompressobj().decompress(b)
                    if mark in b or mark in inflated:
                        found.append(table)
    finally:
        conn.close()
    return found


async def test_a_renamed_user_is_gone_from_the_file_and_keeps_blame_and_undo(
    tmp_path: Path, capfd: object
) -> None:
    db = tmp_path / "r.db"
    async with run_server(settings_for(db, snapshot_every=4)) as srv:
        async with connect(srv.ws_url, "gone", user=OLD) as c:  # deleted later: the name stays
            await type_each(srv, c, "gone", ["x"])
        async with (
            connect(srv.ws_url, "memo", user=OLD) as a,
            connect(srv.ws_url, "memo", user="bob") as b,
        ):
            for i in range(3):
                await type_each(srv, a, "memo", [f"A{i} "])
                await eventually(lambda i=i: f"A{i}" in b.content)
                await type_each(srv, b, "memo", [f"B{i} "])
                await eventually(lambda i=i: f"B{i}" in a.content)
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/api/docs/memo/tags", params={"user": OLD},
                                json={"name": "v1", "seq": 4})  # fmt: skip
            assert r.status_code in (200, 201), r.text
            assert (await http.delete("/api/docs/gone")).status_code in (200, 204)
        ran = await cli(capfd, "rename-actor", OLD, NEW, "--yes", "--db", str(db))  # type: ignore[arg-type]
        assert ran.code == 1 and "serves" in ran.err and "stop it first" in ran.err, ran
    assert traces(db, OLD)  # the repro: events, tags, undo stacks and owners name them
    ran = await cli(capfd, "compact", "memo", "--before", "3", "--yes", "--db", str(db))  # type: ignore[arg-type]
    assert ran.code == 0, ran
    ran = await cli(capfd, "rename-actor", OLD, NEW, "--db", str(db))  # type: ignore[arg-type]
    assert ran.code == 1 and "--yes" in ran.err
    ran = await cli(capfd, "rename-actor", "bob", NEW, "--yes", "--db", str(db))  # type: ignore[arg-type]
    assert ran.code == 0, ran  # bob -> NEW, then back: NEW is taken meanwhile
    ran = await cli(capfd, "rename-actor", OLD, NEW, "--yes", "--db", str(db))  # type: ignore[arg-type]
    assert ran.code == 1 and "actor of this store already" in ran.err, ran
    ran = await cli(capfd, "rename-actor", NEW, "bob", "--yes", "--db", str(db))  # type: ignore[arg-type]
    assert ran.code == 0, ran

    ran = await cli(capfd, "rename-actor", OLD, NEW, "--yes", "--db", str(db))  # type: ignore[arg-type]
    assert ran.code == 0, ran
    assert f"{OLD} -> {NEW}" in ran.out and "1 tag (1 record of tag changes)" in ran.out, ran
    assert traces(db, OLD) == []
    assert traces(db, "bob")  # nobody else was touched
    ran = await cli(capfd, "verify", "--db", str(db))  # type: ignore[arg-type]
    assert ran.code == 0, ran

    async with run_server(settings_for(db, snapshot_every=4)) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            runs = (await http.get("/api/docs/memo/blame")).json()["roots"]["content"]["runs"]
            by = {x["actor"] for x in runs if x["text"].strip().startswith("A2")}
            assert by == {NEW}, runs
            assert OLD not in {x["actor"] for x in runs}
            events = (await http.get("/api/docs/memo/events")).json()["events"]
            assert {e["actor"] for e in events} == {NEW, "bob"}
            tags = (await http.get("/api/docs/memo/tags")).json()
            assert OLD not in str(tags) and NEW in str(tags)
            async with RawStream(f"{srv.url}/api/events/stream") as s:
                feed = await s.events(len(events))
            assert {e["actor"] for e in feed} == {NEW, "bob"}
            # undo by the new name takes back the old name's last change (typed within
            # the grouping window: one step), and keeps bob's edits
            r = await http.post("/api/docs/memo/undo", params={"user": NEW})
            assert r.status_code == 200, r.text
            async with connect(srv.ws_url, "memo", user="bob") as b:
                await eventually(lambda: "A" not in b.content)
                assert b.content == "B0 B1 B2 ", b.content
