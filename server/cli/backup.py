"""`palimpsest backup`: a consistent copy of a SQLite database, taken while servers run.

The copy is SQLite's online backup of one read transaction: the file as it was at one
moment, every table at once (documents, logs, snapshots, tags, webhooks), while the
servers keep committing (in WAL mode a reader holds up no writer). It is written to
``OUT.partial``, checked (``PRAGMA quick_check``, and every table holds the rows the
source held at that moment), flushed to the disk and renamed to ``OUT``, so ``OUT`` is
either the whole backup or absent.

The same command restores one: with the servers stopped, ``palimpsest backup --db
backup.db palimpsest.db --replace`` puts the backup in place of the database and its
``-wal`` and ``-shm`` (a stale ``-wal`` beside a restored file would be replayed into it).
A database a server is serving is never replaced. The changefeed's positions of the
restored file go on after the last one the replaced file gave out, so that no reader's
cursor names an event it never had.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreUnavailable
from ..recovery import RESTORED_MINUTES, recovery_marker
from ..serving_lock import not_served
from ..store import SQLiteStore, open_store
from ..store.sqlite import make_private, not_writable
from . import add_store_options, settings_from

#: pages copied per step of the backup (4 MB of 4 KB pages), for the progress bar
_STEP_PAGES = 1024


@dataclass
class Done:
    """What a backup wrote: the rows of each table at the moment it copied."""

    docs: int
    tables: dict[str, int]
    size: int
    seconds: float
    #: the changefeed position the written file goes on after (a restore: at least the
    #: replaced file's last)
    position: int = 0
    #: a restore over a file whose last position could not be read (damaged)
    unknown_positions: bool = False


class BackupError(Exception):
    """What the user is told, in one line, with exit status 1."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "backup",
        help="copy a SQLite database into a file, consistently, while servers run on it",
        description="Copy the SQLite database (--db/--store) into OUT as it is at one moment, "
        "while servers keep serving it; the copy is checked before it takes the name OUT. "
        "To restore, stop the server and back the backup up over the database: "
        "`palimpsest backup --db backup.db palimpsest.db --replace`. "
        "PostgreSQL: use pg_dump (docs/operations.md#backups).",
    )
    add_store_options(p)
    p.add_argument("out", help="the file to write (refused if it exists, unless --replace)")
    p.add_argument(
        "--replace",
        action="store_true",
        help="write over OUT (and drop its -wal and -shm); refused while a server serves OUT",
    )
    p.add_argument(
        "--positions-from",
        type=int,
        default=0,
        metavar="N",
        help="with --replace: number the changefeed's positions after N at least (the "
        "highest position a follower or webhook has seen), when the file replaced cannot "
        "tell (damaged)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="what it wrote, as one JSON object")
    p.set_defaults(func=run_backup)


def run_backup(args: argparse.Namespace) -> int:
    try:
        store = open_store(settings_from(args).store_url)
        if not isinstance(store, SQLiteStore) or store.path == ":memory:":
            raise BackupError(
                f"backup copies a SQLite database, not a {store.name} store; for PostgreSQL "
                "use pg_dump (docs/operations.md#backups)"
            )
        done = backup(
            store.path, args.out, replace=args.replace, quiet=args.quiet,
            positions_from=args.positions_from,
        )  # fmt: skip
    except (BackupError, ValueError, OSError) as e:  # ValueError: a store URL of no store
        print(f"palimpsest backup: {e}", file=sys.stderr)  # OSError: a file it cannot write
        return 1
    if done.unknown_positions:
        print(
            f"palimpsest backup: WARNING: the file replaced could not say which changefeed "
            f"positions it gave out; the restored log numbers them after {done.position}. "
            "A follower or webhook past that would miss events: run again with "
            "--positions-from N (the highest position they have seen), or restart them "
            "from 0 (docs/changefeed.md)",
            file=sys.stderr,
        )
    marker = recovery_marker(os.path.realpath(args.out))
    if args.json:
        print(json.dumps({
            "source": store.path, "out": args.out, "docs": done.docs, "tables": done.tables,
            "size": done.size, "seconds": round(done.seconds, 3), "position": done.position,
            "restored": marker.exists(),
        }))  # fmt: skip
        return 0
    print(
        f"palimpsest: backed up {store.path} to {args.out}: "
        f"{done.docs} document{'' if done.docs == 1 else 's'}, "
        f"{done.size / 1e6:.1f} MB in {done.seconds:.2f} s"
    )
    if marker.exists():
        print(
            f"palimpsest: {args.out} was replaced: the next server started on it takes back "
            f"clients' copies of later edits for {RESTORED_MINUTES:g} minutes ({marker.name}; "
            "docs/operations.md#recovering-lost-edits)"
        )
    return 0


def backup(
    source: str,
    out: str,
    *,
    replace: bool = False,
    quiet: bool = True,
    step_pages: int = _STEP_PAGES,
    positions_from: int = 0,
) -> Done:
    """Copies the SQLite database ``source`` into ``out``; returns what it did (for the
    message and the tests). Raises BackupError for anything the user can act on.
    ``step_pages``: pages copied between two looks at the progress bar."""
    from tqdm import tqdm

    # a symlink's target is the database to write over (the link stays, and the lock,
    # -wal and recovery marker are the target's, as a server on either name finds them)
    src_path = Path(source)
    out_path = Path(os.path.realpath(out) if os.path.islink(out) else out)
    if not src_path.is_file():
        raise BackupError(f"no SQLite database at {source}")
    if out_path.exists() and src_path.resolve() == out_path.resolve():
        raise BackupError(f"{out} is the database itself: back it up into another file")
    if out_path.exists() and not replace:
        raise BackupError(f"{out} exists: choose another file, or --replace to write over it")
    if out_path.is_dir():
        raise BackupError(f"{out} is a directory")
    given_out = 0  # the changefeed positions the file it replaces gave out
    unknown = False
    position = 0
    if out_path.exists():
        try:
            with not_served(str(out_path)):
                pass  # refused now rather than after the copy (checked again at the end)
        except StoreUnavailable as e:
            raise BackupError(str(e)) from None
        found = _last_position(out_path)
        unknown = found is None
        given_out = max(found or 0, positions_from)
    if not out_path.parent.is_dir():
        raise BackupError(f"the directory of {out} does not exist")
    why = not_writable(str(out_path.parent.absolute()))
    if why:  # the copy is written beside OUT, then renamed to it
        raise BackupError(f"cannot write {out}: {why}")
    partial = out_path.with_name(out_path.name + ".partial")
    started = time.monotonic()
    try:
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise BackupError(f"cannot open SQLite database {source}: {e}") from e
    try:
        try:
            # one read transaction for the copy and the counts: one moment of the file,
            # whatever the servers commit meanwhile
            src.execute("BEGIN")
            tables = [
                r[0]
                for r in src.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            if "docs" not in tables:
                raise BackupError(f"{source} is not a Palimpsest database (no docs table)")
            counts = {t: _count(src, t) for t in tables}
            docs = counts["docs"]
            pages = int(src.execute("PRAGMA page_count").fetchone()[0])
        except sqlite3.DatabaseError as e:
            raise BackupError(f"cannot read SQLite database {source}: {e}") from e
        partial.unlink(missing_ok=True)
        try:
            make_private(partial)  # it holds every document's text
            dst = sqlite3.connect(partial, isolation_level=None)
        except (sqlite3.Error, OSError) as e:
            raise BackupError(f"cannot write {out}: {e} ({partial})") from e
        try:
            # the copy is synced once, whole, before it takes its name: no journal of its own
            dst.execute("PRAGMA journal_mode = OFF")
            dst.execute("PRAGMA synchronous = OFF")
            with tqdm(
                total=pages,
                unit="page",
                disable=True if quiet else None,  # None: a tty only
                desc="backup",
                file=sys.stderr,
            ) as bar:

                def progress(status: int, remaining: int, total: int) -> None:
                    bar.total = total
                    bar.n = total - remaining
                    bar.refresh()

                src.backup(dst, pages=step_pages, progress=progress, sleep=0)
            if "log_position" in tables:
                if given_out:
                    # a restore: positions go on after those the replaced file gave out,
                    # so that a changefeed reader or webhook past the backup's end never
                    # takes the next events for ones it had (6..10 again after a backup
                    # at 5)
                    dst.execute(
                        "UPDATE log_position SET pos = ? WHERE id = 1 AND pos < ?",
                        (given_out, given_out),
                    )
                row = dst.execute("SELECT pos FROM log_position WHERE id = 1").fetchone()
                position = int(row[0]) if row else 0
            problems = [r[0] for r in dst.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise BackupError(f"the copy does not check: {'; '.join(problems[:5])}")
            copied = {t: _count(dst, t) for t in tables}
            if copied != counts:
                differ = [t for t in tables if copied.get(t) != counts[t]]
                raise BackupError(f"the copy's tables {differ} do not hold the source's rows")
        except sqlite3.Error as e:
            raise BackupError(f"cannot write {partial}: {e}") from e
        finally:
            dst.close()
        src.execute("COMMIT")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    _fsync(partial)
    if out_path.exists():  # --replace: no server may serve it from here to the rename
        try:
            with not_served(str(out_path)):
                for extra in ("-wal", "-shm", "-journal"):  # the old file's, stale now
                    Path(str(out_path) + extra).unlink(missing_ok=True)
                os.replace(partial, out_path)
                # a restore: the server started on it next takes back, for an hour, the
                # clients' copies of what was written after the backup (settings.py,
                # recovering_minutes)
                recovery_marker(str(out_path)).write_text(f"{RESTORED_MINUTES:g}\n")
        except StoreUnavailable as e:
            partial.unlink(missing_ok=True)
            raise BackupError(f"{e}; {out} is left as it was") from None
    else:
        os.replace(partial, out_path)
    _fsync(out_path.parent)
    return Done(
        docs, counts, out_path.stat().st_size, time.monotonic() - started, position, unknown
    )


def _last_position(db: Path) -> int | None:
    """The last changefeed position the database at `db` gave out; None when it cannot
    tell (not a Palimpsest database, or damaged, which may be why it is being replaced)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        for query in ("SELECT pos FROM log_position WHERE id = 1", "SELECT max(pos) FROM events"):
            try:
                row = conn.execute(query).fetchone()
            except sqlite3.Error:
                continue
            if row is not None:
                return int(row[0] or 0)
        return None
    finally:
        conn.close()


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["BackupError", "Done", "backup", "register"]
