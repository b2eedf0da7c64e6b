"""PostgreSQL, for several server processes sharing one log (through asyncpg).

Seqs stay gap-free and unique under concurrent appenders in different processes: an
append bumps each document's ``docs.head`` with ``INSERT … ON CONFLICT DO UPDATE SET
head = head + n RETURNING head``, which holds that row's lock until the transaction
commits, so two appenders to one document take turns and a rolled-back append gives its
seqs back. Documents are locked in name order, so multi-document batches cannot
deadlock each other; a deadlock or serialization failure is retried anyway.

Snapshots from several processes: :meth:`PostgresStore.put_snapshot_if_due` takes a
per-document transaction-scoped advisory lock (``pg_try_advisory_xact_lock``) and skips
the write when another process holds it, or when a valid snapshot within ``min_gap``
events already exists. So one process at a time writes a document's snapshots and two
processes with the same document open do not both checkpoint it.

The URL may carry ``?schema=NAME``: the tables then live in that schema (created if
missing), which lets several test runs share one database.

Connection failures (the server restarting, the network) become
:class:`~server.errors.StoreUnavailable`; the pool reconnects by itself on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import StoreError, StoreUnavailable, described
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
from .doc_locks import DocLocks, PostgresDocLocks
from .doc_pages import DOC_COLUMNS, DocPage, like_of, numbered, page_sql
from .log_layout import (
    ANY_ROW,
    LAYOUT_VERSION,
    MAX,
    RecentRows,
    SegmentRow,
    Symbols,
    TailRow,
    assemble_off_loop,
    base_answer,
    decode_segment,
    decoded,
    merge_by_pos,
    query_filter,
    query_windows,
    restamped_segment,
    run_columns,
    seq_before,
)
from .postgres_schema import (
    OLD_STEPS,
    SCHEMA_VERSION,
    SIDE_TABLES,
    build_indexes,
    create_fresh,
    ensure_indexes,
    insert_segments,
    read_salt,
    to_compact_log,
    write_log,
)
from .postgres_schema import REBUILT as PG_REBUILT
from .revocations import PostgresRevocations, Revocations
from .sql_cursors import PostgresCursors
from .tables import (
    SIDE,
    SIDE_MARKER,
    SIDE_MARKER_SQL,
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

log = logging.getLogger("palimpsest.store.postgres")

#: events sealed by this process between two VACUUMs of the tail's table
_VACUUM_EVERY = 4096
#: when a document goes idle, the tail's indexes are rebuilt (REINDEX CONCURRENTLY) if
#: they take more than _INDEX_BYTES_PER_ROW per live row and this many bytes more:
#: B-tree pages emptied by sealing are not given back by VACUUM (measured: 10-14 MB of
#: indexes over an empty tail after automerge-paper)
_REINDEX_SLACK = 1 << 20
#: the two indexes of a tail row, (doc, seq) and pos, take ~40 bytes together when
#: packed; twice that before a rebuild is worth it
_INDEX_BYTES_PER_ROW = 80
#: the idle VACUUM of the tail is tried again this many times, this many seconds apart,
#: while rows it could not remove yet remain, or while the table keeps pages its rows do
#: not need (see _vacuum_tail)
_IDLE_VACUUM_RETRIES = 5
_IDLE_VACUUM_PAUSE = 0.5
#: "pages its rows do not need": more than this many bytes per live tail row, plus
#: _TRUNCATE_SLACK (a tail row of a keystroke takes ~100 bytes with its tuple header)
_TAIL_BYTES_PER_ROW = 400
_TRUNCATE_SLACK = 1 << 20
_IDLE_VACUUM = "VACUUM (INDEX_CLEANUP ON) log"
#: the tables a deletion leaves dead rows of the document in (VACUUM takes each one's
#: TOAST table too), vacuumed after it (PostgresStore._vacuum_deleted), and how long that
#: VACUUM may take (s) and the store's stop waits for one under way
_DELETED_TABLES = "log, segments, snapshots, derived, tags, tag_history, docs"
_DELETED_VACUUM_TIMEOUT = 600.0
_DELETED_VACUUM_STOP_WAIT = 10.0
#: see PostgresStore.reclaim_snapshots
_SNAPSHOT_SLACK = 1.25
_SNAPSHOT_REWRITE_MAX = 16 << 20
_SNAPSHOT_REWRITE_EVERY = 60.0
#: the advisory lock that keeps two processes from rebuilding the tail's indexes at once
_REINDEX_LOCK = 0x50616C69 - 2


class _Raced(Exception):
    """A seal found its run changed under it (another sealer, a compaction, a deletion)."""


_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: advisory lock namespace (first key of the two-int form) for snapshot writers
_SNAPSHOT_LOCK = 0x50616C69  # "Pali"
#: advisory lock namespace (two-int form, the second key ``hashtext(schema)``) for
#: serving a schema (server/serving_lock.py)
SERVING_LOCK = _SNAPSHOT_LOCK + 1
#: advisory lock namespace (two-int form, the second key ``hashtext('schema/doc')``, the
#: schema as PostgreSQL resolved it: PostgresStore.resolved_schema) for a document's server
#: changes (PostgresStore.server_changes)
_CHANGE_LOCK = _SNAPSHOT_LOCK + 2
#: with hashtext(doc): a document's tag writes, one at a time (PostgresStore.put_tag)
_TAG_LOCK = _SNAPSHOT_LOCK + 5


def _numbered(sql: str) -> str:
    """A statement written with ``?`` placeholders for both SQL stores, as asyncpg takes
    it ($1, $2, ...)."""
    numbers = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _m: f"${next(numbers)}", sql)


_RETRIES = 5
#: SQL: a snapshot row's checksum holds, in either form (see base.snapshot_checksum)
_VALID_SNAPSHOT_SQL = (
    "checksum IN (encode(sha256(state), 'hex'), encode(sha256(state), 'hex') || ':' || "
    "encode(sha256(convert_to(meta, 'UTF8')), 'hex'))"
)

T = TypeVar("T")

#: errors that mean "the server cannot be reached now"; the pool reconnects later
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    # a pooled connection left mid-operation when its backend was terminated ("cannot
    # switch to state 12; another operation is in progress"): the next one is fresh
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.InvalidCatalogNameError,  # the database is not there (yet)
    asyncpg.exceptions.ObjectInUseError,
    # the server answers but cannot write now (disk full, out of memory, I/O error,
    # read-only): edits held by the committer are retried, not refused
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.PostgresIOError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)
#: end_unanswered_appends waits this long for the backends it ended to be gone, asking
#: this often (seconds)
_UNANSWERED_WAIT = 5.0
_UNANSWERED_POLL = 0.02
#: those of the backends $1 still there: ours (role, pool), not this one
_UNANSWERED_SQL = (
    "FROM pg_stat_activity WHERE pid = ANY($1::int[]) AND pid <> pg_backend_pid() "
    "AND usename = current_user AND application_name = 'palimpsest'"
)
_RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


#: how long opening a connection may take (s): the TCP connect, TLS, the login
CONNECT_TIMEOUT = 10.0

#: TCP keepalive on every long-lived connection to PostgreSQL (the pools', the serving
#: lock's, the index builder's): the first probe after this many seconds idle, then one
#: every KEEPALIVE_INTERVAL, the connection given up after KEEPALIVE_COUNT unanswered.
#: A connection whose peer went without a word (a NAT or firewall that forgot it: no RST,
#: no FIN) is then found dead while it idles in the pool, within about a minute, instead
#: of being handed to the next command (the kernel's default: the first probe after 2 h),
#: which held every document of the process for the command timeout and the cancel's.
#: (A command sent on such a connection is bounded by the command timeout:
#: PALIMPSEST_PG_COMMAND_TIMEOUT.)
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def keep_alive(conn: asyncpg.Connection) -> None:
    """Turn TCP keepalive on for `conn` (see KEEPALIVE_IDLE). asyncpg has no option for
    it (libpq's ``keepalives*`` parameters are not its), so it is set on the socket of the
    connection's transport; a Unix socket has none to set."""
    sock = conn._transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        opt = getattr(socket, name, None)
        if opt is not None:  # (Linux names them all; others some)
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)


async def _keep_alive(conn: asyncpg.Connection) -> None:
    keep_alive(conn)  # (a pool's init)


@contextlib.contextmanager
def opening() -> Iterator[None]:
    """Connecting's errors as the user is told them: PostgreSQL unavailable (a start may
    pass later) or refusing us (StoreError). The store's start and the serving lock's
    connection (server/serving_lock.py) say the same."""
    try:
        yield
    except _UNAVAILABLE as e:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL: {described(e, CONNECT_TIMEOUT)}"
        ) from e
    except asyncpg.PostgresError as e:
        raise StoreError(f"cannot open the PostgreSQL store: {described(e)}") from e


async def schema_version_at(dsn: str, schema: str | None) -> int:
    """The schema version of the store in `schema` (None: the role's search_path), 0
    when it has none yet, read without writing anything (``palimpsest migrate`` looks
    before it decides whether a server serving it is in the way)."""
    settings = {"application_name": f"palimpsest migrate pid {os.getpid()}"}
    if schema:
        settings["search_path"] = schema
    with opening():
        conn = await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT, server_settings=settings, statement_cache_size=0
        )
    try:
        if await conn.fetchval("SELECT to_regclass('palimpsest_schema')") is None:
            return 0
        return int(await conn.fetchval("SELECT max(version) FROM palimpsest_schema") or 0)
    finally:
        await conn.close()


