"""The store contract against PostgresStore on the machine's PostgreSQL, each test in a
fresh schema (so parallel runs never see each other), plus what only a shared database
can show: appenders in separate processes on one document."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from conftest import PG_URL, eventually

from palimpsest.errors import StoreUnavailable
from palimpsest.store import postgres
from palimpsest.store.base import EventStore, NewEvent
from palimpsest.store.postgres import PostgresStore
from store.contract import StoreContract

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]


class TestPostgresStore(StoreContract):
    reader = "_fetch"

    @pytest.fixture(autouse=True)
    def _schema(self, schema: str) -> None:
        self.schema = schema

    async def create(self) -> EventStore:
        return PostgresStore(f"{PG_URL}?schema={self.schema}")

    async def reopen(self, store: EventStore) -> EventStore | None:
        return PostgresStore(PG_URL, schema=self.schema)

    def child_url(self) -> str | None:
        return f"{PG_URL}?schema={self.schema}"

    async def delete_tail_row(self, store: EventStore, doc: str, seq: int) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(
                f'DELETE FROM "{self.schema}".log WHERE seq = $1 AND doc = '
                f'(SELECT id FROM "{self.schema}".docs WHERE name = $2)',
                seq, doc,
            )  # fmt: skip
        finally:
            await conn.close()

    async def set_event_ts(self, store: EventStore, doc: str, seq: int, ts: int) -> None:
        store._recent.clear()  # type: ignore[attr-defined]  # rows it would seal as written
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(
                f'UPDATE "{self.schema}".log SET ts = $1 WHERE seq = $2 AND doc = '
                f'(SELECT id FROM "{self.schema}".docs WHERE name = $3)',
                ts, seq, doc,
            )  # fmt: skip
        finally:
            await conn.close()

    async def damage_segment(self, store: EventStore, doc: str, first_seq: int) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            where = (
                f'WHERE first_seq = $1 AND doc = (SELECT id FROM "{self.schema}".docs '
                "WHERE name = $2)"
            )
            body = await conn.fetchval(
                f'SELECT body FROM "{self.schema}".segments {where}', first_seq, doc
            )
            bad = bytearray(body)
            bad[len(bad) // 2] ^= 0x01
            await conn.execute(
                f'UPDATE "{self.schema}".segments SET body = $3 {where}', first_seq, doc, bytes(bad)
            )
        finally:
            await conn.close()

    async def damage_snapshot(self, store: EventStore, doc: str, seq: int) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            status = await conn.execute(
                f"UPDATE \"{self.schema}\".snapshots SET state = state || '\\x00'::bytea "
                "WHERE doc = $1 AND seq = $2",
                doc,
                seq,
            )
        finally:
            await conn.close()
        assert status == "UPDATE 1"

    async def _set(self, doc: str, seq: int, column: str, value: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            status = await conn.execute(
                f'UPDATE "{self.schema}".snapshots SET {column} = $3 WHERE doc = $1 AND seq = $2',
                doc,
                seq,
                value,
            )
        finally:
            await conn.close()
        assert status == "UPDATE 1"

    async def set_snapshot_meta(self, store: EventStore, doc: str, seq: int, text: str) -> None:
        await self._set(doc, seq, "meta", text)

    async def set_snapshot_checksum(
        self, store: EventStore, doc: str, seq: int, value: str
    ) -> None:
        await self._set(doc, seq, "checksum", value)

    async def set_snapshot_state(self, store: EventStore, doc: str, seq: int, data: bytes) -> None:
        await self._set(doc, seq, "state", data)  # type: ignore[arg-type]


# --- beyond the contract: several processes on one database ---------------------------

WRITER = """
import asyncio, json, sys, time
from palimpsest.store.base import NewEvent
from palimpsest.store import postgres
from palimpsest.store.postgres import PostgresStore

