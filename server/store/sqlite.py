"""The embedded default: one SQLite file in WAL mode.

Writes: one connection of the standard ``sqlite3`` module on a thread of its own
(:class:`_Writer`). Each write, a whole transaction (BEGIN … COMMIT) such as one group
commit's ``append``, is one call on that thread: one hop from the event loop and back,
not one per statement. Reads go through aiosqlite on a second connection (WAL lets them
run beside a write); an in-memory database has one connection, the writer's, for both.

Every read on that connection is one statement run to its end in one call on its thread
(:meth:`SQLiteStore._fetchall`), never a cursor left open across an ``await``. SQLite
keeps a connection's read snapshot for as long as any of its statements is active, and
a statement run meanwhile on the same connection reads that snapshot too: with the
concurrent readers of a server overlapping one another, the snapshot could stay older
than commits already answered (seen: ``GET …/versions/head`` answered 404 for a document
whose ``PUT …/text`` had answered 200). Run to the end, each statement sees every commit
acknowledged before it was queued.

Durability: ``synchronous=FULL`` in WAL mode by default, so a committed transaction
survives a power cut, not only a crash of the process. Throughput comes from the caller
batching many events into one ``append`` (group commit), never from weaker syncing.
``durability="os"`` (``--durability os``) opts into ``synchronous=NORMAL``: a commit
then survives the process being killed, not the machine losing power.

The log's layout (a tail of rows, sealed segments, interned ids) is described in
:mod:`.log_layout`; the schema and its upgrades are in :mod:`.sqlite_schema`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ..errors import StoreError, StoreUnavailable
from . import segments as S
from .actor_rename import Uses, kind_clash, taken
from .base import (
    DELETED,
    MAX_SEQ,
    NO_BASE,
    ActorRenamed,
    BaseMark,
    DocInfo,
    Event,
    EventStore,
    MetaRewrite,
    NewEvent,
    Restamped,
    Snapshot,
    SnapshotInfo,
    Stamp,
    Tag,
    TagMove,
    check_durability,
    check_replacing,
    checksum,
    derived_from_row,
    dump_meta,
    exact_of,
    floors_of,
    generations_of,
    now_ms,
    renamed_snapshot_row,
    restamped_snapshot_row,
    rising,
    snapshot_from_row,
    snapshot_info,
    snapshot_row,
    snapshot_row_async,
)
from .cursors import WebhookCursors
from .disk_warm import DiskWarmer
from .doc_locks import CREATE_TABLE as DOC_LOCKS
from .doc_locks import DocLocks, SQLiteDocLocks
from .doc_pages import DOC_COLUMNS, DocPage, page_sql
from .file_turns import FileTurns
from .log_layout import (
    ANY_ROW,
    LAYOUT_VERSION,
    MAX,
    RecentRows,
    SegmentRow,
    Symbols,
    TailRow,
    assemble,
    assemble_off_loop,
    base_answer,
    columns,
    decode_segment,
    decoded,
    merge_by_pos,
    query_filter,
    query_windows,
    restamped_segment,
    run_columns,
    runs,
    seq_before,
)
from .revocations import CREATE_TABLE as REVOKED_USERS
from .revocations import Revocations, SQLiteRevocations
from .sql_cursors import CREATE_TABLE as WEBHOOKS
from .sql_cursors import SQLiteCursors
from .sqlite_schema import (
    DELETIONS,
    FRESH,
    OLD_STEPS,
    READ_SALT,
    REBUILT,
    SCHEMA_VERSION,
    insert_segment,
    insert_tail,
    to_compact_log,
)
from .tables import (
    ACCEPT_FLAG,
    SIDE_MARKER,
    SIDE_MARKER_SQL,
    TAG_HISTORY_SQL,
    TAG_MOVE_COPY,
    TAG_MOVE_INSERT,
    TAG_MOVES,
    TAG_MOVES_OF_ONE,
    lost_side_tables,
    missing_tables,
    rebuilt_words,
    refusal,
    side_refusal,
    side_words,
    tag_moves_numbered,
)

log = logging.getLogger("palimpsest.store.sqlite")

#: the side tables a start makes (tables.SIDE), by name
_SIDE_SQL = {"revoked_users": REVOKED_USERS, "webhooks": WEBHOOKS, "doc_locks": DOC_LOCKS,
             "tag_history": TAG_HISTORY_SQL}  # fmt: skip

_T = TypeVar("_T")

#: free pages of the file kept for new tail rows after sealing (4 MB of 4 kB pages)
_FREE_PAGES_KEPT = 1024


class _Raced(Exception):
    """A seal found its run changed under it (another sealer, a compaction, a deletion)."""


#: a snapshot's ts is the clock's, raised to its document's last event's ts (after a
#: clock stepped back, as an event's: EventStore.append); its values (doc, seq, ts, state,
#: checksum, meta) once each, in order: plain ``?`` only (never numbered ones with a tuple, which
#: 3.12.0-3.12.3 warn of, gh-117995), so the doc is named again through the CTE
_PUT_SNAPSHOT = (
    "WITH v (doc, seq, ts, state, checksum, meta) AS (VALUES (?, ?, ?, ?, ?, ?)) "
    "INSERT OR REPLACE INTO snapshots (doc, seq, ts, state, checksum, meta) "
    "SELECT doc, seq, MAX(ts, COALESCE((SELECT updated_ts FROM docs WHERE name = v.doc), 0)), "
    "state, checksum, meta FROM v"
)
#: a document's compaction base (store.base.BaseMark): its seq and its row's checksum
_BASE_MARKS_SQL = (
    "SELECT d.name, d.base_seq, s.checksum, d.head FROM docs d LEFT JOIN snapshots s "
    "ON s.doc = d.name AND s.seq = d.base_seq "
)


def _as_mark(base_seq: int, check: str | None) -> BaseMark:
    return (int(base_seq), check or "") if base_seq else NO_BASE


def _base_mark(db: sqlite3.Connection, doc: str) -> BaseMark:
    return _base_and_head(db, doc)[0]


def _base_and_head(db: sqlite3.Connection, doc: str) -> tuple[BaseMark, int]:
    """`doc`'s compaction base mark and head (0 without a docs row), in one read."""
    row = db.execute(_BASE_MARKS_SQL + "WHERE d.name = ?", (doc,)).fetchone()
    return (_as_mark(row[1], row[2]), int(row[3])) if row is not None else (NO_BASE, 0)


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
#: SQLITE_BUSY, SQLITE_LOCKED: another connection holds the lock this one needs
_BUSY = frozenset({5, 6})
_TRANSIENT = _BUSY | {7, 8, 10, 13, 14, 15}  # NOMEM READONLY IOERR FULL CANTOPEN PROTOCOL


#: SQLITE_CORRUPT, SQLITE_NOTADB: "database disk image is malformed", "file is not a
#: database", which SQLite also says of a read that failed (an EIO it reads as damage)
_CORRUPT = frozenset({11, 26})


def _corrupt_hint(e: BaseException) -> str:
    """What to make of SQLite's word of a damaged file: it may be one, or an I/O error
    of the moment; "" for any other error."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _CORRUPT:
        return ""
    return (
        " (SQLite says this of a damaged file, and also when a read failed: it may be an "
        "I/O error, see the server's log and dmesg; `palimpsest verify` checks the file)"
    )


def _store_error(what: str, e: sqlite3.Error) -> StoreError:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _TRANSIENT:
        return StoreUnavailable(f"SQLite {what} failed: {e}")
    return StoreError(f"SQLite {what} failed: {e}{_corrupt_hint(e)}")


#: PRAGMA synchronous per durability: FULL syncs the WAL at every commit; NORMAL in WAL
#: mode syncs only at checkpoints (a commit survives a crash of the process, not of the
#: machine; the database is never corrupted either way)
_SYNCHRONOUS = {"fsync": "FULL", "os": "NORMAL"}


#: how long a write waits for another connection's write lock (another process on the
#: same file: an admin command, a second server)
BUSY_TIMEOUT_MS = 10_000


def _open(path: str, durability: str = "fsync") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # first: a new file takes it only before anything is written to it, WAL mode included
    # (pages that sealing and snapshot pruning free are given back, see _give_back_pages;
    # an existing file keeps its mode until a VACUUM, which migrate runs). Only then: on
    # an existing file it wrote the header again (its change counter), so a start that
    # then failed did not leave the database as it found it
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    _until_unlocked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
    conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[durability]}")
    # keep the WAL file small once checkpointed (it otherwise stays at its peak)
    conn.execute("PRAGMA journal_size_limit=8388608")
    # what a write deletes (a deleted document, the tail rows a seal moved, snapshots
    # pruned) is overwritten with zeros, in its page and in the pages it frees, rather
    # than left in the file until reused: a deleted document's text is gone from the file
    # only if the rows a seal moved out of its pages were zeroed too, so it is on always,
    # not only around a deletion. Debian's SQLite has it on by default, other builds off.
    # Appends delete nothing (their p50 is the same); sealing 12,000 events took 257 ms
    # instead of 197 (os), 325 instead of 231 (fsync), in the background
    # (bench/secure_delete_cost.py)
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def _salt_of(conn: sqlite3.Connection) -> bytes | None:
    """The store's salt (EventStore.server_salt): None in a file made before files had
    one."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'store_salt'").fetchone():
        return None
    row = conn.execute(READ_SALT).fetchone()
    return bytes(row[0]) if row else None


def _probe_writes(conn: sqlite3.Connection) -> None:
    """Raise the driver's error now when the file cannot be written (read-only media, a
    full disk), and not at the first commit of a server that has started: a write
    transaction whose pages spill into the WAL (a tiny page cache), rolled back. Spilled
    frames without a commit mark are no data (see _reserve_wal): the database file is
    left as it was, so that a start that fails later leaves an existing one unchanged.
    (The auto_vacuum pragma each open issued was that check by accident, and wrote the
    file's header every time.) Runs on the writer thread."""
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("PRAGMA cache_size=16")
        (page,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute("CREATE TABLE palimpsest_write_probe (b BLOB)")
        conn.execute("INSERT INTO palimpsest_write_probe VALUES (zeroblob(?))", (64 * page,))
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute(f"PRAGMA cache_size={int(cache)}")


def _read_only_uri(path: str) -> str:
    """The URI that opens the database file at `path` read-only (``mode=ro``); there must
    be one (a read-only open never creates it)."""
    if not os.path.exists(path):
        raise StoreUnavailable(f"no SQLite database at {path!r}")
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def schema_version_at(path: str) -> int | None:
    """The schema version of the SQLite database at `path` (0: none made yet), read
    without writing the file (``palimpsest migrate`` looks before it decides whether a
    server serving it is in the way); None when it cannot be read (no file, not a
    database: the store's start says why)."""
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True)
    except (StoreUnavailable, sqlite3.Error):
        return None
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _file_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _anything_at(path: str) -> bool:
    return os.path.lexists(path)


def _remove_new_database(
    path: str, file_id: tuple[int, int] | None, made_schema: bool
) -> list[str]:
    """SQLiteStore.abandon's removal of the file its start made: [path] when removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(st.st_mode) or (file_id is not None and (st.st_dev, st.st_ino) != file_id):
        return []  # another file was put there since
    if not (made_schema or st.st_size == 0):
        return []  # another process made it: its schema, maybe its rows
    others = [path + s for s in ("-wal", "-shm", "-journal") if os.path.lexists(path + s)]
    if others:
        log.warning("the new database %s is left: %s (another connection has it open)",
                    path, ", ".join(others))  # fmt: skip
        return []
    os.unlink(path)
    return [path]


def _until_unlocked(fn: Callable[[], object]) -> None:
    """fn(), again while SQLite says the database is locked, for BUSY_TIMEOUT_MS at
    most: a new file's change to WAL mode answers "database is locked" at once, without
    waiting, while another process makes the same change (servers started together on
    one new file: one of four did, in the suite, under load)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            fn()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


#: bytes of WAL file laid down at start (about SQLite's autocheckpoint of 1,000 pages):
#: see _reserve_wal
WAL_RESERVE_BYTES = 4 * 1024 * 1024


def _wal_size(path: str) -> str:
    """The size of the WAL beside the database at `path`, for a log line."""
    try:
        return f"{os.path.getsize(path + '-wal')} bytes"
    except OSError:
        return "absent"


