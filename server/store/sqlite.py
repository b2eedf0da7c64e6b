"""The embedded default: one SQLite file in WAL mode.

Writes: one connection of the standard ``sqlite3`` module on a thread of its own
(:class:`_Writer`). Each write, a whole transaction (BEGIN … COMMIT) such as one group
commit's ``append``, is one call on that thread: one hop from the event loop and back,
not one per statement. Reads go through aiosqlite on a second connection (WAL lets them
run beside a write); an in-memory database has one connection, the writer's, for both.

Durability: ``synchronous=FULL`` in WAL mode by default, so a committed transaction
survives a power cut, not only a crash of the process. Throughput comes from the caller
batching many events into one ``append`` (group commit), never from weaker syncing.
``durability="os"`` (``--durability os``) opts into ``synchronous=NORMAL``: a commit
then survives the process being killed, not the machine losing power.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ..errors import StoreError, StoreUnavailable
from .base import (
    DocInfo,
    Event,
    EventStore,
    NewEvent,
    Snapshot,
    SnapshotInfo,
    Tag,
    check_durability,
    checksum,
    derived_from_row,
    dump_meta,
    now_ms,
    snapshot_from_row,
    snapshot_info,
    snapshot_row,
    snapshot_row_async,
)
from .cursors import WebhookCursors
from .sql_cursors import SQLiteCursors

log = logging.getLogger("palimpsest.store.sqlite")

SCHEMA_VERSION = 4

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS docs (
            name TEXT PRIMARY KEY,
            head INTEGER NOT NULL,
            base_seq INTEGER NOT NULL DEFAULT 0,
            created_ts INTEGER NOT NULL,
            updated_ts INTEGER NOT NULL,
            events_bytes INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS events (
            doc TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            data BLOB NOT NULL,
            meta TEXT NOT NULL,
            PRIMARY KEY (doc, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS events_doc_ts ON events (doc, ts)",
        """CREATE TABLE IF NOT EXISTS snapshots (
            doc TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            state BLOB NOT NULL,
            checksum TEXT NOT NULL,
            meta TEXT NOT NULL,
            PRIMARY KEY (doc, seq)
        )""",
        """CREATE TABLE IF NOT EXISTS tags (
            doc TEXT NOT NULL,
            name TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            actor TEXT NOT NULL,
            PRIMARY KEY (doc, name)
        )""",
    ],
    2: [
        """CREATE TABLE IF NOT EXISTS tombstones (
            doc TEXT PRIMARY KEY,
            ts INTEGER NOT NULL,
            state_vector BLOB NOT NULL
        )""",
    ],
    # the global commit position of every event (see EventStore.read_all); existing events
    # are numbered in time order (each document's in seq order), new ones from a counter
    # row that every append updates
    3: [
        "ALTER TABLE events ADD COLUMN pos INTEGER",
        """UPDATE events SET pos = o.p FROM (
            SELECT doc, seq, row_number() OVER (ORDER BY eff_ts, doc, seq) AS p FROM (
                SELECT doc, seq, max(ts) OVER (PARTITION BY doc ORDER BY seq) AS eff_ts
                FROM events)) AS o
            WHERE events.doc = o.doc AND events.seq = o.seq""",
        "CREATE UNIQUE INDEX IF NOT EXISTS events_pos ON events (pos)",
        """CREATE TABLE IF NOT EXISTS log_position (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pos INTEGER NOT NULL
        )""",
        "INSERT OR IGNORE INTO log_position SELECT 1, COALESCE(MAX(pos), 0) FROM events",
    ],
}

# derived data: caches of the log (the stored attribution index), checksummed. Kept in
# its own list so that it can be renumbered beside other schema steps when merged.
_DERIVED_TABLE = [
    """CREATE TABLE IF NOT EXISTS derived (
        doc TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        data BLOB NOT NULL,
        checksum TEXT NOT NULL,
        PRIMARY KEY (doc, kind)
    )""",
]
_MIGRATIONS[4] = _DERIVED_TABLE

_EVENT_COLS = "doc, seq, ts, actor, kind, data, meta, pos"


_T = TypeVar("_T")


def _event(row: Any) -> Event:
    return Event(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), json.loads(row[6]), row[7])


def _in_transaction(
    conn: sqlite3.Connection, what: str, fn: Callable[[sqlite3.Connection], _T]
) -> _T:
    """BEGIN IMMEDIATE, fn(conn), COMMIT; or ROLLBACK on any error, which is then raised
    as a StoreError naming `what` with the driver's error as its cause. Runs on the
    writer thread.

    The ROLLBACK never hides that error: SQLite rolls a transaction back by itself on
    some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM…), and a ROLLBACK then fails
    with "cannot rollback - no transaction is active"; that failure is only logged."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise _store_error(what, e) from e
    try:
        result = fn(conn)
        conn.execute("COMMIT")
        return result
    except BaseException as e:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as rb:
                log.warning("SQLite %s: ROLLBACK after %r failed too: %s", what, e, rb)
        if isinstance(e, sqlite3.Error):
            raise _store_error(what, e) from e
        raise