async def main(url, tag, n, skew):
    async with PostgresStore(url) as store:
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        got = []
        for i in range(n):
            now = time.time_ns() // 1_000_000 + skew  # this process's clock
            evs = [NewEvent(tag, "edit", f"{tag}:{i}:{k}".encode(), {}, now)
                   for k in range(1 + i % 3)]
            # and a document the others make at about the same time
            [stored, made] = await store.append([("shared", evs), (f"new{i}", evs[:1])])
            got.extend([e.doc, e.seq, e.ts] for e in stored + made)
        print(json.dumps(got), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""

#: the writers' clocks: minutes apart (the processes of one deployment without NTP)
SKEWS = (0, -180_000, 60_000)


async def test_appenders_in_separate_processes_get_unique_gap_free_seqs(schema: str) -> None:
    """... and whatever their clocks, each document's ts never go back in seq order (the
    statement raises an event's ts to its document's last one, read under the row lock),
    as each appender was told."""
    url = f"{PG_URL}?schema={schema}"
    async with PostgresStore(url) as store:  # creates the schema once
        procs: list[asyncio.subprocess.Process] = []
        try:
            for i in range(3):
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-c", WRITER, url, f"w{i}", "60", str(SKEWS[i]), cwd=REPO,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                ))  # fmt: skip
            for p in procs:
                assert p.stdout is not None
                assert (await asyncio.wait_for(p.stdout.readline(), 30)).strip() == b"ready"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            # and a second pool in this process at the same time
            other = PostgresStore(url)
            await other.start()
            mine: list[int] = []
            told = {}  # (doc, seq) -> the ts its appender was given
            try:
                for _ in range(60):
                    [stored] = await other.append(
                        [("shared", [NewEvent("here", "edit", b"h", {}, 1)])]  # a clock at 1970
                    )
                    mine.extend(e.seq for e in stored)
                    told.update(((e.doc, e.seq), e.ts) for e in stored)
            finally:
                await other.stop()
            results = []
            for p in procs:
                out, _ = await asyncio.wait_for(p.communicate(), 60)
                assert p.returncode == 0
                got = json.loads(out.decode().strip().splitlines()[-1])
                told.update(((d, seq), ts) for d, seq, ts in got)
                results.append([seq for d, seq, _ in got if d == "shared"])
        finally:
            for p in procs:  # a failed assertion above must not leave writers behind
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        total = sum(len(r) for r in results) + len(mine)
        every = sorted([s for r in results for s in r] + mine)
        assert every == list(range(1, total + 1))  # unique and gap-free
        log = await store.read("shared")
        assert [e.seq for e in log] == every
        for i, seqs in enumerate(results):
            assert seqs == sorted(seqs)
            got = [e.update.decode() for e in log if e.actor == f"w{i}"]
            assert got == [f"w{i}:{j}:{k}" for j in range(60) for k in range(1 + j % 3)]
        assert await store.head("shared") == total
        for doc in ["shared", *(f"new{i}" for i in range(60))]:
            stamps = [e.ts for e in await store.read(doc)]
            assert stamps == sorted(stamps), doc
            assert stamps == [told[doc, seq] for seq in range(1, len(stamps) + 1)]


async def test_snapshot_writers_take_turns(schema: str) -> None:
    url = f"{PG_URL}?schema={schema}"
    async with PostgresStore(url) as a, PostgresStore(url) as b:
        await a.append([("s", [NewEvent("x", "edit", b"u", {}, 1)] * 50)])
        assert await a.put_snapshot_if_due("s", 20, b"twenty", min_gap=10) is True
        # within min_gap of a valid snapshot: nobody writes again
        assert await b.put_snapshot_if_due("s", 25, b"25", min_gap=10) is False
        assert await b.put_snapshot_if_due("s", 30, b"30", min_gap=10) is True
        # an older one than the newest is never written over it
        assert await a.put_snapshot_if_due("s", 28, b"28", min_gap=1) is False
        # two at once: exactly one writes
        got = await asyncio.gather(
            a.put_snapshot_if_due("s", 45, b"45a", min_gap=5),
            b.put_snapshot_if_due("s", 45, b"45b", min_gap=5),
        )
        assert sorted(got) == [False, True]
        assert [(i.seq, i.valid) for i in await a.snapshots("s")] == [
            (20, True), (30, True), (45, True)
        ]  # fmt: skip
        # a damaged newer snapshot does not count: the older one is written
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(
                f'UPDATE "{schema}".snapshots SET checksum = $1 WHERE doc = $2 AND seq = 45',
                "0" * 64,
                "s",
            )
        finally:
            await conn.close()
        assert await a.put_snapshot_if_due("s", 44, b"44", min_gap=5) is True


async def test_an_unreachable_server_is_store_unavailable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(StoreUnavailable):
        await store.start()


async def test_migrate_is_idempotent_and_versioned(schema: str) -> None:
    url = f"{PG_URL}?schema={schema}"
    async with PostgresStore(url) as a:
        assert await a.schema_version() == postgres.SCHEMA_VERSION
        assert await a.migrate() == postgres.SCHEMA_VERSION
        # concurrent starts of several processes migrate once
        others = [PostgresStore(url) for _ in range(3)]
        await asyncio.gather(*(o.start() for o in others))
        for o in others:
            await o.stop()
        conn = await asyncpg.connect(PG_URL)
        try:
            versions = await conn.fetch(f'SELECT version FROM "{schema}".palimpsest_schema')
        finally:
            await conn.close()
        assert [r[0] for r in versions] == list(range(1, postgres.SCHEMA_VERSION + 1))


async def _version_2_schema(conn: asyncpg.Connection, schema: str) -> None:
    """An empty schema as version 2 of this store made it (before positions and
    segments), in `schema`, which becomes the connection's search path."""
    from palimpsest.store.postgres_schema import OLD_STEPS

    await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path = "{schema}"')
    await conn.execute("CREATE TABLE palimpsest_schema (version INT NOT NULL)")
    for v in (1, 2):
        for stmt in OLD_STEPS[v]:
            await conn.execute(stmt)
        await conn.execute("INSERT INTO palimpsest_schema VALUES ($1)", v)


async def test_version_2_events_get_positions_in_time_order(schema: str) -> None:
    """A log written before positions existed: its events are numbered by time (each
    document's in seq order, even where its clock stepped back), then appends go on."""

    conn = await asyncpg.connect(PG_URL)
    try:
        await _version_2_schema(conn, schema)
        rows = [("a", 1, 100), ("b", 1, 150), ("a", 2, 200), ("a", 3, 120), ("b", 2, 300)]
        await conn.executemany(
            "INSERT INTO events (doc, seq, ts, actor, kind, data, meta) "
            "VALUES ($1, $2, $3, 'ann', 'edit', '\\x00', '{}')",
            rows,
        )
        await conn.execute(
            "INSERT INTO docs (name, head, created_ts, updated_ts) VALUES ('a', 3, 100, 200), "
            "('b', 2, 150, 300)"
        )
    finally:
        await conn.close()
    async with PostgresStore(f"{PG_URL}?schema={schema}", migrate=True) as store:
        assert await store.schema_version() == postgres.SCHEMA_VERSION
        got = [(e.doc, e.seq, e.pos) for e in await store.read_all()]
        # a3's clock went back to 120: it stays after a2 (its document's order)
        assert got == [("a", 1, 1), ("b", 1, 2), ("a", 2, 3), ("a", 3, 4), ("b", 2, 5)]
        assert await store.last_position() == 5
        [[e]] = await store.append([("b", [NewEvent("ann", "edit", b"x", {}, 400)])])
        assert (e.seq, e.pos) == (3, 6)


async def test_an_old_schema_is_refused_then_rewritten_into_segments(schema: str) -> None:
    """Version 2 with a long log: a server refuses it; `migrate` seals whole runs into
    segments and keeps the rest as rows, every event the same."""
    from palimpsest.errors import StoreError

    n = 2500
    conn = await asyncpg.connect(PG_URL)
    try:
        await _version_2_schema(conn, schema)
        await conn.executemany(
            "INSERT INTO events (doc, seq, ts, actor, kind, data, meta) "
            "VALUES ('long', $1, $2, $3, $4, $5, $6)",
            [(i, 1000 + i, ["ann", "bob"][i % 2], ["edit", "undo"][i % 7 == 0],
              bytes([i % 256]) * (1 + i % 5), '{"conn":"c"}' if i % 3 else "{}")
             for i in range(1, n + 1)],
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO docs (name, head, created_ts, updated_ts) VALUES ('long', $1, 1, 1)", n
        )
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="palimpsest migrate"):
        await PostgresStore(f"{PG_URL}?schema={schema}").start()
    async with PostgresStore(f"{PG_URL}?schema={schema}", migrate=True) as store:
        got = await store.read("long")
        want = [(i, 1000 + i, ["ann", "bob"][i % 2], ["edit", "undo"][i % 7 == 0],
                 bytes([i % 256]) * (1 + i % 5), {"conn": "c"} if i % 3 else {})
                for i in range(1, n + 1)]  # fmt: skip
        have = [(e.seq, e.ts, e.actor, e.kind, e.update, e.meta) for e in got]
        wrong = [i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b]
        assert len(have) == n and not wrong, (len(have), wrong[:3])
        assert [e.pos for e in got] == list(range(1, n + 1))
        assert await store.segment_damage("long") == []
    conn = await asyncpg.connect(PG_URL)
    try:
        segs = await conn.fetchval(f'SELECT count(*) FROM "{schema}".segments')
        rows = await conn.fetchval(f'SELECT count(*) FROM "{schema}".log')
    finally:
        await conn.close()
    assert (segs, rows) == (2, n - 2048)


