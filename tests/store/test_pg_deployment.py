"""PostgresStore on PostgreSQL as a managed deployment has it: the schema named by the
role's search_path rather than ?schema=, a pooler in front that drops startup
parameters, a role that owns nothing, a small connection limit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from conftest import PG_PORT, PG_URL, free_port
from stallproxy import StallingProxy

from palimpsest.errors import StoreError, StoreUnavailable
from palimpsest.serving_lock import PostgresServingLock
from palimpsest.store.base import NewEvent
from palimpsest.store.postgres import PostgresStore, split_url
from palimpsest.store.revocations import Revoked

pytestmark = pytest.mark.postgres


async def test_one_schema_named_two_ways_gives_one_turn_per_document(schema: str) -> None:
    """One process names the schema with ?schema=, another through its search_path (as a
    role's ``ALTER ROLE … SET search_path`` does; here the DSN's startup parameter): both
    write the same tables, so a document's turn on server changes is one turn for both
    (it was keyed on the name as configured, '' for the second: both held it at once, and
    a redo's copy raced a change of the other process)."""
    by_name = PostgresStore(f"{PG_URL}?schema={schema}")
    by_path = PostgresStore(f"{PG_URL}?search_path={schema}")
    async with by_name, by_path:

        async def take_turn() -> None:
            async with by_path.server_changes("d"):
                pass

        async with by_name.server_changes("d"):
            waiting = asyncio.create_task(take_turn())
            await asyncio.sleep(0.3)  # (time for a turn not kept to be taken wrongly)
            assert not waiting.done()
        await asyncio.wait_for(waiting, 30)
        assert await by_name.identity() == await by_path.identity()


def _through(proxy: StallingProxy, query: str) -> str:
    """PG_URL by way of `proxy`, with `query` (``schema=…``)."""
    parts = urlsplit(PG_URL)
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def _tables(schema_name: str) -> set[str]:
    conn = await asyncpg.connect(PG_URL)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema_name
        )
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def test_a_schema_a_pooler_drops_is_refused_not_written_elsewhere(schema: str) -> None:
    """A pooler that drops the search_path startup parameter (PgBouncer's
    ignore_startup_parameters = search_path; here a proxy that does the same) leaves the
    session in the role's default schema: the store refuses to start, naming the
    setting, rather than creating or reading its tables there (it said "at schema version
    5" and wrote into public, another deployment's tables)."""
    before = await _tables("public")
    with StallingProxy(PG_PORT, drop_startup={"search_path"}) as proxy:
        store = PostgresStore(_through(proxy, f"schema={schema}"))
        with pytest.raises(StoreError) as e:
            await store.start()
    assert "search_path" in str(e.value) and "ignore_startup_parameters" in str(e.value)
    assert repr(schema) in str(e.value)
    assert await _tables("public") == before
    assert await _tables(schema) == set()
    # and through no such pooler, it starts
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        assert store.resolved_schema == schema


async def test_durability_os_that_a_pooler_drops_is_refused(schema: str) -> None:
    """--durability os asks PostgreSQL for synchronous_commit=off as a startup parameter;
    a pooler that drops it would leave every commit waiting for the WAL flush, unsaid."""
    with StallingProxy(PG_PORT, drop_startup={"synchronous_commit"}) as proxy:
        store = PostgresStore(_through(proxy, f"schema={schema}"), durability="os")
        with pytest.raises(StoreError) as e:
            await store.start()
    assert "synchronous_commit" in str(e.value)
    assert "ignore_startup_parameters" in str(e.value)


