"""A table of the schema that is missing (dropped by hand, a partial restore).

In the drill, `drop table snapshots`: the server started, every websocket got 1011 "the
document cannot be read" for ever, and verify printed 3,006 "cannot be read" lines
without naming the cause. Snapshots are checkpoints the log rebuilds: a start makes the
table again, empty, and says so (the README: schema steps that only add tables run by
themselves at start). A table nothing rebuilds (the log) stops the start, named."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import eventually, free_port, run_server
from serverproc import REPO_ROOT
from yclient import connect

from palimpsest.cli import main
from palimpsest.settings import Settings


def settings_for(db: Path) -> Settings:
    return Settings(db=str(db), port=free_port(), unload_after_seconds=0.2)


async def written(db: Path, docs: tuple[str, ...] = ("a", "b", "c")) -> None:
    async with run_server(settings_for(db)) as srv:
        for doc in docs:
            async with connect(srv.ws_url, doc, user="ann") as c:
                c.insert(0, f"text of {doc}")
                await eventually(lambda d=doc: srv.backend.store.head(d), what="logged")  # type: ignore[misc]
        await eventually(lambda: srv.backend.store.snapshots(docs[-1]), what="snapshot")


def drop(db: Path, table: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(f"DROP TABLE {table}")
    finally:
        conn.close()


def tables(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


async def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capfd.readouterr()
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        # the command set its logging up (error level, not propagated): the server the
        # test starts next in this process logs as a server does, where caplog hears it
        logging.getLogger("palimpsest").propagate = True
        logging.getLogger("palimpsest").setLevel(logging.INFO)
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("table", ["snapshots", "derived"])
async def test_a_missing_table_of_caches_is_said_once_by_verify_and_made_again_at_start(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    table: str,
) -> None:  # fmt: skip
    db = tmp_path / "p.db"
    await written(db)
    drop(db, table)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out, err = await run(capfd, "verify", "--db", str(db))
    assert code == 1, (out, err)
    lines = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(lines) == 1, out  # once, not per document
    assert f"the {table} table was missing" in lines[0] and "cannot be read" not in out, out
    assert "palimpsest verify: 1 problem in 3 documents" in err, err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # verify only reads
    assert table not in tables(db)
    with caplog.at_level(logging.WARNING):
        async with run_server(settings_for(db)) as srv:
            for doc in ("a", "b", "c"):
                async with connect(srv.ws_url, doc, user="bob") as c:
                    assert c.content == f"text of {doc}"
    said = [m for r in caplog.records if f"the {table} table was missing" in (m := r.getMessage())]
    assert len(said) == 1 and "made again, empty" in said[0], said
    assert table in tables(db)
    code, out, err = await run(capfd, "verify", "--db", str(db))
    assert code == 0 and "3 documents OK" in out, (out, err)


async def test_a_missing_snapshots_table_names_the_compacted_documents_it_cost(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "p.db"
    await written(db)
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, "a", user="ann") as c:
            c.insert(0, "more ")
            await eventually(lambda: srv.backend.store.head("a"), what="logged")
    code, out, err = await run(capfd, "compact", "a", "--before", "1", "--yes", "--db", str(db))
    assert code == 0, err
    drop(db, "snapshots")
    code, out, err = await run(capfd, "verify", "--db", str(db))
    assert code == 1
    assert "1 compacted document had its base in a snapshot, and cannot load" in out, out
    with caplog.at_level(logging.WARNING):
        async with run_server(settings_for(db)):
            pass
    assert any("1 compacted document had" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("table", ["log", "docs", "segments", "tags"])
async def test_a_missing_table_nothing_rebuilds_stops_the_start_and_verify(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], table: str
) -> None:
    db = tmp_path / "p.db"
    await written(db)
    drop(db, table)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "palimpsest", "serve", "--port", str(free_port()), "--db", str(db)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert f"lacks the table {table} (" in r.stderr and "from a backup" in r.stderr, r.stderr
    assert table not in tables(db)  # not made again empty
    if table != "docs":  # (without docs, the file is no Palimpsest database at all)
        code, out, err = await run(capfd, "verify", "--db", str(db))
        assert code == 1 and f"lacks the table {table} (" in err, (out, err)
        assert "cannot be read" not in out, out
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


async def test_on_postgresql_too(schema: str, capfd: pytest.CaptureFixture[str]) -> None:
    import asyncpg
    from conftest import PG_URL

    from palimpsest.errors import StoreError
    from palimpsest.store.base import NewEvent
    from palimpsest.store.postgres import PostgresStore

    url = f"{PG_URL}?schema={schema}"
    async with PostgresStore(url) as store:
        await store.append([("a", [NewEvent("ann", "edit", b"\x00\x00")])])
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP TABLE "{schema}".snapshots')
    finally:
        await conn.close()
    # (on PostgreSQL verify's start makes it again, as a server's does: said once)
    code, out, err = await run(capfd, "verify", "--store", url)
    assert code == 1 and "the snapshots table was missing" in out, (out, err)
    assert "cannot be read" not in out, out
    async with PostgresStore(url) as store:
        assert store.schema_notes() == []
        assert await store.snapshots("a") == []
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP TABLE "{schema}".log')
    finally:
        await conn.close()
    store = PostgresStore(url)
    with pytest.raises(StoreError, match="lacks the table log"):
        await store.start()


def serve_once(db: Path) -> subprocess.CompletedProcess[str]:
    """`palimpsest serve` on `db`, expected to stop at start."""
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", "serve", "--port", str(free_port()), "--db", str(db)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_lost_revoked_users_table_stops_the_start_until_migrate_accepts_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`drop table revoked_users`: the next start made it again, empty, on first use,
    and every revoked user was let in again without a word. Now the start stops, named;
    verify says it; `palimpsest migrate --accept-lost-revocations` is the explicit way on."""
    db = tmp_path / "p.db"
    await written(db)
    code, out, err = await run(capfd, "revoke", "mallory", "--db", str(db))
    assert code == 0, (out, err)
    drop(db, "revoked_users")
    code, out, err = await run(capfd, "verify", "--db", str(db))
    assert code == 1, (out, err)
    lines = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(lines) == 1, out
    assert "the revoked_users table was missing, though this store had made it" in lines[0]
    assert "revoked users' old tokens would be let in again" in lines[0], lines
    assert "from a backup" in lines[0] and "--accept-lost-revocations" in lines[0], lines
    r = await asyncio.to_thread(serve_once, db)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "lacks the table revoked_users, which it had" in r.stderr, r.stderr
    assert "would let every revoked user in again" in r.stderr, r.stderr
    assert "palimpsest migrate --accept-lost-revocations" in r.stderr, r.stderr
    assert "revoked_users" not in tables(db)  # not made again, empty
    # any start stops so, the admin commands' too (they write)
    code, out, err = await run(capfd, "revoke", "--list", "--db", str(db))
    assert code == 1 and "lacks the table revoked_users" in err, (out, err)
    with caplog.at_level(logging.WARNING):
        code, out, err = await run(capfd, "migrate", "--accept-lost-revocations", "--db", str(db))
    assert code == 0, (out, err)
    said = [
        r.getMessage()
        for r in caplog.records
        if "revoked_users table was missing" in r.getMessage()
    ]
    assert len(said) == 1 and "made again, empty" in said[0], said
    assert "revoked_users" in tables(db)
    async with run_server(settings_for(db)) as srv:
        assert await srv.backend.store.revocations().list() == []
        assert srv.backend.store.schema_notes() == []  # said once, by the start that made it
    code, out, err = await run(capfd, "verify", "--db", str(db))
    assert code == 0 and "3 documents OK" in out, (out, err)