async def test_two_sealing_processes_beside_an_appender(schema: str) -> None:
    """Two other processes seal one document while this one appends to it: every event
    once, in order, each run sealed by one of them."""
    from store.contract import _SEALER

    url = f"{PG_URL}?schema={schema}"
    async with PostgresStore(url) as store:
        await store.append([("hot", [NewEvent("ann", "edit", b"first", {}, 1)])])
        sealers = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", _SEALER, url, "hot", cwd=REPO, stdout=subprocess.PIPE
            )
            for _ in range(2)
        ]
        try:
            for p in sealers:
                assert p.stdout is not None
                assert (await asyncio.wait_for(p.stdout.readline(), 30)).strip() == b"sealing"
            sent = [b"first"]
            for i in range(300):
                batch = [f"{i}.{k}".encode() for k in range(1 + i % 4)]
                await store.append([("hot", [NewEvent("bob", "edit", u, {}, 2) for u in batch])])
                sent += batch
            # they seal 4 at a time: wait until at most 3 are left as rows
            for _ in range(200):
                conn = await asyncpg.connect(PG_URL)
                try:
                    rows = await conn.fetchval(f'SELECT count(*) FROM "{schema}".log')
                finally:
                    await conn.close()
                if rows < 4:
                    break
                await asyncio.sleep(0.05)
            assert rows < 4
        finally:
            for p in sealers:
                p.kill()
                await p.wait()
        got = await store.read("hot")
        assert [e.update for e in got] == sent
        assert [e.seq for e in got] == list(range(1, len(sent) + 1))
        assert await store.segment_damage("hot") == []


