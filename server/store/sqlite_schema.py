"""The SQLite schema: created at this version directly, or upgraded step by step.

Versions 1-4 kept one row per event (``events``: doc name, seq, ts, actor, kind, update,
meta JSON, pos; 4 added the ``derived`` table). Version 5 is the compact log of
:mod:`.log_layout`: interned ids, a tail of small rows and sealed segments. Upgrading to
it rewrites every event, so a server refuses to start on an older database and
``palimpsest migrate`` does it (in one transaction: killed halfway, the database is as
it was).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from . import segments as S
from .base import Event
from .log_layout import LAYOUT_VERSION, Symbols, columns, meta_text, parse_meta

SCHEMA_VERSION = LAYOUT_VERSION

_SNAPSHOTS = """CREATE TABLE IF NOT EXISTS snapshots (
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    state BLOB NOT NULL,
    checksum TEXT NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (doc, seq)
)"""
_TAGS = """CREATE TABLE IF NOT EXISTS tags (
    doc TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (doc, name)
)"""
_TOMBSTONES = """CREATE TABLE IF NOT EXISTS tombstones (
    doc TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    state_vector BLOB NOT NULL
)"""
# derived data: caches of the log (the stored attribution index), checksummed (version 4)
_DERIVED = """CREATE TABLE IF NOT EXISTS derived (
    doc TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    data BLOB NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (doc, kind)
)"""
#: the deletions on the changefeed (EventStore.deletions), by their global position:
#: made on every open (an older file gets it then; no schema version for it)
DELETIONS = """CREATE TABLE IF NOT EXISTS deletions (
    pos INTEGER PRIMARY KEY,
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL
)"""
#: the store's salt of the server's Yjs client ids (EventStore.server_salt): one row, made
#: with a new database and never changed; an older one has no such table and keeps the
#: ids it had (no schema version for it)
SALT = """CREATE TABLE IF NOT EXISTS store_salt (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    salt BLOB NOT NULL
)"""
#: the salt, read by every start (None: no table, or no row)
READ_SALT = "SELECT salt FROM store_salt WHERE id = 1"
_POSITION = """CREATE TABLE IF NOT EXISTS log_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pos INTEGER NOT NULL
)"""

#: the tables of the compact log (version 5)
LOG_TABLES = [
    "CREATE TABLE symbols (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    # AUTOINCREMENT: the id of a deleted document is never given to another one
    """CREATE TABLE docs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        head INTEGER NOT NULL,
        base_seq INTEGER NOT NULL DEFAULT 0,
        sealed INTEGER NOT NULL DEFAULT 0,
        created_ts INTEGER NOT NULL,
        updated_ts INTEGER NOT NULL,
        events_bytes INTEGER NOT NULL DEFAULT 0
    )""",
    # the tail: events with seq > docs.sealed
    """CREATE TABLE log (
        doc INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        pos INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        actor INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        data BLOB NOT NULL,
        meta TEXT,
        PRIMARY KEY (doc, seq)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX log_pos ON log (pos)",
    """CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        doc INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        first_pos INTEGER NOT NULL,
        last_pos INTEGER NOT NULL,
        ts_min INTEGER NOT NULL,
        ts_max INTEGER NOT NULL,
        raw_bytes INTEGER NOT NULL,
        body BLOB NOT NULL,
        checksum BLOB NOT NULL,
        UNIQUE (doc, first_seq)
    )""",
    "CREATE INDEX segments_pos ON segments (last_pos)",
]

#: the tables a start makes again, empty, when they are missing (tables.py)
REBUILT = {"snapshots": _SNAPSHOTS, "derived": _DERIVED}


FRESH = [*LOG_TABLES, _SNAPSHOTS, _TAGS, _TOMBSTONES, _POSITION, _DERIVED, DELETIONS, SALT,
         "INSERT INTO log_position VALUES (1, 0)",
         "INSERT INTO store_salt VALUES (1, randomblob(16))"]  # fmt: skip

