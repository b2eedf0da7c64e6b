"""Bulk import: every document of another Yjs server's store, in one process, over one
connection to the event store (``palimpsest import-from``, docs/migrating.md).

Sources (read only, never written):

- ``hocuspocus-sqlite``: @hocuspocus/extension-sqlite's database, a table
  ``documents(name, data)`` whose data is the whole document as one Yjs update;
- ``dir``: a directory of one file per document, ``NAME.yjs`` or ``NAME.bin`` a Yjs
  update, ``NAME.txt`` UTF-8 text; NAME is the path below the directory (y-leveldb's
  documents come this way: its own reader writes them out, docs/migrating.md).

Each update becomes one event of kind ``import`` through maintenance.import_data, so an
import here is what ``palimpsest import`` would have logged, document by document; an
update that adds nothing to the document (an empty update: the no-op rule of known.py,
as for a live update) is left out. A document that already has events is skipped unless
`append`; with it, what the document already holds is left out by the same rule, so a
run that stopped half-way can be run again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import DocNameError
from .known import KnownDeletions, adds_anything
from .maintenance import MaintenanceError, as_update, import_data
from .names import validate_doc_name
from .snapshots import load
from .store import EventStore
from .updates import decode_update_meta

#: what a document file's extension says it holds (the dir source)
UPDATE_SUFFIXES = (".yjs", ".bin")
TEXT_SUFFIXES = (".txt",)


@dataclass(frozen=True, slots=True)
class Item:
    """One update of a source document (or its text)."""

    data: bytes
    text: bool = False


class Source(Protocol):
    #: what the events' meta names as their source (the file's name)
    label: str

    def names(self) -> list[str]:
        """The source's document names, in the order they are imported."""

    def items(self, name: str) -> Iterator[Item]:
        """The updates of one document, in the order they were written."""

    def close(self) -> None: ...


def _open_sqlite(path: str, table: str, columns: tuple[str, ...], what: str) -> sqlite3.Connection:
    """A read-only connection to `path`, whose `table` must have `columns`."""
    p = Path(path)
    if not p.is_file():
        raise MaintenanceError(f"no file at {p.absolute()}")
    conn = sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro", uri=True)
    try:
        have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
    except sqlite3.DatabaseError as e:
        conn.close()
        raise MaintenanceError(f"{path} is not an SQLite database ({e})") from e
    if not set(columns) <= have:
        conn.close()
        raise MaintenanceError(
            f"{path} has no table {table}({', '.join(columns)}): not {what}"
            + (f" (its {table} has {', '.join(sorted(have))})" if have else "")
        )
    return conn


class HocuspocusSQLite:
    """@hocuspocus/extension-sqlite: ``documents(name, data)``, one row per document."""

    def __init__(self, path: str) -> None:
        self.label = Path(path).name
        self.conn = _open_sqlite(path, "documents", ("name", "data"),
                                 "a database of @hocuspocus/extension-sqlite")  # fmt: skip

    def names(self) -> list[str]:
        return [
            r[0] for r in self.conn.execute("SELECT DISTINCT name FROM documents ORDER BY name")
        ]

    def items(self, name: str) -> Iterator[Item]:
        # the extension reads the newest row of a name (ORDER BY rowid DESC): so here
        row = self.conn.execute(
            "SELECT data FROM documents WHERE name = ? ORDER BY rowid DESC LIMIT 1", (name,)
        ).fetchone()
        if row is not None:
            yield Item(bytes(row[0]))

    def close(self) -> None:
        self.conn.close()


class Directory:
    """One file per document below `path`: NAME.yjs / NAME.bin (an update) or NAME.txt.
    Any other file is refused (hidden ones too: ``.notes.yjs`` is a document), as are
    two files of one name."""

    def __init__(self, path: str) -> None:
        root = Path(path)
        if not root.is_dir():
            raise MaintenanceError(f"no directory at {root.absolute()}")
        self.label = root.name
        self.files: dict[str, Path] = {}
        other, twice = [], []
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if not f.is_file():
                continue
            if f.suffix not in UPDATE_SUFFIXES + TEXT_SUFFIXES:
                other.append(rel.as_posix())
                continue
            name = rel.with_suffix("").as_posix()
            if name in self.files:
                twice.append(f"{self.files[name].relative_to(root)} and {rel}")
            self.files[name] = f
        if other or twice:
            raise MaintenanceError(
                f"{path} holds files that are not one document each (NAME.yjs or NAME.bin: "
                "a Yjs update, NAME.txt: text): "
                + "; ".join(
                    [
                        *(f"{o}: unknown extension" for o in other),
                        *(f"{t}: the same document" for t in twice),
                    ]
                )  # fmt: skip
            )

    def names(self) -> list[str]:
        return list(self.files)

    def items(self, name: str) -> Iterator[Item]:
        f = self.files[name]
        yield Item(f.read_bytes(), text=f.suffix in TEXT_SUFFIXES)

    def close(self) -> None:
        pass


SOURCES: dict[str, Callable[[str], Source]] = {
    "hocuspocus-sqlite": HocuspocusSQLite,
    "dir": Directory,
}


# --- names ------------------------------------------------------------------------------


def map_names(names: list[str], *, slash: str = ":", rename: dict[str, str] | None = None
              ) -> dict[str, str]:  # fmt: skip
    """Each source name's document name: `rename`'s when it has one, else the name with a
    leading ``/`` dropped (a room named by its websocket path) and every other
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
    detail: str = ""


async def import_doc(
    store: EventStore, source: Source, name: str, doc: str, *, user: str, append: bool
) -> Outcome:
    """Import one source document as `doc`. A refusal of one of its updates ends this
    document (status failed, what was imported before it stays) but not the run; a
    store error ends the run."""
    out = Outcome(name, doc)
    head = await store.head(doc)
    if head > 0 and not append:
        out.status, out.detail = "skipped", f"already has {head} events (--append adds to them)"
        return out
    loaded = await load(store, doc)
    known = KnownDeletions.of_doc(loaded.doc)
    label = f"{source.label}: {name}"
    try:
        for item in source.items(name):
            if item.text:
                if item.data in (b"", b"\xef\xbb\xbf"):
                    out.left_out += 1
                    continue
                await import_data(store, doc, item.data, user=user, source=label,
                                  as_text=True, loaded=loaded)  # fmt: skip
            else:
                if as_update(item.data) is None:
                    raise MaintenanceError("it is not a Yjs v1 update")
                if not adds_anything(item.data, loaded.doc.get_state(), known):
                    out.left_out += 1
                    continue
                await import_data(store, doc, item.data, user=user, source=label,
                                  loaded=loaded)  # fmt: skip
                known.add(decode_update_meta(item.data).deletes)
            out.events += 1
    except MaintenanceError as e:
        out.status = "failed"
        out.detail = f"update {out.events + out.left_out + 1}: {e}"
        if out.events:
            out.detail += f" ({out.events} imported before it)"
        return out
    if not out.events:
        out.status = "empty"
        out.detail = "nothing to import" if head == 0 else "holds all of it already"
    return out


__all__ = [
    "SOURCES",
    "Directory",
    "HocuspocusSQLite",
    "Item",
    "Outcome",
    "Source",
    "import_doc",
    "map_names",
]
