"""Bulk import: every document of another Yjs server's store, in one process, over one
connection to the event store (``palimpsest import-from``, docs/migrating.md).

Sources (read only, never written):

- ``hocuspocus-sqlite``: @hocuspocus/extension-sqlite's database, a table
  ``documents(name, data)`` whose data is the whole document as one Yjs update;
- ``ystore``: pycrdt-websocket's SQLiteYStore (pycrdt-store), a table
  ``yupdates(path, yupdate, metadata, timestamp)``: one row per update, with the time it
  was stored (seconds, a float);
- ``dir``: a directory of one file per document, ``NAME.yjs`` or ``NAME.bin`` a Yjs
  update, ``NAME.txt`` UTF-8 text; NAME is the path below the directory (y-leveldb's
  documents come this way: its own reader writes them out, docs/migrating.md).

Each update becomes one event of kind ``import`` through maintenance.import_data, so an
import here is what ``palimpsest import`` would have logged, row by row. A YStore row
keeps its time as the event's ts (never earlier than the event before it: the log stays in
time order), and a row that adds nothing to the document (an empty update, an echo: the
no-op rule of known.py, as for a live update) is left out. A document that already has
events is skipped unless `append`; with it, what the document already holds is left out
by the same rule, so a run that stopped half-way can be run again. A document left with
``snapshot_every`` events or more since its last snapshot gets one, as a room writes it
(server.checkpoint): its first load reads it instead of replaying every row.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .checkpoint import Checkpoints
from .errors import DocNameError
from .known import KnownDeletions, adds_anything
from .maintenance import MaintenanceError, as_update, import_data
from .names import validate_doc_name
from .room import IMPORT_KIND
from .settings import Settings
from .snapshots import load
from .store import EventStore
from .store.base import Event
from .updates import decode_update_meta

#: what a document file's extension says it holds (the dir source)
UPDATE_SUFFIXES = (".yjs", ".bin")
TEXT_SUFFIXES = (".txt",)


@dataclass(frozen=True, slots=True)
class Item:
    """One update of a source document (or its text), with its time in ms when the
    source kept one."""

    data: bytes
    ts: int | None = None
    text: bool = False


class Source(Protocol):
    #: what the events' meta names as their source (the file's name)
    label: str

    def names(self) -> list[str]:
        """The source's document names, in the order they are imported."""

    def items(self, name: str) -> Iterator[Item]:
        """The updates of one document, in the order they were written."""

    def close(self) -> None: ...


#: SQLite virtual-machine steps between two calls of the progress handler
_PROGRESS_EVERY = 10_000
#: a query's budget of VM steps: this many per byte of the source file, and at least
#: _STEPS_LEAST. Reading a real table costs some tens of steps per row (a row takes a few
#: bytes at least): far below it; a loop (a view over a recursive CTE) reaches it
_STEPS_PER_BYTE = 200
_STEPS_LEAST = 50_000_000


