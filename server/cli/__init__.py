"""The `palimpsest` command. Subcommands live in their own modules (see commands());
each has ``register(subparsers)`` that adds its parser with ``func=`` set."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ..settings import Settings
from ..util import argv_text, text_output


def commands(client: bool = True) -> list[ModuleType]:
    """The modules of the subcommands, in the order of --help: listed, not discovered.
    Without `client`, not the client's (the last): they import the client library (httpx,
    rich, pycrdt's sessions), 0.4 s of CPU that `palimpsest serve` and the admin commands
    do not need."""
    from . import admin, backup, copy, import_from, listing, serve, token, webhooks

    server = [
        serve,  # serve
        listing,  # ls
        admin,  # export, import, snapshot, inspect, verify, compact, delete
        import_from,  # import-from (Hocuspocus, pycrdt-websocket, a directory)
        copy,  # migrate, copy (SQLite -> PostgreSQL)
        backup,  # backup (a SQLite file, online)
        token,  # token (mint development tokens)
        webhooks,  # webhooks (delivery state, enable, disable)
    ]
    if not client:
        return server
    from ..client import cli as client_cli

    return [*server, client_cli]  # cat, blame, edit, replay, history, tail, revert


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="palimpsest",
        description="Palimpsest: a collaborative-editor backend where every edit is an event.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    words = argv_text(sys.argv[1:] if argv is None else argv)
    for module in commands(client=False):
        module.register(sub)
    if not words or words[0] not in sub.choices:  # a client command, --help, a typo
        commands()[-1].register(sub)
    args = parser.parse_args(words)
    if getattr(args, "db", None) is not None and getattr(args, "store", None) is not None:
        parser.exit(
            2,
            f"palimpsest {args.command}: give --db or --store, not both (--db FILE is "
            "--store sqlite:///FILE)\n",
        )
    text_output()
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


def add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="SQLite database file (env PALIMPSEST_DB; default palimpsest.db)")
    p.add_argument(
        "--store",
        help="store URL instead of --db: sqlite:///path, postgresql://… (env PALIMPSEST_STORE)",
    )


def settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    """The settings of a command: its flags over the PALIMPSEST_* variables. A flag for the
    store (--db or --store) makes both store variables unread: PALIMPSEST_STORE, which
    takes precedence over a db, must not redirect an explicit --db elsewhere (main()
    refuses the two flags together)."""
    db, store = getattr(args, "db", None), getattr(args, "store", None)
    overrides: dict[str, object] = {"db": db, "store": store}
    if db is not None:
        overrides["store"] = ""  # not None: PALIMPSEST_STORE is not read; "" is no store
    elif store is not None:
        overrides["db"] = Settings.db  # the default: PALIMPSEST_DB is not read
    overrides.update(extra)
    return Settings.from_env(**overrides)


def missing_sqlite_file(url: str) -> str | None:
    """The absolute path of the SQLite file `url` names when there is no such file (opening
    it would create an empty database), else None: for the commands that read a store
    that must exist (admin commands, copy's source, migrate)."""
    from ..store import sqlite_path

    if url.startswith(("postgresql://", "postgres://", "memory://")):
        return None
    path = sqlite_path(url)
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return str(Path(path).absolute())


def foreign_sqlite_file(url: str) -> str | None:
    """The absolute path of the SQLite file `url` names when it exists but holds no
    Palimpsest tables (an empty file, another program's database, a copy made while a
    server ran without its -wal file), else None. Read only: opening it as a store would
    create the tables in it, and the commands that read a store must not write to a file
    that is not one."""
    import sqlite3

    from ..store import sqlite_path

    if url.startswith(("postgresql://", "postgres://", "memory://")):
        return None
    path = sqlite_path(url)
    if not path or path == ":memory:" or not Path(path).exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{Path(path).absolute()}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'docs'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        # it cannot be opened (a -wal without its -shm on read-only media, say): the
        # store's own open says why, in words about the file and its folder
        return None
    except sqlite3.DatabaseError:  # not a SQLite file at all
        found = None
    return None if found else str(Path(path).absolute())


async def foreign_pg_schema(store: object) -> str | None:
    """For a PostgreSQL store whose schema holds none of Palimpsest's tables (another
    application's database, a schema that does not exist, a typo in ?schema=): what to
    call it ("schema 'public' of PostgreSQL database 'app'"), else None. Read only:
    the store's start would create the tables there (foreign_sqlite_file's reason)."""
    from ..store.postgres import PostgresStore, opening

    if not isinstance(store, PostgresStore):
        return None
    import asyncpg

    with opening():
        conn = await asyncpg.connect(store.dsn, timeout=10)
    try:
        if store.schema is not None:
            schema: str = store.schema
        else:  # the first schema of the search_path that exists, as the store's tables go
            schema = await conn.fetchval("SELECT current_schema()") or "public"
        found = await conn.fetchval(
            "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'docs'", schema
        )
        database = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    return None if found else f"schema {schema!r} of PostgreSQL database {database!r}"


async def not_a_store(store: object, url: str) -> str | None:
    """Why the commands that read a store must not open `store` (at `url`), or None: a
    SQLite file that does not exist, one or a PostgreSQL schema that holds none of our
    tables (opening it would create them). The refusal every admin command but import
    (and webhooks) says."""
    missing = missing_sqlite_file(url)
    if missing:  # it would create one
        return f"no SQLite database at {missing} (give --db or --store; {SQLITE_URL_HINT})"
    foreign = foreign_sqlite_file(url)
    if foreign:
        return (
            f"{foreign} holds no documents at all: it is not a Palimpsest database "
            "(none of our tables; the file is left as it is). A SQLite file copied "
            "while a server ran, without its -wal file, can hold nothing: copy with "
            "`palimpsest backup` (docs/operations.md#backups)"
        )
    schema = await foreign_pg_schema(store)
    if schema:
        return (
            f"{schema} holds no documents at all: it is not a Palimpsest database "
            "(none of our tables; the schema is left as it is). Check the URL's "
            "database and ?schema=; `palimpsest migrate` creates the tables"
        )
    return None


#: what follows "no SQLite database at PATH" when the path came from --db or --store
SQLITE_URL_HINT = "sqlite:/// is a relative path, sqlite://// an absolute one"


def setup_logging(level: str = "info", json_lines: bool = False) -> None:
    from ..logs import configure

    configure(level, json_lines)


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "SQLITE_URL_HINT",
    "add_store_options",
    "logging",
    "main",
    "foreign_pg_schema",
    "foreign_sqlite_file",
    "missing_sqlite_file",
    "not_a_store",
    "settings_from",
    "setup_logging",
]