async def test_a_lost_webhooks_table_is_made_again_with_a_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "p.db"
    await written(db)
    drop(db, "webhooks")
    code, out, err = await run(capfd, "verify", "--db", str(db))
    assert code == 1, (out, err)
    lines = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(lines) == 1 and "the webhooks table was missing" in lines[0], out
    assert "a server's start makes it again, empty" in lines[0], lines
    with caplog.at_level(logging.WARNING):
        async with run_server(settings_for(db)) as srv:
            notes = srv.backend.store.schema_notes()
    said = [
        r for r in caplog.records
        if r.levelno == logging.WARNING and "the webhooks table was missing" in r.getMessage()
    ]  # fmt: skip
    assert len(said) == 1, [r.getMessage() for r in said]
    words = said[0].getMessage()
    assert "each webhook starts again at the log's end" in words and "from a backup" in words
    assert "made again, empty" in words
    assert len(notes) == 1 and "the webhooks table was missing" in notes[0], notes
    assert "webhooks" in tables(db)
    code, out, err = await run(capfd, "verify", "--db", str(db))
    assert code == 0 and "3 documents OK" in out, (out, err)


async def test_a_store_older_than_the_side_tables_marker_gets_them_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file of an older release, whose side tables were made on first use (never, for
    one that had no revocation): nothing says they were ever there, so they are made
    and noted, and from then on their loss is told."""
    db = tmp_path / "p.db"
    await written(db)
    for table in ("side_tables", "revoked_users", "webhooks"):
        drop(db, table)
    with caplog.at_level(logging.WARNING):
        async with run_server(settings_for(db)) as srv:
            assert srv.backend.store.schema_notes() == []
    assert not [r for r in caplog.records if "table was missing" in r.getMessage()]
    assert {"side_tables", "revoked_users", "webhooks"} <= tables(db)
    drop(db, "revoked_users")
    r = await asyncio.to_thread(serve_once, db)
    assert r.returncode != 0 and "lacks the table revoked_users" in r.stderr, r.stderr


async def test_lost_side_tables_on_postgresql(
    schema: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import asyncpg
    from conftest import PG_URL

    from palimpsest.errors import StoreError
    from palimpsest.store.postgres import PostgresStore
    from palimpsest.store.revocations import Revoked

    url = f"{PG_URL}?schema={schema}"
    async with PostgresStore(url) as store:
        await store.revocations().put(Revoked("mallory", 1))

    async def drop_pg(table: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP TABLE "{schema}".{table}')
        finally:
            await conn.close()

    await drop_pg("revoked_users")
    code, out, err = await run(capfd, "verify", "--store", url)
    assert code == 1 and "lacks the table revoked_users, which it had" in err, (out, err)
    store = PostgresStore(url)
    with pytest.raises(StoreError, match="lacks the table revoked_users, which it had"):
        await store.start()
    with caplog.at_level(logging.WARNING):
        code, out, err = await run(capfd, "migrate", "--accept-lost-revocations", "--store", url)
    assert code == 0, (out, err)
    assert any("revoked_users table was missing" in r.getMessage() for r in caplog.records)
    async with PostgresStore(url) as store:
        assert store.schema_notes() == []
        assert await store.revocations().list() == []
    await drop_pg("webhooks")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        async with PostgresStore(url) as store:
            notes = store.schema_notes()
    assert len(notes) == 1 and "the webhooks table was missing" in notes[0], notes
    assert "made again, empty" in notes[0] and "from a backup" in notes[0], notes
    assert any(
        r.levelno == logging.WARNING and "the webhooks table was missing" in r.getMessage()
        for r in caplog.records
    )
    await drop_pg("webhooks")
    code, out, err = await run(capfd, "verify", "--store", url)
    assert code == 1 and "PROBLEM the database: the webhooks table was missing" in out, (out, err)