class _SQLiteSource:
    """A source SQLite file, read only, its `table` a real table with `columns`, each
    query's work bounded (see ``query``)."""

    def __init__(self, path: str, table: str, columns: tuple[str, ...], what: str) -> None:
        p = Path(path)
        if not p.is_file():
            raise MaintenanceError(f"no file at {p.absolute()}")
        self.label = p.name
        self.path = path
        self.max_bytes = Settings.from_env().max_doc_bytes
        # read-only (mode=ro): the file is never written, nor a journal made beside it.
        # Not immutable=1: a source left in WAL mode keeps its last writes in its -wal
        # file, which that would leave out
        self.conn = sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro", uri=True)
        # no value longer than a document may be (a blob of 1 GB is refused by SQLite
        # before it is made), no function of the file's schema run unless harmless
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_bytes + 1024)
        self.budget = max(_STEPS_LEAST, p.stat().st_size * _STEPS_PER_BYTE)
        self._steps = 0
        self.conn.set_progress_handler(self._progress, _PROGRESS_EVERY)
        try:
            self.conn.execute("PRAGMA trusted_schema = OFF")
            kind = self.conn.execute(
                "SELECT type FROM sqlite_master WHERE name = ? COLLATE NOCASE", (table,)
            ).fetchone()
            cols = {
                r[1]: r[6]  # name: hidden (0 a plain column; 2, 3 generated ones)
                for r in self.conn.execute(f'PRAGMA table_xinfo("{table}")')
            }
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise MaintenanceError(f"{path} is not an SQLite database ({e})") from e
        problem = None
        if kind is None or not set(columns) <= set(cols):
            problem = f"has no table {table}({', '.join(columns)})" + (
                f" (its {table} has {', '.join(sorted(cols))})" if cols else ""
            )
        elif kind[0] != "table":
            problem = f"has {table} as a {kind[0]}, not a table"
        elif any(cols[c] for c in columns):
            problem = f"has {table} with generated columns ({', '.join(columns)} must be stored)"
        if problem is not None:
            self.conn.close()
            raise MaintenanceError(f"{path} {problem}: not {what}")

    def _progress(self) -> int:
        self._steps += _PROGRESS_EVERY
        return 1 if self._steps > self.budget else 0  # non-zero: the query is interrupted

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """All rows of `sql`; MaintenanceError if it takes more than the file's budget of
        work (its size's worth: ``_STEPS_PER_BYTE``) or the file is damaged."""
        self._steps = 0
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:  # OperationalError "interrupted" among them
            if self._steps > self.budget:
                raise MaintenanceError(
                    f"{self.path}: reading it takes more work than a file of its size can "
                    f"need (over {self.budget} SQLite steps): stopped, not a store's file"
                ) from e
            if "too big" in str(e):
                raise MaintenanceError(
                    f"{self.path}: a value is larger than MAX_DOC_BYTES ({self.max_bytes})"
                ) from e
            raise MaintenanceError(f"{self.path}: cannot be read ({e})") from e

    def close(self) -> None:
        self.conn.close()


class HocuspocusSQLite(_SQLiteSource):
    """@hocuspocus/extension-sqlite: ``documents(name, data)``, one row per document."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "documents", ("name", "data"),
                         "a database of @hocuspocus/extension-sqlite")  # fmt: skip

    def names(self) -> list[str]:
        rows = self.query("SELECT DISTINCT name FROM documents ORDER BY name")
        return [str(r[0]) for r in rows]

    def items(self, name: str) -> Iterator[Item]:
        # the extension reads the newest row of a name (ORDER BY rowid DESC): so here
        rows = self.query(
            "SELECT data FROM documents WHERE name = ? ORDER BY rowid DESC LIMIT 1", (name,)
        )
        if rows:
            yield Item(_blob(rows[0][0]))


class YStoreSQLite(_SQLiteSource):
    """pycrdt-websocket's SQLiteYStore: ``yupdates(path, yupdate, metadata, timestamp)``,
    one row per update. Its ycheckpoints table only repeats what the rows hold."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "yupdates", ("path", "yupdate", "timestamp"),
                         "a pycrdt-websocket SQLiteYStore")  # fmt: skip

    def names(self) -> list[str]:
        rows = self.query("SELECT DISTINCT path FROM yupdates ORDER BY path")
        return [str(r[0]) for r in rows]

    def items(self, name: str) -> Iterator[Item]:
        # the YStore folds its rows in timestamp order; rowid breaks ties in write order
        rows = self.query(
            "SELECT yupdate, timestamp FROM yupdates WHERE path = ? ORDER BY timestamp, rowid",
            (name,),
        )
        for data, ts in rows:
            if not isinstance(ts, int | float) or not 0 <= ts < 1e11:
                raise MaintenanceError(f"a row of {name!r} has the timestamp {ts!r}, not a time")
            yield Item(_blob(data), round(ts * 1000))


def _blob(data: object) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes | str):
        return data if isinstance(data, bytes) else data.encode()
    raise MaintenanceError(f"a value of type {type(data).__name__} where an update belongs")


