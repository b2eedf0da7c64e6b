"""Event stores: one interface (base.EventStore), several homes."""

from __future__ import annotations

import re

from .base import DocInfo, Event, EventStore, NewEvent, Snapshot, SnapshotInfo, Tag
from .memory import MemoryStore
from .sqlite import SQLiteStore

#: a URL's scheme: a store URL names one of ours, or it is a file path
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")

__all__ = [
    "DocInfo",
    "Event",
    "EventStore",
    "MemoryStore",
    "NewEvent",
    "SQLiteStore",
    "Snapshot",
    "SnapshotInfo",
    "Tag",
    "open_store",
    "sqlite_path",
]


def open_store(
    url: str,
    *,
    durability: str = "fsync",
    migrate: bool = False,
    warm_disk_ms: float = 0.0,
    pg_pool_size: int = 10,
    pg_command_timeout: float = 30.0,
    read_only: bool = False,
    accept_lost_revocations: bool = False,
) -> EventStore:
    """A store for a URL: ``sqlite:///path`` (or a bare path), ``postgresql://…``, ``memory://``.
    ``durability``: "fsync" (the default) or "os", see ``base.DURABILITY`` (the memory
    store keeps nothing either way). ``migrate``: upgrade an older schema when it starts
    (what ``palimpsest migrate`` does); otherwise a store whose log needs rewriting
    refuses to start and says so. ``warm_disk_ms``: SQLite only, see SQLiteStore.
    ``pg_pool_size``: PostgreSQL only, the size of each of its two pools;
    ``pg_command_timeout``: PostgreSQL only, asyncpg's command timeout (s).
    ``read_only``: SQLite only, a store that only reads and leaves the file byte for byte
    as it found it (export, inspect, verify: SQLiteStore._start_read_only).
    ``accept_lost_revocations``: a revoked_users table the store had and lost is made
    again, empty, rather than stopping the start (`palimpsest migrate
    --accept-lost-revocations`: tables.side_refusal)."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(
            url,
            durability=durability,
            migrate=migrate,
            max_size=pg_pool_size,
            command_timeout=pg_command_timeout,
            accept_lost_revocations=accept_lost_revocations,
        )
    if url.startswith("memory://"):
        return MemoryStore()
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(1) != "sqlite":
        raise ValueError(
            f"unknown store URL {scheme.group(0)}...: use sqlite:///path (or a file path), "
            "postgresql://... or memory://"
        )
    return SQLiteStore(
        sqlite_path(url),
        durability=durability,
        migrate=migrate,
        warm_disk_ms=warm_disk_ms,
        read_only=read_only,
        accept_lost_revocations=accept_lost_revocations,
    )


def sqlite_path(url: str) -> str:
    """The file of a SQLite store URL, as SQLAlchemy reads it: ``sqlite:///rel/path.db``
    is relative to the working directory, ``sqlite:////abs/path.db`` absolute; a plain
    path is itself; ``sqlite://`` alone is ``:memory:``."""
    if not url.startswith("sqlite://"):
        return url
    url = url[len("sqlite://") :]
    if url.startswith("//"):
        return url[1:]
    if url.startswith("/"):
        return url[1:] or ":memory:"
    return url
