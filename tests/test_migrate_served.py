"""`palimpsest migrate` beside a server: it rewrote an old schema under a server serving
the store, which then failed every commit ("no such table: events") while its clients
reconnected in a loop. Now it refuses, names the server, and changes nothing, when the
serving lock is held (server/serving_lock.py) and the store is not at this version; on a
store at this version it says so and exits 0, as before (a migrate run during a rolling
upgrade, docs/operations.md). Two migrates at once: the second one waits for the first,
and says so.

The server of an older version that takes the lock is played by the lock itself, taken
as a server takes it (ServingLock, PostgresServingLock): this version's server refuses
an old schema at start."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from conftest import PG_URL, free_port, run_server
from scaleout import fresh_schema
from sqlitehelp import sqlite_conn

from palimpsest import client
from palimpsest.serving_lock import PostgresServingLock, ServingLock, pg_not_served
from palimpsest.settings import Settings
from palimpsest.store.postgres_schema import OLD_STEPS as PG_OLD_STEPS
from palimpsest.store.sqlite_schema import SCHEMA_VERSION

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent


def migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", "migrate", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def user_version(db: Path) -> int:
    with sqlite_conn(db) as c:
        return int(c.execute("PRAGMA user_version").fetchone()[0])


@pytest.mark.parametrize("fanout", [False, True])
async def test_migrate_refuses_an_old_database_a_server_serves(
    tmp_path: Path, fanout: bool
) -> None:
    """A server holds the lock exclusively, or shared (with a fan-out bus): either way
    the schema is not rewritten under it."""
    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "history-v1.db", db)
    before = sha(db)
    lock = ServingLock(str(db), shared=fanout)
    await lock.acquire()
    await lock.serving()  # (the file says this process's pid, as a server's start does)
    try:
        r = await asyncio.to_thread(migrate, "--db", str(db))
    finally:
        await lock.release()
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"a server (pid {os.getpid()}) serves {db}: stop it first" in r.stderr, r.stderr
    assert "schema version 1" in r.stderr and f"this version's is {SCHEMA_VERSION}" in r.stderr
    assert "Nothing was changed" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert sha(db) == before and user_version(db) == 1
    # the server gone: migrated
    done = await asyncio.to_thread(migrate, "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert f"at schema version {SCHEMA_VERSION}" in done.stdout
    assert user_version(db) == SCHEMA_VERSION


async def test_migrate_beside_a_server_of_a_current_database_says_so(tmp_path: Path) -> None:
    """The store at this version already: nothing to rewrite, the server serves on."""
    settings = Settings(db=str(tmp_path / "p.db"), port=free_port())
    async with run_server(settings) as srv:
        async with client.connect(srv.ws_url, "d", user="alice") as a:
            a.text().insert(0, "before ")
            await a.flush()
            r = await asyncio.to_thread(migrate, "--db", settings.db)
            assert r.returncode == 0, r.stderr
            assert f"at schema version {SCHEMA_VERSION}" in r.stdout, r.stdout
            a.text().insert(7, "after")
            await a.flush()
        assert [e.seq for e in await srv.backend.store.read("d")] == [1, 2]


def test_two_migrates_at_once(tmp_path: Path) -> None:
    """The second one, started while the first rewrites the log, waits for it (says so),
    then finds the store at this version; nothing is done twice."""
    db = tmp_path / "big.db"
    shutil.copy(FIXTURES / "history-v2.db", db)
    n = 200_000
    with sqlite_conn(db) as c:
        rows = [("big", i, 1_796_000_000_000 + i, "zed", "edit", bytes([i % 251]) * 40,
                 '{"conn":"x"}') for i in range(1, n + 1)]  # fmt: skip
        c.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)", rows)
        c.execute(f"INSERT INTO docs VALUES ('big', {n}, 0, 1, 1, 8000000)")
    first = subprocess.Popen(
        [sys.executable, "-m", "palimpsest", "migrate", "--db", str(db)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert first.stderr is not None
        said = first.stderr.readline()  # it is rewriting
        assert said.startswith("palimpsest migrate: rewriting the log"), said
        second = migrate("--db", str(db))
        out, err = first.communicate(timeout=120)
    finally:
        if first.returncode is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert f"at schema version {SCHEMA_VERSION}" in out
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert (
        f"`palimpsest migrate` (pid {first.pid}) holds the serving lock of {db}: "
        "waiting for it to finish" in second.stderr
    ), second.stderr
    assert "rewriting" not in second.stderr and "Traceback" not in second.stderr
    assert f"at schema version {SCHEMA_VERSION}" in second.stdout
    with sqlite_conn(db) as c:
        got = c.execute(
            "SELECT (SELECT COUNT(*) FROM log WHERE doc = d.id) + "
            "(SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM segments WHERE doc = d.id) "
            "FROM docs d WHERE name = 'big'"
        ).fetchone()[0]
    assert got == n
    assert not Path(f"{db}-serving").exists()  # the lock file they made, removed


async def _version_2_schema(url: str) -> str:
    """An empty store as version 2 made it, in the schema `url` names; its name."""
    schema = url.split("schema=")[1]
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path = "{schema}"')
        await conn.execute("CREATE TABLE palimpsest_schema (version INT NOT NULL)")
        for v in (1, 2):
            for stmt in PG_OLD_STEPS[v]:
                await conn.execute(stmt)
            await conn.execute("INSERT INTO palimpsest_schema VALUES ($1)", v)
    finally:
        await conn.close()
    return schema


async def _pg_version(schema: str) -> int:
    conn = await asyncpg.connect(PG_URL)
    try:
        return int(await conn.fetchval(f'SELECT max(version) FROM "{schema}".palimpsest_schema'))
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_migrate_refuses_an_old_postgresql_schema_a_server_serves() -> None:
    async with fresh_schema() as url:
        schema = await _version_2_schema(url)
        lock = PostgresServingLock(PG_URL, schema, shared=False)
        await lock.acquire()
        try:
            r = await asyncio.to_thread(migrate, "--store", url)
        finally:
            await lock.release()
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"palimpsest serve pid {os.getpid()}" in r.stderr, r.stderr
        assert f"serves PostgreSQL schema {schema!r}: stop it first" in r.stderr, r.stderr
        assert "schema version 2" in r.stderr and "Nothing was changed" in r.stderr
        assert await _pg_version(schema) == 2
        # another migrate at work (its session holds the lock, named as migrate names
        # it, "palimpsest migrate pid N on host"): this one waits for it, then migrates
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "palimpsest", "migrate", "--store", url,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with pg_not_served(PG_URL, schema, "migrate"):
                assert proc.stderr is not None
                said = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
                assert f"`palimpsest migrate pid {os.getpid()} " in said, said
                assert "waiting for it to finish" in said, said
                assert await _pg_version(schema) == 2
            got = await asyncio.wait_for(proc.communicate(), 60)
            out, err = (b.decode() for b in got)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err
        assert f"at schema version {SCHEMA_VERSION}" in out
        assert await _pg_version(schema) == SCHEMA_VERSION
        # at this version, a server serving it: said, exit 0
        await lock.acquire()
        try:
            r = await asyncio.to_thread(migrate, "--store", url)
        finally:
            await lock.release()
        assert r.returncode == 0, r.stderr
        assert f"at schema version {SCHEMA_VERSION}" in r.stdout


async def test_a_server_started_during_a_migrate_names_it(tmp_path: Path) -> None:
    """A server's start while migrate holds the lock (no wait here) says what holds it,
    not "another server"."""
    from palimpsest.errors import StoreUnavailable
    from palimpsest.serving_lock import not_served

    db = tmp_path / "p.db"
    shutil.copy(FIXTURES / "history-v1.db", db)
    with not_served(str(db), "migrate"):
        with pytest.raises(StoreUnavailable) as refused:
            await ServingLock(str(db), shared=False).acquire()
    assert f"`palimpsest migrate` (pid {os.getpid()}) holds its serving lock" in str(
        refused.value
    ), refused.value