@contextlib.contextmanager
def _pgbouncer(pools: dict[str, str]) -> Iterator[int]:
    """A PgBouncer (if installed; the test is skipped otherwise) in front of PG_URL's
    server, with one database per entry of `pools` (name -> its options, e.g.
    ``pool_mode=transaction``) onto PG_URL's database; its port."""
    exe = shutil.which("pgbouncer")
    if exe is None:
        pytest.skip("pgbouncer is not installed")
    parts = urlsplit(PG_URL)
    user = parts.username or "postgres"
    port = free_port()
    folder = tempfile.mkdtemp(prefix="pgbouncer-")
    os.chmod(folder, 0o755)
    dbs = "\n".join(
        f"{name} = host=127.0.0.1 port={PG_PORT} dbname={parts.path.lstrip('/')} {opts}"
        for name, opts in pools.items()
    )
    ini = Path(folder, "pgbouncer.ini")
    ini.write_text(
        f"[databases]\n{dbs}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"auth_type = trust\nauth_file = {folder}/users.txt\nunix_socket_dir =\n"
        "ignore_startup_parameters = extra_float_digits\nserver_reset_query =\n"
    )
    Path(folder, "users.txt").write_text(f'"{user}" ""\n')
    for f in ("pgbouncer.ini", "users.txt"):
        os.chmod(Path(folder, f), 0o644)
    # (it refuses to run as root: then as the PostgreSQL server's user)
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([exe, *as_user, str(ini)], stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None:
                pytest.skip(f"pgbouncer did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_pooler_in_transaction_mode_is_refused_at_start(schema: str) -> None:
    """Through PgBouncer in transaction mode the server started and then failed at
    random (prepared statement "__asyncpg_stmt_18__" does not exist, bind message
    supplies 4 parameters…); now the store and the serving lock refuse it at start,
    saying why. In session mode it starts. (Needs pgbouncer: skipped without it.)"""
    parts = urlsplit(PG_URL)
    user = parts.username or "postgres"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    # the test's own schema, as a role's search_path would give it: set when PgBouncer
    # opens a server session, and kept (no server_reset_query)
    path = f"connect_query='SET search_path = {schema}'"
    pools = {"tx": f"pool_mode=transaction {path}", "sess": f"pool_mode=session {path}"}
    with _pgbouncer(pools) as port:
        tx = f"postgresql://{user}@127.0.0.1:{port}/tx"
        for _ in range(3):
            with pytest.raises(StoreError) as e:
                await PostgresStore(tx).start()
            assert "transaction (or statement) pooling mode" in str(e.value)
            assert "pool_mode = session" in str(e.value)
            lock = PostgresServingLock(tx, None, shared=True)
            with pytest.raises(StoreError) as e:
                await lock.acquire()
            assert "pool_mode = session" in str(e.value)
        sess = f"postgresql://{user}@127.0.0.1:{port}/sess"
        lock = PostgresServingLock(sess, None, shared=True)
        await lock.acquire()
        try:
            async with PostgresStore(sess) as store:
                assert store.resolved_schema == schema
                await store.append([("d", [NewEvent("a", "edit", b"u", {}, 1)])])
                assert [e.update for e in await store.read("d")] == [b"u"]
        finally:
            await lock.release()


#: what docs/scaleout.md tells a DBA to grant the role a server runs as ({s} the schema,
#: {r} the role)
GRANTS = """
GRANT USAGE ON SCHEMA {s} TO {r};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r};
"""


async def test_a_role_that_owns_nothing_serves_a_current_schema(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`palimpsest migrate` as the owner, then the server as a role with only the
    grants the docs name: no CREATE at start (CREATE SCHEMA / CREATE TABLE IF NOT EXISTS
    need the privilege even when there is nothing to create), nor at run time (the
    revoked users' and webhooks' tables were made on first use, owned by whichever role
    got there first)."""
    role = f"{schema}_app"
    parts = urlsplit(PG_URL)
    owner = PostgresStore(f"{PG_URL}?schema={schema}", migrate=True)
    await owner.start()
    assert owner.upkeep
    await owner.stop()
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        try:
            await conn.execute(GRANTS.format(s=schema, r=role))
            app_url = urlunsplit(
                parts._replace(
                    netloc=f"{role}@{parts.hostname}:{PG_PORT}", query=f"schema={schema}"
                )
            )
            async with PostgresStore(app_url) as store:
                # VACUUM would be skipped, REINDEX refused: left to autovacuum, said
                assert not store.upkeep
                assert f"role {role!r} does not own the tables" in caplog.text
                await store.append([("d", [NewEvent("ann", "edit", b"u", {}, 1)])])
                assert [e.update for e in await store.read("d")] == [b"u"]
                assert await store.put_snapshot_if_due("d", 1, b"state") is True
                await store.check_writable()
                revoked = store.revocations()
                await revoked.put(Revoked("mallory", 5, "admin", 6))
                assert [r.user for r in await revoked.list()] == ["mallory"]
                hooks = store.webhook_cursors()
                await hooks.register("h", "http://127.0.0.1:1/", 0)
                assert [h.id for h in await hooks.list()] == ["h"]
                await store.seal("d", run=1)
                await store.reclaim_snapshots(idle=True)
                assert await store.delete_doc("d")
            owners = await conn.fetch(
                "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = $1", schema
            )
            assert {r[1] for r in owners} == {parts.username or "postgres"}
            assert {"revoked_users", "webhooks"} <= {r[0] for r in owners}
        finally:
            await conn.execute(f"DROP OWNED BY {role}")
            await conn.execute(f"DROP ROLE {role}")
    finally:
        await conn.close()


async def test_a_pool_with_no_session_to_give_fails_the_start_saying_so(schema: str) -> None:
    """Behind a pooler whose pool is full, a new connection is let in and its first
    statement waits (PgBouncer: until query_wait_timeout, 120 s, then a traceback); the
    start now gives up after SESSION_WAIT and says why, with the connections a process
    opens. Emulated: a proxy that lets the client log in and passes none of its queries
    on; and, where PgBouncer is installed, a real one with its pool taken."""
    with StallingProxy(PG_PORT, hold_queries=True) as proxy:
        url = _through(proxy, f"schema={schema}")
        with pytest.raises(StoreUnavailable) as e:
            await PostgresStore(url).start()
        assert "PALIMPSEST_PG_POOL_SIZE" in str(e.value)
        assert "query_wait_timeout" in str(e.value)
        _names_both_causes(str(e.value))
        with pytest.raises(StoreUnavailable) as e:
            await PostgresServingLock(split_url(url)[0], schema, shared=True).acquire()
        assert "PALIMPSEST_PG_POOL_SIZE" in str(e.value)
        _names_both_causes(str(e.value))
    if shutil.which("pgbouncer") is None:
        return
    parts = urlsplit(PG_URL)
    user = parts.username or "postgres"
    with _pgbouncer({"small": "pool_mode=session pool_size=2"}) as port:
        url = f"postgresql://{user}@127.0.0.1:{port}/small?schema={schema}"
        held = [await asyncpg.connect(url.split("?")[0]) for _ in range(2)]
        try:
            for c in held:
                await c.fetchval("SELECT 1")
            with pytest.raises(StoreUnavailable) as e:
                await PostgresStore(url, max_size=3).start()
            assert "up to 8 (2 × PALIMPSEST_PG_POOL_SIZE 3 + 2)" in str(e.value) or (
                "PALIMPSEST_PG_POOL_SIZE + 2" in str(e.value)
            )
        finally:
            for c in held:
                await c.close()


def _names_both_causes(said: str) -> None:
    """A session that does not come, from here, is a pooler with a full pool or a way to
    PostgreSQL that is slow or stalled: a network stall during a start (no pooler at all)
    was blamed on "a pooler in front of it whose pool is full", with "lower
    PALIMPSEST_PG_POOL_SIZE" as the remedy."""
    assert "slow or stalled" in said, said
    assert "pooler" in said, said
    # the pool size is the pooler's remedy, said as such
    assert said.index("If there is such a pooler") < said.index("PALIMPSEST_PG_POOL_SIZE"), said
    assert "TimeoutError()" not in said, said


async def test_a_connection_that_gets_no_answer_says_so_not_an_empty_reason(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL that does not answer a connect (a stalled network, a host gone quiet):
    asyncpg's TimeoutError has no text, and the start said "cannot connect to PostgreSQL: "
    and nothing more."""
    from palimpsest.store import postgres

    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 0.5)
    with StallingProxy(PG_PORT) as proxy:
        proxy.stall()
        url = _through(proxy, f"schema={schema}")
        with pytest.raises(StoreUnavailable) as e:
            await PostgresStore(url).start()
        assert str(e.value) == (
            "cannot connect to PostgreSQL: no answer within 0.5 s (TimeoutError)"
        )
        with pytest.raises(StoreUnavailable) as e:
            await PostgresServingLock(split_url(url)[0], schema, shared=True).acquire()
        assert str(e.value).endswith("no answer within 0.5 s (TimeoutError)"), str(e.value)
        proxy.resume()


async def test_the_serving_lock_outlives_idle_session_timeout_and_says_why_it_was_lost(
    schema: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With idle_session_timeout (here the DSN's, as a DBA's ALTER ROLE gives it) the
    lock's session, idle between checks, was ended again and again ("the serving lock's
    connection to PostgreSQL was lost; taking it again" every 10 s, no cause): it is off
    for that session now. A session lost anyway is logged with what happened."""
    from palimpsest import serving_lock

    monkeypatch.setattr(serving_lock, "_PG_CHECK_SECONDS", 0.6)  # (> the timeout)
    dsn = f"{PG_URL}?idle_session_timeout=300"
    lock = PostgresServingLock(dsn, schema, shared=True)
    await lock.acquire()
    try:
        await asyncio.sleep(2.0)  # (three checks, each after the session idled 0.6 s)
        assert "was lost" not in caplog.text
        pid = lock._conn.get_server_pid()
        conn = await asyncpg.connect(PG_URL)
        try:
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
            )
            assert held == 1
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()
        for _ in range(100):
            if "is held again" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert "the serving lock's connection to PostgreSQL was lost (PostgreSQL or the " in (
            caplog.text
        )
    finally:
        await lock.release()


async def test_a_turn_outlives_idle_in_transaction_session_timeout_or_says_it_was_lost(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With idle_in_transaction_session_timeout=100ms a turn on server changes (a
    transaction held open while the change is made) was ended under its holder, without
    a word, and another process could take the document's turn meanwhile: the timeout is
    off for that transaction now, and a turn lost anyway is logged."""
    url = f"{PG_URL}?schema={schema}&idle_in_transaction_session_timeout=100"
    async with PostgresStore(url) as store, PostgresStore(f"{PG_URL}?schema={schema}") as other:

        async def take_turn() -> None:
            async with other.server_changes("d"):
                pass

        async with store.server_changes("d"):
            await asyncio.sleep(0.5)  # five times the timeout, idle in the transaction
            waiting = asyncio.create_task(take_turn())
            await asyncio.sleep(0.3)
            assert not waiting.done()
        await asyncio.wait_for(waiting, 30)
        assert "was lost" not in caplog.text

        async with store.server_changes("d"):
            conn = await asyncpg.connect(PG_URL)
            try:
                # (only this test's: the key names its schema)
                ended = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = "
                    "'advisory' AND classid = $1 AND objid = hashtext($2)::oid AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())",
                    0x50616C69 + 2,
                    f"{schema}/d",
                )
                assert ended == 1
            finally:
                await conn.close()
            await asyncio.sleep(0.2)
        assert "the turn on server changes of 'd' was lost while this process held it" in (
            caplog.text
        )


async def test_a_start_waits_for_the_serving_lock_then_takes_it_or_refuses(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An app server's reload starts the new process while the old one still serves: a
    start found the schema's serving lock held and refused at once, and gunicorn's
    master stopped. It waits now (saying so once, naming the holder) and takes the lock
    when the holder lets it go; a second server that stays is still refused, after the
    wait, with the same words."""
    old = PostgresServingLock(PG_URL, schema, shared=False)
    await old.acquire()
    new = PostgresServingLock(PG_URL, schema, shared=False, wait=120)
    taking = asyncio.create_task(new.acquire())
    try:
        for _ in range(200):
            if "waiting for palimpsest serve pid" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert f"waiting for palimpsest serve pid {os.getpid()}" in caplog.text, caplog.text
        assert "to release the serving lock on PostgreSQL schema" in caplog.text
        assert not taking.done()
        await old.release()
        await asyncio.wait_for(taking, 60)  # taken once the old one let it go
        assert caplog.text.count("waiting for") == 1
        late = PostgresServingLock(PG_URL, schema, shared=False, wait=0.3)
        with pytest.raises(StoreUnavailable, match=f"PostgreSQL schema '{schema}' is in use"):
            await late.acquire()
    finally:
        taking.cancel()
        with contextlib.suppress(BaseException):
            await taking
        await new.release()
        await old.release()