def split_url(url: str) -> tuple[str, str | None]:
    """The DSN for asyncpg and the schema named by ``?schema=`` (if any)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    rest = []
    for k, v in query:
        if k == "schema":
            schema = v
        else:
            rest.append((k, v))
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    if dsn.startswith("postgres://"):
        dsn = "postgresql://" + dsn[len("postgres://") :]
    return dsn, schema


#: a document's last event's ts, which a snapshot's and a tag's ts are raised to (after
#: a clock stepped back, as an event's: EventStore.append)
_DOC_TS_FLOOR = "COALESCE((SELECT updated_ts FROM docs WHERE name = $1), 0)"


#: how long a new connection's first statement may wait for a session (s): a pooler whose
#: pool is full keeps it waiting (PgBouncer: until query_wait_timeout, 120 s by default)
SESSION_WAIT = 10.0


#: the connections a server process opens to PostgreSQL at most, for a pool size
#: (PALIMPSEST_PG_POOL_SIZE): the main pool and the turns' pool, the serving lock's and,
#: for a moment at start, the index builder's
def connections_per_process(pool_size: int) -> int:
    return 2 * pool_size + 2


def no_session(e: BaseException, pool_size: int | None = None) -> StoreUnavailable:
    """What a new connection that got no session in time tells the operator. PgBouncer
    giving up (query_wait_timeout) is a full pool; a timeout of ours is one of two
    things that look the same from here: the way to PostgreSQL is slow or stalled, or a
    pooler keeps the connection waiting for a session. Both are said, and the pool size
    only as the remedy of the second."""
    n = (
        f"{connections_per_process(pool_size)} (2 × PALIMPSEST_PG_POOL_SIZE {pool_size} + 2)"
        if pool_size is not None
        else "2 × PALIMPSEST_PG_POOL_SIZE + 2 (22 by default)"
    )
    pooler = (
        "(PgBouncer: pool_size, max_db_connections, max_user_connections; it gives up "
        "after query_wait_timeout)"
    )
    remedy = (
        f"a server process opens up to {n} connections: lower PALIMPSEST_PG_POOL_SIZE, or "
        "give the pool room for every process (docs/scaleout.md)"
    )
    if "query_wait_timeout" in str(e):
        return StoreUnavailable(
            f"a new connection to PostgreSQL got no session ({described(e)}): the pooler in "
            f"front of it has a full pool and kept it waiting {pooler}. {remedy[0].upper()}"
            f"{remedy[1:]}"
        )
    what = described(e) if str(e).strip() else type(e).__name__
    return StoreUnavailable(
        "a new connection to PostgreSQL was let in but got no answer to its first "
        f"statement within {SESSION_WAIT:g} s ({what}). Either the way to PostgreSQL "
        "is slow or stalled (the network, a firewall, a host or server that stopped "
        "answering: nothing to change here, a start that is tried again passes once it "
        "answers), or a pooler in front of it whose pool is full keeps new connections "
        f"waiting for a session {pooler}. If there is such a pooler: {remedy}"
    )


async def _close(conn: asyncpg.Connection) -> None:
    """Close `conn`, or drop it when that does not go through at once."""
    try:
        async with asyncio.timeout(2):  # (not wait_for: it can lose a cancel)
            await conn.close()
    except Exception:  # noqa: BLE001 - any failure: the socket is dropped instead
        conn.terminate()


def _waited(e: BaseException) -> bool:
    """A timeout, or PgBouncer giving up on a session for us."""
    return isinstance(e, TimeoutError) or "query_wait_timeout" in str(e)


async def check_pooling(dsn: str, first: asyncpg.Connection | None = None) -> None:
    """Refuse a pooler in transaction (or statement) mode, which hands one client
    connection a different server session for each transaction, and one server session
    to several client connections in turn (StoreError). Two connections are asked their
    backend's pid: the same pid for both (such a pooler hands the idle session it used
    last to the next transaction), or another one for the first connection's second
    question, can only be such a pooler; a direct connection or a pooler in session mode
    gives each connection a session of its own for its whole life. `first`: a
    connection to ask first (opened with statement_cache_size=0), else one is opened.

    The statements are unnamed (statement_cache_size=0): a named one would fail through
    such a pooler first, at random, with an error that does not say why."""
    kw: dict[str, Any] = {
        "timeout": CONNECT_TIMEOUT,
        "server_settings": {"application_name": "palimpsest pooling check"},
        "statement_cache_size": 0,
    }
    conn = first if first is not None else await asyncpg.connect(dsn, **kw)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()", timeout=SESSION_WAIT)
        other = await asyncpg.connect(dsn, **kw)
        try:
            other_pid = await other.fetchval("SELECT pg_backend_pid()", timeout=SESSION_WAIT)
        finally:
            await _close(other)
        again = await conn.fetchval("SELECT pg_backend_pid()", timeout=SESSION_WAIT)
    except (TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError) as e:
        if _waited(e):
            raise no_session(e) from e
        raise
    finally:
        if first is None:
            await _close(conn)
    if other_pid == pid or again != pid:
        raise StoreError(
            "PostgreSQL is reached through a pooler in transaction (or statement) "
            f"pooling mode: one connection of ours was served by backend {pid}, then "
            f"{again}; another one by {other_pid}. Palimpsest needs a session of its "
            "own per connection: it holds session-level advisory locks (the serving "
            "lock, the index builds), and its driver prepares statements per session "
            '(through such a pooler: \'prepared statement "__asyncpg_stmt_…__" '
            "does not exist', at random). Give this database pool_mode = session in "
            "the pooler (PgBouncer), or connect to PostgreSQL directly "
            "(docs/scaleout.md)"
        )


_PUT_SNAPSHOT = (
    "INSERT INTO snapshots (doc, seq, ts, state, checksum, meta) "
    f"VALUES ($1, $2, GREATEST($3::bigint, {_DOC_TS_FLOOR}), $4, $5, $6) "
    "ON CONFLICT (doc, seq) DO UPDATE SET "
    "ts = excluded.ts, state = excluded.state, checksum = excluded.checksum, "
    "meta = excluded.meta"
)


#: a document's compaction base (store.base.BaseMark): its seq and its row's checksum
_BASE_MARKS_SQL = (
    "SELECT d.name, d.base_seq, s.checksum, d.head FROM docs d LEFT JOIN snapshots s "
    "ON s.doc = d.name AND s.seq = d.base_seq "
)


def _doc_info(r: Any) -> DocInfo:
    """A DocInfo of a row of DOC_COLUMNS (its ints as asyncpg gives them: BIGINT)."""
    return DocInfo(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]))


def _as_mark(base_seq: int, check: str | None) -> BaseMark:
    return (int(base_seq), check or "") if base_seq else NO_BASE


async def _base_holds(conn: asyncpg.Connection, doc: str, seq: int, base: BaseMark) -> bool:
    """In a snapshot write's transaction: `doc`'s compaction base is still `base`, and
    below `seq`, and its head at least `seq` (a room whose document was deleted under
    it has no row to write under: its snapshot would outlive the deletion). The
    document's row is held FOR KEY SHARE to the end of the transaction: a compaction or
    a deletion (FOR UPDATE) waits for the write (and a deletion then removes the
    snapshot with the rest), or the write waits for it and then reads the new base, or
    no row; appends (which update the row's head, no key) never wait."""
    if seq <= base[0]:
        return False
    await conn.execute("SELECT 1 FROM docs WHERE name = $1 FOR KEY SHARE", doc)
    # read after the lock, in a statement of its own: it sees a compaction it waited for
    row = await conn.fetchrow(_BASE_MARKS_SQL + "WHERE d.name = $1", doc)
    if row is None or int(row[3]) < seq:
        return False
    return _as_mark(row[1], row[2]) == base


async def _generation_holds(conn: asyncpg.Connection, doc: str, generation: int) -> bool:
    """In a snapshot write's transaction: `doc` is still of `generation` (its docs row's
    id), its row held FOR KEY SHARE to the end of the transaction: a replace or a
    deletion (which deletes the row) waits for the write and then removes the snapshot
    with the rest, or the write waits for it and then finds no row, or another id."""
    got = await conn.fetchval("SELECT id FROM docs WHERE name = $1 FOR KEY SHARE", doc)
    return got is not None and int(got) == generation


#: One group commit as one statement: one round trip, and the implicit transaction of a
#: single statement makes it atomic. In order: the global position counter row (locked
#: first, as every writer of positions does, so positions become visible in commit
#: order), the documents' rows in name order (``o`` reads ``p``, so it runs after it; two
#: appenders cannot deadlock; a row lock reads the row's last committed version, also
#: one committed while this statement waited for the lock, and skips a row deleted
#: meanwhile), then the events whose batch's floor the document's head reaches (``x``,
#: EventStore.append: a head below it was deleted under the writer; a row ``o`` does not
#: see has head 0 here), numbered again among their document's, then the documents'
#: heads (``d`` joins ``o``, so a row is locked before it is updated), then the events,
#: numbered from the new heads and the reserved positions (a left-out event's position
#: stays unused). An event's ts is at least the document's previous updated_ts (its
#: last event's ts; ``f.floor``, see EventStore.append): when the document was made by
#: another appender after this statement's snapshot, which ``o`` then does not see, at
#: least its new updated_ts. $1 the documents' names, $2 the number of events, $3-$9
#: per event (document, ts raised to those before it in this commit, actor, kind,
#: update, meta, the floor of its batch), $10 per event its batch's generation (NULL:
#: not checked; else the row ``o`` locked must have that id: a new document of the name
#: is another row). Returns per document its new head (NULL when none of its events
#: was taken), the position before the first event, its id, the floor of its ts, and
#: its head and id as the floors and generations were checked against.
_APPEND = """
WITH p AS (
    UPDATE log_position SET pos = pos + $2 WHERE id = 1 RETURNING pos - $2 AS base
), o AS (
    SELECT o.name, o.head, o.updated_ts, o.id FROM docs AS o CROSS JOIN p
    WHERE o.name = ANY($1::text[])
    ORDER BY o.name
    FOR NO KEY UPDATE OF o
), x AS (
    SELECT x.doc, x.ts, x.actor, x.kind, x.data, x.meta, x.i,
        row_number() OVER (PARTITION BY x.doc ORDER BY x.i) AS k,
        count(*) OVER (PARTITION BY x.doc) AS cnt
    FROM unnest($3::text[], $4::bigint[], $5::int[], $6::int[], $7::bytea[], $8::text[],
                $9::bigint[], $10::bigint[], $11::boolean[])
         WITH ORDINALITY AS x(doc, ts, actor, kind, data, meta, least_head, gen, exact, i)
    LEFT JOIN o ON o.name = x.doc
    WHERE coalesce(o.head, 0) >= x.least_head AND (x.gen IS NULL OR o.id = x.gen)
        AND (NOT x.exact OR coalesce(o.head, 0) = x.least_head)
), n AS (
    SELECT x.doc AS name, count(*) AS cnt, max(x.ts) AS ts,
        sum(octet_length(x.data))::bigint AS bytes
    FROM x GROUP BY x.doc
), d AS (
    INSERT INTO docs AS d (name, head, created_ts, updated_ts, events_bytes)
    SELECT n.name, n.cnt, n.ts, n.ts, n.bytes
    FROM n
    LEFT JOIN o ON o.name = n.name
    CROSS JOIN p
    ORDER BY n.name
    ON CONFLICT (name) DO UPDATE SET head = d.head + excluded.head,
        updated_ts = GREATEST(d.updated_ts, excluded.updated_ts),
        events_bytes = d.events_bytes + excluded.events_bytes
    RETURNING d.name, d.head, d.id, d.updated_ts
), f AS (
    SELECT d.name, d.head, d.id,
        CASE WHEN o.name IS NOT NULL THEN coalesce(o.updated_ts, 0)
             WHEN d.head > n.cnt THEN coalesce(d.updated_ts, 0)
             ELSE 0 END AS floor
    FROM d
    JOIN n ON n.name = d.name
    LEFT JOIN o ON o.name = d.name
), e AS (
    INSERT INTO log (doc, seq, pos, ts, actor, kind, data, meta)
    SELECT f.id, f.head - x.cnt + x.k, p.base + x.i, GREATEST(x.ts, f.floor), x.actor,
        x.kind, x.data, x.meta
    FROM x
    JOIN f ON f.name = x.doc
    CROSS JOIN p
)
SELECT q.name, f.head, p.base, f.id, f.floor, coalesce(o.head, 0), o.id
FROM unnest($1::text[]) AS q(name)
LEFT JOIN f ON f.name = q.name
LEFT JOIN o ON o.name = q.name
CROSS JOIN p
"""


#: positions from now on come after $1
_CARRY = "UPDATE log_position SET pos = $1 WHERE id = 1 AND pos < $1"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it is. Our sessions change no setting after
    connecting and hold no session-level lock, cursor or LISTEN (advisory locks are
    transaction-scoped), so asyncpg's default reset query (``RESET ALL; UNLISTEN *; …``)
    would only add a round trip to every call, an append's included. asyncpg still
    rolls back a transaction left open before calling this."""


async def _current_schema(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT current_schema()") or "")


async def _snapshot_row(
    doc: str, seq: int, state: bytes, meta: dict[str, Any] | None
) -> tuple[str, int, int, bytes, str, str]:
    return doc, seq, now_ms(), *await snapshot_row_async(state, meta)


class PostgresStore(EventStore):
    name = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 30.0,
        durability: str = "fsync",
        migrate: bool = False,
        accept_lost_revocations: bool = False,
    ) -> None:
        """``migrate``: upgrade an older schema at start (``palimpsest migrate``); without
        it a schema that needs the rewrite of version 5 is refused with a message.
        ``accept_lost_revocations``: a revoked_users table this schema had and lost is
        made again, empty, instead of stopping the start (tables.side_refusal)."""
        self.dsn, url_schema = split_url(url)
        #: "fsync": every commit waits for PostgreSQL's WAL flush (synchronous_commit
        #: as the server is configured, on by default); "os": our sessions set
        #: synchronous_commit=off (see base.DURABILITY)
        self.durability = check_durability(durability)
        self.upgrade = migrate
        self.accept_lost_revocations = accept_lost_revocations
        #: what the start found missing in the schema and made again (schema_notes)
        self._schema_notes: list[str] = []
        self._sym = Symbols()
        self._sealed_since_vacuum = 0
        #: the VACUUM after deletions (_vacuum_deleted), and whether a deletion came since
        #: it began
        self._vacuuming: asyncio.Task[None] | None = None
        self._vacuum_again = False
        #: the rows this process appended lately, which sealing takes instead of reading
        self._recent = RecentRows()
        self._snapshot_rewrite_after = 0.0
        self.schema = schema or url_schema
        #: the schema the tables live in as PostgreSQL resolved it (``current_schema()``,
        #: read at start): the same for a process that names it with ?schema= and one
        #: whose role's search_path names it. Every key that must be one for every process
        #: on these tables (an advisory lock, an identity) is made of this, never of
        #: ``schema`` as configured (None for the second one)
        self.resolved_schema = ""
        if self.schema is not None and not _SCHEMA_RE.match(self.schema):
            raise StoreError(f"schema name {self.schema!r} must match {_SCHEMA_RE.pattern}")
        self.min_size = min_size
        self.max_size = max_size
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        #: connections that hold documents' turns on server changes (server_changes)
        self._turns: asyncpg.Pool | None = None
        self._cursors: PostgresCursors | None = None
        self._revocations: Revocations | None = None
        self._doc_locks: DocLocks | None = None
        #: the backends (pids) of connections whose append got no answer, until they are
        #: known to be gone (end_unanswered_appends)
        self._unanswered: set[int] = set()
        self._settings: dict[str, str] = {}
        #: whether this role may VACUUM and REINDEX the tables (owns them, or holds
        #: MAINTAIN on PostgreSQL 17+): read at start (_may_maintain); without it the
        #: upkeep is left to autovacuum, said once at start
        self.upkeep = True
        #: the build of the indexes outside the versions, after start (_build_indexes)
        self.indexing: asyncio.Task[None] | None = None
        #: seconds between two looks while another process builds them
        self.index_retry_seconds = 2.0

    def __repr__(self) -> str:
        w = urlsplit(self.dsn)
        return f"<PostgresStore {w.hostname}:{w.port or 5432}{w.path} schema={self.schema}>"

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not started")
        return self._pool

    async def start(self) -> None:
        settings = {"application_name": "palimpsest"}
        if self.durability == "os":
            settings["synchronous_commit"] = "off"
        if self.schema:
            settings["search_path"] = self.schema
        self._settings = settings
        with opening():
            await check_pooling(self.dsn)
            if self.schema:
                await self._make_schema()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                command_timeout=self.command_timeout,
                server_settings=settings,
                timeout=CONNECT_TIMEOUT,
                reset=_keep_session,
                init=self._check_session,
            )
            # none open until a server change asks (min_size=0); asyncpg's own reset
            self._turns = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self.max_size,
                command_timeout=self.command_timeout,
                server_settings={"application_name": "palimpsest turns"},
                timeout=CONNECT_TIMEOUT,
                init=_keep_alive,
            )
        try:
            await self.migrate()
            self.resolved_schema = await self._run(_current_schema, "schema", idempotent=True)
            self.server_salt = await self._run(read_salt, "salt", idempotent=True)
            self.upkeep = await self._run(self._may_maintain, "upkeep check", idempotent=True)
            if self.upgrade:  # palimpsest migrate and copy: done when they say so
                await self._build_indexes()
        except BaseException:
            await self.stop()  # refused (an old schema) or failed: no pool left behind
            raise
        if not self.upgrade:
            # a server serves at once: on a big docs table the build takes a while, and
            # the document list is the same without the index (only slower)
            self.indexing = asyncio.create_task(self._build_indexes_or_say(), name="indexes")

    async def _may_maintain(self, conn: asyncpg.Connection) -> bool:
        """Whether this role may VACUUM and REINDEX the tables; if not, said (once, at
        start): PostgreSQL skips a VACUUM of a table the role does not own with only a
        warning to the session (that nobody reads), and refuses the REINDEX."""
        row = await conn.fetchrow(
            "SELECT pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner), "
            "current_user, current_setting('server_version_num')::int FROM pg_class c "
            "WHERE c.oid = 'log'::regclass"
        )
        if row[0]:
            return True
        if row[3] >= 170000 and all(
            await conn.fetchrow(
                "SELECT has_table_privilege('log', 'MAINTAIN'), "
                "has_table_privilege('snapshots', 'MAINTAIN')"
            )
        ):
            return True
        log.warning(
            "the PostgreSQL role %r does not own the tables (%r does), so it may not VACUUM "
            "or REINDEX them: the upkeep Palimpsest does after sealing, deletions and "
            "snapshot pruning is left to autovacuum (keep it on), or run it as the owner "
            "(docs/scaleout.md)",
            row[2],
            row[1],
        )
        return False

    async def _make_schema(self) -> None:
        """The schema ?schema= names, created if missing. Only then: CREATE SCHEMA IF NOT
        EXISTS needs the privilege to create schemas even when there is nothing to
        create, which a server's role need not have (docs/scaleout.md)."""
        conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT, statement_cache_size=0)
        try:
            if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema):
                return
            user = await conn.fetchval("SELECT current_user")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        except asyncpg.exceptions.UniqueViolationError:
            pass  # a concurrent start created it
        except asyncpg.exceptions.InsufficientPrivilegeError as e:
            raise StoreError(
                f"the PostgreSQL schema {self.schema!r} does not exist, and the role "
                f"{user!r} may not create it ({e}): run `palimpsest migrate "
                "--store URL` as a role that may (docs/scaleout.md)"
            ) from e
        finally:
            await conn.close()

    async def _check_session(self, conn: asyncpg.Connection) -> None:
        """Every new connection of the pool (and the index builder's): the startup
        parameters the store asked for hold. A pooler in between may drop them (PgBouncer
        drops those its ignore_startup_parameters names, without a word): the tables would
        then be made and read in the role's default schema, another deployment's perhaps,
        and --durability os would wait for every WAL flush. Refused with what to do.
        Its TCP keepalive is turned on first (keep_alive)."""
        keep_alive(conn)
        try:
            row = await conn.fetchrow(
                "SELECT current_schema(), current_setting('search_path'), "
                "current_setting('synchronous_commit')",
                timeout=SESSION_WAIT,
            )
        except (TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError) as e:
            if _waited(e):
                raise no_session(e, self.max_size) from e
            raise
        if self.schema is not None and row[0] != self.schema:
            raise StoreError(
                f"PostgreSQL sessions are not in the schema {self.schema!r} that ?schema= "
                f"names: current_schema() is {row[0]!r} (search_path {row[1]!r}), so the "
                "search_path startup parameter did not reach PostgreSQL. A pooler in between "
                "drops it (PgBouncer: search_path in ignore_startup_parameters). Give the "
                f"role the schema (ALTER ROLE … SET search_path = {self.schema}), or "
                "connect to PostgreSQL directly (docs/scaleout.md)"
            )
        if self.durability == "os" and row[2] != "off":
            raise StoreError(
                "--durability os asks PostgreSQL for synchronous_commit=off as a startup "
                f"parameter, but the session has synchronous_commit={row[2]}: a pooler in "
                "between drops it (PgBouncer: synchronous_commit in "
                "ignore_startup_parameters). Give the role the setting (ALTER ROLE … SET "
                "synchronous_commit = off), or connect to PostgreSQL directly "
                "(docs/scaleout.md)"
            )

    async def _build_indexes(self) -> None:
        """The indexes outside the versions the schema lacks or holds invalid, built
        CONCURRENTLY on a connection of their own (postgres_schema.build_indexes); while
        another process builds them, looked at again every index_retry_seconds until it is
        done. Cancelled (the store stopping), PostgreSQL cancels the build and leaves an
        invalid index behind, which the next start drops and builds again."""
        while True:
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=CONNECT_TIMEOUT,
                    server_settings={**self._settings, "application_name": "palimpsest indexes"},
                )
            except _UNAVAILABLE as e:
                raise StoreUnavailable(f"PostgreSQL is unavailable (indexes): {e!r}") from e
            try:
                await self._check_session(conn)
                t0 = time.monotonic()
                built = await build_indexes(conn)
            except _UNAVAILABLE as e:
                raise StoreUnavailable(f"PostgreSQL is unavailable (indexes): {e!r}") from e
            except asyncpg.PostgresError as e:
                raise StoreError(f"PostgreSQL index build failed: {e}") from e
            finally:
                conn.terminate()  # (the session's advisory lock goes with it)
            if built is not None:
                if built:
                    log.info("built index %s in %.1f s", ", ".join(built), time.monotonic() - t0)
                return
            await asyncio.sleep(self.index_retry_seconds)

    async def _build_indexes_or_say(self) -> None:
        try:
            await self._build_indexes()
        except StoreError as e:
            log.warning("%s; the document list is paged without the index (slower) until "
                        "the next start builds it", e)  # fmt: skip
        except Exception:
            log.exception("building the indexes failed; the next start tries again")

    async def stop(self) -> None:
        if self._vacuuming is not None:
            # `palimpsest delete` stops the store at once: its VACUUM is let finish
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_DELETED_VACUUM_STOP_WAIT):  # (not wait_for)
                    await self._vacuuming
            self._vacuuming = None
        if self.indexing is not None:
            self.indexing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.indexing
            self.indexing = None
        for pool in (self._turns, self._pool):
            if pool is None:
                continue
            try:
                async with asyncio.timeout(10):  # (not wait_for: it can lose a cancel)
                    await pool.close()
            except _UNAVAILABLE:
                pool.terminate()
        self._pool = self._turns = None

    def schema_notes(self) -> list[str]:
        return list(self._schema_notes)

    async def _mend_tables(self, conn: asyncpg.Connection, have: set[str]) -> None:
        """Tables dropped since: one nothing rebuilds stops the start, a cache of the log
        is made again, empty, and said (tables.py; SQLiteStore._mend_tables)."""
        kept, rebuilt = missing_tables(have)
        where = "the PostgreSQL schema " + (
            repr(self.schema) if self.schema else "of the search_path"
        )
        if kept:
            raise StoreError(refusal(where, kept))
        if not rebuilt:
            return
        for table in rebuilt:
            await conn.execute(PG_REBUILT[table])
        compacted = await conn.fetchval("SELECT count(*) FROM docs WHERE base_seq > 0")
        words = rebuilt_words(rebuilt, int(compacted))
        self._schema_notes.append(f"{words} (made again, empty)")
        log.warning("%s: %s: made again, empty", where, words)

    async def _side_tables(self, conn: asyncpg.Connection, have: set[str]) -> None:
        """Make the side tables that are missing, and note the ones this schema has
        (tables.SIDE_MARKER): one it had and lost stops the start (revoked_users, unless
        accept_lost_revocations) or is made again with a warning (webhooks), rather than
        made again empty without a word (SQLiteStore._side_tables). Nothing is created
        or written when all is there: a server's role may not (docs/scaleout.md)."""
        made: set[str] = set()
        if SIDE_MARKER in have:
            made = {r[0] for r in await conn.fetch(f"SELECT name FROM {SIDE_MARKER}")}
        lost = lost_side_tables(have, made)
        where = "the PostgreSQL schema " + (
            repr(self.schema) if self.schema else "of the search_path"
        )
        if "revoked_users" in lost and not self.accept_lost_revocations:
            raise StoreError(side_refusal(where))
        for name, create in SIDE_TABLES.items():
            if name not in have:
                await conn.execute(create)
        unmarked = [t for t in SIDE if t not in made]
        if unmarked:
            try:
                async with conn.transaction():  # (a savepoint)
                    if SIDE_MARKER not in have:
                        await conn.execute(SIDE_MARKER_SQL)
                    await conn.executemany(
                        f"INSERT INTO {SIDE_MARKER} (name) VALUES ($1) ON CONFLICT DO NOTHING",
                        [(t,) for t in unmarked],
                    )
            except asyncpg.exceptions.InsufficientPrivilegeError as e:
                # a server's role on a schema migrated by an older release: it serves as
                # before; the owner's next `palimpsest migrate` makes the table
                log.info("%s: the %s table is not made (%s): a dropped revoked_users or "
                         "webhooks is noticed once `palimpsest migrate` runs as the "
                         "schema's owner", where, SIDE_MARKER, e)  # fmt: skip
        if lost:
            words = side_words(lost)
            self._schema_notes.append(f"{words} (made again, empty)")
            log.warning("%s: %s: made again, empty", where, words)

    async def migrate(self) -> int:
        """Bring the schema to this version (idempotent, safe from several processes)."""

        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                # one migrator at a time, whichever process
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SNAPSHOT_LOCK - 1)
                # nothing is created that is there: CREATE … IF NOT EXISTS needs the
                # privilege to create even then, which a server's role need not have
                have = {
                    r[0]
                    for r in await conn.fetch(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    )
                }
                if "palimpsest_schema" not in have:
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS palimpsest_schema (version INT NOT NULL)"
                    )
                version = await conn.fetchval("SELECT max(version) FROM palimpsest_schema") or 0
                self.found_schema_version = version
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"the PostgreSQL schema has version {version}, newer than this "
                        f"server's {SCHEMA_VERSION}: upgrade Palimpsest"
                    )
                await self._side_tables(conn, have)
                if version == 0:  # a fresh schema: this version at once
                    await create_fresh(conn)
                    await conn.executemany(
                        "INSERT INTO palimpsest_schema (version) VALUES ($1)",
                        [(v,) for v in range(1, SCHEMA_VERSION + 1)],
                    )
                    await ensure_indexes(conn)
                    return SCHEMA_VERSION
                if version < LAYOUT_VERSION and not self.upgrade:
                    raise StoreError(
                        f"the PostgreSQL schema{f' {self.schema!r}' if self.schema else ''} has "
                        f"version {version}; this version of Palimpsest keeps the event log in "
                        f"a new layout (version {LAYOUT_VERSION}). Stop every server using it, "
                        "then run `palimpsest migrate --store URL` (it rewrites the log in one "
                        "transaction)"
                    )
                if version >= LAYOUT_VERSION:
                    await self._mend_tables(conn, have)
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    if v == LAYOUT_VERSION:
                        await to_compact_log(conn)
                    else:
                        for stmt in OLD_STEPS[v]:
                            await conn.execute(stmt)
                    await conn.execute("INSERT INTO palimpsest_schema (version) VALUES ($1)", v)
                # (the indexes outside the versions: after start, not in this transaction)
                return SCHEMA_VERSION

        try:
            return await self._run(run, "migration")
        except StoreError as e:
            if not isinstance(e.__cause__, asyncpg.exceptions.InsufficientPrivilegeError):
                raise
            raise StoreError(
                f"{e}: the schema lacks tables or versions of this Palimpsest, and this "
                "role may not create them. Run `palimpsest migrate --store URL` as the "
                "schema's owner, and give this role the grants docs/scaleout.md names"
            ) from e

    async def schema_version(self) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval("SELECT max(version) FROM palimpsest_schema") or 0)

        return await self._run(run, "schema version")

    async def identity(self) -> str | None:
        """The cluster (its system identifier: a copy made with pg_dump or another
        cluster has another; a promoted standby keeps it), the database's oid in it (a
        database made from another as a template has another) and the schema. None when
        the role may not read the system identifier (then nothing is told apart, rather
        than telling two processes of one deployment apart)."""

        async def run(conn: asyncpg.Connection) -> str | None:
            try:
                system = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
            except asyncpg.PostgresError as e:  # refused, or no such function
                log.info("PostgreSQL does not say its system identifier (%s): servers on "
                         "other databases are not told apart on the fan-out bus", e)  # fmt: skip
                return None
            row = await conn.fetchrow(
                "SELECT d.oid, current_schema() FROM pg_database d "
                "WHERE d.datname = current_database()"
            )
            return f"postgresql:{system}:{row[0]}:{row[1]}"

        return await self._run(run, "identity", idempotent=True)

    async def ping(self) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await conn.fetchval("SELECT 1")

        await self._run(run, "ping")

    async def check_writable(self) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            # a committed row write that changes nothing: refused by a read-only server
            # (default_transaction_read_only, a standby) or one that cannot extend its WAL
            await conn.execute("UPDATE palimpsest_schema SET version = version")

        await self._run(run, "write check")

    async def _run(
        self,
        fn: Callable[[asyncpg.Connection], Awaitable[T]],
        what: str,
        *,
        idempotent: bool = False,
    ) -> T:
        """Run fn on a pooled connection; translate driver errors; retry deadlocks.

        ``idempotent``: also retry once when the connection turns out dead (pooled
        connections die with a server restart), which is safe only for statements that may
        run twice. An append is never retried: its commit may have happened."""
        reconnected = False
        for attempt in range(_RETRIES):
            try:
                async with self.pool.acquire() as conn:
                    return await fn(conn)
            except _RETRYABLE as e:
                if attempt == _RETRIES - 1:
                    raise StoreError(f"PostgreSQL {what} failed: {e}") from e
                await asyncio.sleep(0.01 * (attempt + 1))
            except StoreError:
                raise
            except _UNAVAILABLE as e:
                if idempotent and not reconnected:
                    reconnected = True
                    continue
                raise StoreUnavailable(f"PostgreSQL is unavailable ({what}): {e!r}") from e
            except asyncpg.PostgresError as e:
                raise StoreError(f"PostgreSQL {what} failed: {e}") from e
        raise StoreError(f"PostgreSQL {what} failed after {_RETRIES} attempts")

    @contextlib.asynccontextmanager
    async def server_changes(self, doc: str) -> AsyncIterator[None]:
        """One process at a time per document (EventStore.server_changes): a
        transaction-scoped advisory lock (``pg_advisory_xact_lock``, waited for in
        PostgreSQL), on a connection of a pool of its own: the holder waits for its
        append, which needs the main pool, so holders and waiters never take the
        connections an append needs. The lock ends with the transaction: released when
        the holder is done, cancelled or its connection is lost."""
        turns = self._turns
        if turns is None:
            raise StoreUnavailable("the PostgreSQL store is not started")
        try:
            conn = await turns.acquire()
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"PostgreSQL is unavailable (a server change): {e!r}") from e
        try:
            tx = conn.transaction()
            try:
                await tx.start()
                # the resolved schema's key, then the key an older server takes (the
                # schema as configured, '' without ?schema=): a rolling upgrade's old and
                # new processes take turns too (the same key twice when ?schema= names it)
                # (the transaction stays idle while the change is made: PostgreSQL's
                # idle_in_transaction_session_timeout would end it, and the turn with it,
                # so it is off for this transaction alone)
                await conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', '0', true), "
                    "pg_advisory_xact_lock($1, hashtext($2)), "
                    "pg_advisory_xact_lock($1, hashtext($3))",
                    _CHANGE_LOCK,
                    f"{self.resolved_schema}/{doc}",
                    f"{self.schema or ''}/{doc}",
                )
            except _UNAVAILABLE as e:
                raise StoreUnavailable(f"PostgreSQL is unavailable (a server change): {e!r}") from e
            except asyncpg.PostgresError as e:
                raise StoreError(f"PostgreSQL server change lock failed: {e}") from e
            try:
                yield
            finally:
                # (a connection lost meanwhile took the transaction and the lock along:
                # said, for another process may have changed the document in that time)
                try:
                    await tx.rollback()
                except (*_UNAVAILABLE, asyncpg.PostgresError) as e:
                    log.warning(
                        "the turn on server changes of %r was lost while this process held "
                        "it (%s: %s): another process may have changed the document "
                        "meanwhile (its clients converge; an undo or redo may have missed "
                        "its step). PostgreSQL or the network ended the session: a restart, "
                        "pg_terminate_backend, a timeout",
                        doc,
                        type(e).__name__,
                        e,
                    )
        finally:
            await turns.release(conn)

    async def _fetch(self, sql: str, *args: Any, what: str = "query") -> list[Any]:
        """One statement that may safely run twice (reads, upserts, deletes)."""

        async def run(conn: asyncpg.Connection) -> list[Any]:
            return list(await conn.fetch(sql, *args))

        return await self._run(run, what, idempotent=True)

    # --- the log ---------------------------------------------------------------------

    async def _intern(self, names: set[str]) -> None:
        """Give every name an id, committed before any event uses it (an id is cached only
        once it exists for good)."""
        if any(type(n) is not str for n in names):
            raise StoreError(f"an event's actor and kind must be text, not {names!r}")
        missing = self._sym.missing_names(names)
        if not missing:
            return
        rows = await self._fetch(
            "WITH new AS (INSERT INTO symbols (name) SELECT unnest($1::text[]) "
            "ON CONFLICT DO NOTHING RETURNING id, name) "
            "SELECT id, name FROM new UNION ALL "
            "SELECT id, name FROM symbols WHERE name = ANY($1::text[])",
            missing,
            what="symbol write",
        )
        self._sym.add((r[0], r[1]) for r in rows)
        missing = self._sym.missing_names(missing)
        if missing:
            # another process inserted them meanwhile: its rows committed after this
            # statement's snapshot was taken, so they are read by a new one
            rows = await self._fetch(
                "SELECT id, name FROM symbols WHERE name = ANY($1::text[])", missing,
                what="symbol read",
            )  # fmt: skip
            self._sym.add((r[0], r[1]) for r in rows)
        if self._sym.missing_names(missing):
            raise StoreError(f"could not intern {missing!r}")

    async def _load_symbols(self) -> None:
        rows = await self._fetch("SELECT id, name FROM symbols", what="symbols")
        self._sym.add((r[0], r[1]) for r in rows)

    async def _decoded(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read that turns rows into events (log_layout.decoded): symbols another
        process interned reach this one's cache by loading them again."""
        return await decoded(read, self._load_symbols)

    async def append(
        self,
        batches: Sequence[tuple[str, Sequence[NewEvent]]],
        floors: Sequence[int] | None = None,
        generations: Sequence[int | None] | None = None,
        exact: Sequence[bool] | None = None,
    ) -> list[list[Event]]:
        """One group commit in one statement, so one round trip (see ``_APPEND``): the
        floors and generations are checked in it too."""
        batches = [(doc, list(evs)) for doc, evs in batches]
        least = floors_of(batches, floors)
        gens = generations_of(batches, generations)
        exacts = exact_of(batches, exact)
        if not any(evs for _, evs in batches):
            return [[] for _ in batches]
        await self._intern({n for _, evs in batches for ev in evs for n in (ev.actor, ev.kind)})
        ids = self._sym.ids
        names = sorted({doc for doc, evs in batches if evs})
        total = sum(len(evs) for _, evs in batches)
        # per event, in batch order: its document, its ts raised to those before it in
        # this commit, actor, kind, update, meta, its batch's floor, generation and
        # whether the head must be the floor itself
        cols: list[list[Any]] = [[] for _ in range(9)]
        rising: dict[str, int] = {}  # each document's ts so far in this commit
        for (doc, evs), floor, gen, ex in zip(batches, least, gens, exacts, strict=True):
            for ev in evs:
                ts = rising[doc] = max(rising.get(doc, ev.ts), ev.ts)
                for col, v in zip(
                    cols,
                    (doc, ts, ids[ev.actor], ids[ev.kind], ev.update,
                     dump_meta(ev.meta) if ev.meta else None, floor, gen, ex),
                    strict=True,
                ):  # fmt: skip
                    col.append(v)

        async def run(conn: asyncpg.Connection) -> list[Any]:
            try:
                return list(await conn.fetch(_APPEND, names, total, *cols))
            except asyncpg.PostgresError:
                raise  # PostgreSQL's answer: the statement did not commit
            except BaseException:
                # no answer (a timeout, a lost connection, a cancel): the statement may
                # still reach its backend, or run there, and commit
                self._unanswered.add(conn.get_server_pid())
                raise

        rows = await self._run(run, "append")
        if len(rows) != len(names):
            raise StoreError(f"PostgreSQL append: {len(rows)} documents answered, not {len(names)}")
        # which batches the floors let in: each document's head as the statement checked
        # them, before its events (EventStore.append)
        seen = {r[0]: int(r[5]) for r in rows}
        seen_id = {r[0]: None if r[6] is None else int(r[6]) for r in rows}
        taken = [
            bool(evs)
            and seen[doc] >= floor
            and (not ex or seen[doc] == floor)
            and (gen is None or seen_id[doc] == gen)
            for (doc, evs), floor, gen, ex in zip(batches, least, gens, exacts, strict=True)
        ]
        counts: dict[str, int] = {}
        for (doc, evs), take in zip(batches, taken, strict=True):
            if take:
                counts[doc] = counts.get(doc, 0) + len(evs)
        done = {r[0]: r for r in rows if r[1] is not None}
        if set(done) != set(counts):
            raise StoreError(
                f"PostgreSQL append: documents {sorted(done)} written, not {sorted(counts)}"
            )
        # the seq before this commit's first event of each document, and the position
        # before its first event: as the statement assigned them
        nxt = {d: int(r[1]) - counts[d] for d, r in done.items()}
        doc_ids = {d: int(r[3]) for d, r in done.items()}
        ts_floors = {d: int(r[4]) for d, r in done.items()}
        pos = int(rows[0][2])
        out: list[list[Event]] = []
        written: list[tuple[Any, ...]] = []
        i = 0
        for (doc, evs), take in zip(batches, taken, strict=True):
            stored = []
            for ev in evs:
                pos += 1  # (a left-out event's position stays unused)
                if take:
                    nxt[doc] += 1
                    ts = cols[1][i] = max(cols[1][i], ts_floors[doc])  # as the statement wrote it
                    stored.append(
                        Event(doc, nxt[doc], ts, ev.actor, ev.kind, ev.update, ev.meta, pos)
                    )
                    # the row as the statement inserted it (its columns, in batch order)
                    written.append((doc_ids[doc], nxt[doc], pos, *(c[i] for c in cols[1:6])))
                i += 1
            out.append(stored)
        self._recent.note(written)  # each document's seqs ascend in batch order
        return out

    async def end_unanswered_appends(self) -> None:
        """(EventStore.end_unanswered_appends) The backends of the connections whose
        append got no answer are ended (pg_terminate_backend): a statement still on its
        way to one (a stalled network, a stopped server) never runs, one running rolls
        back, one that committed stays. They are then waited for until they have left
        pg_stat_activity, which a backend does only after its transaction has ended (the
        backend's exit ends the transaction before it takes the backend out of the
        list), for at most _UNANSWERED_WAIT seconds; those still there then are tried
        again next time, and StoreUnavailable says so. (A connection whose cancel was
        answered came back to the pool, its outcome final: ending it costs the pool a
        reconnect, in an outage that is over.)"""
        pids = sorted(self._unanswered)
        if not pids:
            return

        async def run(conn: asyncpg.Connection) -> list[int]:
            await conn.execute(f"SELECT pg_terminate_backend(pid) {_UNANSWERED_SQL}", pids)
            until = time.monotonic() + _UNANSWERED_WAIT
            while True:
                left = [int(r[0]) for r in await conn.fetch(f"SELECT pid {_UNANSWERED_SQL}", pids)]
                if not left or time.monotonic() >= until:
                    return left
                await asyncio.sleep(_UNANSWERED_POLL)

        left = await self._run(run, "ending appends that got no answer", idempotent=True)
        self._unanswered.difference_update(set(pids) - set(left))
        if left:
            raise StoreUnavailable(
                f"cannot tell yet whether appends that got no answer committed: PostgreSQL "
                f"backend{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} still "
                f"running {_UNANSWERED_WAIT:g} s after being ended"
            )

    async def _doc_tail(
        self, doc: str, after: int, upto: int, limit: int | None = None, where: str = "",
        params: Sequence[Any] = (), desc: bool = False,
    ) -> tuple[tuple[int, int, int] | None, list[TailRow]]:  # fmt: skip
        """((doc id, head, base_seq) or None, tail rows in (after, upto]) in one statement;
        `limit` of them from the lowest seq, or with `desc` from the highest."""
        order = " DESC" if desc else ""
        n = 5
        parts = where.split("?")
        where = parts[0] + "".join(f"${n + i}{p}" for i, p in enumerate(parts[1:]))
        rows = await self._fetch(
            "SELECT 0, id, head, base_seq, 0, 0, 0, NULL::bytea, NULL FROM docs WHERE name = $1 "
            "UNION ALL (SELECT 1, seq, pos, ts, actor, kind, 0, data, meta "
            "FROM log WHERE doc = (SELECT id FROM docs WHERE name = $1) AND seq > $2 "
            f"AND seq <= $3{where} ORDER BY seq{order} LIMIT $4)",
            doc, after, upto, limit, *params, what="read",
        )  # fmt: skip
        info = None
        tail = []
        for r in rows:
            if r[0] == 0:
                info = (int(r[1]), int(r[2]), int(r[3]))
            else:
                tail.append(TailRow(doc, int(r[1]), int(r[2]), int(r[3]), r[4], r[5],
                                    bytes(r[7]), r[8]))  # fmt: skip
        return info, tail

    async def _doc_segments(
        self, doc: str, doc_id: int, after: int, upto: int, where: str = "",
        params: Sequence[Any] = (),
    ) -> list[SegmentRow]:  # fmt: skip
        parts = where.split("?")
        where = parts[0] + "".join(f"${4 + i}{p}" for i, p in enumerate(parts[1:]))
        rows = await self._fetch(
            "SELECT first_seq, last_seq, body, checksum FROM segments WHERE doc = $1 "
            f"AND last_seq > $2 AND first_seq <= $3{where} ORDER BY first_seq",
            doc_id, after, upto, *params, what="read",
        )  # fmt: skip
        return [SegmentRow(doc, int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[Event]:
        async def run() -> list[Event]:
            top = MAX if upto is None else upto
            info, tail = await self._doc_tail(doc, after, top, limit)
            if info is None:
                return []
            doc_id, head, base = info
            lo = max(after, base)
            hi = min(top, head)
            if limit is not None:
                hi = min(hi, lo + limit)
            if hi <= lo:
                return []
            # the tail holds all of them (the events lately logged, as a room catching
            # up after its own commit reads): no second round trip for the segments
            held = {r.seq for r in tail}
            if all(q in held for q in range(lo + 1, hi + 1)):
                segs = []
            else:
                segs = await self._doc_segments(doc, doc_id, lo, hi)
            # a page (`limit`) decodes only its part of a segment; a version's range
            # whole segments, kept for the next version (log_layout.segment_events)
            return await assemble_off_loop(
                tail, segs, self._sym, lambda e: lo < e.seq <= hi, (lo, hi),
                None if limit is None else (limit, ANY_ROW),
            )  # fmt: skip

        return await self._decoded(run)

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Event]:
        async def run() -> list[Event]:
            rows = await self._fetch(
                "SELECT 0, pos, NULL, 0, 0, 0, 0, NULL::bytea, NULL FROM log_position WHERE id = 1 "
                "UNION ALL (SELECT 1, l.pos, d.name, l.seq, l.ts, l.actor, l.kind, l.data, "
                "l.meta FROM log l JOIN docs d ON d.id = l.doc WHERE l.pos > $1 "
                "ORDER BY l.pos LIMIT $2)",
                after, limit, what="read_all",
            )  # fmt: skip
            bound = 0
            tail = []
            for r in rows:
                if r[0] == 0:
                    bound = int(r[1])
                else:
                    tail.append(TailRow(r[2], int(r[3]), int(r[1]), int(r[4]), r[5], r[6],
                                        bytes(r[7]), r[8]))  # fmt: skip
            index = await self._fetch(
                "SELECT first_pos, id FROM segments WHERE last_pos > $1 AND first_pos <= $2 "
                "ORDER BY first_pos",
                after, bound, what="read_all",
            )  # fmt: skip

            async def fetch(ids: list[int]) -> dict[int, SegmentRow]:
                got = await self._fetch(
                    "SELECT s.id, d.name, s.first_seq, s.last_seq, s.body, s.checksum "
                    "FROM segments s JOIN docs d ON d.id = s.doc WHERE s.id = ANY($1::bigint[])",
                    ids, what="read_all",
                )  # fmt: skip
                return {int(r[0]): SegmentRow(r[1], int(r[2]), int(r[3]), bytes(r[4]),
                                              bytes(r[5])) for r in got}  # fmt: skip

            return await merge_by_pos(
                tail, [(int(r[0]), int(r[1])) for r in index], fetch, self._sym, after, bound,
                limit,
            )  # fmt: skip

        return await self._decoded(run)

    async def last_position(self) -> int:
        rows = await self._fetch("SELECT pos FROM log_position WHERE id = 1", what="position")
        return int(rows[0][0]) if rows else 0

    async def deletions(
        self, after: int = 0, upto: int | None = None, limit: int = 1000
    ) -> list[Event]:
        rows = await self._fetch(
            "SELECT doc, seq, ts, actor, pos FROM deletions WHERE pos > $1 AND pos <= $2 "
            "ORDER BY pos LIMIT $3",
            after, MAX_SEQ if upto is None else upto, limit,
            what="deletions",
        )  # fmt: skip
        return [Event(r[0], int(r[1]), int(r[2]), r[3], DELETED, b"", {}, int(r[4])) for r in rows]

    async def head(self, doc: str) -> int:
        rows = await self._fetch("SELECT head FROM docs WHERE name = $1", doc, what="head")
        return int(rows[0][0]) if rows else 0

    async def heads(self, docs: Sequence[str]) -> dict[str, int]:
        """The heads of several documents in one round trip (0 for unknown ones)."""
        rows = await self._fetch(
            "SELECT name, head FROM docs WHERE name = ANY($1::text[])", list(docs), what="heads"
        )
        found = {r[0]: int(r[1]) for r in rows}
        return {d: found.get(d, 0) for d in docs}

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
        f = query_filter(self._sym, actor, kinds, since_ts, until_ts,
                         lambda ids: (" AND kind = ANY(?::int[])", [ids]))  # fmt: skip
        if f is None:
            return []

        async def run() -> list[Event]:
            rows = await self._fetch(
                "SELECT head, base_seq FROM docs WHERE name = $1", doc, what="query"
            )
            if not rows:
                return []
            return await query_windows(
                doc, max(after, int(rows[0][1])), int(rows[0][0]), limit, f,
                self._doc_tail, self._doc_segments, self._sym, before, desc,
            )  # fmt: skip

        return await self._decoded(run)

    async def seq_at(self, doc: str, ts: int) -> int:
        # the seq before the first event stamped after ts (EventStore.seq_at): sealed
        # runs come before the tail, so the first run with a later ts_max holds it if any
        async def run() -> int | None:
            rows = await self._fetch(
                "SELECT d.id, d.head, (SELECT min(seq) FROM log WHERE doc = d.id AND ts > $1) "
                "FROM docs d WHERE d.name = $2",
                ts, doc, what="seq_at",
            )  # fmt: skip
            if not rows:
                return None
            doc_id, head, later = rows[0]
            segs = await self._fetch(
                "SELECT first_seq, last_seq, body, checksum FROM segments WHERE doc = $1 "
                "AND ts_max > $2 ORDER BY first_seq LIMIT 1",
                doc_id, ts, what="seq_at",
            )  # fmt: skip
            if segs:
                r = segs[0]
                return seq_before(
                    decode_segment(SegmentRow(doc, int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]))),
                    ts,
                )
            return int(head) if later is None else int(later) - 1

        found: int | None = await self._decoded(run)
        return await base_answer(self, doc, ts, found)

    async def list_docs(self) -> list[DocInfo]:
        rows = await self._fetch(
            "SELECT name, head, updated_ts, events_bytes, base_seq, created_ts, id FROM docs "
            "ORDER BY name",
            what="list_docs",
        )
        return [_doc_info(r) for r in rows]

    async def doc_count(self) -> int:
        rows = await self._fetch("SELECT count(*) FROM docs", what="doc_count")
        return int(rows[0][0])

    async def doc_page(self, page: DocPage) -> list[DocInfo]:
        sql, args = page_sql(
            page, DOC_COLUMNS, name='name COLLATE "C"', glob=lambda g: ("name LIKE ?", like_of(g))
        )
        rows = await self._fetch(numbered(sql), *args, what="doc_page")
        return [_doc_info(r) for r in rows]

    async def doc_info(self, doc: str) -> DocInfo | None:
        rows = await self._fetch(
            "SELECT name, head, updated_ts, events_bytes, base_seq, created_ts, id FROM docs "
            "WHERE name = $1",
            doc,
            what="doc_info",
        )
        if not rows:
            return None
        return _doc_info(rows[0])

    async def delete_doc(self, doc: str, tombstone: bytes = b"", *, by: str = "") -> bool:
        """One transaction (a kill mid-way leaves the whole document), which takes the
        global position counter only at its end, for a few rows: the removal of a large
        document's rows holds up no append to another document.

        First, without the counter: the document's row is held FOR KEY SHARE, which
        sealers and compactions of it (FOR UPDATE) wait for, and appenders (FOR NO KEY
        UPDATE) do not; its rows are removed. Appends to it go on meanwhile. Then the
        counter, as an append takes it first (the same lock order: the counter, then the
        document's row, so the two never deadlock): once held, no append of the document
        is under way, and none can come before this commits; the document's row goes, and
        with it the rows written since the first pass (the events appended meanwhile:
        seqs past the head it read; snapshots, tags, derived data), then the deletion's
        record takes the next position, after the document's last event."""
        take = "UPDATE log_position SET pos = pos + 1 WHERE id = 1 RETURNING pos"

        async def remove(conn: asyncpg.Connection, doc_id: int | None, after: int) -> None:
            if doc_id is not None:
                await conn.execute("DELETE FROM log WHERE doc = $1 AND seq > $2", doc_id, after)
                if not after:  # (no sealer writes segments of it while its row is held)
                    await conn.execute("DELETE FROM segments WHERE doc = $1", doc_id)
            for table in ("snapshots", "tags", "tag_history", "derived"):
                await conn.execute(f"DELETE FROM {table} WHERE doc = $1", doc)

        async def run(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                held = await conn.fetchrow(
                    "SELECT id, head FROM docs WHERE name = $1 FOR KEY SHARE", doc
                )
                if held is None:
                    await remove(conn, None, 0)
                    return False
                await remove(conn, held[0], 0)
                pos = await conn.fetchval(take)
                row = await conn.fetchrow("DELETE FROM docs WHERE id = $1 RETURNING head", held[0])
                if row is None:  # (cannot be: the row is held; said rather than assumed)
                    raise StoreError(f"PostgreSQL delete: the row of {doc!r} went meanwhile")
                await remove(conn, held[0], int(held[1]))
                ts = now_ms()
                await conn.execute(
                    "INSERT INTO tombstones (doc, ts, state_vector) VALUES ($1, $2, $3) "
                    "ON CONFLICT (doc) DO UPDATE SET ts = excluded.ts, "
                    "state_vector = excluded.state_vector",
                    doc,
                    ts,
                    tombstone,
                )
                await conn.execute(
                    "INSERT INTO deletions (pos, doc, seq, ts, actor) VALUES ($1,$2,$3,$4,$5)",
                    pos, doc, int(row[0]), ts, by,
                )  # fmt: skip
                return True

        try:
            existed = await self._run(run, "delete")
        finally:
            self._recent.clear()  # rare: what it held of that document is gone
        self._vacuum_again = True
        if self._vacuuming is None or self._vacuuming.done():
            self._vacuuming = asyncio.get_running_loop().create_task(
                self._vacuum_deleted(), name="vacuum after a deletion"
            )
        return existed

    async def _vacuum_deleted(self) -> None:
        """VACUUM the tables a deletion left dead rows in, in the background, outside any
        transaction; again if more deletions came meanwhile. Best effort: a failure is
        logged.

        Until vacuumed, a deleted row stays whole in its page and its space is never
        reused (autovacuum waits for 50 dead rows and 20 % of the table, or is off).
        VACUUM prunes the rows and marks their space free, so that the rows written next
        overwrite them; it does not zero the bytes (measured: the text is still in the
        heap file after VACUUM and CHECKPOINT). Only VACUUM FULL, which rewrites the
        table under an exclusive lock, removes them at once: an operator's task
        (docs/operations.md, "Erasure on disk")."""
        while self._vacuum_again and self.upkeep:
            self._vacuum_again = False
            try:
                await self._run(
                    lambda c: c.execute(
                        f"VACUUM {_DELETED_TABLES}", timeout=_DELETED_VACUUM_TIMEOUT
                    ),
                    "VACUUM after a deletion",
                )
            except (StoreError, TimeoutError) as e:
                why = described(e, _DELETED_VACUUM_TIMEOUT)
                if not isinstance(e, StoreError):
                    why = f"VACUUM after a deletion: {why}"
                log.warning("%s; the deleted rows wait for autovacuum or a VACUUM", why)
                return

    async def rename_actor(self, old: str, new: str, rewrite: MetaRewrite) -> ActorRenamed:
        async def run(conn: asyncpg.Connection) -> ActorRenamed:
            async with conn.transaction():
                # no append interns a name meanwhile (the symbols' rows are locked)
                await conn.execute("LOCK TABLE symbols, tags, snapshots IN EXCLUSIVE MODE")
                ids = {
                    r[0]: int(r[1])
                    for r in await conn.fetch(
                        "SELECT name, id FROM symbols WHERE name = ANY($1::text[])", [old, new]
                    )
                }
                if new in ids or await conn.fetchval(
                    "SELECT 1 FROM tags WHERE actor = $1 LIMIT 1", new
                ):
                    raise taken(new, old in ids or bool(await conn.fetchval(
                        "SELECT 1 FROM tags WHERE actor = $1 LIMIT 1", old)))  # fmt: skip
                docs: set[str] = set()
                if old in ids:
                    uses = Uses(old, ids[old])
                    clash = await conn.fetchval(
                        "SELECT d.name FROM log l JOIN docs d ON d.id = l.doc "
                        "WHERE l.kind = $1 LIMIT 1", uses.symbol
                    )  # fmt: skip
                    if clash is not None:
                        raise kind_clash(old, clash)
                    docs.update(r[0] for r in await conn.fetch(
                        "SELECT DISTINCT d.name FROM log l JOIN docs d ON d.id = l.doc "
                        "WHERE l.actor = $1", uses.symbol
                    ))  # fmt: skip
                    async for doc, body, checksum in conn.cursor(
                        "SELECT d.name, s.body, s.checksum FROM segments s JOIN docs d "
                        "ON d.id = s.doc ORDER BY s.id"
                    ):
                        uses.segment(doc, body, checksum)
                    docs |= uses.docs
                    await conn.execute("UPDATE symbols SET name = $1 WHERE id = $2", new,
                                       uses.symbol)  # fmt: skip
                tags = int((await conn.execute(
                    "UPDATE tags SET actor = $1 WHERE actor = $2", new, old
                )).split()[-1])  # fmt: skip
                tag_moves = 0
                history = await conn.fetchval("SELECT to_regclass('tag_history') IS NOT NULL")
                if history:
                    # who created, moved or deleted a tag: the name must not stay there
                    tag_moves = int((await conn.execute(
                        "UPDATE tag_history SET actor = $1 WHERE actor = $2", new, old
                    )).split()[-1])  # fmt: skip
                snapshots = damaged = 0
                for doc, seq in await conn.fetch("SELECT doc, seq FROM snapshots ORDER BY 1, 2"):
                    r = await conn.fetchrow(
                        "SELECT state, checksum, meta FROM snapshots WHERE doc = $1 AND seq = $2",
                        doc, seq,
                    )  # fmt: skip
                    try:
                        row = renamed_snapshot_row(bytes(r[0]), r[1], r[2], rewrite)
                    except ValueError:
                        damaged += 1
                        continue
                    if row is not None:
                        await conn.execute(
                            "UPDATE snapshots SET state = $1, checksum = $2, meta = $3 "
                            "WHERE doc = $4 AND seq = $5", *row, doc, seq
                        )  # fmt: skip
                        snapshots += 1
                        docs.add(doc)
                derived = 0
                if docs:
                    derived = int((await conn.execute(
                        "DELETE FROM derived WHERE doc = ANY($1::text[])", sorted(docs)
                    )).split()[-1])  # fmt: skip
            # the old rows' versions stay in the tables' files until they are rewritten
            await conn.execute(
                "VACUUM FULL symbols, tags, snapshots, derived"
                + (", tag_history" if history else "")
            )
            return ActorRenamed(old in ids, tuple(sorted(docs)), tags, snapshots, damaged,
                                derived, tag_moves)  # fmt: skip

        done = await self._run(run, "actor rename")
        self._sym.rename(old, new)
        self._recent.clear()
        return done

    async def restamp(self, doc: str, after: int, stamp: Stamp, rewrite: MetaRewrite) -> Restamped:
        async def run(conn: asyncpg.Connection) -> Restamped:
            async with conn.transaction():
                # the document's row locked: no append (which raises its ts to the
                # updated_ts read here) nor sealing of it meanwhile
                row = await conn.fetchrow(
                    "SELECT id, created_ts, updated_ts FROM docs WHERE name = $1 FOR UPDATE",
                    doc,
                )
                if row is None:
                    return Restamped()
                doc_id, created, updated = int(row[0]), int(row[1]), int(row[2])
                tail = await conn.fetch(
                    "SELECT seq, ts FROM log WHERE doc = $1 AND ts > $2", doc_id, after
                )
                await conn.executemany(
                    "UPDATE log SET ts = $1 WHERE doc = $2 AND seq = $3",
                    [(stamp(int(r[1])), doc_id, r[0]) for r in tail],
                )
                events = len(tail)
                for seg_id, body, stored in await conn.fetch(
                    "SELECT id, body, checksum FROM segments WHERE doc = $1 AND ts_max > $2",
                    doc_id, after,
                ):  # fmt: skip
                    seg, n = restamped_segment(doc, bytes(body), bytes(stored), after, stamp)
                    await conn.execute(
                        "UPDATE segments SET body = $1, checksum = $2, ts_min = $3, "
                        "ts_max = $4 WHERE id = $5",
                        seg.blob, seg.checksum, seg.ts_min, seg.ts_max, seg_id,
                    )  # fmt: skip
                    events += n
                await conn.execute(
                    "UPDATE docs SET created_ts = $1, updated_ts = $2 WHERE id = $3",
                    stamp(created) if created > after else created,
                    stamp(updated) if updated > after else updated, doc_id,
                )  # fmt: skip
                tags = await conn.fetch(
                    "SELECT name, ts FROM tags WHERE doc = $1 AND ts > $2", doc, after
                )
                await conn.executemany(
                    "UPDATE tags SET ts = $1 WHERE doc = $2 AND name = $3",
                    [(stamp(int(r[1])), doc, r[0]) for r in tags],
                )
                # the records of the tags' changes, stamped by the same clock
                moves = await conn.fetch(
                    "SELECT name, n, ts FROM tag_history WHERE doc = $1 AND ts > $2", doc, after
                )
                await conn.executemany(
                    "UPDATE tag_history SET ts = $1 WHERE doc = $2 AND name = $3 AND n = $4",
                    [(stamp(int(r[2])), doc, r[0], r[1]) for r in moves],
                )
                snapshots = 0
                for (seq,) in await conn.fetch("SELECT seq FROM snapshots WHERE doc = $1", doc):
                    r = await conn.fetchrow(
                        "SELECT ts, state, checksum, meta FROM snapshots "
                        "WHERE doc = $1 AND seq = $2", doc, seq,
                    )  # fmt: skip
                    changed = restamped_snapshot_row(
                        int(r[0]), bytes(r[1]), r[2], r[3], after, stamp, rewrite
                    )
                    if changed is not None:
                        await conn.execute(
                            "UPDATE snapshots SET ts = $1, state = $2, checksum = $3, "
                            "meta = $4 WHERE doc = $5 AND seq = $6", *changed, doc, seq,
                        )  # fmt: skip
                        snapshots += 1
                return Restamped(events, snapshots, len(tags), len(moves))

        done = await self._run(run, "restamp")
        self._recent.clear()  # the rows it kept carry the old ts
        return done

    async def tombstone(self, doc: str) -> bytes | None:
        rows = await self._fetch(
            "SELECT state_vector FROM tombstones WHERE doc = $1", doc, what="tombstone"
        )
        return bytes(rows[0][0]) if rows else None

    async def tombstones(self) -> dict[str, bytes]:
        rows = await self._fetch(
            "SELECT doc, state_vector FROM tombstones ORDER BY doc", what="tombstones"
        )
        return {r[0]: bytes(r[1]) for r in rows}

    async def put_tombstone(self, doc: str, tombstone: bytes) -> None:
        await self._fetch(
            "INSERT INTO tombstones (doc, ts, state_vector) VALUES ($1, $2, $3) "
            "ON CONFLICT (doc) DO UPDATE SET ts = excluded.ts, "
            "state_vector = excluded.state_vector",
            doc, now_ms(), tombstone,
            what="tombstone write",
        )  # fmt: skip

    # --- sealing ---------------------------------------------------------------------

    async def seal(self, doc: str, *, run: int = S.SEGMENT_EVENTS, rest: int = 0) -> int:
        sealed_now = 0
        while True:
            rows = await self._fetch(
                "SELECT id, sealed, head FROM docs WHERE name = $1", doc, what="seal"
            )
            waiting = int(rows[0][2]) - int(rows[0][1]) if rows else 0
            n = run if waiting >= run else waiting if rest and waiting >= rest else 0
            if not n:
                if rest and rows:  # gone idle: what is left waits in the log (RecentRows)
                    self._recent.forget(int(rows[0][0]))
                if rest and self._sealed_since_vacuum:
                    # a document gone idle: its tail rows are all gone, give their space
                    # back now rather than after the next 4,096 sealed events (owed also
                    # when the pass that sealed them was stopped before its vacuum)
                    await self._vacuum_tail(idle=True)
                return sealed_now
            doc_id, sealed = int(rows[0][0]), int(rows[0][1])
            rows = self._recent.run(doc_id, sealed + 1, n) or await self._fetch(
                "SELECT seq, pos, ts, actor, kind, data, meta FROM log WHERE doc = $1 "
                "AND seq > $2 ORDER BY seq LIMIT $3",
                doc_id, sealed, n, what="seal",
            )  # fmt: skip
            # the columns and their compression off the event loop (lzma lets go of the
            # GIL): a segment is a few ms of CPU that live edits need not wait behind
            cols = await asyncio.to_thread(run_columns, rows, sealed, n)
            if cols is None:
                now = await self._fetch(
                    "SELECT sealed FROM docs WHERE id = $1", doc_id, what="seal"
                )
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

            async def write(
                conn: asyncpg.Connection, seg: S.Sealed = seg, doc_id: int = doc_id,
                sealed: int = sealed, n: int = n,
            ) -> None:  # fmt: skip
                async with conn.transaction():
                    # the document's row first (as compact does): one sealer at a time;
                    # appenders wait only for this short transaction
                    now = await conn.fetchval(
                        "SELECT sealed FROM docs WHERE id = $1 FOR UPDATE", doc_id
                    )
                    if now != sealed:
                        raise _Raced
                    status = await conn.execute(
                        "DELETE FROM log WHERE doc = $1 AND seq > $2 AND seq <= $3",
                        doc_id, sealed, seg.last_seq,
                    )  # fmt: skip
                    if int(status.split()[-1]) != n:
                        raise _Raced
                    await insert_segments(conn, doc_id, [seg])
                    await conn.execute(
                        "UPDATE docs SET sealed = $2 WHERE id = $1", doc_id, seg.last_seq
                    )

            try:
                await self._run(write, "seal")
            except _Raced:
                self._recent.forget(doc_id)  # the next try reads what the log holds
                return sealed_now
            self._recent.sealed(doc_id, seg.last_seq)
            sealed_now += n
            self._sealed_since_vacuum += n
            if self._sealed_since_vacuum >= _VACUUM_EVERY:
                await self._vacuum_tail()

    async def seal_due(self, *, run: int = S.SEGMENT_EVENTS) -> int:
        rows = await self._fetch(
            "SELECT name FROM docs WHERE head - sealed >= $1 ORDER BY name", run, what="seal"
        )
        total = 0
        for (doc,) in rows:
            total += await self.seal(doc, run=run)
        return total

    async def _vacuum_tail(self, *, idle: bool = False) -> None:
        """Sealing deletes tail rows; their space is reused only once vacuumed, and until
        then new rows extend the table. Vacuumed every _VACUUM_EVERY sealed events (a few ms)
        rather than waiting for autovacuum (a minute or more, or never: it may be off), so
        that the tail's table stays about that many rows big instead of growing with the
        whole log. `idle` (a document sealed to its end): its indexes are also rebuilt when
        they outgrew the rows left (see _REINDEX_SLACK); REINDEX CONCURRENTLY blocks no append
        nor read, and one process at a time does it. Not when this role may not
        (``upkeep``)."""
        if not self.upkeep:
            self._sealed_since_vacuum = 0
            return

        async def run(conn: asyncpg.Connection) -> None:
            if not idle:
                await conn.execute("VACUUM log")
                return
            # INDEX_CLEANUP ON: with dead rows on under 2 % of its pages, PostgreSQL (14+)
            # skips the indexes' pass and leaves those rows' line pointers, and a page
            # that has one is not empty, so the empty pages at the table's end were not
            # given back (an empty tail kept 18.6 MB after automerge-paper)
            await conn.execute(_IDLE_VACUUM)
            for _ in range(_IDLE_VACUUM_RETRIES):
                # rows deleted a moment ago stay while any transaction of the database
                # that began before may still see them (and keep the table's last pages);
                # and the end's empty pages go back only if VACUUM gets the table to
                # itself for a moment
                left, heap, live = await conn.fetchrow(
                    "SELECT s.n_dead_tup, pg_relation_size(c.oid), "
                    "greatest(c.reltuples, 0)::bigint FROM pg_class c "
                    "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = 'log'::regclass"
                )
                if not left and heap <= _TAIL_BYTES_PER_ROW * live + _TRUNCATE_SLACK:
                    break
                log.info("the tail's table: %d dead rows, %d bytes for %d rows; vacuumed "
                         "again", left, heap, live)  # fmt: skip
                await asyncio.sleep(_IDLE_VACUUM_PAUSE)
                await conn.execute(_IDLE_VACUUM)
            # reltuples: the live rows as this VACUUM counted them
            rows, index = await conn.fetchrow(
                "SELECT greatest(reltuples, 0)::bigint, pg_indexes_size(oid) FROM pg_class "
                "WHERE oid = 'log'::regclass"
            )
            if index <= _INDEX_BYTES_PER_ROW * rows + _REINDEX_SLACK:
                return
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _REINDEX_LOCK):
                return  # another process is at it
            try:
                # a rebuild interrupted before (the server killed) leaves an invalid
                # index behind, kept up to date by every append: dropped first
                for (name,) in await conn.fetch(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE i.indrelid = 'log'::regclass AND NOT i.indisvalid"
                ):
                    await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
                await conn.execute("REINDEX TABLE CONCURRENTLY log")
                log.info("the tail's indexes rebuilt (%d bytes for %d rows)", index, rows)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _REINDEX_LOCK)

        # shielded: a server stopping while it runs lets it finish (the pool's close waits
        # for it) rather than leave a rebuild half done
        await asyncio.shield(self._run(run, "vacuum", idempotent=True))
        self._sealed_since_vacuum = 0

    async def reclaim_snapshots(self, *, idle: bool = False) -> None:
        """VACUUM the snapshots' table (and its TOAST): rows that pruning deleted or
        rewrote leave their space behind until then, and new snapshots would extend the
        table meanwhile (autovacuum may be a minute away, or off).

        `idle` (a document's last snapshot): the table keeps the high-water mark of the
        whole snapshots written before the ladder made them bare differences (measured:
        3.5 MB for 2.3 MB of rows after automerge-paper), which VACUUM reuses but never
        gives back. When it holds more than _SNAPSHOT_SLACK times its rows' bytes (and
        256 kB more) and is small enough to rewrite in moments (_SNAPSHOT_REWRITE_MAX), it
        is rewritten (VACUUM FULL), at most once per _SNAPSHOT_REWRITE_EVERY seconds per
        process and only if its lock comes within 50 ms: it holds up snapshot reads and
        writes (room loads, versions) for that long, never an append. Not when this role
        may not (``upkeep``)."""
        if not self.upkeep:
            return

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute("VACUUM snapshots")
            if not idle or time.monotonic() < self._snapshot_rewrite_after:
                return
            size, rows = await conn.fetchrow(
                "SELECT pg_total_relation_size('snapshots'::regclass), "
                "(SELECT coalesce(sum(pg_column_size(s.*)), 0) FROM snapshots s)"
            )
            if size > _SNAPSHOT_REWRITE_MAX or size <= _SNAPSHOT_SLACK * rows + (256 << 10):
                return
            self._snapshot_rewrite_after = time.monotonic() + _SNAPSHOT_REWRITE_EVERY
            try:
                await conn.execute("SET lock_timeout = '50ms'")
                await conn.execute("VACUUM FULL snapshots")
                log.info("snapshots' table rewritten (%d bytes for %d of rows)", size, rows)
            except asyncpg.LockNotAvailableError:
                log.info("snapshots' table not rewritten: busy")
            finally:
                await conn.execute("RESET lock_timeout")

        await self._run(run, "vacuum", idempotent=True)

    async def segment_damage(self, doc: str) -> list[str]:
        rows = await self._fetch(
            "SELECT s.first_seq, s.last_seq, s.body, s.checksum FROM segments s "
            "JOIN docs d ON d.id = s.doc WHERE d.name = $1 ORDER BY s.first_seq",
            doc, what="segment check",
        )  # fmt: skip
        out = []
        for r in rows:
            first, last = int(r[0]), int(r[1])
            why = S.damage(bytes(r[2]), bytes(r[3]))
            if why is None:
                try:
                    c = S.decode(bytes(r[2]), bytes(r[3]))
                except S.SegmentDamaged as e:
                    why = str(e)
                else:
                    if (c.first_seq, c.last_seq) != (first, last):
                        why = f"it holds seqs {c.first_seq}..{c.last_seq}"
            if why is not None:
                out.append(f"segment {first}..{last}: {why}")
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
        row = await _snapshot_row(doc, seq, state, meta)
        if base is None and generation is None:
            await self._fetch(_PUT_SNAPSHOT, *row, what="snapshot write")
            return True

        async def run(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                if generation is not None and not await _generation_holds(conn, doc, generation):
                    return False
                if base is not None and not await _base_holds(conn, doc, seq, base):
                    return False
                await conn.execute(_PUT_SNAPSHOT, *row)
                return True

        return await self._run(run, "snapshot write")

    async def compaction_bases(self, docs: Sequence[str]) -> dict[str, BaseMark]:
        rows = await self._fetch(
            _BASE_MARKS_SQL + "WHERE d.name = ANY($1::text[])", list(docs), what="query"
        )
        found = {r[0]: _as_mark(r[1], r[2]) for r in rows}
        return {d: found.get(d, NO_BASE) for d in docs}

    async def generations(self, docs: Sequence[str]) -> dict[str, int | None]:
        rows = await self._fetch(
            "SELECT name, id FROM docs WHERE name = ANY($1::text[])", list(docs), what="query"
        )
        found = {r[0]: int(r[1]) for r in rows}
        return {d: found.get(d) for d in docs}

    async def put_snapshot_if_due(
        self,
        doc: str,
        seq: int,
        state: bytes,
        meta: dict[str, Any] | None = None,
        *,
        min_gap: int = 1,
        base: BaseMark | None = None,
        generation: int | None = None,
    ) -> bool:
        """Write the snapshot unless another process is writing one of this document right
        now, or a valid snapshot at a seq > ``seq - min_gap`` exists (or `base` or
        `generation` no longer holds: put_snapshot). True if written."""

        row = await _snapshot_row(doc, seq, state, meta)

        async def run(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _SNAPSHOT_LOCK, doc
                )
                if not got:
                    return False
                if generation is not None and not await _generation_holds(conn, doc, generation):
                    return False
                if base is not None and not await _base_holds(conn, doc, seq, base):
                    return False
                # a valid newer one (checked in the database: no blobs over the wire)
                newer = await conn.fetchval(
                    "SELECT 1 FROM snapshots WHERE doc = $1 AND seq > $2 "
                    f"AND {_VALID_SNAPSHOT_SQL} LIMIT 1",
                    doc,
                    seq - max(min_gap, 1),
                )
                if newer:
                    return False
                await conn.execute(_PUT_SNAPSHOT, *row)
                return True

        return await self._run(run, "snapshot write")

    async def latest_snapshot(self, doc: str, at_most: int | None = None) -> Snapshot | None:
        # newest first, a few at a time: a damaged one is skipped without reading them all
        bound = at_most if at_most is not None else 2**62
        while True:
            rows = await self._fetch(
                "SELECT doc, seq, ts, state, checksum, meta FROM snapshots "
                "WHERE doc = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 4",
                doc,
                bound,
                what="snapshot read",
            )
            for r in rows:
                snap = snapshot_from_row(r[0], int(r[1]), r[2], bytes(r[3]), r[4], r[5])
                if snap is not None:
                    return snap
            if len(rows) < 4:
                return None
            bound = int(rows[-1][1]) - 1

    async def snapshots(self, doc: str) -> list[SnapshotInfo]:
        rows = await self._fetch(
            "SELECT doc, seq, ts, state, checksum, meta FROM snapshots WHERE doc = $1 ORDER BY seq",
            doc,
            what="snapshot list",
        )
        return [snapshot_info(r[0], int(r[1]), r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    async def compact(
        self,
        doc: str,
        before: int,
        state: bytes,
        *,
        above: Mapping[int, tuple[bytes, dict[str, Any]]] | None = None,
    ) -> int:
        base = await _snapshot_row(doc, before, state, {"base": True})
        refolded = [
            await _snapshot_row(doc, seq, st, meta)
            for seq, (st, meta) in sorted((above or {}).items())
            if seq > before
        ]

        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                # the document's row first: appenders and sealers of it wait for us, and
                # so does a snapshot written with a base (put_snapshot: FOR KEY SHARE),
                # which then finds the base changed
                doc_id = await conn.fetchval("SELECT id FROM docs WHERE name = $1 FOR UPDATE", doc)
                await conn.execute(_PUT_SNAPSHOT, *base)
                await conn.execute("DELETE FROM snapshots WHERE doc = $1 AND seq < $2", doc, before)
                if above is not None:  # folded again from this base (a purge): all at once
                    await conn.execute(
                        "DELETE FROM snapshots WHERE doc = $1 AND seq > $2", doc, before
                    )
                    if refolded:
                        await conn.executemany(_PUT_SNAPSHOT, refolded)
                # derived data names what the folded events did (the attribution index:
                # who wrote what): built again from the base
                await conn.execute("DELETE FROM derived WHERE doc = $1", doc)
                if doc_id is None:
                    return 0
                status = await conn.execute(
                    "DELETE FROM log WHERE doc = $1 AND seq <= $2", doc_id, before
                )
                removed = int(status.split()[-1])
                for sid, first, last, body, check in await conn.fetch(
                    "SELECT id, first_seq, last_seq, body, checksum FROM segments "
                    "WHERE doc = $1 AND first_seq <= $2",
                    doc_id, before,
                ):  # fmt: skip
                    await conn.execute("DELETE FROM segments WHERE id = $1", sid)
                    if last <= before:
                        removed += last - first + 1
                        continue
                    # the segment across the cut keeps its events after it
                    c = decode_segment(SegmentRow(doc, first, last, bytes(body), bytes(check)))
                    k = before - first + 1
                    rest = S.encode(S.Columns(before + 1, c.ts[k:], c.pos[k:], c.actor[k:],
                                              c.kind[k:], c.meta[k:], c.updates[k:]))  # fmt: skip
                    await insert_segments(conn, doc_id, [rest])
                    removed += k
                await conn.execute(
                    "UPDATE docs SET base_seq = GREATEST(base_seq, $2), "
                    "sealed = GREATEST(sealed, $2), events_bytes = "
                    "(SELECT COALESCE(SUM(length(data)), 0) FROM log WHERE doc = $1) + "
                    "(SELECT COALESCE(SUM(raw_bytes), 0) FROM segments WHERE doc = $1) "
                    "WHERE id = $1",
                    doc_id,
                    before,
                )
                return removed

        try:
            return await self._run(run, "compact")
        finally:
            self._recent.clear()

    # --- named versions --------------------------------------------------------------

    async def put_tag(self, doc: str, name: str, seq: int, actor: str, *, move: bool = True) -> Tag:
        tag = Tag(doc, name, seq, now_ms(), actor)
        values = f"VALUES ($1, $2, $3, GREATEST($4::bigint, {_DOC_TS_FLOOR}), $5)"
        on_conflict = (
            "DO UPDATE SET seq = excluded.seq, ts = excluded.ts, actor = excluded.actor"
            if move
            else "DO NOTHING"
        )

        async def run(conn: asyncpg.Connection) -> Tag:
            async with conn.transaction():
                # the document's tag writes one at a time: the version a tag named before
                # this change, read here, is the one it replaces (tag_history)
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                                   _TAG_LOCK, doc)  # fmt: skip
                old = await conn.fetchrow(
                    "SELECT doc, name, seq, ts, actor FROM tags WHERE doc = $1 AND name = $2",
                    doc,
                    name,
                )
                if old is not None and not move:
                    return Tag(old[0], old[1], int(old[2]), int(old[3]), old[4])
                row = await conn.fetchrow(
                    f"INSERT INTO tags (doc, name, seq, ts, actor) {values} "
                    f"ON CONFLICT (doc, name) {on_conflict} RETURNING doc, name, seq, ts, actor",
                    tag.doc, tag.name, tag.seq, tag.ts, tag.actor,
                )  # fmt: skip
                if row is None:  # (an import wrote it meanwhile, which takes no lock)
                    row = await conn.fetchrow(
                        "SELECT doc, name, seq, ts, actor FROM tags WHERE doc = $1 AND name = $2",
                        doc,
                        name,
                    )
                    return Tag(row[0], row[1], int(row[2]), int(row[3]), row[4])
                stored = Tag(row[0], row[1], int(row[2]), int(row[3]), row[4])
                was = None if old is None else int(old[2])
                if stored.seq != was:  # (a name left where it was is no change)
                    action = "create" if was is None else "move"
                    args = (doc, name, doc, name, stored.ts, stored.actor, action, stored.seq, was)
                    await conn.execute(_numbered(TAG_MOVE_INSERT), *args)
                return stored

        return await self._run(run, "tag write")

    async def tags(self, doc: str) -> list[Tag]:
        rows = await self._fetch(
            "SELECT doc, name, seq, ts, actor FROM tags WHERE doc = $1 ORDER BY seq, name",
            doc,
            what="tags",
        )
        return [Tag(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows]

    async def delete_tag(self, doc: str, name: str, actor: str = "") -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                                   _TAG_LOCK, doc)  # fmt: skip
                row = await conn.fetchrow(
                    "DELETE FROM tags WHERE doc = $1 AND name = $2 "
                    f"RETURNING seq, GREATEST($3::bigint, {_DOC_TS_FLOOR})",
                    doc,
                    name,
                    now_ms(),
                )
                if row is None:
                    return False
                await conn.execute(_numbered(TAG_MOVE_INSERT), doc, name, doc, name,
                                   int(row[1]), actor, "delete", None, int(row[0]))  # fmt: skip
                return True

        return await self._run(run, "tag delete")

    async def tag_history(self, doc: str, name: str | None = None) -> list[TagMove]:
        query, args = (TAG_MOVES, (doc,)) if name is None else (TAG_MOVES_OF_ONE, (doc, name))
        rows = await self._fetch(_numbered(query), *args, what="tag history")
        return [TagMove(r[0], r[1], int(r[2]), r[3], r[4], None if r[5] is None else int(r[5]),
                        None if r[6] is None else int(r[6])) for r in rows]  # fmt: skip

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
        """Write a whole document as it is (seqs kept) in one transaction; used by `copy`.

        Refuses a document that already exists here unless ``replace``. A replace takes
        the global position counter first, as an append does (_APPEND: the counter, then
        the document's row, so the two never deadlock): once it is held no append is
        under way, and none comes before the commit, so the head read after it is the
        one the replaced document ends at (``replacing``, check_replacing)."""

        await self._intern({n for e in events for n in (e.actor, e.kind)})
        events = rising(events)
        last_ts = max(info.updated_ts or 0, events[-1].ts if events else 0)

        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                if replace:
                    await conn.execute("SELECT 1 FROM log_position WHERE id = 1 FOR UPDATE")
                row = await conn.fetchrow("SELECT id, head FROM docs WHERE name = $1", info.doc)
                old = None if row is None else row[0]
                if old is not None and not replace:
                    raise StoreError(f"document {info.doc!r} already exists in the target")
                if replacing is not None:
                    check_replacing(info.doc, replacing, *(row or (None, None)))
                if old is not None:
                    await conn.execute("DELETE FROM docs WHERE id = $1", old)
                    await conn.execute("DELETE FROM log WHERE doc = $1", old)
                    await conn.execute("DELETE FROM segments WHERE doc = $1", old)
                # the document's tag writes wait (tag_history numbers each tag's changes)
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                                   _TAG_LOCK, info.doc)  # fmt: skip
                # (a replaced document's records of tag changes go with its tags)
                for table in ("snapshots", "tags", "tag_history", "derived"):
                    await conn.execute(f"DELETE FROM {table} WHERE doc = $1", info.doc)
                created = min((e.ts for e in events), default=info.updated_ts or now_ms())
                doc_id = await conn.fetchval(
                    "INSERT INTO docs (name, head, base_seq, created_ts, updated_ts, events_bytes) "
                    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    info.doc, info.head, info.base_seq, created,
                    last_ts or created, sum(len(e.update) for e in events),
                )  # fmt: skip
                fresh: list[Event] = list(events) if keep_positions else []
                if events and keep_positions:
                    taken = await conn.fetchval(
                        "SELECT min(pos) FROM log WHERE pos = ANY($1::bigint[])",
                        [e.pos for e in events],
                    )
                    if taken is not None:  # a server wrote on the target meanwhile
                        raise StoreError(f"position {taken} is taken in the target by another "
                                         "event")  # fmt: skip
                    taken = await conn.fetchval(
                        "SELECT min(pos) FROM deletions WHERE pos = ANY($1::bigint[])",
                        [e.pos for e in events],
                    )
                    if taken is not None:  # a server deleted on the target meanwhile
                        raise StoreError(f"position {taken} is taken in the target by a "
                                         "deletion")  # fmt: skip
                    await conn.execute(_CARRY, max(e.pos for e in events))
                elif events:
                    last = int(
                        await conn.fetchval(
                            "UPDATE log_position SET pos = pos + $1 WHERE id = 1 RETURNING pos",
                            len(events),
                        )
                    )
                    first = last - len(events) + 1
                    fresh = [dataclasses.replace(e, pos=first + i) for i, e in enumerate(events)]
                await write_log(conn, int(doc_id), fresh, info.base_seq, self._sym)
                for s in snapshots:
                    # packed anew: the source's row may be of an older form
                    await conn.execute(
                        "INSERT INTO snapshots (doc, seq, ts, state, checksum, meta) "
                        "VALUES ($1, $2, $3, $4, $5, $6)",
                        s.doc, s.seq, s.ts, *snapshot_row(s.state, s.meta),
                    )  # fmt: skip
                for t in tags:
                    await conn.execute(
                        "INSERT INTO tags (doc, name, seq, ts, actor) VALUES ($1, $2, $3, $4, $5)",
                        t.doc, t.name, t.seq, t.ts, t.actor,
                    )  # fmt: skip
                if tag_moves:
                    await conn.executemany(_numbered(TAG_MOVE_COPY),
                                           tag_moves_numbered(info.doc, tag_moves))  # fmt: skip
                if tombstone is not None:
                    await conn.execute(
                        "INSERT INTO tombstones (doc, ts, state_vector) VALUES ($1, $2, $3) "
                        "ON CONFLICT (doc) DO UPDATE SET ts = excluded.ts, "
                        "state_vector = excluded.state_vector",
                        info.doc, now_ms(), tombstone,
                    )  # fmt: skip

        try:
            await self._run(run, "import")
        finally:
            self._recent.clear()

    async def import_deletions(self, records: Sequence[Event]) -> int:
        if not records:
            return 0

        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                # the counter first, as every writer of positions takes it
                await conn.execute(_CARRY, max(r.pos for r in records))
                positions = [r.pos for r in records]
                have = {
                    int(r[0]): (r[1], int(r[2]))
                    for r in await conn.fetch(
                        "SELECT pos, doc, seq FROM deletions WHERE pos = ANY($1::bigint[])",
                        positions,
                    )
                }
                clash = next((r for r in records if have.get(r.pos, (r.doc, r.seq))
                              != (r.doc, r.seq)), None)  # fmt: skip
                if clash is not None:
                    raise StoreError(f"position {clash.pos} is taken in the target by the "
                                     f"deletion of {have[clash.pos][0]!r}")  # fmt: skip
                taken = await conn.fetchval(
                    "SELECT min(pos) FROM log WHERE pos = ANY($1::bigint[])", positions
                )
                if taken is not None:
                    raise StoreError(f"position {taken} is taken in the target by another event")
                new = [r for r in records if r.pos not in have]
                await conn.executemany(
                    "INSERT INTO deletions (pos, doc, seq, ts, actor) VALUES ($1,$2,$3,$4,$5)",
                    [(r.pos, r.doc, r.seq, r.ts, r.actor) for r in new],
                )
                return len(new)

        return await self._run(run, "deletions import")

    async def carry_positions(self, last: int) -> None:
        await self._fetch(_CARRY, last, what="position carry")

    # --- retention and derived data ------------------------------------------------------

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> int:
        if not seqs:
            return 0
        rows = await self._fetch(
            "DELETE FROM snapshots WHERE doc = $1 AND seq = ANY($2::bigint[]) RETURNING seq",
            doc,
            list(seqs),
            what="snapshot delete",
        )
        return len(rows)

    async def put_derived(self, doc: str, kind: str, seq: int, data: bytes) -> None:
        await self._fetch(
            "INSERT INTO derived (doc, kind, seq, ts, data, checksum) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (doc, kind) DO UPDATE SET "
            "seq = excluded.seq, ts = excluded.ts, data = excluded.data, "
            "checksum = excluded.checksum WHERE excluded.seq >= derived.seq",
            doc, kind, seq, now_ms(), data, checksum(data),
            what="derived data write",
        )  # fmt: skip

    async def derived(self, doc: str, kind: str) -> tuple[int, bytes] | None:
        rows = await self._fetch(
            "SELECT seq, data, checksum FROM derived WHERE doc = $1 AND kind = $2",
            doc,
            kind,
            what="derived data read",
        )
        if not rows:
            return None
        data = derived_from_row(doc, kind, bytes(rows[0][1]), rows[0][2])
        return None if data is None else (int(rows[0][0]), data)

    def doc_locks(self) -> DocLocks:
        if self._doc_locks is None:
            self._doc_locks = PostgresDocLocks(self)
        return self._doc_locks

    def revocations(self) -> Revocations:
        if self._revocations is None:
            self._revocations = PostgresRevocations(self)
        return self._revocations

    def webhook_cursors(self) -> WebhookCursors:
        if self._cursors is None:
            self._cursors = PostgresCursors(self)
        return self._cursors