#: the row-per-event schema, version by version (what older databases hold)
OLD_STEPS: dict[int, list[str]] = {
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
        _SNAPSHOTS,
        _TAGS,
    ],
    2: [_TOMBSTONES],
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
        _POSITION,
        "INSERT OR IGNORE INTO log_position SELECT 1, COALESCE(MAX(pos), 0) FROM events",
    ],
    4: [_DERIVED],
}


def to_compact_log(conn: sqlite3.Connection, progress: Callable[[int], None] | None = None) -> None:
    """Version 4 -> 5, inside the caller's transaction: every document's events become
    sealed segments (whole runs) and tail rows (the rest); ``events`` is dropped."""
    for stmt in LOG_TABLES:
        conn.execute(stmt.replace("CREATE TABLE docs", "CREATE TABLE docs_v4"))
    conn.execute(
        "INSERT INTO symbols (name) SELECT actor FROM events UNION SELECT kind FROM events"
    )
    symbols = Symbols()
    symbols.add(conn.execute("SELECT id, name FROM symbols"))
    conn.execute(
        "INSERT INTO docs_v4 (name, head, base_seq, sealed, created_ts, updated_ts, "
        "events_bytes) SELECT name, head, base_seq, base_seq, created_ts, updated_ts, "
        "events_bytes FROM docs ORDER BY created_ts, name"
    )
    docs = conn.execute("SELECT id, name, base_seq FROM docs_v4").fetchall()
    for doc_id, name, base in docs:
        cur = conn.execute(
            "SELECT seq, ts, actor, kind, data, meta, pos FROM events WHERE doc = ? ORDER BY seq",
            (name,),
        )
        pending: list[Event] = []
        sealed = int(base)
        while True:
            rows = cur.fetchmany(S.SEGMENT_EVENTS)
            for r in rows:
                pending.append(
                    Event(name, r[0], r[1], r[2], r[3], bytes(r[4]), parse_meta(r[5]), r[6])
                )
            while len(pending) >= S.SEGMENT_EVENTS or (pending and not rows):
                run = pending[: S.SEGMENT_EVENTS]
                whole = len(run) == S.SEGMENT_EVENTS and all(
                    e.seq == sealed + 1 + i for i, e in enumerate(run)
                )
                if whole:
                    insert_segment(conn, doc_id, S.encode(columns(run, symbols)))
                    sealed = run[-1].seq
                    del pending[: S.SEGMENT_EVENTS]
                else:  # the remainder (or a run with a gap): tail rows
                    insert_tail(conn, doc_id, pending, symbols)
                    pending = []
                if progress is not None:
                    progress(len(run))
            if not rows:
                break
        conn.execute("UPDATE docs_v4 SET sealed = ? WHERE id = ?", (sealed, doc_id))
    conn.execute("DROP TABLE events")
    conn.execute("DROP TABLE docs")
    conn.execute("ALTER TABLE docs_v4 RENAME TO docs")


def insert_segment(conn: sqlite3.Connection, doc_id: int, seg: S.Sealed) -> None:
    conn.execute(
        "INSERT INTO segments (doc, first_seq, last_seq, first_pos, last_pos, ts_min, ts_max, "
        "raw_bytes, body, checksum) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (doc_id, seg.first_seq, seg.last_seq, seg.first_pos, seg.last_pos, seg.ts_min,
         seg.ts_max, seg.raw_bytes, seg.blob, seg.checksum),
    )  # fmt: skip


def tail_row(doc_id: int, e: Event, symbols: Symbols) -> tuple[Any, ...]:
    ids = symbols.ids
    return (doc_id, e.seq, e.pos, e.ts, ids[e.actor], ids[e.kind], e.update,
            meta_text(e.meta) or None)  # fmt: skip


def insert_tail(
    conn: sqlite3.Connection, doc_id: int, events: list[Event], symbols: Symbols
) -> None:
    conn.executemany(
        "INSERT INTO log (doc, seq, pos, ts, actor, kind, data, meta) VALUES (?,?,?,?,?,?,?,?)",
        [tail_row(doc_id, e, symbols) for e in events],
    )
