"""Document locks, kept in the event store beside the log (``server.locking`` uses it).

One row per locked document: who locked it, when (ms) and why. Unlocking removes the
row; deleting a document removes its row too (a new document of the name starts
unlocked).

In SQL, one table, ``doc_locks``, the same statements for SQLite and PostgreSQL
(placeholders aside), kept beside the log's schema rather than in its versions, as the
revoked users' table is (server.store.revocations): it holds no event data, and no
schema version changes for it. SQLite makes it when a database opens, PostgreSQL's
start (and ``palimpsest migrate``) when it is missing (side_tables): a store of an
older release gets it on its first start with this one, with no document locked.
Every store offers it (``EventStore.doc_locks()``).
"""

from __future__ import annotations

import sqlite3
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..util import iso
from .base import now_ms
from .side_tables import PostgresSideTable

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .sqlite import SQLiteStore

#: the longest reason a lock keeps
MAX_REASON = 500
#: the characters a reason may not hold (Unicode categories): control characters (NUL,
#: ANSI escapes, tabs and line breaks: a reason is one line, shown to every refused
#: client and in the server's log), format characters (bidi overrides show a reason
#: other than the one stored, zero-width ones hide text), line and paragraph
#: separators, lone surrogates
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: format characters a reason may hold, as a user name may (server.auth.identity): the
#: joiners emoji sequences and scripts such as Persian need, and the tag characters of
#: subdivision flags (🏴 + tags); they show nothing else
_JOINERS = frozenset({"\u200c", "\u200d", *map(chr, range(0xE0020, 0xE0080))})


def _refused(ch: str) -> bool:
    return ch not in _JOINERS and unicodedata.category(ch) in _REFUSED_CATEGORIES


def shown(reason: str) -> str:
    """`reason` as a refused client is told it: a character a reason may not hold (in
    a row written before they were refused) as U+FFFD."""
    return "".join("\ufffd" if _refused(ch) else ch for ch in reason)


def reason_problem(reason: str) -> str | None:
    """What is wrong with a lock's `reason`, None when nothing is."""
    if len(reason) > MAX_REASON:
        return f"at most {MAX_REASON} characters"
    for i, ch in enumerate(reason):
        if _refused(ch):
            return (f"one line of text without control or format characters: "
                    f"U+{ord(ch):04X} at code point {i}")  # fmt: skip
    return None


@dataclass(frozen=True, slots=True)
class DocLock:
    doc: str
    #: who locked it, and when (ms)
    by: str = ""
    ts: int = 0
    reason: str = ""

    def json(self) -> dict[str, Any]:
        return {"by": self.by, "at": iso(self.ts), "reason": self.reason}


class DocLocks(ABC):
    """The locked documents of one store."""

    @abstractmethod
    async def put(self, row: DocLock) -> None:
        """Lock `row.doc` (again: the new row replaces the old)."""

    @abstractmethod
    async def remove(self, doc: str) -> bool:
        """Unlock `doc`; False when it was not locked."""

    @abstractmethod
    async def of(self, docs: Iterable[str]) -> dict[str, DocLock]:
        """The locks of those of `docs` that are locked."""

    @abstractmethod
    async def list(self) -> list[DocLock]:
        """Every locked document, by name."""

    async def get(self, doc: str) -> DocLock | None:
        return (await self.of([doc])).get(doc)


class MemoryDocLocks(DocLocks):
    def __init__(self) -> None:
        self._rows: dict[str, DocLock] = {}

    async def put(self, row: DocLock) -> None:
        self._rows[row.doc] = row

    async def remove(self, doc: str) -> bool:
        return self._rows.pop(doc, None) is not None

    async def of(self, docs: Iterable[str]) -> dict[str, DocLock]:
        return {d: self._rows[d] for d in docs if d in self._rows}

    async def list(self) -> list[DocLock]:
        return [self._rows[d] for d in sorted(self._rows)]


CREATE_TABLE = """CREATE TABLE IF NOT EXISTS doc_locks (
    doc TEXT PRIMARY KEY,
    by_user TEXT NOT NULL DEFAULT '',
    ts BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
)"""

#: names asked for in one statement (SQLite's default limit of variables is 32766)
_CHUNK = 500


class SQLDocLocks(DocLocks):
    """The statements, written with ``?`` placeholders; a subclass runs them."""

    @abstractmethod
    async def _exec(self, sql: str, args: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        """Run one statement in its own transaction (the table exists); its rows."""

    async def put(self, row: DocLock) -> None:
        await self._exec(
            "INSERT INTO doc_locks (doc, by_user, ts, reason) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (doc) DO UPDATE SET by_user = excluded.by_user, ts = excluded.ts, "
            "reason = excluded.reason",
            (row.doc, row.by, row.ts or now_ms(), row.reason),
            write=True,
        )

    async def remove(self, doc: str) -> bool:
        rows = await self._exec(
            "DELETE FROM doc_locks WHERE doc = ? RETURNING doc", (doc,), write=True
        )
        return bool(rows)

    async def of(self, docs: Iterable[str]) -> dict[str, DocLock]:
        names = sorted(set(docs))
        out: dict[str, DocLock] = {}
        for i in range(0, len(names), _CHUNK):
            chunk = names[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = await self._exec(
                f"SELECT doc, by_user, ts, reason FROM doc_locks WHERE doc IN ({marks})",
                chunk,
                write=False,
            )
            for r in rows:
                out[str(r[0])] = DocLock(str(r[0]), str(r[1]), int(r[2]), str(r[3]))
        return out

    async def list(self) -> list[DocLock]:
        rows = await self._exec(
            "SELECT doc, by_user, ts, reason FROM doc_locks ORDER BY doc", (), write=False
        )
        return [DocLock(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]


class SQLiteDocLocks(SQLDocLocks):
    """Writes through the store's writer thread, reads on its reader connection (the
    table is made when the database opens: SQLiteStore._side_tables)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def _exec(self, sql: str, args: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        if not write:
            return list(await self.store._fetchall(sql, tuple(args)))

        def run(conn: sqlite3.Connection) -> list[Sequence[Any]]:
            return list(conn.execute(sql, tuple(args)).fetchall())

        return await self.store._write("document locks", run)


class PostgresDocLocks(SQLDocLocks):
    """Through the store's pool (and its error translation)."""

    def __init__(self, store: PostgresStore) -> None:
        self._table = PostgresSideTable(store, "document locks")

    async def _exec(self, sql: str, args: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        return await self._table.run(sql, args)


__all__ = [
    "CREATE_TABLE",
    "MAX_REASON",
    "DocLock",
    "DocLocks",
    "MemoryDocLocks",
    "reason_problem",
    "shown",
    "PostgresDocLocks",
    "SQLDocLocks",
    "SQLiteDocLocks",
]
