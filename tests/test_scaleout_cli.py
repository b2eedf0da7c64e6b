"""`palimpsest migrate` and `palimpsest copy` (SQLite -> PostgreSQL), run as commands."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from pycrdt import Doc, Text
from scaleout import PG_URL, fresh_schema, open_store

from palimpsest.snapshots import load
from palimpsest.store import postgres
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent


def palimpsest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    async with fresh_schema() as url:
        r = palimpsest("migrate", "--store", url)
        assert r.returncode == 0, r.stderr
        assert f"schema version {postgres.SCHEMA_VERSION}" in r.stdout
        schema = url.split("schema=")[1]
        conn = await asyncpg.connect(PG_URL)
        try:
            tables = {
                row[0]
                for row in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                    schema,
                )
            }
        finally:
            await conn.close()
        assert {"docs", "events", "snapshots", "tags", "tombstones", "palimpsest_schema"} <= tables
        again = palimpsest("migrate", "--store", url)  # idempotent
        assert again.returncode == 0, again.stderr


async def test_migrate_refuses_an_unreachable_store() -> None:
    r = palimpsest("migrate", "--store", "postgresql://postgres@127.0.0.1:1/test")
    assert r.returncode == 1
    assert "cannot connect" in r.stderr


async def test_copy_sqlite_into_postgresql(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    src = SQLiteStore(db)
    await src.start()
    texts = {}
    for name, n in (("notes", 30), ("plans/q3", 5), ("empty-ish", 1)):
        d: Doc = Doc()
        t = d.get("content", type=Text)
        updates = []
        for i in range(n):
            before = d.get_state()
            t.insert(len(str(t)), f"{name}{i} ")
            updates.append(d.get_update(before))
        await src.append([(name, [NewEvent("ann", "edit", u, {"i": i}, 1000 + i)
                                  for i, u in enumerate(updates)])])  # fmt: skip
        texts[name] = str(t)
    await src.put_snapshot("notes", 20, b"not a real state but copied as is", {"undo": {}})
    await src.put_tag("notes", "v1", 10, "bob")
    await src.stop()

    async with fresh_schema() as url:
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url)
        assert r.returncode == 0, r.stderr
        assert "copied 3 of 3 documents (36 events)" in r.stdout
        async with open_store(url) as pg:
            sq = SQLiteStore(db)
            await sq.start()
            try:
                assert [(d.doc, d.head) for d in await pg.list_docs()] == [
                    (d.doc, d.head) for d in await sq.list_docs()
                ]
                for name in texts:
                    # the same events; positions are each store's own commit order
                    copied, source = await pg.read(name), await sq.read(name)
                    assert [replace(e, pos=0) for e in copied] == [
                        replace(e, pos=0) for e in source
                    ]
                    assert [e.pos for e in copied] == sorted(e.pos for e in copied)
                snap = await pg.latest_snapshot("notes")
                assert snap is not None and snap.seq == 20
                assert snap.state == b"not a real state but copied as is"
                assert [(t.name, t.seq, t.actor) for t in await pg.tags("notes")] == [
                    ("v1", 10, "bob")
                ]
            finally:
                await sq.stop()
            loaded = await load(pg, "plans/q3")
            assert str(loaded.doc.get("content", type=Text)) == texts["plans/q3"]
            # appending continues after the copied seqs
            [[e]] = await pg.append([("notes", [NewEvent("ann", "edit", b"\x00\x00")])])
            assert e.seq == 31
        # copying again refuses to overwrite, unless asked
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
        assert r.returncode == 1 and "already exists" in r.stderr
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--replace",
                       "--doc", "notes")  # fmt: skip
        assert r.returncode == 0 and "copied 1 of 1" in r.stdout, r.stderr
        async with open_store(url) as pg:
            assert await pg.head("notes") == 30