#: primary result codes that mean "cannot write now, may later": a full disk, an I/O
#: error, a read-only file, a lock held too long, no memory. Callers holding edits retry
#: these (StoreUnavailable); anything else (a constraint, a bad statement) is final.
_TRANSIENT = {5, 6, 7, 8, 10, 13, 14, 15}  # BUSY LOCKED NOMEM READONLY IOERR FULL CANTOPEN PROTOCOL


def _store_error(what: str, e: sqlite3.Error) -> StoreError:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _TRANSIENT:
        return StoreUnavailable(f"SQLite {what} failed: {e}")
    return StoreError(f"SQLite {what} failed: {e}")


#: PRAGMA synchronous per durability: FULL syncs the WAL at every commit; NORMAL in WAL
#: mode syncs only at checkpoints (a commit survives a crash of the process, not of the
#: machine; the database is never corrupted either way)
_SYNCHRONOUS = {"fsync": "FULL", "os": "NORMAL"}


def _open(path: str, durability: str = "fsync") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[durability]}")
    # keep the WAL file small once checkpointed (it otherwise stays at its peak)
    conn.execute("PRAGMA journal_size_limit=8388608")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller was cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _take_positions(conn: sqlite3.Connection, n: int) -> int:
    """Reserve n global positions (inside the caller's transaction); the first one."""
    (last,) = conn.execute(
        "UPDATE log_position SET pos = pos + ? WHERE id = 1 RETURNING pos", (n,)
    ).fetchone()
    return int(last) - n + 1


def _append(
    conn: sqlite3.Connection, batches: Sequence[tuple[str, Sequence[NewEvent]]]
) -> list[list[Event]]:
    """The body of one append transaction, on the writer thread."""
    names = sorted({doc for doc, _ in batches})
    marks = ",".join("?" * len(names))
    heads: dict[str, int] = dict(
        conn.execute(f"SELECT name, head FROM docs WHERE name IN ({marks})", names).fetchall()
    )
    pos = _take_positions(conn, sum(len(evs) for _, evs in batches)) - 1
    out: list[list[Event]] = []
    rows: list[tuple[Any, ...]] = []
    sizes: dict[str, int] = {}
    last_ts: dict[str, int] = {}
    for doc, evs in batches:
        head = heads.get(doc, 0)
        stored: list[Event] = []
        for ev in evs:
            head += 1
            pos += 1
            stored.append(Event(doc, head, ev.ts, ev.actor, ev.kind, ev.update, ev.meta, pos))
            rows.append((doc, head, ev.ts, ev.actor, ev.kind, ev.update, dump_meta(ev.meta), pos))
            sizes[doc] = sizes.get(doc, 0) + len(ev.update)
            last_ts[doc] = max(last_ts.get(doc, 0), ev.ts)
        heads[doc] = head
        out.append(stored)
    conn.executemany(f"INSERT INTO events ({_EVENT_COLS}) VALUES (?,?,?,?,?,?,?,?)", rows)
    conn.executemany(
        "INSERT INTO docs (name, head, created_ts, updated_ts, events_bytes) "
        "VALUES (?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET head=excluded.head, "
        "updated_ts=excluded.updated_ts, "
        "events_bytes=docs.events_bytes+excluded.events_bytes",
        [
            (doc, heads[doc], last_ts[doc], last_ts[doc], sizes[doc])
            for doc in names
            if doc in sizes
        ],
    )
    return out