class Directory:
    """One file per document below `path`: NAME.yjs / NAME.bin (an update) or NAME.txt.
    Any other file is refused (hidden ones too: ``.notes.yjs`` is a document), as are
    two files of one name, anything that is not a regular file (a symbolic link, to a
    file or a directory, is never followed: ``passwd.txt -> /etc/passwd`` would import
    the operator's file; a device, a FIFO, a socket) and a file over `max_bytes` (by its
    size, before it is read): listed, and nothing is imported."""

    def __init__(self, path: str, max_bytes: int | None = None) -> None:
        root = Path(path)
        if not root.is_dir():
            raise MaintenanceError(f"no directory at {root.absolute()}")
        self.label = root.name
        self.max_bytes = Settings.from_env().max_doc_bytes if max_bytes is None else max_bytes
        self.files: dict[str, Path] = {}
        other: list[str] = []
        twice: list[str] = []
        for f, st in _walk(root):
            rel = f.relative_to(root).as_posix()
            kind = _not_regular(st.st_mode)
            if kind is not None:
                other.append(f"{rel}: {kind}, not a regular file")
                continue
            if f.suffix not in UPDATE_SUFFIXES + TEXT_SUFFIXES:
                other.append(f"{rel}: unknown extension")
                continue
            if st.st_size > self.max_bytes:
                other.append(f"{rel}: {st.st_size} bytes, over MAX_DOC_BYTES ({self.max_bytes})")
                continue
            name = f.relative_to(root).with_suffix("").as_posix()
            if name in self.files:
                twice.append(f"{self.files[name].relative_to(root)} and {rel}: the same document")
            self.files[name] = f
        if other or twice:
            raise MaintenanceError(
                f"{path} holds files that are not one document each (NAME.yjs or NAME.bin: "
                "a Yjs update, NAME.txt: text, each a regular file); nothing was imported: "
                + "; ".join([*other, *twice])
            )

    def names(self) -> list[str]:
        return list(self.files)

    def items(self, name: str) -> Iterator[Item]:
        f = self.files[name]
        yield Item(_read_regular(f, self.max_bytes), text=f.suffix in TEXT_SUFFIXES)

    def close(self) -> None:
        pass


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry below `root` but its directories, with its lstat, in name order; a
    symbolic link (to a directory too) is an entry, never followed."""
    stack = [root]
    found: list[tuple[Path, os.stat_result]] = []
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(e.path))
                else:
                    found.append((Path(e.path), st))
    return iter(sorted(found, key=lambda x: x[0]))


def _not_regular(mode: int) -> str | None:
    """What a file that is not a regular one is ("a symbolic link", ...); None for one."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _read_regular(f: Path, max_bytes: int) -> bytes:
    """`f`'s bytes, opened without following a symbolic link and checked again once
    open (it may have been replaced since the directory was listed): a regular file of
    at most `max_bytes`, or MaintenanceError before anything is read."""
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        why = f"cannot open it ({e.strerror}; a symbolic link is not followed)"
        raise MaintenanceError(why) from e
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        kind = _not_regular(st.st_mode)
        if kind is not None:
            raise MaintenanceError(f"it is {kind}, not a regular file")
        if st.st_size > max_bytes:
            raise MaintenanceError(f"it has {st.st_size} bytes, over MAX_DOC_BYTES ({max_bytes})")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise MaintenanceError(f"it has over {max_bytes} bytes, over MAX_DOC_BYTES")
    return data


SOURCES: dict[str, Callable[[str], Source]] = {
    "hocuspocus-sqlite": HocuspocusSQLite,
    "ystore": YStoreSQLite,
    "dir": Directory,
}


# --- names ------------------------------------------------------------------------------


def map_names(names: list[str], *, slash: str = ":", rename: dict[str, str] | None = None
              ) -> dict[str, str]:  # fmt: skip
    """Each source name's document name: `rename`'s when it has one, else the name with a
    leading ``/`` dropped (pycrdt-websocket's rooms are websocket paths) and every other
    ``/`` made `slash` (the rule of docs/hocuspocus.md: ``org/team/doc`` -> ``org:team:doc``).

    Raises MaintenanceError listing every name that is still not a document name, every
    name two sources map to and every `rename` of a name the source does not have: nothing
    is skipped without a word."""
    rename = rename or {}
    out: dict[str, str] = {}
    problems = [f"--rename {old!r}: the source has no such document"
                for old in rename if old not in names]  # fmt: skip
    by_doc: dict[str, list[str]] = {}
    for name in names:
        doc = rename[name] if name in rename else name.removeprefix("/").replace("/", slash)
        try:
            validate_doc_name(doc)
        except DocNameError as e:
            problems.append(f"{name!r} -> {doc!r}: {e}")
            continue
        out[name] = doc
        by_doc.setdefault(doc, []).append(name)
    problems += [f"{', '.join(map(repr, srcs))} -> {doc!r}: one name for {len(srcs)} documents"
                 for doc, srcs in by_doc.items() if len(srcs) > 1]  # fmt: skip
    if problems:
        raise MaintenanceError(
            f"{len(problems)} document name(s) cannot be imported as they are; nothing was "
            "imported (give --rename SOURCE=NAME for each, or another --slash):\n  "
            + "\n  ".join(problems)
        )
    return out