# --- a deletion beside appends ----------------------------------------------------------


async def _blocked_by(conn: asyncpg.Connection, pid: int) -> list[int]:
    """The backends waiting for a lock `pid` holds."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
    )
    return [int(r[0]) for r in rows]


async def _held_deletion(
    store: PostgresStore, schema: str, doc: str
) -> tuple[asyncpg.Connection, asyncpg.Connection, asyncio.Task[bool], int]:
    """A deletion of `doc` held mid-way: a second session holds the lock of its tag's
    row, which the deletion must take to remove it. Returns that session (its transaction
    open: roll it back to let the deletion go on), a connection to watch with, the
    deletion's task and its backend's pid."""
    holder = await asyncpg.connect(PG_URL)
    watch = await asyncpg.connect(PG_URL)
    await holder.execute("BEGIN")
    assert await holder.fetchval(
        f'SELECT count(*) FROM (SELECT 1 FROM "{schema}".tags WHERE doc = $1 FOR UPDATE) t', doc
    ) == 1  # fmt: skip
    deleting = asyncio.create_task(store.delete_doc(doc, b"\x00", by="ada"))
    holder_pid = holder.get_server_pid()
    [pid] = await eventually(lambda: _blocked_by(watch, holder_pid), what="the deletion waits")
    return holder, watch, deleting, pid


async def test_appends_go_on_while_a_large_document_is_deleted(schema: str) -> None:
    """A deletion takes the global position counter only at its end, briefly: while it
    removes a large document's rows, appends to every other document (and to that one:
    removed with it) commit, and its record still comes after the document's last event
    in the changefeed."""
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        big = [NewEvent("ann", "edit", b"x" * 200 + str(i).encode(), {}, 1) for i in range(600)]
        await store.append([("big", big)])
        assert await store.seal("big", run=256) == 512
        await store.put_snapshot("big", 600, b"state")
        await store.put_tag("big", "v1", 600, "ann")
        await store.append([("other", [NewEvent("bob", "edit", b"o1", {}, 1)])])
        holder, watch, deleting, pid = await _held_deletion(store, schema, "big")
        try:
            appends = [
                asyncio.create_task(store.append([(doc, [NewEvent("bob", "edit", u, {}, 1)])]))
                for doc, u in (("other", b"o2"), ("big", b"late"))
            ]

            async def settled() -> str:
                if all(t.done() for t in appends):
                    return "committed"
                if await _blocked_by(watch, pid):
                    return "waiting for the deletion"
                return ""

            assert await eventually(settled, what="the appends settle") == "committed"
            [[o2]], [[late]] = [t.result() for t in appends]
            assert not deleting.done()
        finally:
            await holder.execute("ROLLBACK")
            await holder.close()
            await watch.close()
        assert await deleting is True
        assert await store.read("big") == []
        assert [e.update for e in await store.read("other")] == [b"o1", b"o2"]
        [gone] = await store.deletions()
        # after every event of the document, the one appended during the deletion too
        assert (gone.doc, gone.seq) == ("big", 601)
        assert gone.pos > max(o2.pos, late.pos)
        feed = await store.read_feed()
        assert [e.doc for e in feed] == ["other", "other", "big"]
        # the name written again: a new document, after the deletion
        [[again]] = await store.append([("big", [NewEvent("ann", "edit", b"new", {}, 1)])])
        assert (again.seq, again.pos) == (1, gone.pos + 1)


async def test_a_deletion_ended_mid_way_leaves_the_whole_document(schema: str) -> None:
    """A deletion is one transaction: its session ended while it removes rows (a crash,
    a kill) leaves the document whole and no deletion record."""
    async with PostgresStore(f"{PG_URL}?schema={schema}") as store:
        evs = [NewEvent("ann", "edit", str(i).encode(), {}, 1) for i in range(300)]
        await store.append([("big", evs)])
        await store.seal("big", run=256)
        await store.put_tag("big", "v1", 300, "ann")
        holder, watch, deleting, pid = await _held_deletion(store, schema, "big")
        try:
            assert await watch.fetchval("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(StoreUnavailable):
                await deleting
        finally:
            await holder.execute("ROLLBACK")
            await holder.close()
            await watch.close()
        assert [e.update for e in await store.read("big")] == [e.update for e in evs]
        assert [t.name for t in await store.tags("big")] == ["v1"]
        assert await store.deletions() == []
        assert await store.tombstone("big") is None
        assert await store.delete_doc("big") is True
        assert [(e.doc, e.seq) for e in await store.deletions()] == [("big", 300)]