class _Writer:
    """The write connection, owned by one thread. ``call(fn)`` runs ``fn(conn)`` there
    and returns its result: one hop from the event loop and one back, whatever fn does.
    Calls run one at a time in the order they were made, so writes never interleave."""

    def __init__(self, path: str, durability: str = "fsync") -> None:
        self.path = path
        self.durability = durability
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="palimpsest-sqlite-writer", daemon=True
        )
        self._thread.start()
        try:
            await self.call(self._connect)
        except BaseException:
            await self.stop()
            raise

    def _connect(self, _conn: Any) -> None:
        self._conn = _open(self.path, self.durability)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, loop, fut = job
            try:
                value, ok = fn(self._conn), True
            except BaseException as e:  # handed to the caller, whatever it is
                value, ok = e, False
            try:
                loop.call_soon_threadsafe(_resolve, fut, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._thread is None or not self._thread.is_alive():
            raise StoreUnavailable("the SQLite store is not started")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_T] = loop.create_future()
        self._jobs.put((fn, loop, fut))
        return await fut

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)


class SQLiteStore(EventStore):
    name = "sqlite"

    def __init__(self, path: str | Path, *, durability: str = "fsync") -> None:
        self.path = str(path)
        #: "fsync" (synchronous=FULL, the default) or "os" (NORMAL): see base.DURABILITY
        self.durability = check_durability(durability)
        self._db: aiosqlite.Connection | None = None
        self._writer: _Writer | None = None
        self._cursors: WebhookCursors | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        """The read connection (aiosqlite; an in-memory database has none)."""
        if self._db is None:
            raise StoreUnavailable("the SQLite store is not started")
        return self._db

    @property
    def _memory(self) -> bool:
        return self.path == ":memory:"

    async def start(self) -> None:
        try:
            if not self._memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = _Writer(self.path, self.durability)
            await self._writer.start()
            await self._writer.call(self._migrate)
            if not self._memory:
                self._db = await aiosqlite.connect(self.path, isolation_level=None)
                await self._db.execute("PRAGMA busy_timeout=10000")
        except (sqlite3.Error, OSError) as e:
            await self.stop()
            raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {e}") from e
        except BaseException:
            await self.stop()
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("PRAGMA user_version").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path!r} has schema version {version}, newer than this "
                f"server's {SCHEMA_VERSION}: upgrade Palimpsest"
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):

            def step(c: sqlite3.Connection, v: int = v) -> None:
                for stmt in _MIGRATIONS[v]:
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {v}")

            _in_transaction(conn, f"migration to schema version {v}", step)

    async def schema_version(self) -> int:
        rows = await self._fetchall("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    async def stop(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop()

    @property
    def writer(self) -> _Writer:
        if self._writer is None:
            raise StoreUnavailable("the SQLite store is not started")
        return self._writer

    async def on_writer(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` with the write connection on its thread, outside any transaction
        (for checks and tests: its per-connection settings are the ones writes obey)."""
        return await self.writer.call(fn)

    async def _write(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """One write transaction: one call on the writer thread."""
        return await self.writer.call(lambda conn: _in_transaction(conn, what, fn))

    async def ping(self) -> None:
        try:
            await self._fetchall("SELECT 1")
        except StoreError as e:
            raise StoreUnavailable(f"SQLite does not answer: {e}") from e

    async def check_writable(self) -> None:
        # rewrites the header page with the same schema version: a committed, synced
        # write that changes nothing (refused on a read-only file, EIO, a full disk)
        await self._write(
            "write check", lambda c: c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        )

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._memory:
            try:
                return await self.writer.call(lambda c: c.execute(sql, params).fetchall())
            except sqlite3.Error as e:
                raise StoreError(f"SQLite query failed: {e}") from e
        try:
            async with self.db.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as e:
            raise StoreError(f"SQLite query failed: {e}") from e

    # --- the log ---------------------------------------------------------------------

    async def append(self, batches: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[Event]]:
        batches = [(doc, evs) for doc, evs in batches]
        if not any(evs for _, evs in batches):
            return [[] for _ in batches]
        return await self._write("append", lambda conn: _append(conn, batches))

    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[Event]:
        sql = f"SELECT {_EVENT_COLS} FROM events WHERE doc = ? AND seq > ?"
        params: list[Any] = [doc, after]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_event(r) for r in await self._fetchall(sql, params)]

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = await self._fetchall(
            f"SELECT {_EVENT_COLS} FROM events WHERE pos > ? ORDER BY pos LIMIT ?",
            (after, limit),
        )
        return [_event(r) for r in rows]

    async def last_position(self) -> int:
        rows = await self._fetchall("SELECT pos FROM log_position WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    async def heads(self, docs: Sequence[str]) -> dict[str, int]:
        out = dict.fromkeys(docs, 0)
        for i in range(0, len(docs), 500):  # SQLite's bound parameters are limited
            chunk = list(docs[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT name, head FROM docs WHERE name IN ({marks})", chunk
            )
            out.update({r[0]: int(r[1]) for r in rows})
        return out

    async def head(self, doc: str) -> int:
        rows = await self._fetchall("SELECT head FROM docs WHERE name = ?", (doc,))
        return int(rows[0][0]) if rows else 0

    async def query(
        self,
        doc: str,
        *,
        after: int = 0,
        limit: int = 100,
        actor: str | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[Event]:
        sql = f"SELECT {_EVENT_COLS} FROM events WHERE doc = ? AND seq > ?"
        params: list[Any] = [doc, after]
        if actor is not None:
            sql += " AND actor = ?"
            params.append(actor)
        if since_ts is not None:
            sql += " AND ts >= ?"
            params.append(since_ts)
        if until_ts is not None:
            sql += " AND ts <= ?"
            params.append(until_ts)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        return [_event(r) for r in await self._fetchall(sql, params)]

    async def seq_at(self, doc: str, ts: int) -> int:
        # ts is not monotonic in seq in general (clock steps); take the last seq whose
        # ts is <= the bound, which is what "the document as it was at ts" means here.
        rows = await self._fetchall(
            "SELECT MAX(seq) FROM events WHERE doc = ? AND ts <= ?", (doc, ts)
        )
        if rows and rows[0][0] is not None:
            return int(rows[0][0])
        info = await self.doc_info(doc)
        if info is not None and info.base_seq:
            snap = await self.latest_snapshot(doc, info.base_seq)
            if snap is not None and snap.ts <= ts:
                return info.base_seq
        return 0

    async def list_docs(self) -> list[DocInfo]:
        rows = await self._fetchall(
            "SELECT name, head, updated_ts, events_bytes, base_seq FROM docs ORDER BY name"
        )
        return [DocInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def doc_info(self, doc: str) -> DocInfo | None:
        rows = await self._fetchall(
            "SELECT name, head, updated_ts, events_bytes, base_seq FROM docs WHERE name = ?",
            (doc,),
        )
        return DocInfo(rows[0][0], rows[0][1], rows[0][2], rows[0][3], rows[0][4]) if rows else None

    async def delete_doc(self, doc: str, tombstone: bytes = b"") -> bool:
        def run(db: sqlite3.Connection) -> bool:
            existed = db.execute("DELETE FROM docs WHERE name = ?", (doc,)).rowcount > 0
            for table in ("events", "snapshots", "tags", "derived"):
                db.execute(f"DELETE FROM {table} WHERE doc = ?", (doc,))
            if existed:
                db.execute(
                    "INSERT OR REPLACE INTO tombstones (doc, ts, state_vector) VALUES (?,?,?)",
                    (doc, now_ms(), tombstone),
                )
            return existed

        return await self._write("delete", run)

    async def tombstone(self, doc: str) -> bytes | None:
        rows = await self._fetchall("SELECT state_vector FROM tombstones WHERE doc = ?", (doc,))
        return bytes(rows[0][0]) if rows else None

    # --- snapshots -------------------------------------------------------------------

    async def put_snapshot(
        self, doc: str, seq: int, state: bytes, meta: dict[str, Any] | None = None
    ) -> None:
        row = (doc, seq, now_ms(), *await snapshot_row_async(state, meta))
        await self._write(
            "snapshot write",
            lambda db: db.execute(
                "INSERT OR REPLACE INTO snapshots (doc, seq, ts, state, checksum, meta) "
                "VALUES (?,?,?,?,?,?)",
                row,
            ),
        )

    async def latest_snapshot(self, doc: str, at_most: int | None = None) -> Snapshot | None:
        sql = "SELECT doc, seq, ts, state, checksum, meta FROM snapshots WHERE doc = ?"
        params: list[Any] = [doc]
        if at_most is not None:
            sql += " AND seq <= ?"
            params.append(at_most)
        sql += " ORDER BY seq DESC"
        if self._memory:
            for r in await self._fetchall(sql, params):
                snap = snapshot_from_row(r[0], r[1], r[2], bytes(r[3]), r[4], r[5])
                if snap is not None:
                    return snap
            return None
        try:
            async with self.db.execute(sql, params) as cur:
                # one row at a time: aiosqlite would fetch 64 snapshot blobs per chunk
                cur.iter_chunk_size = 1
                async for r in cur:
                    snap = snapshot_from_row(r[0], r[1], r[2], bytes(r[3]), r[4], r[5])
                    if snap is not None:
                        return snap
        except sqlite3.Error as e:
            raise StoreError(f"SQLite query failed: {e}") from e
        return None

    async def snapshots(self, doc: str) -> list[SnapshotInfo]:
        rows = await self._fetchall(
            "SELECT doc, seq, ts, state, checksum, meta FROM snapshots WHERE doc = ? ORDER BY seq",
            (doc,),
        )
        return [snapshot_info(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    async def compact(self, doc: str, before: int, state: bytes) -> int:
        packed = await snapshot_row_async(state, {"base": True})

        def run(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT OR REPLACE INTO snapshots (doc, seq, ts, state, checksum, meta) "
                "VALUES (?,?,?,?,?,?)",
                (doc, before, now_ms(), *packed),
            )
            removed = db.execute(
                "DELETE FROM events WHERE doc = ? AND seq <= ?", (doc, before)
            ).rowcount
            db.execute("DELETE FROM snapshots WHERE doc = ? AND seq < ?", (doc, before))
            db.execute(
                "UPDATE docs SET base_seq = MAX(base_seq, ?), events_bytes = "
                "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM events WHERE doc = ?) "
                "WHERE name = ?",
                (before, doc, doc),
            )
            return int(removed)

        return await self._write("compact", run)

    # --- named versions --------------------------------------------------------------

    async def put_tag(self, doc: str, name: str, seq: int, actor: str) -> Tag:
        tag = Tag(doc, name, seq, now_ms(), actor)
        await self._write(
            "tag write",
            lambda db: db.execute(
                "INSERT OR REPLACE INTO tags (doc, name, seq, ts, actor) VALUES (?,?,?,?,?)",
                (tag.doc, tag.name, tag.seq, tag.ts, tag.actor),
            ),
        )
        return tag

    async def tags(self, doc: str) -> list[Tag]:
        rows = await self._fetchall(
            "SELECT doc, name, seq, ts, actor FROM tags WHERE doc = ? ORDER BY seq, name", (doc,)
        )
        return [Tag(*r) for r in rows]

    async def delete_tag(self, doc: str, name: str) -> bool:
        return await self._write(
            "tag delete",
            lambda db: (
                db.execute("DELETE FROM tags WHERE doc = ? AND name = ?", (doc, name)).rowcount > 0
            ),
        )

    async def pragmas(self) -> dict[str, Any]:
        """The durability settings of the writer connection, as SQLite reports them
        (``synchronous`` 2 is FULL): what write-ahead relies on, for tests and checks."""

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            return {
                name: conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous")
            }

        return await self.on_writer(read)

    # --- bulk copy (palimpsest copy) ---------------------------------------------------

    async def import_doc(
        self,
        info: DocInfo,
        events: Sequence[Event],
        snapshots: Sequence[Snapshot],
        tags: Sequence[Tag],
        *,
        replace: bool = False,
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            exists = db.execute("SELECT 1 FROM docs WHERE name = ?", (info.doc,)).fetchone()
            if exists is not None and not replace:
                raise StoreError(f"document {info.doc!r} already exists in the target")
            db.execute("DELETE FROM docs WHERE name = ?", (info.doc,))
            for table in ("events", "snapshots", "tags", "derived"):
                db.execute(f"DELETE FROM {table} WHERE doc = ?", (info.doc,))
            created = min((e.ts for e in events), default=info.updated_ts or now_ms())
            db.execute(
                "INSERT INTO docs (name, head, base_seq, created_ts, updated_ts, "
                "events_bytes) VALUES (?,?,?,?,?,?)",
                (info.doc, info.head, info.base_seq, created, info.updated_ts or created,
                 sum(len(e.update) for e in events)),
            )  # fmt: skip
            # imported events are new to this store: they get its next positions
            first = _take_positions(db, len(events)) if events else 0
            db.executemany(
                f"INSERT INTO events ({_EVENT_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                [(e.doc, e.seq, e.ts, e.actor, e.kind, e.update, dump_meta(e.meta), first + i)
                 for i, e in enumerate(events)],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO snapshots (doc, seq, ts, state, checksum, meta) "
                "VALUES (?,?,?,?,?,?)",
                [(s.doc, s.seq, s.ts, *snapshot_row(s.state, s.meta)) for s in snapshots],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO tags (doc, name, seq, ts, actor) VALUES (?,?,?,?,?)",
                [(t.doc, t.name, t.seq, t.ts, t.actor) for t in tags],
            )

        await self._write("import", run)

    # --- retention and derived data ------------------------------------------------------

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> int:
        def run(db: sqlite3.Connection) -> int:
            cur = db.executemany(
                "DELETE FROM snapshots WHERE doc = ? AND seq = ?", [(doc, s) for s in seqs]
            )
            return int(cur.rowcount)

        return await self._write("snapshot delete", run) if seqs else 0

    async def put_derived(self, doc: str, kind: str, seq: int, data: bytes) -> None:
        row = (doc, kind, seq, now_ms(), data, checksum(data))
        await self._write(
            "derived data write",
            lambda db: db.execute(
                "INSERT INTO derived (doc, kind, seq, ts, data, checksum) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (doc, kind) DO UPDATE SET seq = excluded.seq, ts = excluded.ts, "
                "data = excluded.data, checksum = excluded.checksum "
                "WHERE excluded.seq >= derived.seq",
                row,
            ),
        )

    async def derived(self, doc: str, kind: str) -> tuple[int, bytes] | None:
        rows = await self._fetchall(
            "SELECT seq, data, checksum FROM derived WHERE doc = ? AND kind = ?", (doc, kind)
        )
        if not rows:
            return None
        data = derived_from_row(doc, kind, bytes(rows[0][1]), rows[0][2])
        return None if data is None else (int(rows[0][0]), data)

    def webhook_cursors(self) -> WebhookCursors:
        if self._cursors is None:
            self._cursors = SQLiteCursors(self)
        return self._cursors