# --- import -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of one source document."""

    name: str  # in the source
    doc: str  # here
    #: imported | skipped (it had events) | empty (nothing to import) | failed
    status: str = "imported"
    events: int = 0
    #: updates that added nothing to the document (empty, or already held)
    left_out: int = 0
    #: events whose source time was before the document's previous event: given its time
    moved: int = 0
    detail: str = ""
    #: the seq of the snapshot written after the import (None: none was due)
    snapshot: int | None = None
    #: the events an interrupted run of this import had written (it went on after them)
    resumed: int = 0


async def import_doc(
    store: EventStore,
    source: Source,
    name: str,
    doc: str,
    *,
    user: str,
    append: bool,
    checkpoints: Checkpoints | None = None,
) -> Outcome:
    """Import one source document as `doc`. A refusal of one of its updates ends this
    document (status failed, what was imported before it stays) but not the run; a
    store error ends the run. With `checkpoints`, a document that got events is then
    snapshotted when due (what a failed one got too)."""
    out = await _import_doc(store, source, name, doc, user=user, append=append)
    if checkpoints is not None and out.events:
        out.snapshot = await checkpoints.after_import(doc)
    return out


async def _import_doc(
    store: EventStore, source: Source, name: str, doc: str, *, user: str, append: bool
) -> Outcome:
    out = Outcome(name, doc)
    head = await store.head(doc)
    last = await store.read(doc, after=head - 1, upto=head) if head else []
    last_ts = last[0].ts if last else 0
    label = f"{source.label}: {name}"
    # the source row the document's last event was: a run of this same import that was
    # interrupted (or one that finished) wrote it, nothing after it: go on from there
    done = _imported_item(last[0], label, user) if last else None
    if head > 0 and not append and done is None:
        out.status, out.detail = "skipped", f"already has {head} events (--append adds to them)"
        return out
    if done is not None and not append:
        out.resumed = head
    done = done or 0
    loaded = await load(store, doc)
    known = KnownDeletions.of_doc(loaded.doc)
    rows, i = source.items(name), 0
    try:
        while True:
            i += 1  # the row being read, then imported
            item = next(rows, None)
            if item is None:
                break
            if i <= done and not append:
                continue  # imported by the run that was interrupted
            if item.text:
                if item.data in (b"", b"\xef\xbb\xbf"):
                    out.left_out += 1
                    continue
                ev = await import_data(store, doc, item.data, user=user, source=label,
                                       as_text=True, loaded=loaded, item=i)  # fmt: skip
            else:
                if as_update(item.data) is None:
                    raise MaintenanceError("it is not a Yjs v1 update")
                if not adds_anything(item.data, loaded.doc.get_state(), known):
                    out.left_out += 1
                    continue
                ts = None if item.ts is None else max(item.ts, last_ts)
                out.moved += ts is not None and ts != item.ts
                ev = await import_data(store, doc, item.data, user=user, source=label,
                                       ts=ts, loaded=loaded, item=i)  # fmt: skip
                known.add(decode_update_meta(item.data).deletes)
            last_ts = max(last_ts, ev.ts)
            out.events += 1
    except MaintenanceError as e:
        out.status = "failed"
        out.detail = f"update {i}: {e}"
        if out.events:
            out.detail += f" ({out.events} imported before it)"
        return out
    if out.resumed and not out.events:
        out.status = "skipped"
        out.detail = f"imported from this source already ({head} events)"
        return out
    if not out.events:
        out.status = "empty"
        out.detail = "nothing to import" if head == 0 else "holds all of it already"
    return out


def _imported_item(ev: Event, label: str, user: str) -> int | None:
    """The number of the source row `ev` is, when it is an event this import (`label`, by
    `user`) wrote; None for any other event (a run of an older version wrote no number:
    its rows are then gone through again, what the document holds left out)."""
    if ev.kind != IMPORT_KIND or ev.actor != user or ev.meta.get("source") != label:
        return None
    item = ev.meta.get("item", 0)
    return item if isinstance(item, int) and not isinstance(item, bool) and item >= 0 else 0


__all__ = [
    "SOURCES",
    "Directory",
    "HocuspocusSQLite",
    "Item",
    "Outcome",
    "Source",
    "YStoreSQLite",
    "import_doc",
    "map_names",
]
