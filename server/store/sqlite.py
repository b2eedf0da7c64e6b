"""The embedded default: one SQLite file in WAL mode, through aiosqlite.

Durability: ``synchronous=FULL`` in WAL mode, so a committed transaction survives a
power cut, not only a crash of the process. Throughput comes from the caller batching
many events into one ``append`` (group commit), never from weaker syncing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

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
    dump_meta,
    now_ms,
    snapshot_checksum,
    snapshot_from_row,
    snapshot_info,
)

from .cursors import MemoryCursors, WebhookCursors
from .sql_cursors import SQLiteCursors

log = logging.getLogger("palimpsest.store.sqlite")

SCHEMA_VERSION = 2

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
}

_EVENT_COLS = "doc, seq, ts, actor, kind, data, meta"


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _writes(
    method: Callable[Concatenate[SQLiteStore, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[SQLiteStore, _P], Coroutine[Any, Any, _T]]:
    """Writes take turns on the one connection: a concurrent caller's statement would
    otherwise run inside another caller's open transaction (or fail to BEGIN)."""

    @functools.wraps(method)
    async def wrapper(self: SQLiteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        async with self._write_lock:
            return await method(self, *args, **kwargs)

    return wrapper


def _event(row: Any) -> Event:
    return Event(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), json.loads(row[6]))