def _reserve_wal(conn: sqlite3.Connection, path: str, size: int = WAL_RESERVE_BYTES) -> bool:
    """Give the WAL file `size` bytes of written blocks before the first commit, so that
    commits overwrite blocks the file already has instead of growing it. A commit's
    fdatasync then syncs the data alone; growing the file also makes it sync the
    file's new size and extents (an ext4 journal commit): 356-380 µs against 210-245 µs
    per 4 kB write + fdatasync on this machine's disk (the numbers in docs/durability.md).
    SQLite deletes the WAL when its last connection closes, so every start would grow it
    again for its first ~4 MB of commits (a few hundred lone edits); after that SQLite
    writes it again from its start after each checkpoint, without shrinking it
    (journal_size_limit only cuts a bigger one back to 8 MB).

    How: a transaction bigger than a tiny page cache spills its pages into the WAL as
    frames without a commit mark, and its ROLLBACK leaves them there as plain bytes that
    no reader or recovery ever takes for data (SQLite's own rule for spilled frames). No
    row, table or header of the database changes. Skipped when the WAL is already that
    big, when another connection holds the write lock (never waited for), and on any
    SQLite error (a full disk: the store starts all the same, its commits then grow the
    WAL as before). Runs on the writer thread; True if it laid the WAL down."""
    wal = Path(path + "-wal")
    with contextlib.suppress(OSError):
        if wal.stat().st_size >= size:
            return False
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    conn.execute("PRAGMA busy_timeout=0")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:  # another connection is writing: never waited for
        log.debug("WAL reserve skipped: %s", e)
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    try:
        conn.execute("PRAGMA cache_size=16")
        (page,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute("CREATE TABLE palimpsest_wal_reserve (b BLOB)")
        # the pages still in the cache at ROLLBACK never reach the file
        blob = size + 32 * int(page)
        conn.execute("INSERT INTO palimpsest_wal_reserve VALUES (zeroblob(?))", (blob,))
        return True
    except sqlite3.Error as e:  # a full disk: the store starts all the same
        log.info("WAL reserve skipped: %s", e)
        return False
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute(f"PRAGMA cache_size={int(cache)}")


def _is_busy(e: BaseException | None) -> bool:
    """Whether `e` (or what it was raised from) is SQLite's "the database is locked"."""
    while e is not None:
        code = getattr(e, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _BUSY:
            return True
        e = e.__cause__
    return False


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


def _carry_positions(conn: sqlite3.Connection, last: int) -> None:
    """Positions from now on come after `last` (inside the caller's transaction)."""
    conn.execute("UPDATE log_position SET pos = ? WHERE id = 1 AND pos < ?", (last, last))


def _refuse_taken(conn: sqlite3.Connection, positions: Sequence[int]) -> None:
    """Refuse positions that events of the tail or deletions hold (inside the caller's
    transaction): a copy keeping its source's positions into a store that gave some out
    since (a server wrote or deleted on the target meanwhile) must not give two records
    one position. The tail holds whatever was written since its document's last sealed
    run."""
    for i in range(0, len(positions), 500):  # SQLite's bound parameters are limited
        chunk = positions[i : i + 500]
        marks = ",".join("?" * len(chunk))
        row = conn.execute(f"SELECT min(pos) FROM log WHERE pos IN ({marks})", chunk).fetchone()
        if row[0] is not None:
            raise StoreError(f"position {row[0]} is taken in the target by another event")
        row = conn.execute(
            f"SELECT min(pos) FROM deletions WHERE pos IN ({marks})", chunk
        ).fetchone()
        if row[0] is not None:
            raise StoreError(f"position {row[0]} is taken in the target by a deletion")


def _intern(conn: sqlite3.Connection, symbols: Symbols, names: set[str]) -> None:
    """Give every name an id, committed before any event uses it (its own transaction:
    an id is cached only once it exists for good). Runs on the writer thread."""
    if any(type(n) is not str for n in names):
        raise StoreError(f"an event's actor and kind must be text, not {names!r}")
    missing = symbols.missing_names(names)
    if not missing:
        return

    def run(c: sqlite3.Connection) -> None:
        c.executemany("INSERT OR IGNORE INTO symbols (name) VALUES (?)", [(n,) for n in missing])

    _in_transaction(conn, "symbol write", run)
    marks = ",".join("?" * len(missing))
    symbols.add(conn.execute(f"SELECT id, name FROM symbols WHERE name IN ({marks})", missing))


def _append(
    conn: sqlite3.Connection,
    batches: Sequence[tuple[str, Sequence[NewEvent]]],
    symbols: Symbols,
    written: list[tuple[Any, ...]] | None = None,
    floors: Sequence[int] | None = None,
    generations: Sequence[int | None] | None = None,
    exact: Sequence[bool] | None = None,
) -> list[list[Event]]:
    """The body of one append transaction, on the writer thread. `written`: filled with
    the rows inserted (doc id first, then as the log stores them), for RecentRows.
    `floors`, `generations`, `exact`: see EventStore.append (a batch whose document's head is
    below its floor, or whose document is not of its generation, is left out, and takes
    no position)."""
    least = floors_of(batches, floors)
    gens = generations_of(batches, generations)
    exacts = exact_of(batches, exact)
    names = sorted({doc for doc, evs in batches if evs})
    marks = ",".join("?" * len(names))
    # a document's updated_ts is its last event's ts: the floor of the next one's
    docs: dict[str, tuple[int, int]] = {}
    last_ts: dict[str, int] = {}
    for r in conn.execute(
        f"SELECT id, name, head, updated_ts FROM docs WHERE name IN ({marks})", names
    ):
        docs[r[1]] = (r[0], r[2])
        last_ts[r[1]] = r[3] or 0
    # each floor against the head before this append (the writer lock is held), each
    # generation against the row's id, from the same read
    heads = {doc: docs[doc][1] if doc in docs else 0 for doc, _ in batches}
    taken = [
        bool(evs)
        and heads[doc] >= floor
        and (not ex or heads[doc] == floor)
        and (gen is None or (doc in docs and docs[doc][0] == gen))
        for (doc, evs), floor, gen, ex in zip(batches, least, gens, exacts, strict=True)
    ]
    names = sorted({doc for (doc, _), take in zip(batches, taken, strict=True) if take})
    pos = _take_positions(
        conn, sum(len(evs) for (_, evs), take in zip(batches, taken, strict=True) if take)
    ) - 1  # fmt: skip
    out: list[list[Event]] = []
    rows: list[tuple[Any, ...]] = []
    sizes: dict[str, int] = {}
    ids = symbols.ids
    for (doc, evs), take in zip(batches, taken, strict=True):
        if not take:  # empty, or the log was deleted under its writer
            out.append([])
            continue
        if doc not in docs:
            ts = evs[0].ts
            (new_id,) = conn.execute(
                "INSERT INTO docs (name, head, created_ts, updated_ts) VALUES (?,0,?,?) "
                "RETURNING id",
                (doc, ts, ts),
            ).fetchone()
            docs[doc] = (int(new_id), 0)
        doc_id, head = docs[doc]
        stored: list[Event] = []
        for ev in evs:
            head += 1
            pos += 1
            # never before the document's previous event (see EventStore.append)
            ts = last_ts[doc] = max(last_ts.get(doc, 0), ev.ts)
            stored.append(Event(doc, head, ts, ev.actor, ev.kind, ev.update, ev.meta, pos))
            rows.append((doc_id, head, pos, ts, ids[ev.actor], ids[ev.kind], ev.update,
                         dump_meta(ev.meta) if ev.meta else None))  # fmt: skip
            sizes[doc] = sizes.get(doc, 0) + len(ev.update)
        docs[doc] = (doc_id, head)
        out.append(stored)
    conn.executemany(
        "INSERT INTO log (doc, seq, pos, ts, actor, kind, data, meta) VALUES (?,?,?,?,?,?,?,?)",
        rows,
    )
    if written is not None:
        written[:] = rows
    conn.executemany(
        "UPDATE docs SET head = ?, updated_ts = ?, events_bytes = events_bytes + ? WHERE id = ?",
        [(docs[d][1], last_ts[d], sizes[d], docs[d][0]) for d in names],
    )
    return out


#: an append of at most this many events (a lone edit, a few typed together, a turn of
#: the two-writer replay: 12-15) commits on the event loop's own thread when the writer
#: thread has nothing queued: no thread to wake, none to wake the loop back (after a
#: pause, 20-50 µs of a lone append's 0.5 ms on this machine with fsync, 35 µs with os:
#: bench/append_latency.py --gap; under load, with the Node.js clients on the other core,
#: the replay's commit took 890-1,125 µs through the thread and 630-800 inline). The loop
#: then waits for the disk itself, as that edit does anyway. 4 until 3 Dec 2026: the
#: replay of friendsforever[:10k] took 1.23-1.50 s with 4 and 1.18-1.41 with 64 (12
#: alternated pairs, medians 4-8 % apart), and six documents typed into at once at 200
#: edits/s each, or three at 700, did no worse (docs/durability.md). A bigger batch (a
#: bulk import, an ingest's) goes to the writer thread, so that the loop keeps reading
#: frames while the disk syncs it.
INLINE_EVENTS = 64
#: ... and with durability "os", where a commit waits for no sync and is CPU only, an
#: append of up to this many: the hop to the writer thread and back cost more CPU than it
#: saved (the two-writer replay of friendsforever 1.49-1.63 -> 1.31-1.38 s, 46-51 -> 42-44
#: µs of server CPU per transaction; docs/durability.md, 3 Dec 2026). 256 events commit in
#: about 1 ms (max 1.5), inside INLINE_MAX_SECONDS; 1,024 took 3.8 ms, so a bigger append
#: (a bulk import, an ingest's batch) still goes to the thread and the loop keeps serving.
INLINE_EVENTS_OS = 256
#: ... and only while such commits are quick (their moving average): a disk that takes
#: longer would hold up every connection of the process for as long
INLINE_MAX_SECONDS = 0.002


def _require_directory(path: str) -> None:
    """A new database is a new file, never new directories: a typo in --db made them (as
    root, /nonexistent/dir/ too) and served a new, empty database there."""
    parent = Path(path).absolute().parent
    if not parent.is_dir():
        raise StoreUnavailable(
            f"cannot open SQLite database {path!r}: the directory {parent} does not exist "
            "(a new database is created in an existing directory only)"
        )


def user_name() -> str:
    """This process's user, for the messages about files it cannot write."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):  # no such entry; Windows
        return str(getattr(os, "geteuid", lambda: "?")())


def not_writable(folder: str) -> str:
    """Why this process cannot make files in the directory `folder` ("" when it can):
    a read-only file system, or the directory's permissions for this user."""
    if os.access(folder, os.W_OK):
        return ""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is read-only"
    except (OSError, AttributeError):
        pass
    return f"the directory {folder} is not writable by user {user_name()}"


def _require_creatable(path: str) -> None:
    """A new database is made in a directory this user can write, or refused saying so
    (SQLite's own word was "unable to open database file", and the hint said to copy a
    file that did not exist)."""
    why = not_writable(os.path.dirname(os.path.abspath(path)))
    if why:
        raise StoreUnavailable(f"cannot create SQLite database {path!r}: {why}")


#: the mode of a database file this code creates: it holds every document's text, and
#: SQLite gives its -wal and -shm files the database file's mode (under umask 022 all
#: three were 0644, readable by every user of the machine; the lock files were 0600)
PRIVATE_MODE = 0o600


def make_private(path: str | os.PathLike[str]) -> None:
    """Create the empty file `path` with PRIVATE_MODE before SQLite opens it (which would
    create it 0666 less the umask); nothing when something is there already (another
    process's start made it meanwhile)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _media_hint(path: str) -> str:
    """Why a database on read-only media, or on a full disk, does not open (SQLite's own
    message is "unable to open database file", or "disk I/O error" when it cannot make
    its -shm file), and what to do; "" when that is not it."""
    folder = os.path.dirname(os.path.abspath(path))
    if path == ":memory:" or not os.path.isdir(folder):
        return ""
    why = not_writable(folder)
    if why.endswith("is read-only"):
        return (
            f" ({why}: SQLite writes the -wal and -shm files beside a database even to read "
            "it; copy the file somewhere writable)"
        )
    if why:
        return (
            f" ({why}: SQLite writes the -wal and -shm files beside a database even to read "
            f"it; let {user_name()} write there, or copy the file somewhere it can)"
        )
    try:
        fs = os.statvfs(folder)
        free = fs.f_bavail * fs.f_frsize
    except OSError:
        return ""
    if free < 1 << 20:
        return (
            f" (the disk holding {folder} is full: {free} bytes free; SQLite writes the "
            "-wal and -shm files beside a database even to read it; free some space)"
        )
    return ""


#: WAL checkpoints are the writer thread's, between calls, never a commit's: SQLite's own
#: (wal_autocheckpoint, 1,000 pages) ran inside the COMMIT that crossed the mark, so one
#: commit in a few hundred took longer (0.6-6 ms with fsync, 6-10 with os), and held the
#: event loop for as long when it was an inline one (bench/append_latency.py;
#: docs/durability.md). The writer counts the pages its calls wrote (an estimate:
#: CALL_PAGES a call, one more per EVENTS_PER_PAGE events appended) and checkpoints
#: (PASSIVE: never waits for a reader) once CHECKPOINT_PAGES are due and nothing is
#: queued, or at CHECKPOINT_PAGES_MAX even with calls queued, so that the WAL stays
#: bounded under a steady stream of commits. SQLite's own checkpoint stays on as a
#: backstop, at AUTOCHECKPOINT_BACKSTOP pages, in case the estimate runs low (a seal or
#: a compaction writes more pages than it counts).
CHECKPOINT_PAGES = 1000
CHECKPOINT_PAGES_MAX = 4 * CHECKPOINT_PAGES
#: a failed checkpoint (the disk full, say) is tried again after CHECKPOINT_RETRY_FIRST
#: seconds, the pause doubling up to CHECKPOINT_RETRY_MAX while it fails: on the first
#: call after the pause, or idle, whatever pages are due; and at once after a call that
#: succeeds where the one before failed (the disk has room again)
CHECKPOINT_RETRY_FIRST = 1.0
CHECKPOINT_RETRY_MAX = 30.0
AUTOCHECKPOINT_BACKSTOP = 10 * CHECKPOINT_PAGES
CALL_PAGES = 4
EVENTS_PER_PAGE = 16


#: Upkeep writes (a seal, old snapshots dropped, derived data, pages given back:
#: ``call(..., background=True)``) give way to appends. Nobody's edit waits for
#: them, but each is a transaction of its own, synced, of a few ms: run in the order
#: they came, a document's sealing beside a stream of appends doubled their commit time
#: (bench/upkeep_contention.py, docs/durability.md). So when one is next in line, an append
#: queued behind it (and ahead of any other call) goes first, and while appends keep
#: coming (the last ended less than BACKGROUND_GRACE seconds ago) it waits for the next,
#: BACKGROUND_MAX_WAIT seconds at most. Other calls keep their order with both (a
#: snapshot's write too: retention converts rungs with what was taken at capture, and
#: held back, they loaded both states instead; docs/durability.md).
BACKGROUND_GRACE = 0.003
BACKGROUND_MAX_WAIT = 0.1

#: a deletion's checkpoint (SQLiteStore.erase_wal): how long one try waits for readers to
#: be done with the WAL (ms), and how long it keeps trying (s)
ERASE_BUSY_MS = 100
ERASE_SECONDS = 10.0

#: the kinds of call: appends (which may go ahead of upkeep), the rest, upkeep
_APPEND, _ORDINARY, _BACKGROUND = 0, 1, 2

#: the job that asks the writer thread for a checkpoint (_Writer.call)
_CHECKPOINT = object()


class _Writer:
    """The write connection, owned by one thread. ``call(fn)`` runs ``fn(conn)`` there
    and returns its result: one hop from the event loop and one back, whatever fn does.
    Calls run one at a time in the order they were made, so writes never interleave;
    the one exception is upkeep (``background=True``), which lets appends queued behind
    it go first (BACKGROUND_GRACE).

    ``call(fn, small=True)`` (a small append) may run ``fn`` on the calling thread
    instead, when no call but upkeep is queued, none runs, and small calls have been
    quick (see INLINE_EVENTS): the connection is used by one thread at a time either way
    (``_lock``) and the order of calls is kept (none but upkeep is waiting when one runs
    inline)."""

    def __init__(self, path: str, durability: str = "fsync") -> None:
        self.path = path
        self.durability = durability
        #: one token per call handed to the thread (None: stop), and the calls themselves,
        #: in the order they came: (kind, fn, loop, future, small, pages, queued at).
        #: Each token runs one call, not necessarily its own (_next_job)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._pending_lock = threading.Lock()
        #: set when an append is queued (what a waiting upkeep call waits for)
        self._append_queued = threading.Event()
        #: perf_counter when the last append ended, wherever it ran
        self._last_append = 0.0
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        #: calls other than upkeep handed to the thread (changed by the event loop's
        #: thread only) and those it finished (by the writer thread only): equal when it
        #: has none of them to do (inline calls do not wait for upkeep, see
        #: BACKGROUND_GRACE)
        self._queued = 0
        self._finished = 0
        #: upkeep calls an append went ahead of, so far
        self.overtaken = 0
        #: moving average of the seconds a small call takes, wherever it ran
        self.small_seconds = 0.0
        #: small calls run inline so far (tests, /metrics-free introspection), and those
        #: of them that found the database locked by another connection and went to the
        #: writer thread after all
        self.inline_calls = 0
        self.busy_fallbacks = 0
        #: whether the connection waits for another connection's write lock (busy_timeout
        #: BUSY_TIMEOUT_MS, as on the writer thread) or not at all (0, as inline). Switched
        #: only when a call runs on the other side from the one before, so a run of inline
        #: commits runs no PRAGMA: the first SQLite call after a pause costs 66-77 µs on
        #: this machine, whatever it is, and the switch back 11-21 µs
        self._waits = True
        #: keeps the disk warm between commits (keep_warm, once the file exists)
        self.warmer: DiskWarmer | None = None
        #: pages written since the last checkpoint (an estimate, see CHECKPOINT_PAGES;
        #: changed under _lock only); checkpoints run so far
        self.pages_due = 0
        self.checkpoints = 0
        #: the last checkpoint's frames in the WAL and frames checkpointed (PASSIVE may
        #: leave some to a later one while a reader holds them)
        self.last_checkpoint = (0, 0)
        #: WAL frames per estimated page, learnt from the checkpoints (_checkpoint)
        self.page_scale = 1.0
        #: a checkpoint job is queued (set by the event loop's thread, cleared by the
        #: writer thread when it runs it)
        self._checkpoint_queued = False
        #: after a checkpoint failed: when (perf_counter) to try again, whatever is due
        #: (None: none failed), and the pause before that try (CHECKPOINT_RETRY_*)
        self.checkpoint_retry_at: float | None = None
        self._retry_pause = 0.0
        #: the last call failed (a commit refused for a full disk, say): the next one
        #: that succeeds finds the disk writable again, and retries a failed checkpoint
        self._call_failed = False

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
        conn = _open(self.path, self.durability)
        if self.path != ":memory:":
            # checkpoints are the writer's, between calls (_checkpoint); SQLite's own only
            # as a backstop
            conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_BACKSTOP}")
        self._conn = conn

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint on the write connection, on the writer thread, holding
        _lock, outside any call. A failure is logged; SQLite's backstop remains.

        The WAL's frame count it reports corrects the estimate (``page_scale``): when the
        checkpoint before it went through whole, SQLite began the WAL anew at the next
        write, so its frames are what the calls since wrote."""
        conn = self._conn
        estimated, self.pages_due = self.pages_due, 0
        if conn is None or self.path == ":memory:":
            self.checkpoint_retry_at = None
            return
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:
            # what was due is still due, and tried again after a pause, on the next call
            # or idle (the WAL stayed 14 MB against a 745 kB database through idle hours
            # when a failure counted the pages as done: the next try waited for 1,000
            # more pages of writes)
            self.pages_due += estimated
            self._retry_pause = min(
                CHECKPOINT_RETRY_MAX, max(CHECKPOINT_RETRY_FIRST, 2 * self._retry_pause)
            )
            self.checkpoint_retry_at = time.perf_counter() + self._retry_pause
            log.warning("SQLite checkpoint of %s failed: %s; trying again in %gs (WAL %s)",
                        self.path, e, self._retry_pause, _wal_size(self.path))  # fmt: skip
            return
        if self.checkpoint_retry_at is not None:
            log.info("SQLite checkpoint of %s done again (WAL %s)", self.path,
                     _wal_size(self.path))  # fmt: skip
            self.checkpoint_retry_at, self._retry_pause = None, 0.0
        frames, done = int(row[1]), int(row[2])
        before = self.last_checkpoint
        if before[0] == before[1] and estimated > 0 and frames > 0:
            ratio = min(4.0, max(0.25, frames / (estimated * self.page_scale)))
            self.page_scale = min(8.0, max(0.25, self.page_scale * ratio))
        self.last_checkpoint = (frames, done)
        self.checkpoints += 1

    def _checkpoint_due(self, queued: bool) -> bool:
        """Whether to checkpoint now: enough pages are due, and nothing waits (or far
        too many are due to wait any longer); after a failed one, once its pause is over."""
        if self.checkpoint_retry_at is not None:
            return time.perf_counter() >= self.checkpoint_retry_at
        due = self.pages_due * self.page_scale
        return due >= CHECKPOINT_PAGES_MAX or (due >= CHECKPOINT_PAGES and not queued)

    def in_call(self) -> bool:
        """Whether a call is running now (on either side): it holds the connection."""
        return self._lock.locked()

    def keep_warm(self, period: float) -> None:
        """From now on, keep the disk of this file warm between calls (disk_warm.py). A
        speed-up only: if it cannot start, that is logged and the writer works without."""
        warmer = DiskWarmer(self.path, period, busy=self.in_call)
        try:
            warmer.start()
        except OSError as e:
            log.warning("not keeping the disk of %s warm: %s", self.path, e)
            return
        self.warmer = warmer

    def _note(self, seconds: float) -> None:
        self.small_seconds += (seconds - self.small_seconds) * 0.125

    def _next_job(self) -> tuple[Any, ...]:
        """The call to run now (one is pending: its token was taken): the first in line,
        unless that is an upkeep call and an append comes before any other call (then the
        append), or only upkeep is queued while appends are still coming (then wait for
        one, see BACKGROUND_GRACE)."""
        while True:
            with self._pending_lock:
                pending = self._pending
                first = pending[0]
                if first[0] != _BACKGROUND:
                    return pending.popleft()
                for i, job in enumerate(pending):
                    if job[0] == _ORDINARY:  # it waits behind the upkeep: no waiting
                        return pending.popleft()
                    if job[0] == _APPEND:
                        del pending[i]
                        self.overtaken += 1
                        return job
                now = time.perf_counter()
                wait = min(
                    self._last_append + BACKGROUND_GRACE - now,
                    first[6] + BACKGROUND_MAX_WAIT - now,
                )
                if wait <= 0:
                    return pending.popleft()
                self._append_queued.clear()
            self._append_queued.wait(wait)

    def _called(self, ok: bool) -> None:
        """After each call (under _lock): the first that succeeds after one that failed
        (a commit refused while the disk was full, taken again) retries a failed
        checkpoint at once."""
        if ok and self._call_failed and self.checkpoint_retry_at is not None:
            self.checkpoint_retry_at = time.perf_counter()
        self._call_failed = not ok

    def _idle_checkpoint(self) -> None:
        """No call for a while after a failed checkpoint: try it again if its pause is over."""
        with self._lock:
            if self.checkpoint_retry_at is not None and self._checkpoint_due(queued=False):
                self._checkpoint()

    def _run(self) -> None:
        while True:
            retry = self.checkpoint_retry_at
            try:
                token = self._jobs.get(
                    timeout=None if retry is None else max(0.0, retry - time.perf_counter())
                )
            except queue.Empty:
                self._idle_checkpoint()
                continue
            if token is None:
                break
            kind, fn, loop, fut, small, pages, _ = self._next_job()
            if fn is _CHECKPOINT:  # asked for after an inline call (call)
                with self._lock:
                    self._checkpoint_queued = False
                    if self._checkpoint_due(queued=False):
                        self._checkpoint()
                self._finished += 1
                if self.warmer is not None:
                    self.warmer.touch()
                continue
            with self._lock:
                t0 = time.perf_counter()
                try:
                    if not self._waits and self._conn is not None:
                        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                        self._waits = True
                    value, ok = fn(self._conn), True
                except BaseException as e:  # handed to the caller, whatever it is
                    value, ok = e, False
                self._called(ok)
                if small:
                    self._note(time.perf_counter() - t0)
                self.pages_due += pages
                if kind == _APPEND:
                    self._last_append = time.perf_counter()
            if self.warmer is not None:
                self.warmer.touch()
            if kind != _BACKGROUND:
                self._finished += 1
            try:
                loop.call_soon_threadsafe(_resolve, fut, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
            # after the caller has its answer: the checkpoint delays no commit that is
            # done, only one that comes while it runs
            # (upkeep waiting for appends does not count as queued: it can wait)
            if self._checkpoint_due(queued=self._queued != self._finished):
                with self._lock:
                    self._checkpoint()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def call(
        self,
        fn: Callable[[sqlite3.Connection], _T],
        *,
        small: bool = False,
        pages: int = CALL_PAGES,
        append: bool = False,
        background: bool = False,
    ) -> _T:
        """``pages``: about how many pages of the database ``fn`` writes (towards the next
        checkpoint, see CHECKPOINT_PAGES). ``append``: it appends events (it may go ahead
        of upkeep); ``background``: it is upkeep (see BACKGROUND_GRACE)."""
        if self._thread is None or not self._thread.is_alive():
            raise StoreUnavailable("the SQLite store is not started")
        if (
            small
            and self._queued == self._finished
            and self.small_seconds < INLINE_MAX_SECONDS
            and self._conn is not None
            and self._lock.acquire(blocking=False)
        ):
            conn = self._conn
            try:
                t0 = time.perf_counter()
                # never wait for another process's write lock here: that would hold the
                # event loop; the writer thread waits for it instead (below)
                if self._waits:
                    conn.execute("PRAGMA busy_timeout=0")
                    self._waits = False
                try:
                    value = fn(conn)
                    self._called(True)
                    return value
                except Exception as e:
                    if not _is_busy(e):
                        self._called(False)
                        raise
                    self.busy_fallbacks += 1
                    # its wait on the thread is another connection's doing, not the
                    # disk's: it does not count toward the average of small calls
                    small = False
                finally:
                    self._note(time.perf_counter() - t0)
                    self.inline_calls += 1
                    if small:  # done here (not handed to the thread after all)
                        self.pages_due += pages
                        if append:
                            self._last_append = time.perf_counter()
                    if self.warmer is not None:
                        self.warmer.touch()
                    if not self._checkpoint_queued and self._checkpoint_due(queued=False):
                        # the writer thread checkpoints, not this one (the event loop's)
                        self._checkpoint_queued = True
                        self._queued += 1
                        self._submit((_ORDINARY, _CHECKPOINT, None, None, False, 0, 0.0))
            finally:
                self._lock.release()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_T] = loop.create_future()
        kind = _BACKGROUND if background else _APPEND if append else _ORDINARY
        if not background:
            self._queued += 1
        self._submit((kind, fn, loop, fut, small, pages, time.perf_counter()))
        return await fut

    def _submit(self, job: tuple[Any, ...]) -> None:
        with self._pending_lock:
            self._pending.append(job)
        self._jobs.put(True)
        if job[0] == _APPEND:
            self._append_queued.set()

    async def stop(self) -> None:
        warmer, self.warmer = self.warmer, None
        if warmer is not None:
            await asyncio.to_thread(warmer.stop)
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)


class SQLiteStore(EventStore):
    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        durability: str = "fsync",
        migrate: bool = False,
        warm_disk_ms: float = 0.0,
        read_only: bool = False,
        accept_lost_revocations: bool = False,
    ) -> None:
        """``migrate``: upgrade an older schema at start (``palimpsest migrate``); without
        it a database that needs the rewrite of version 5 is refused with a message.
        ``accept_lost_revocations``: a revoked_users table this store had and lost is
        made again, empty, instead of stopping the start (tables.side_refusal).
        ``read_only``: only read (export, inspect, verify): see _start_read_only.
        ``warm_disk_ms``: with durability fsync, keep the disk's I/O path warm while
        writes come in, with an fdatasync every so many ms without a commit (disk_warm.py;
        the server's setting ``warm_disk_ms``); 0 = never."""
        self.path = str(path)
        #: "fsync" (synchronous=FULL, the default) or "os" (NORMAL): see base.DURABILITY
        self.durability = check_durability(durability)
        self.upgrade = migrate
        self.read_only = read_only
        self.accept_lost_revocations = accept_lost_revocations
        if read_only and (migrate or self._memory):
            raise ValueError("a read-only SQLite store is a file's, and never migrates it")
        #: told (events rewritten, events in all) as the rewrite to the compact log goes
        #: (`palimpsest migrate` shows it), on the writer thread
        self.rewrite_progress: Callable[[int, int], None] | None = None
        if not warm_disk_ms >= 0:
            raise ValueError(f"warm_disk_ms must be 0 or more, not {warm_disk_ms!r}")
        self.warm_disk_ms = warm_disk_ms
        self._db: aiosqlite.Connection | None = None
        self._writer: _Writer | None = None
        self._wsym = Symbols()  # the writer thread's
        self._sym = Symbols()  # the event loop's
        self._cursors: WebhookCursors | None = None
        self._revocations: Revocations | None = None
        self._doc_locks: DocLocks | None = None
        self._recent = RecentRows()
        #: the database file's (device, inode) when it was opened, and why writes stop
        #: once the path no longer leads to it (see _watch_file)
        self._file_id: tuple[int, int] | None = None
        self._file_gone: str | None = None
        self._watch: asyncio.Task[None] | None = None
        #: documents' turns on server changes among the processes serving the file
        self._turns = FileTurns(self.path)
        #: nothing was at the path when start() began (see abandon)
        self._new_file = False
        #: this store's start made the schema (the file held none)
        self._made_schema = False
        #: what the start found missing in the schema and made again (schema_notes)
        self._schema_notes: list[str] = []

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
        if self.read_only:
            await self._start_read_only()
            return
        try:
            if not self._memory:
                _require_directory(self.path)
                self._new_file = not _anything_at(self.path)
                if self._new_file:
                    _require_creatable(self.path)
                    make_private(self.path)
            self._writer = _Writer(self.path, self.durability)
            await self._writer.start()
            if not self._memory:
                await self._writer.call(_probe_writes)
            upgraded = await self._writer.call(self._migrate)
            self.server_salt = await self._writer.call(_salt_of)
            if upgraded and not self._memory:
                # the old rows are gone: give their pages back to the file system, and
                # from now on the pages that sealing frees (see _give_back_pages)
                await self._writer.call(
                    lambda c: (c.execute("PRAGMA auto_vacuum = INCREMENTAL"), c.execute("VACUUM"))
                )
            if not self._memory:
                await self._writer.call(lambda c: _reserve_wal(c, self.path))
                if self.warm_disk_ms > 0 and self.durability == "fsync":
                    self._writer.keep_warm(self.warm_disk_ms / 1000)
                self._db = await aiosqlite.connect(self.path, isolation_level=None)
                await self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                st = os.stat(self.path)
                self._file_id = (st.st_dev, st.st_ino)
                self._watch = asyncio.get_running_loop().create_task(self._watch_file())
        except (sqlite3.Error, OSError) as e:
            await self._stop(upkeep=False)
            raise StoreUnavailable(
                f"cannot open SQLite database {self.path!r}: {e}{_media_hint(self.path)}"
                f"{_corrupt_hint(e)}"
            ) from e
        except BaseException:
            await self._stop(upkeep=False)
            raise

    async def _start_read_only(self) -> None:
        """Open the file for reading only, leaving it byte for byte as it is.

        A store that starts as a server's writes into the file even when nothing is
        appended: the write probe, the schema steps, the WAL laid down, the free pages
        given back at stop (a backup taken online carries up to _FREE_PAGES_KEPT of them:
        `verify` turned a backup of 1.3 MB into one of 90 kB, another sha256), and the
        last connection's close folds the -wal into the file. Here there is no writer
        connection at all, and the one connection is opened with ``mode=ro``: SQLite
        reads the commits a -wal holds (a server that crashed leaves them there) but
        never checkpoints them into the file, nor removes the -wal, at close. (With no
        -wal present, SQLite lays down an empty -wal and -shm beside the file to read
        it in WAL mode, as any reader does; the database file itself is not written.)
        Every write is refused with StoreUnavailable (the ``writer`` property)."""
        uri = _read_only_uri(self.path)
        try:
            self._db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            await self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            rows = await self._db.execute_fetchall("PRAGMA user_version")
            version = int(next(iter(rows))[0])
            rows = await self._db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
            have = {r[0] for r in rows}
            kept, rebuilt = missing_tables(have)
            made: set[str] = set()
            if SIDE_MARKER in have:
                marked = await self._db.execute_fetchall(f"SELECT name FROM {SIDE_MARKER}")
                made = {r[0] for r in marked}
            if "store_salt" in have:
                salted = list(await self._db.execute_fetchall(READ_SALT))
                self.server_salt = bytes(salted[0][0]) if salted else None
        except (sqlite3.Error, OSError) as e:
            await self._stop(upkeep=False)
            raise StoreUnavailable(
                f"cannot open SQLite database {self.path!r} to read it: {e}"
                f"{_media_hint(self.path)}{_corrupt_hint(e)}"
            ) from e
        except BaseException:
            await self._stop(upkeep=False)
            raise
        self.found_schema_version = version
        if version != SCHEMA_VERSION:
            await self._stop(upkeep=False)
            if version > SCHEMA_VERSION:
                what = "newer than this version's"
                todo = "upgrade Palimpsest"
            else:
                what = "older than this version's"
                todo = (
                    f"`palimpsest migrate --db {self.path}` upgrades it; it writes: on a "
                    "backup, run it on a copy"
                )
            raise StoreError(
                f"database {self.path!r} has schema version {version}, {what} "
                f"{SCHEMA_VERSION}; this command only reads: {todo}"
            )
        if kept:
            await self._stop(upkeep=False)
            raise StoreError(refusal(f"database {self.path!r}", kept))
        if rebuilt:
            # read as empty: a TEMP table lives in this connection's own temporary
            # database, not in the file, and its name hides the missing one's
            for table in rebuilt:
                temp = REBUILT[table].replace("CREATE TABLE", "CREATE TEMP TABLE")
                await self.db.execute(temp)
            rows = await self._fetchall("SELECT COUNT(*) FROM docs WHERE base_seq > 0")
            words = rebuilt_words(rebuilt, int(rows[0][0]))
            self._schema_notes.append(
                f"{words} (read here as empty; a server's start makes it again)"
            )
        lost = lost_side_tables(have, made)
        if lost:
            then = (
                f"a server's start refuses it until `palimpsest migrate {ACCEPT_FLAG}`"
                if "revoked_users" in lost
                else "a server's start makes it again, empty"
            )
            self._schema_notes.append(f"{side_words(lost)} ({then})")
        self._file_id = await asyncio.to_thread(_file_id, self.path)

    def _migrate(self, conn: sqlite3.Connection) -> bool:
        """Create or upgrade the schema; True when the log was rewritten."""

        def look(c: sqlite3.Connection) -> tuple[int, bool]:
            # the schema's version and whether it exists, read under the write lock, in
            # one transaction: another process starting on the same new file may make the
            # schema at any moment (two servers started at once: one stopped on "table
            # already exists" when the look came before the lock, and one on "schema
            # version 0" when its two reads straddled the other's commit); a new file
            # gets the schema here
            row = c.execute("PRAGMA user_version").fetchone()
            version = int(row[0]) if row else 0
            if version or c.execute("SELECT 1 FROM sqlite_master WHERE name = 'docs'").fetchone():
                return version, False
            for stmt in FRESH:
                c.execute(stmt)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._made_schema = True
            return SCHEMA_VERSION, True

        version, made = _in_transaction(conn, "schema creation", look)
        if made:
            _in_transaction(conn, "side tables", self._side_tables)
            return False
        self.found_schema_version = version
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path!r} has schema version {version}, newer than this "
                f"server's {SCHEMA_VERSION}: upgrade Palimpsest"
            )
        if version < LAYOUT_VERSION and not self.upgrade:
            raise StoreError(
                f"database {self.path!r} has schema version {version}; this version of "
                f"Palimpsest keeps the event log in a new layout (version {LAYOUT_VERSION}). "
                f"Stop every server using it, then run `palimpsest migrate --db {self.path}` "
                "(it rewrites the log in one transaction; back the file up first)"
            )
        rewrote = False
        for v in range(version + 1, SCHEMA_VERSION + 1):

            def step(c: sqlite3.Connection, v: int = v) -> bool:
                # under the write lock: a step another process took meanwhile is done
                if int(c.execute("PRAGMA user_version").fetchone()[0]) >= v:
                    return False
                if v == LAYOUT_VERSION:
                    to_compact_log(c, self._rewrite_counter(c))
                else:
                    for stmt in OLD_STEPS[v]:
                        c.execute(stmt)
                c.execute(f"PRAGMA user_version = {v}")
                return v == LAYOUT_VERSION

            rewrote = _in_transaction(conn, f"migration to schema version {v}", step) or rewrote
        # the changefeed's deletions: a file of an older release gets the table now
        _in_transaction(conn, "deletions table", lambda c: c.execute(DELETIONS))
        _in_transaction(conn, "schema check", self._mend_tables)
        _in_transaction(conn, "side tables", self._side_tables)
        return rewrote

    def schema_notes(self) -> list[str]:
        return list(self._schema_notes)

    def _mend_tables(self, conn: sqlite3.Connection) -> None:
        """Tables dropped since (by hand, a partial restore): one nothing rebuilds stops
        the start (tables.KEPT); a cache of the log is made again, empty, and
        said as a warning (REBUILT; the README's schema steps that only add tables run
        by themselves at start). A missing snapshots table used to start a server on
        which every document's load failed, for ever."""
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        kept, rebuilt = missing_tables(have)
        if kept:
            raise StoreError(refusal(f"database {self.path!r}", kept))
        if not rebuilt:
            return
        for table in rebuilt:
            conn.execute(REBUILT[table])
        (compacted,) = conn.execute("SELECT COUNT(*) FROM docs WHERE base_seq > 0").fetchone()
        words = rebuilt_words(rebuilt, int(compacted))
        self._schema_notes.append(f"{words} (made again, empty)")
        log.warning("database %s: %s: made again, empty", self.path, words)

    def _side_tables(self, conn: sqlite3.Connection) -> None:
        """Make the side tables (revoked_users, webhooks) when missing, and note that this
        store has them (tables.SIDE_MARKER). One it had and lost (dropped by hand, a
        partial restore) used to be made again, empty, without a word on first use: now
        a lost revoked_users stops the start (unless accept_lost_revocations), a lost
        webhooks is made again with a warning (schema_notes)."""
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        made: set[str] = set()
        if SIDE_MARKER in have:
            made = {r[0] for r in conn.execute(f"SELECT name FROM {SIDE_MARKER}")}
        lost = lost_side_tables(have, made)
        if "revoked_users" in lost and not self.accept_lost_revocations:
            raise StoreError(side_refusal(f"database {self.path!r}"))
        conn.execute(SIDE_MARKER_SQL)
        for name, create in _SIDE_SQL.items():
            conn.execute(create)
            conn.execute(f"INSERT OR IGNORE INTO {SIDE_MARKER} (name) VALUES (?)", (name,))
        if lost:
            words = side_words(lost)
            self._schema_notes.append(f"{words} (made again, empty)")
            log.warning("database %s: %s: made again, empty", self.path, words)

    def _rewrite_counter(self, conn: sqlite3.Connection) -> Callable[[int], None] | None:
        tell = self.rewrite_progress
        if tell is None:
            return None
        (total,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        done = [0]

        def counted(n: int) -> None:
            done[0] += n
            tell(done[0], int(total))

        return counted

    async def schema_version(self) -> int:
        rows = await self._fetchall("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    async def identity(self) -> str | None:
        """The file itself (device and inode: whichever path leads to it), as for the
        serving lock."""
        if self._memory:
            return f"sqlite:memory:{id(self)}"
        try:
            st = await asyncio.to_thread(os.stat, self.path)  # (follows a symlink)
        except OSError:
            return None
        return f"sqlite:{st.st_dev}:{st.st_ino}"

    @contextlib.asynccontextmanager
    async def server_changes(self, doc: str) -> AsyncIterator[None]:
        """One process at a time per document (EventStore.server_changes), for processes
        that serve one file together (server/store/file_turns.py)."""
        if self._memory:
            yield
            return
        async with self._turns.turn(doc):
            yield

    async def stop(self) -> None:
        await self._stop(upkeep=True)

    async def _stop(self, *, upkeep: bool) -> None:
        self._turns.close()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if upkeep and self._writer is not None and not self._memory:
            with contextlib.suppress(Exception):  # a smaller file is nice, not needed
                await self._give_back_pages(0)
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop()

    async def abandon(self) -> list[str]:
        """Stopped without giving free pages back (an existing file is left as it was
        found: the start wrote nothing into it), then the database file removed when this
        start made it: nothing was at the path when it began, the file is still the one
        it opened, holds the schema it made and nothing else (or nothing at all), and no
        other connection has it open (SQLite removes the -wal and -shm files when the
        last one closes; while any of them, or a -journal, is there, it is left)."""
        await self._stop(upkeep=False)
        if self._memory or not self._new_file:
            return []
        self._new_file = False  # once
        return _remove_new_database(self.path, self._file_id, self._made_schema)

    @property
    def disk_warm_syncs(self) -> int | None:
        """The fdatasyncs issued so far to keep the disk warm, or None when it is not kept
        warm (durability os, in memory, ``warm_disk_ms`` 0, or not started)."""
        warmer = None if self._writer is None else self._writer.warmer
        return None if warmer is None else warmer.syncs

    @property
    def writer(self) -> _Writer:
        if self.read_only:
            raise StoreUnavailable(
                f"the SQLite store {self.path!r} is opened read-only: it writes nothing"
            )
        if self._writer is None:
            raise StoreUnavailable("the SQLite store is not started")
        return self._writer

    async def on_writer(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` with the write connection on its thread, outside any transaction
        (for checks and tests: its per-connection settings are the ones writes obey)."""
        return await self.writer.call(fn)

    async def _write(
        self, what: str, fn: Callable[[sqlite3.Connection], _T], *, background: bool = False
    ) -> _T:
        """One write transaction: one call on the writer thread. ``background``: upkeep,
        which gives way to appends (BACKGROUND_GRACE)."""
        self._refuse_if_gone()
        return await self.writer.call(
            lambda conn: _in_transaction(conn, what, fn), background=background
        )

    async def _write_interned(
        self,
        what: str,
        names: set[str],
        fn: Callable[[sqlite3.Connection, Symbols], _T],
        *,
        small: bool = False,
        pages: int = CALL_PAGES,
        append: bool = False,
    ) -> _T:
        """A write transaction whose rows name these actors and kinds by id. `small`: a
        few events' append, which may commit on the calling thread (_Writer.call);
        `pages`: about how many pages it writes; `append`: an append (ibid.)."""
        self._refuse_if_gone()

        def run(conn: sqlite3.Connection) -> _T:
            _intern(conn, self._wsym, names)
            return _in_transaction(conn, what, lambda c: fn(c, self._wsym))

        return await self.writer.call(run, small=small, pages=pages, append=append)

    #: how often the database file's path is checked (a stat, off the edit's path)
    FILE_CHECK_SECONDS = 1.0

    async def _watch_file(self) -> None:
        """Stop writing once the path no longer leads to the file we write.

        Deleted or replaced while the server runs (a clean-up script, a restore moved
        over it, a volume remounted; a copy written into the same file is not seen), the
        open file takes commits that nobody can open again: a restart loses them, and
        everything before. From then on every write is refused (StoreUnavailable): the
        committer holds the edits and /readyz says why, and clients keep what they typed
        and send it again to the restarted server."""
        while self._file_gone is None:
            await asyncio.sleep(self.FILE_CHECK_SECONDS)
            self._check_file()

    def _refuse_if_gone(self) -> None:
        if self._file_gone is not None:
            raise StoreUnavailable(self._file_gone)

    def _check_file(self) -> None:
        if self._file_id is None or self._file_gone is not None:
            return
        try:
            st = os.stat(self.path)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = None
        except OSError:
            return  # cannot tell (a permission, a hiccup of the file system): try again
        if now == self._file_id:
            return
        what = "removed" if now is None else "replaced by another file"
        self._file_gone = (
            f"the database file {self.path!r} was {what} while the server ran: writes "
            "stop, so that nothing more goes into a file nobody can open again; restore "
            "it and restart the server (clients send again what they typed)"
        )
        log.error("%s", self._file_gone)

    async def ping(self) -> None:
        self._check_file()
        self._refuse_if_gone()
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
                raise StoreError(f"SQLite query failed: {e}{_corrupt_hint(e)}") from e
        try:
            # execute and fetch in one call on the connection's thread: nothing else runs
            # on it while the statement is active (see the module's docstring)
            return list(await self.db.execute_fetchall(sql, params))
        except sqlite3.Error as e:
            raise StoreError(f"SQLite query failed: {e}{_corrupt_hint(e)}") from e

    async def _load_symbols(self) -> None:
        self._sym.add(await self._fetchall("SELECT id, name FROM symbols"))

    async def _decoded(self, read: Callable[[], Any]) -> Any:
        """A read that turns rows into events (log_layout.decoded): the symbols the
        writer connection interns reach this one's cache by loading them again."""
        return await decoded(read, self._load_symbols)

    # --- the log ---------------------------------------------------------------------

    async def append(
        self,
        batches: Sequence[tuple[str, Sequence[NewEvent]]],
        floors: Sequence[int] | None = None,
        generations: Sequence[int | None] | None = None,
        exact: Sequence[bool] | None = None,
    ) -> list[list[Event]]:
        batches = [(doc, evs) for doc, evs in batches]
        least = floors_of(batches, floors)
        gens = generations_of(batches, generations)
        exacts = exact_of(batches, exact)
        if not any(evs for _, evs in batches):
            return [[] for _ in batches]
        names = {n for _, evs in batches for ev in evs for n in (ev.actor, ev.kind)}
        inline = INLINE_EVENTS_OS if self.durability == "os" else INLINE_EVENTS
        count = sum(len(evs) for _, evs in batches)
        written: list[tuple[Any, ...]] = []
        out = await self._write_interned(
            "append", names, lambda conn, sym: _append(
                conn, batches, sym, written, least, gens, exacts
            ),
            small=count <= inline, pages=CALL_PAGES + count // EVENTS_PER_PAGE, append=True,
        )  # fmt: skip
        self._recent.note(written)  # committed
        return out

    async def end_unanswered_appends(self) -> None:
        """(EventStore.end_unanswered_appends) An append whose caller was cancelled still
        runs on the writer thread, maybe later than a read on the reader connection: a
        call handed to the thread now runs after it (the thread takes calls in order;
        only upkeep lets appends go first), so once it is done, so is that append."""
        await self.writer.call(lambda conn: None)

    async def _doc_tail(
        self, doc: str, after: int, upto: int, limit: int = -1, where: str = "",
        params: Sequence[Any] = (), desc: bool = False,
    ) -> tuple[tuple[int, int, int] | None, list[TailRow]]:  # fmt: skip
        """((doc id, head, base_seq) or None, tail rows in (after, upto]) in one statement;
        `limit` of them from the lowest seq, or with `desc` from the highest."""
        order = " DESC" if desc else ""
        # plain placeholders, the values in the statement's order (the filter's own
        # between upto and the limit): never numbered ones with a tuple (gh-117995)
        rows = await self._fetchall(
            "SELECT 0, id, head, base_seq, 0, 0, 0, NULL, NULL FROM docs WHERE name = ? "
            "UNION ALL SELECT * FROM (SELECT 1, seq, pos, ts, actor, kind, 0, data, meta "
            "FROM log WHERE doc = (SELECT id FROM docs WHERE name = ?) AND seq > ? "
            f"AND seq <= ?{where} ORDER BY seq{order} LIMIT ?)",
            (doc, doc, after, upto, *params, limit),
        )
        info = None
        tail = []
        for r in rows:
            if r[0] == 0:
                info = (int(r[1]), int(r[2]), int(r[3]))
            else:
                tail.append(TailRow(doc, r[1], r[2], r[3], r[4], r[5], r[7], r[8]))
        return info, tail

    async def _doc_segments(
        self, doc: str, doc_id: int, after: int, upto: int, where: str = "",
        params: Sequence[Any] = (),
    ) -> list[SegmentRow]:  # fmt: skip
        rows = await self._fetchall(
            "SELECT first_seq, last_seq, body, checksum FROM segments WHERE doc = ? "
            f"AND last_seq > ? AND first_seq <= ?{where} ORDER BY first_seq",
            (doc_id, after, upto, *params),
        )
        return [SegmentRow(doc, r[0], r[1], bytes(r[2]), bytes(r[3])) for r in rows]

    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[Event]:
        async def run() -> list[Event]:
            top = MAX if upto is None else upto
            info, tail = await self._doc_tail(doc, after, top, -1 if limit is None else limit)
            if info is None:
                return []
            doc_id, head, base = info
            lo = max(after, base)
            hi = min(top, head)
            if limit is not None:
                hi = min(hi, lo + limit)
            if hi <= lo:
                return []
            segs = await self._doc_segments(doc, doc_id, lo, hi)
            # a page (`limit`) decodes only its part of a segment; a version's range
            # whole segments, kept for the next version (log_layout.segment_events)
            return await assemble_off_loop(
                tail, segs, self._sym, lambda e: lo < e.seq <= hi, (lo, hi),
                None if limit is None else (limit, ANY_ROW),
            )  # fmt: skip

        result: list[Event] = await self._decoded(run)
        return result

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Event]:
        async def run() -> list[Event]:
            rows = await self._fetchall(
                "SELECT 0, pos, NULL, 0, 0, 0, 0, NULL, NULL FROM log_position WHERE id = 1 "
                "UNION ALL SELECT * FROM (SELECT 1, l.pos, d.name, l.seq, l.ts, l.actor, l.kind, "
                "l.data, l.meta FROM log l JOIN docs d ON d.id = l.doc WHERE l.pos > ? "
                "ORDER BY l.pos LIMIT ?)",
                (after, limit),
            )
            bound = 0
            tail = []
            for r in rows:
                if r[0] == 0:
                    bound = int(r[1])
                else:
                    tail.append(TailRow(r[2], r[3], r[1], r[4], r[5], r[6], r[7], r[8]))
            index = await self._fetchall(
                "SELECT first_pos, id FROM segments WHERE last_pos > ? AND first_pos <= ? "
                "ORDER BY first_pos",
                (after, bound),
            )

            async def fetch(ids: list[int]) -> dict[int, SegmentRow]:
                marks = ",".join("?" * len(ids))
                got = await self._fetchall(
                    "SELECT s.id, d.name, s.first_seq, s.last_seq, s.body, s.checksum "
                    f"FROM segments s JOIN docs d ON d.id = s.doc WHERE s.id IN ({marks})",
                    ids,
                )
                return {r[0]: SegmentRow(r[1], r[2], r[3], bytes(r[4]), bytes(r[5])) for r in got}

            return await merge_by_pos(
                tail, [(int(r[0]), int(r[1])) for r in index], fetch, self._sym, after, bound,
                limit,
            )  # fmt: skip

        result: list[Event] = await self._decoded(run)
        return result

    async def last_position(self) -> int:
        rows = await self._fetchall("SELECT pos FROM log_position WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    async def deletions(
        self, after: int = 0, upto: int | None = None, limit: int = 1000
    ) -> list[Event]:
        try:
            rows = await self._fetchall(
                "SELECT doc, seq, ts, actor, pos FROM deletions WHERE pos > ? AND pos <= ? "
                "ORDER BY pos LIMIT ?",
                (after, MAX_SEQ if upto is None else upto, limit),
            )
        except StoreError as e:
            if "no such table" in str(e.__cause__ or e):  # a file no server opened since
                return []
            raise
        return [Event(r[0], r[1], r[2], r[3], DELETED, b"", {}, r[4]) for r in rows]

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
        before: int | None = None,
        desc: bool = False,
    ) -> list[Event]:
        # filters on the tail in SQL, on segments once decoded (segments outside the time
        # range are skipped by their ts_min/ts_max)
        if self._sym.missing_names([n for n in [actor, *(kinds or [])] if n is not None]):
            await self._load_symbols()
        f = query_filter(
            self._sym, actor, kinds, since_ts, until_ts,
            lambda ids: (f" AND kind IN ({','.join('?' * len(ids))})", ids),
        )  # fmt: skip
        if f is None:
            return []

        async def run() -> list[Event]:
            rows = await self._fetchall("SELECT head, base_seq FROM docs WHERE name = ?", (doc,))
            if not rows:
                return []
            return await query_windows(
                doc, max(after, int(rows[0][1])), int(rows[0][0]), limit, f,
                self._doc_tail, self._doc_segments, self._sym, before, desc,
            )  # fmt: skip

        result: list[Event] = await self._decoded(run)
        return result

    async def seq_at(self, doc: str, ts: int) -> int:
        # the seq before the first event stamped after ts (EventStore.seq_at): sealed
        # runs come before the tail, so the first run with a later ts_max holds it if any
        async def run() -> int | None:
            rows = await self._fetchall(
                "SELECT d.id, d.head, (SELECT MIN(seq) FROM log WHERE doc = d.id AND ts > ?) "
                "FROM docs d WHERE d.name = ?",
                (ts, doc),
            )
            if not rows:
                return None
            doc_id, head, later = rows[0]
            segs = await self._fetchall(
                "SELECT first_seq, last_seq, body, checksum FROM segments WHERE doc = ? "
                "AND ts_max > ? ORDER BY first_seq LIMIT 1",
                (doc_id, ts),
            )
            if segs:
                r = segs[0]
                return seq_before(
                    decode_segment(SegmentRow(doc, r[0], r[1], bytes(r[2]), bytes(r[3]))), ts
                )
            return int(head) if later is None else int(later) - 1

        found: int | None = await self._decoded(run)
        return await base_answer(self, doc, ts, found)

    async def list_docs(self) -> list[DocInfo]:
        rows = await self._fetchall(
            "SELECT name, head, updated_ts, events_bytes, base_seq, created_ts, id FROM docs "
            "ORDER BY name"
        )
        return [DocInfo(*r) for r in rows]

    async def doc_count(self) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM docs")
        return int(rows[0][0])

    async def doc_page(self, page: DocPage) -> list[DocInfo]:
        sql, args = page_sql(page, DOC_COLUMNS, name="name", glob=lambda g: ("name GLOB ?", g))
        return [DocInfo(*r) for r in await self._fetchall(sql, args)]

    async def doc_info(self, doc: str) -> DocInfo | None:
        rows = await self._fetchall(
            "SELECT name, head, updated_ts, events_bytes, base_seq, created_ts, id FROM docs "
            "WHERE name = ?",
            (doc,),
        )
        return DocInfo(*rows[0]) if rows else None

    async def delete_doc(self, doc: str, tombstone: bytes = b"", *, by: str = "") -> bool:
        def run(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "DELETE FROM docs WHERE name = ? RETURNING id, head", (doc,)
            ).fetchone()
            if row is not None:
                db.execute("DELETE FROM log WHERE doc = ?", (row[0],))
                db.execute("DELETE FROM segments WHERE doc = ?", (row[0],))
            for table in ("snapshots", "tags", "tag_history", "derived"):
                db.execute(f"DELETE FROM {table} WHERE doc = ?", (doc,))
            if row is not None:
                ts = now_ms()
                db.execute(
                    "INSERT OR REPLACE INTO tombstones (doc, ts, state_vector) VALUES (?,?,?)",
                    (doc, ts, tombstone),
                )
                db.execute(
                    "INSERT INTO deletions (pos, doc, seq, ts, actor) VALUES (?,?,?,?,?)",
                    (_take_positions(db, 1), doc, int(row[1]), ts, by),
                )
            return row is not None

        try:
            existed = await self._write("delete", run)
        finally:
            self._recent.clear()  # rare: what it held of that document is gone
        await self.erase_wal()
        return existed

    async def erase_wal(self) -> bool:
        """Checkpoint the WAL into the file and truncate it to nothing: the frames that
        held what was deleted (its rows before the deletion zeroed them, see
        secure_delete in _open) leave the disk now, not when the frames are written over
        or the last connection closes. Whether it was done.

        A TRUNCATE checkpoint waits for every reader to be done with the WAL and holds
        the write lock meanwhile: each try runs as upkeep on the writer thread (appends
        queued go first) and waits ERASE_BUSY_MS at most for readers, so other
        documents' commits wait that long at most; between tries the writer is free.
        After ERASE_SECONDS of readers in the way it gives up, with a warning."""
        if self._memory:
            return True
        writer = self.writer

        def truncate(conn: sqlite3.Connection) -> bool:
            conn.execute(f"PRAGMA busy_timeout={ERASE_BUSY_MS}")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as e:
                if not _is_busy(e):
                    raise _store_error("checkpoint", e) from e
                busy = 1
            finally:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if busy:
                return False
            writer.pages_due = 0  # the WAL is empty
            writer.checkpoint_retry_at = None
            return True

        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + ERASE_SECONDS, 0.02
        while not await writer.call(truncate, background=True):
            if loop.time() > deadline:
                log.warning(
                    "SQLite %s: readers kept the WAL busy for %.0f s: what was just deleted "
                    "stays in %s-wal until a checkpoint empties it", self.path,
                    ERASE_SECONDS, self.path,
                )  # fmt: skip
                return False
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)
        return True

    async def tombstone(self, doc: str) -> bytes | None:
        rows = await self._fetchall("SELECT state_vector FROM tombstones WHERE doc = ?", (doc,))
        return bytes(rows[0][0]) if rows else None

    async def tombstones(self) -> dict[str, bytes]:
        rows = await self._fetchall("SELECT doc, state_vector FROM tombstones ORDER BY doc")
        return {r[0]: bytes(r[1]) for r in rows}

    async def put_tombstone(self, doc: str, tombstone: bytes) -> None:
        await self._write(
            "tombstone write",
            lambda db: db.execute(
                "INSERT OR REPLACE INTO tombstones (doc, ts, state_vector) VALUES (?,?,?)",
                (doc, now_ms(), tombstone),
            ),
        )

    # --- renaming an actor -----------------------------------------------------------

    async def rename_actor(self, old: str, new: str, rewrite: MetaRewrite) -> ActorRenamed:
        def run(db: sqlite3.Connection) -> ActorRenamed:
            ids = dict(db.execute("SELECT name, id FROM symbols WHERE name IN (?, ?)", (old, new)))
            if (
                new in ids
                or db.execute("SELECT 1 FROM tags WHERE actor = ? LIMIT 1", (new,)).fetchone()
            ):
                raise taken(new, old in ids or bool(db.execute(
                    "SELECT 1 FROM tags WHERE actor = ? LIMIT 1", (old,)).fetchone()))  # fmt: skip
            docs: set[str] = set()
            damaged_segments = 0
            if old in ids:
                uses = Uses(old, int(ids[old]))
                clash = db.execute(
                    "SELECT d.name FROM log l JOIN docs d ON d.id = l.doc WHERE l.kind = ? "
                    "LIMIT 1", (uses.symbol,)
                ).fetchone()  # fmt: skip
                if clash:
                    raise kind_clash(old, clash[0])
                docs.update(r[0] for r in db.execute(
                    "SELECT DISTINCT d.name FROM log l JOIN docs d ON d.id = l.doc "
                    "WHERE l.actor = ?", (uses.symbol,)
                ))  # fmt: skip
                for doc, body, checksum in db.execute(
                    "SELECT d.name, s.body, s.checksum FROM segments s JOIN docs d "
                    "ON d.id = s.doc ORDER BY s.id"
                ):
                    uses.segment(doc, body, checksum)
                docs |= uses.docs
                damaged_segments = uses.damaged
                db.execute("UPDATE symbols SET name = ? WHERE id = ?", (new, uses.symbol))
            tags = db.execute("UPDATE tags SET actor = ? WHERE actor = ?", (new, old)).rowcount
            tag_moves = 0
            try:  # who created, moved or deleted a tag: the name must not stay there
                tag_moves = db.execute(
                    "UPDATE tag_history SET actor = ? WHERE actor = ?", (new, old)
                ).rowcount
            except sqlite3.OperationalError as e:
                if "no such table: tag_history" not in str(e):
                    raise
            snapshots = damaged = 0
            keys = db.execute("SELECT doc, seq FROM snapshots ORDER BY doc, seq").fetchall()
            for doc, seq in keys:
                state, stored, meta = db.execute(
                    "SELECT state, checksum, meta FROM snapshots WHERE doc = ? AND seq = ?",
                    (doc, seq),
                ).fetchone()
                try:
                    row = renamed_snapshot_row(bytes(state), stored, meta, rewrite)
                except ValueError:
                    damaged += 1
                    continue
                if row is not None:
                    db.execute(
                        "UPDATE snapshots SET state = ?, checksum = ?, meta = ? "
                        "WHERE doc = ? AND seq = ?", (*row, doc, seq)
                    )  # fmt: skip
                    snapshots += 1
                    docs.add(doc)
            derived = 0
            for doc in sorted(docs):
                derived += db.execute("DELETE FROM derived WHERE doc = ?", (doc,)).rowcount
            if damaged_segments:
                log.warning("rename of an actor: %d damaged segments could not be read",
                            damaged_segments)  # fmt: skip
            return ActorRenamed(old in ids, tuple(sorted(docs)), tags, snapshots, damaged,
                                derived, tag_moves)  # fmt: skip

        def scrubbed(db: sqlite3.Connection) -> ActorRenamed:
            # what UPDATE and DELETE free is overwritten with zeros, not left in the page
            was = db.execute("PRAGMA secure_delete").fetchone()[0]
            db.execute("PRAGMA secure_delete = ON")
            try:
                done = _in_transaction(db, "actor rename", run)
                if self.path != ":memory:":
                    # the old name may also be in pages freed before (retention, deletes)
                    # and in the -wal: the file rewritten, the -wal emptied
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    db.execute("VACUUM")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                return done
            except sqlite3.Error as e:
                raise _store_error("actor rename", e) from e
            finally:
                db.execute(f"PRAGMA secure_delete = {int(was)}")

        self._refuse_if_gone()
        done = await self.writer.call(scrubbed)
        self._wsym.rename(old, new)
        self._sym.rename(old, new)
        self._recent.clear()
        return done

    # --- restamping (palimpsest restamp) ---------------------------------------------

    async def restamp(self, doc: str, after: int, stamp: Stamp, rewrite: MetaRewrite) -> Restamped:
        def run(db: sqlite3.Connection) -> Restamped:
            row = db.execute(
                "SELECT id, created_ts, updated_ts FROM docs WHERE name = ?", (doc,)
            ).fetchone()
            if row is None:
                return Restamped()
            doc_id, created, updated = (int(v) for v in row)
            tail = db.execute(
                "SELECT seq, ts FROM log WHERE doc = ? AND ts > ?", (doc_id, after)
            ).fetchall()
            db.executemany(
                "UPDATE log SET ts = ? WHERE doc = ? AND seq = ?",
                [(stamp(int(ts)), doc_id, seq) for seq, ts in tail],
            )
            events = len(tail)
            for seg_id, body, stored in db.execute(
                "SELECT id, body, checksum FROM segments WHERE doc = ? AND ts_max > ?",
                (doc_id, after),
            ).fetchall():
                seg, n = restamped_segment(doc, bytes(body), bytes(stored), after, stamp)
                db.execute(
                    "UPDATE segments SET body = ?, checksum = ?, ts_min = ?, ts_max = ? "
                    "WHERE id = ?", (seg.blob, seg.checksum, seg.ts_min, seg.ts_max, seg_id),
                )  # fmt: skip
                events += n
            db.execute(
                "UPDATE docs SET created_ts = ?, updated_ts = ? WHERE id = ?",
                (stamp(created) if created > after else created,
                 stamp(updated) if updated > after else updated, doc_id),
            )  # fmt: skip
            tags = db.execute(
                "SELECT name, ts FROM tags WHERE doc = ? AND ts > ?", (doc, after)
            ).fetchall()
            db.executemany(
                "UPDATE tags SET ts = ? WHERE doc = ? AND name = ?",
                [(stamp(int(ts)), doc, name) for name, ts in tags],
            )
            try:  # the records of the tags' changes, stamped by the same clock
                moves = db.execute(
                    "SELECT name, n, ts FROM tag_history WHERE doc = ? AND ts > ?", (doc, after)
                ).fetchall()
            except sqlite3.OperationalError as e:
                if "no such table: tag_history" not in str(e):
                    raise
                moves = []
            db.executemany(
                "UPDATE tag_history SET ts = ? WHERE doc = ? AND name = ? AND n = ?",
                [(stamp(int(ts)), doc, name, n) for name, n, ts in moves],
            )
            snapshots = 0
            seqs = [r[0] for r in db.execute("SELECT seq FROM snapshots WHERE doc = ?", (doc,))]
            for seq in seqs:
                ts, state, stored, meta = db.execute(
                    "SELECT ts, state, checksum, meta FROM snapshots WHERE doc = ? AND seq = ?",
                    (doc, seq),
                ).fetchone()
                changed = restamped_snapshot_row(
                    int(ts), bytes(state), stored, meta, after, stamp, rewrite
                )
                if changed is not None:
                    db.execute(
                        "UPDATE snapshots SET ts = ?, state = ?, checksum = ?, meta = ? "
                        "WHERE doc = ? AND seq = ?", (*changed, doc, seq),
                    )  # fmt: skip
                    snapshots += 1
            return Restamped(events, snapshots, len(tags), len(moves))

        self._refuse_if_gone()
        done = await self.writer.call(lambda db: _in_transaction(db, "restamp", run))
        self._recent.clear()  # the rows it kept carry the old ts
        return done

    # --- sealing ---------------------------------------------------------------------

    async def seal(self, doc: str, *, run: int = S.SEGMENT_EVENTS, rest: int = 0) -> int:
        sealed_now = 0
        while True:
            rows = await self._fetchall("SELECT id, sealed, head FROM docs WHERE name = ?", (doc,))
            waiting = int(rows[0][2]) - int(rows[0][1]) if rows else 0
            n = run if waiting >= run else waiting if rest and waiting >= rest else 0
            if not n:
                if rest and rows:  # gone idle: what is left waits in the log (RecentRows)
                    self._recent.forget(int(rows[0][0]))
                return sealed_now
            doc_id, sealed = int(rows[0][0]), int(rows[0][1])
            rows = self._recent.run(doc_id, sealed + 1, n) or await self._fetchall(
                "SELECT seq, pos, ts, actor, kind, data, meta FROM log WHERE doc = ? "
                "AND seq > ? ORDER BY seq LIMIT ?",
                (doc_id, sealed, n),
            )
            # the columns and their compression off the event loop (lzma lets go of the
            # GIL): a segment is a few ms of CPU that live edits need not wait behind
            cols = await asyncio.to_thread(run_columns, rows, sealed, n)
            if cols is None:
                now = await self._fetchall("SELECT sealed FROM docs WHERE id = ?", (doc_id,))
                if not now:
                    # the document was deleted (or replaced: its name has another row)
                    # since the first read, its tail with it: nothing to seal, and
                    # nothing broken
                    self._recent.forget(doc_id)
                    log.debug("not sealing %s: deleted or replaced while sealing", doc)
                    return sealed_now
                if int(now[0][0]) > sealed:
                    # another sealer (process) sealed it between the two reads: go on
                    # from where that one stopped
                    self._recent.forget(doc_id)
                    continue
                log.warning("cannot seal %s after seq %d: its tail is not a whole run", doc, sealed)
                return sealed_now
            seg = await asyncio.to_thread(S.encode, cols)

            def write(
                db: sqlite3.Connection, seg: S.Sealed = seg, doc_id: int = doc_id,
                sealed: int = sealed, n: int = n,
            ) -> None:  # fmt: skip
                now = db.execute("SELECT sealed FROM docs WHERE id = ?", (doc_id,)).fetchone()
                if now is None or now[0] != sealed:
                    raise _Raced
                gone = db.execute(
                    "DELETE FROM log WHERE doc = ? AND seq > ? AND seq <= ?",
                    (doc_id, sealed, seg.last_seq),
                ).rowcount
                if gone != n:
                    raise _Raced
                insert_segment(db, doc_id, seg)
                db.execute("UPDATE docs SET sealed = ? WHERE id = ?", (seg.last_seq, doc_id))

            try:
                await self._write("seal", write, background=True)
            except _Raced:
                self._recent.forget(doc_id)  # the next try reads what the log holds
                return sealed_now
            self._recent.sealed(doc_id, seg.last_seq)
            sealed_now += n

    async def seal_due(self, *, run: int = S.SEGMENT_EVENTS) -> int:
        rows = await self._fetchall(
            "SELECT name FROM docs WHERE head - sealed >= ? ORDER BY name", (run,)
        )
        total = 0
        for (doc,) in rows:
            total += await self.seal(doc, run=run)
        if total:
            await self._give_back_pages(_FREE_PAGES_KEPT)
        return total

    async def _give_back_pages(self, keep: int) -> None:
        """Sealing leaves the pages of the tail rows it moved free in the file, where new
        tail rows reuse them; past `keep` free pages, give the rest back (auto_vacuum is
        INCREMENTAL in every database this code created or migrated)."""

        def run(conn: sqlite3.Connection) -> None:
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            if free > keep:
                # executescript steps it to the end (execute() would free one page only)
                conn.executescript(f"PRAGMA incremental_vacuum({int(free) - keep});")

        await self.writer.call(run, background=True)

    async def segment_damage(self, doc: str) -> list[str]:
        rows = await self._fetchall(
            "SELECT s.first_seq, s.last_seq, s.body, s.checksum FROM segments s "
            "JOIN docs d ON d.id = s.doc WHERE d.name = ? ORDER BY s.first_seq",
            (doc,),
        )
        out = []
        for r in rows:
            why = S.damage(bytes(r[2]), bytes(r[3]))
            if why is None:
                try:
                    c = S.decode(bytes(r[2]), bytes(r[3]))
                except S.SegmentDamaged as e:
                    why = str(e)
                else:
                    if (c.first_seq, c.last_seq) != (r[0], r[1]):
                        why = f"it holds seqs {c.first_seq}..{c.last_seq}"
            if why is not None:
                out.append(f"segment {r[0]}..{r[1]}: {why}")
        return out

    # --- snapshots -------------------------------------------------------------------

    async def put_snapshot(
        self,
        doc: str,
        seq: int,
        state: bytes,
        meta: dict[str, Any] | None = None,
        *,
        base: BaseMark | None = None,
        generation: int | None = None,
    ) -> bool:
        row = (doc, seq, now_ms(), *await snapshot_row_async(state, meta))

        def run(db: sqlite3.Connection) -> bool:
            # in the write's transaction (BEGIN IMMEDIATE): a compaction by another
            # process on this file is before it or after it, never in between; so is a
            # deletion (no docs row: head 0), which a room's snapshot must not outlive,
            # and a replace (copy --replace: another docs row, another generation)
            if generation is not None:
                got = db.execute("SELECT id FROM docs WHERE name = ?", (doc,)).fetchone()
                if got is None or int(got[0]) != generation:
                    return False
            if base is not None:
                mark, head = _base_and_head(db, doc)
                if seq <= base[0] or mark != base or head < seq:
                    return False
            db.execute(_PUT_SNAPSHOT, row)
            return True

        return await self._write("snapshot write", run)

    async def compaction_bases(self, docs: Sequence[str]) -> dict[str, BaseMark]:
        out = dict.fromkeys(docs, NO_BASE)
        for i in range(0, len(docs), 500):  # SQLite's bound parameters are limited
            chunk = list(docs[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetchall(_BASE_MARKS_SQL + f"WHERE d.name IN ({marks})", chunk)
            out.update({r[0]: _as_mark(r[1], r[2]) for r in rows})
        return out

    async def generations(self, docs: Sequence[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = dict.fromkeys(docs)
        for i in range(0, len(docs), 500):  # SQLite's bound parameters are limited
            chunk = list(docs[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetchall(f"SELECT name, id FROM docs WHERE name IN ({marks})", chunk)
            out.update({r[0]: int(r[1]) for r in rows})
        return out

    async def latest_snapshot(self, doc: str, at_most: int | None = None) -> Snapshot | None:
        # newest first, one blob per statement: a damaged one is skipped without reading
        # them all, and no cursor stays open between them (see the module's docstring)
        bound = at_most if at_most is not None else MAX
        while True:
            rows = await self._fetchall(
                "SELECT doc, seq, ts, state, checksum, meta FROM snapshots "
                "WHERE doc = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
                (doc, bound),
            )
            if not rows:
                return None
            r = rows[0]
            snap = snapshot_from_row(r[0], r[1], r[2], bytes(r[3]), r[4], r[5])
            if snap is not None:
                return snap
            bound = int(r[1]) - 1

    async def snapshots(self, doc: str) -> list[SnapshotInfo]:
        rows = await self._fetchall(
            "SELECT doc, seq, ts, state, checksum, meta FROM snapshots WHERE doc = ? ORDER BY seq",
            (doc,),
        )
        return [snapshot_info(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    async def compact(
        self,
        doc: str,
        before: int,
        state: bytes,
        *,
        above: Mapping[int, tuple[bytes, dict[str, Any]]] | None = None,
    ) -> int:
        packed = await snapshot_row_async(state, {"base": True})
        refolded = [
            (doc, seq, now_ms(), *await snapshot_row_async(st, meta))
            for seq, (st, meta) in sorted((above or {}).items())
            if seq > before
        ]

        def run(db: sqlite3.Connection) -> int:
            db.execute(_PUT_SNAPSHOT, (doc, before, now_ms(), *packed))
            db.execute("DELETE FROM snapshots WHERE doc = ? AND seq < ?", (doc, before))
            if above is not None:  # folded again from this base (a purge): all at once
                db.execute("DELETE FROM snapshots WHERE doc = ? AND seq > ?", (doc, before))
                db.executemany(_PUT_SNAPSHOT, refolded)
            # derived data names what the folded events did (the attribution index: who
            # wrote what): built again from the base
            db.execute("DELETE FROM derived WHERE doc = ?", (doc,))
            row = db.execute("SELECT id FROM docs WHERE name = ?", (doc,)).fetchone()
            if row is None:
                return 0
            doc_id = row[0]
            removed = db.execute(
                "DELETE FROM log WHERE doc = ? AND seq <= ?", (doc_id, before)
            ).rowcount
            for sid, first, last, body, check in db.execute(
                "SELECT id, first_seq, last_seq, body, checksum FROM segments "
                "WHERE doc = ? AND first_seq <= ?",
                (doc_id, before),
            ).fetchall():
                if last <= before:
                    db.execute("DELETE FROM segments WHERE id = ?", (sid,))
                    removed += last - first + 1
                    continue
                # the segment across the cut keeps its events after it
                c = decode_segment(SegmentRow(doc, first, last, bytes(body), bytes(check)))
                k = before - first + 1
                rest = S.encode(S.Columns(before + 1, c.ts[k:], c.pos[k:], c.actor[k:],
                                          c.kind[k:], c.meta[k:], c.updates[k:]))  # fmt: skip
                db.execute("DELETE FROM segments WHERE id = ?", (sid,))
                insert_segment(db, doc_id, rest)
                removed += k
            db.execute(
                "UPDATE docs SET base_seq = MAX(base_seq, ?), sealed = MAX(sealed, ?), "
                "events_bytes = (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM log WHERE doc = ?)"
                " + (SELECT COALESCE(SUM(raw_bytes), 0) FROM segments WHERE doc = ?) "
                "WHERE id = ?",
                (before, before, doc_id, doc_id, doc_id),
            )
            return int(removed)

        try:
            return await self._write("compact", run)
        finally:
            self._recent.clear()

    # --- named versions --------------------------------------------------------------

    async def put_tag(self, doc: str, name: str, seq: int, actor: str, *, move: bool = True) -> Tag:
        tag = Tag(doc, name, seq, now_ms(), actor)

        def write(db: sqlite3.Connection) -> Tag:
            old = db.execute(
                "SELECT seq FROM tags WHERE doc = ? AND name = ?", (doc, name)
            ).fetchone()
            verb = "INSERT OR REPLACE" if move else "INSERT OR IGNORE"
            # its ts raised to the document's last event's, as a snapshot's
            db.execute(
                f"{verb} INTO tags (doc, name, seq, ts, actor) VALUES (?, ?, ?, "
                "MAX(?, COALESCE((SELECT updated_ts FROM docs WHERE name = ?), 0)), ?)",
                (tag.doc, tag.name, tag.seq, tag.ts, tag.doc, tag.actor),
            )
            row = db.execute(
                "SELECT doc, name, seq, ts, actor FROM tags WHERE doc = ? AND name = ?",
                (doc, name),
            ).fetchone()
            stored = Tag(*row)
            was = None if old is None else int(old[0])
            if stored.seq != was:  # (created, or moved: a name left where it was is no change)
                action = "create" if was is None else "move"
                db.execute(TAG_MOVE_INSERT, (doc, name, doc, name, stored.ts, stored.actor,
                                             action, stored.seq, was))  # fmt: skip
            return stored

        return await self._write("tag write", write)

    async def tags(self, doc: str) -> list[Tag]:
        rows = await self._fetchall(
            "SELECT doc, name, seq, ts, actor FROM tags WHERE doc = ? ORDER BY seq, name", (doc,)
        )
        return [Tag(*r) for r in rows]

    async def delete_tag(self, doc: str, name: str, actor: str = "") -> bool:
        def run(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "DELETE FROM tags WHERE doc = ? AND name = ? RETURNING seq", (doc, name)
            ).fetchone()
            if row is None:
                return False
            (ts,) = db.execute(
                "SELECT MAX(?, COALESCE((SELECT updated_ts FROM docs WHERE name = ?), 0))",
                (now_ms(), doc),
            ).fetchone()
            db.execute(TAG_MOVE_INSERT, (doc, name, doc, name, ts, actor, "delete", None,
                                         int(row[0])))  # fmt: skip
            return True

        return await self._write("tag delete", run)

    async def tag_history(self, doc: str, name: str | None = None) -> list[TagMove]:
        query, args = (TAG_MOVES, (doc,)) if name is None else (TAG_MOVES_OF_ONE, (doc, name))
        try:
            rows = await self._fetchall(query, args)
        except StoreError as e:
            # a file of an older release opened only to read (the table is made when a
            # server or a writing command opens it): no change recorded yet
            if "no such table: tag_history" not in str(e):
                raise
            return []
        return [TagMove(r[0], r[1], int(r[2]), r[3], r[4], _int_or_none(r[5]),
                        _int_or_none(r[6])) for r in rows]  # fmt: skip

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
        keep_positions: bool = False,
        tombstone: bytes | None = None,
        replacing: tuple[int | None, int] | None = None,
        tag_moves: Sequence[TagMove] = (),
    ) -> None:
        names = {n for e in events for n in (e.actor, e.kind)}
        events = rising(events)
        last_ts = max(info.updated_ts or 0, events[-1].ts if events else 0)

        def run(db: sqlite3.Connection, symbols: Symbols) -> None:
            # (a write transaction: no other connection's append comes before its end)
            old = db.execute("SELECT id, head FROM docs WHERE name = ?", (info.doc,)).fetchone()
            if old is not None and not replace:
                raise StoreError(f"document {info.doc!r} already exists in the target")
            if replacing is not None:
                check_replacing(info.doc, replacing, *(old or (None, None)))
            if old is not None:
                db.execute("DELETE FROM docs WHERE id = ?", (old[0],))
                db.execute("DELETE FROM log WHERE doc = ?", (old[0],))
                db.execute("DELETE FROM segments WHERE doc = ?", (old[0],))
            for table in ("snapshots", "tags", "derived"):
                db.execute(f"DELETE FROM {table} WHERE doc = ?", (info.doc,))
            try:  # (a replaced document's records go with its tags)
                db.execute("DELETE FROM tag_history WHERE doc = ?", (info.doc,))
            except sqlite3.OperationalError as e:
                if tag_moves or "no such table: tag_history" not in str(e):
                    raise
            created = min((e.ts for e in events), default=info.updated_ts or now_ms())
            if keep_positions:
                fresh = list(events)
                _refuse_taken(db, [e.pos for e in events])
                if events:
                    _carry_positions(db, max(e.pos for e in events))
            else:
                first = _take_positions(db, len(events)) if events else 0
                fresh = [dataclasses.replace(e, pos=first + i) for i, e in enumerate(events)]
            whole = runs(fresh, info.base_seq + 1)
            sealed = fresh[whole - 1].seq if whole else info.base_seq
            (doc_id,) = db.execute(
                "INSERT INTO docs (name, head, base_seq, sealed, created_ts, updated_ts, "
                "events_bytes) VALUES (?,?,?,?,?,?,?) RETURNING id",
                (info.doc, info.head, info.base_seq, sealed, created,
                 last_ts or created, sum(len(e.update) for e in events)),
            ).fetchone()  # fmt: skip
            for i in range(0, whole, S.SEGMENT_EVENTS):
                insert_segment(db, doc_id, S.encode(columns(fresh[i : i + S.SEGMENT_EVENTS],
                                                            symbols)))  # fmt: skip
            if fresh[whole:]:
                insert_tail(db, doc_id, fresh[whole:], symbols)
            db.executemany(
                "INSERT INTO snapshots (doc, seq, ts, state, checksum, meta) "
                "VALUES (?,?,?,?,?,?)",
                [(s.doc, s.seq, s.ts, *snapshot_row(s.state, s.meta)) for s in snapshots],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO tags (doc, name, seq, ts, actor) VALUES (?,?,?,?,?)",
                [(t.doc, t.name, t.seq, t.ts, t.actor) for t in tags],
            )
            db.executemany(TAG_MOVE_COPY, tag_moves_numbered(info.doc, tag_moves))
            if tombstone is not None:
                db.execute(
                    "INSERT OR REPLACE INTO tombstones (doc, ts, state_vector) VALUES (?,?,?)",
                    (info.doc, now_ms(), tombstone),
                )

        try:
            await self._write_interned("import", names, run)
        finally:
            self._recent.clear()

    async def import_deletions(self, records: Sequence[Event]) -> int:
        def run(db: sqlite3.Connection) -> int:
            written = 0
            for r in records:
                have = db.execute(
                    "SELECT doc, seq FROM deletions WHERE pos = ?", (r.pos,)
                ).fetchone()
                if have is not None:
                    if tuple(have) != (r.doc, r.seq):
                        raise StoreError(f"position {r.pos} is taken in the target by the "
                                         f"deletion of {have[0]!r}")  # fmt: skip
                    continue
                _refuse_taken(db, [r.pos])
                db.execute(
                    "INSERT INTO deletions (pos, doc, seq, ts, actor) VALUES (?,?,?,?,?)",
                    (r.pos, r.doc, r.seq, r.ts, r.actor),
                )
                written += 1
            if records:
                _carry_positions(db, max(r.pos for r in records))
            return written

        return await self._write("deletions import", run) if records else 0

    async def carry_positions(self, last: int) -> None:
        await self._write("position carry", lambda db: _carry_positions(db, last))

    # --- retention and derived data ------------------------------------------------------

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> int:
        def run(db: sqlite3.Connection) -> int:
            cur = db.executemany(
                "DELETE FROM snapshots WHERE doc = ? AND seq = ?", [(doc, s) for s in seqs]
            )
            return int(cur.rowcount)

        return await self._write("snapshot delete", run, background=True) if seqs else 0

    async def put_derived(self, doc: str, kind: str, seq: int, data: bytes) -> None:
        row = (doc, kind, seq, now_ms(), data, checksum(data))
        await self._write(
            "derived data write",
            background=True,
            fn=lambda db: db.execute(
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

    def doc_locks(self) -> DocLocks:
        if self._doc_locks is None:
            self._doc_locks = SQLiteDocLocks(self)
        return self._doc_locks

    def revocations(self) -> Revocations:
        if self._revocations is None:
            self._revocations = SQLiteRevocations(self)
        return self._revocations

    def webhook_cursors(self) -> WebhookCursors:
        if self._cursors is None:
            self._cursors = SQLiteCursors(self)
        return self._cursors


def events_in_file(path: str | Path, doc: str) -> list[Event]:
    """A document's events read straight from a database file (tail and segments, in one
    read transaction), without a store: for tools and tests that look behind a running
    server's back. Raises StoreError for a damaged segment, as the store does."""
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        conn.execute("BEGIN")
        symbols = Symbols()
        symbols.add(conn.execute("SELECT id, name FROM symbols"))
        row = conn.execute("SELECT id FROM docs WHERE name = ?", (doc,)).fetchone()
        if row is None:
            return []
        tail = [
            TailRow(doc, *r)
            for r in conn.execute(
                "SELECT seq, pos, ts, actor, kind, data, meta FROM log WHERE doc = ? ORDER BY seq",
                (row[0],),
            )
        ]
        segs = [
            SegmentRow(doc, r[0], r[1], bytes(r[2]), bytes(r[3]))
            for r in conn.execute(
                "SELECT first_seq, last_seq, body, checksum FROM segments WHERE doc = ? "
                "ORDER BY first_seq",
                (row[0],),
            )
        ]
        return assemble(tail, segs, symbols, lambda e: True)
    finally:
        conn.close()