@contextlib.asynccontextmanager
async def _transaction(db: aiosqlite.Connection, what: str) -> AsyncIterator[aiosqlite.Connection]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error, which is then raised as a
    StoreError naming `what` with the driver's error as its cause.

    The ROLLBACK never hides that error: SQLite rolls a transaction back by itself on
    some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM…), and a ROLLBACK then fails
    with "cannot rollback - no transaction is active"; that failure is only logged."""
    try:
        await db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise _store_error(what, e) from e
    try:
        yield db
        await db.execute("COMMIT")
    except BaseException as e:
        if db.in_transaction:
            try:
                await db.execute("ROLLBACK")
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


class SQLiteStore(EventStore):
    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._cursors: WebhookCursors | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("the SQLite store is not started")
        return self._db

    async def start(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            # keep the WAL file small once checkpointed (it otherwise stays at its peak)
            await self._db.execute("PRAGMA journal_size_limit=8388608")
            await self._db.execute("PRAGMA busy_timeout=10000")
            await self._migrate()
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {e}") from e

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path!r} has schema version {version}, newer than this "
                f"server's {SCHEMA_VERSION}: upgrade Palimpsest"
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            async with _transaction(self.db, f"migration to schema version {v}") as db:
                for stmt in _MIGRATIONS[v]:
                    await db.execute(stmt)
                await db.execute(f"PRAGMA user_version = {v}")

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def stop(self) -> None:
        if self._cursors is not None:
            self._cursors.close()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> None:
        try:
            await self.db.execute("SELECT 1")
        except sqlite3.Error as e:
            raise StoreUnavailable(f"SQLite does not answer: {e}") from e

    @_writes
    async def check_writable(self) -> None:
        # rewrites the header page with the same schema version: a committed, synced
        # write that changes nothing (refused on a read-only file, EIO, a full disk)
        async with _transaction(self.db, "write check") as db:
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            async with self.db.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as e:
            raise StoreError(f"SQLite query failed: {e}") from e

    # --- the log ---------------------------------------------------------------------

    @_writes
    async def append(self, batches: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[Event]]:
        batches = [(doc, evs) for doc, evs in batches]
        if not any(evs for _, evs in batches):
            return [[] for _ in batches]
        async with _transaction(self.db, "append") as db:
            names = sorted({doc for doc, _ in batches})
            marks = ",".join("?" * len(names))
            async with db.execute(
                f"SELECT name, head FROM docs WHERE name IN ({marks})", names
            ) as cur:
                heads: dict[str, int] = {r[0]: r[1] for r in await cur.fetchall()}
            out: list[list[Event]] = []
            rows: list[tuple[Any, ...]] = []
            sizes: dict[str, int] = {}
            last_ts: dict[str, int] = {}
            for doc, evs in batches:
                head = heads.get(doc, 0)
                stored: list[Event] = []
                for ev in evs:
                    head += 1
                    stored.append(Event(doc, head, ev.ts, ev.actor, ev.kind, ev.update, ev.meta))
                    rows.append(
                        (doc, head, ev.ts, ev.actor, ev.kind, ev.update, dump_meta(ev.meta))
                    )
                    sizes[doc] = sizes.get(doc, 0) + len(ev.update)
                    last_ts[doc] = max(last_ts.get(doc, 0), ev.ts)
                heads[doc] = head
                out.append(stored)
            await db.executemany(f"INSERT INTO events ({_EVENT_COLS}) VALUES (?,?,?,?,?,?,?)", rows)
            await db.executemany(
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

    @_writes
    async def delete_doc(self, doc: str, tombstone: bytes = b"") -> bool:
        async with _transaction(self.db, "delete") as db:
            cur = await db.execute("DELETE FROM docs WHERE name = ?", (doc,))
            existed = cur.rowcount > 0
            for table in ("events", "snapshots", "tags"):
                await db.execute(f"DELETE FROM {table} WHERE doc = ?", (doc,))
            if existed:
                await db.execute(
                    "INSERT OR REPLACE INTO tombstones (doc, ts, state_vector) VALUES (?,?,?)",
                    (doc, now_ms(), tombstone),
                )
        return existed

    async def tombstone(self, doc: str) -> bytes | None:
        try:
            async with self.db.execute(
                "SELECT state_vector FROM tombstones WHERE doc = ?", (doc,)
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"SQLite query failed: {e}") from e
        return bytes(row[0]) if row else None

    # --- snapshots -------------------------------------------------------------------

    @_writes
    async def put_snapshot(
        self, doc: str, seq: int, state: bytes, meta: dict[str, Any] | None = None
    ) -> None:
        text = dump_meta(meta or {})
        async with _transaction(self.db, "snapshot write") as db:
            await db.execute(
                "INSERT OR REPLACE INTO snapshots (doc, seq, ts, state, checksum, meta) "
                "VALUES (?,?,?,?,?,?)",
                (doc, seq, now_ms(), state, snapshot_checksum(state, text), text),
            )

    async def latest_snapshot(self, doc: str, at_most: int | None = None) -> Snapshot | None:
        sql = "SELECT doc, seq, ts, state, checksum, meta FROM snapshots WHERE doc = ?"
        params: list[Any] = [doc]
        if at_most is not None:
            sql += " AND seq <= ?"
            params.append(at_most)
        sql += " ORDER BY seq DESC"
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

    @_writes
    async def compact(self, doc: str, before: int, state: bytes) -> int:
        text = dump_meta({"base": True})
        async with _transaction(self.db, "compact") as db:
            await db.execute(
                "INSERT OR REPLACE INTO snapshots (doc, seq, ts, state, checksum, meta) "
                "VALUES (?,?,?,?,?,?)",
                (doc, before, now_ms(), state, snapshot_checksum(state, text), text),
            )
            cur = await db.execute("DELETE FROM events WHERE doc = ? AND seq <= ?", (doc, before))
            removed = cur.rowcount
            await db.execute("DELETE FROM snapshots WHERE doc = ? AND seq < ?", (doc, before))
            await db.execute(
                "UPDATE docs SET base_seq = MAX(base_seq, ?), events_bytes = "
                "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM events WHERE doc = ?) "
                "WHERE name = ?",
                (before, doc, doc),
            )
        return int(removed)

    # --- named versions --------------------------------------------------------------

    @_writes
    async def put_tag(self, doc: str, name: str, seq: int, actor: str) -> Tag:
        tag = Tag(doc, name, seq, now_ms(), actor)
        async with _transaction(self.db, "tag write") as db:
            await db.execute(
                "INSERT OR REPLACE INTO tags (doc, name, seq, ts, actor) VALUES (?,?,?,?,?)",
                (tag.doc, tag.name, tag.seq, tag.ts, tag.actor),
            )
        return tag

    async def tags(self, doc: str) -> list[Tag]:
        rows = await self._fetchall(
            "SELECT doc, name, seq, ts, actor FROM tags WHERE doc = ? ORDER BY seq, name", (doc,)
        )
        return [Tag(*r) for r in rows]

    @_writes
    async def delete_tag(self, doc: str, name: str) -> bool:
        async with _transaction(self.db, "tag delete") as db:
            cur = await db.execute("DELETE FROM tags WHERE doc = ? AND name = ?", (doc, name))
        return cur.rowcount > 0

    async def pragmas(self) -> dict[str, Any]:
        """The durability settings of the writer connection, as SQLite reports them
        (``synchronous`` 2 is FULL): what write-ahead relies on, for tests and checks."""
        out: dict[str, Any] = {}
        for name in ("journal_mode", "synchronous"):
            rows = await self._fetchall(f"PRAGMA {name}")
            out[name] = rows[0][0]
        return out

    # --- bulk copy (palimpsest copy) ---------------------------------------------------

    @_writes
    async def import_doc(
        self,
        info: DocInfo,
        events: Sequence[Event],
        snapshots: Sequence[Snapshot],
        tags: Sequence[Tag],
        *,
        replace: bool = False,
    ) -> None:
        async with _transaction(self.db, "import") as db:
            async with db.execute("SELECT 1 FROM docs WHERE name = ?", (info.doc,)) as cur:
                exists = await cur.fetchone() is not None
            if exists and not replace:
                raise StoreError(f"document {info.doc!r} already exists in the target")
            await db.execute("DELETE FROM docs WHERE name = ?", (info.doc,))
            for table in ("events", "snapshots", "tags"):
                await db.execute(f"DELETE FROM {table} WHERE doc = ?", (info.doc,))
            created = min((e.ts for e in events), default=info.updated_ts or now_ms())
            await db.execute(
                "INSERT INTO docs (name, head, base_seq, created_ts, updated_ts, "
                "events_bytes) VALUES (?,?,?,?,?,?)",
                (info.doc, info.head, info.base_seq, created, info.updated_ts or created,
                 sum(len(e.update) for e in events)),
            )  # fmt: skip
            await db.executemany(
                f"INSERT INTO events ({_EVENT_COLS}) VALUES (?,?,?,?,?,?,?)",
                [(e.doc, e.seq, e.ts, e.actor, e.kind, e.update, dump_meta(e.meta))
                 for e in events],
            )  # fmt: skip
            await db.executemany(
                "INSERT INTO snapshots (doc, seq, ts, state, checksum, meta) "
                "VALUES (?,?,?,?,?,?)",
                [(s.doc, s.seq, s.ts, s.state, s.checksum, dump_meta(s.meta))
                 for s in snapshots],
            )  # fmt: skip
            await db.executemany(
                "INSERT INTO tags (doc, name, seq, ts, actor) VALUES (?,?,?,?,?)",
                [(t.doc, t.name, t.seq, t.ts, t.actor) for t in tags],
            )

    def webhook_cursors(self) -> WebhookCursors:
        if self._cursors is None:
            # a private in-memory database cannot be shared with a second connection
            self._cursors = (
                MemoryCursors() if self.path == ":memory:" else SQLiteCursors(self.path)
            )
        return self._cursors
