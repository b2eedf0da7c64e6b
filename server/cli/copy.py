"""`palimpsest migrate` (create or update a store's schema) and `palimpsest copy` (copy every
document of one store into another, e.g. SQLite into PostgreSQL, seqs and all)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import PalimpsestError
from ..store import EventStore, MemoryStore, SQLiteStore, open_store
from ..store.base import Snapshot
from . import add_store_options, settings_from


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "migrate",
        help="create or update the store's schema",
        description="Create the tables of a store, or bring them to this version. Upgrading "
        "to version 5 (the compact event log) rewrites every event in one transaction: stop "
        "the servers first (they refuse to start until it is done). Safe to run from several "
        "machines at once, and again.",
    )
    add_store_options(p)
    p.set_defaults(func=run_migrate)

    p = sub.add_parser(
        "copy",
        help="copy every document of one store into another (e.g. SQLite -> PostgreSQL)",
        description="Copy documents with their whole logs (same seqs), valid snapshots and "
        "tags, one transaction per document. Stop the servers of the source first.",
    )
    p.add_argument("--from", dest="source", required=True, help="sqlite:///path (or any store URL)")
    p.add_argument("--to", dest="target", required=True, help="postgresql://… (created if needed)")
    p.add_argument("--doc", action="append", help="copy only this document (repeatable)")
    p.add_argument(
        "--replace", action="store_true", help="overwrite documents that exist in the target"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_copy)


def run_migrate(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def main() -> int:
        store = open_store(settings.store_url, migrate=True)
        if isinstance(store, SQLiteStore):
            store.rewrite_progress = _progress_line()
        await store.start()  # creates the schema, or upgrades it (migrate=True)
        try:
            version = await store.schema_version()
        finally:
            await store.stop()
        print(f"palimpsest: {store.name} store {settings.store_url} at schema version {version}")
        return 0

    try:
        return asyncio.run(main())
    except (PalimpsestError, ValueError) as e:  # ValueError: a store URL of no store
        print(f"palimpsest migrate: {e}", file=sys.stderr)
        return 1


def _progress_line() -> Callable[[int, int], None]:
    """A rewrite's progress on stderr: a line every half second at most, and the last."""
    last = [0.0]

    def tell(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.5:
            return
        last[0] = now
        pct = 100 * done // max(total, 1)
        print(f"palimpsest migrate: rewriting the log: {done:,} of {total:,} events ({pct}%)",
              file=sys.stderr, flush=True)  # fmt: skip

    return tell


def _same_store(source: EventStore, target: EventStore, source_url: str, target_url: str) -> bool:
    if isinstance(source, SQLiteStore) and isinstance(target, SQLiteStore):
        files = (source.path, target.path)
        return ":memory:" not in files and Path(files[0]).resolve() == Path(files[1]).resolve()
    if isinstance(source, MemoryStore):  # each memory:// is a store of its own
        return False
    return source_url.rstrip("/") == target_url.rstrip("/")


def run_copy(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(copy(args.source, args.target, args.doc, args.replace, args.quiet))
    except (PalimpsestError, ValueError) as e:  # ValueError: a store URL of no store
        print(f"palimpsest copy: {e}", file=sys.stderr)
        return 1


async def copy(
    source_url: str,
    target_url: str,
    only: list[str] | None = None,
    replace: bool = False,
    quiet: bool = False,
) -> int:
    """Copy documents; returns 0 when every one was copied, 1 otherwise."""
    from tqdm import tqdm

    source, target = open_store(source_url), open_store(target_url)
    if _same_store(source, target, source_url, target_url):
        raise ValueError(f"--from and --to are the same store ({source_url}): nothing to copy")
    await source.start()
    try:
        await target.start()
        try:
            docs = await source.list_docs()
            if only:
                docs = [d for d in docs if d.doc in set(only)]
            failed = 0
            total = sum(d.head - d.base_seq for d in docs)
            with tqdm(total=total, unit="ev", disable=quiet, desc="copy", file=sys.stderr) as bar:
                for info in docs:
                    bar.set_postfix_str(info.doc[:40])
                    events = await source.read(info.doc)
                    snaps: list[Snapshot] = []
                    for s in await source.snapshots(info.doc):
                        snap = await source.latest_snapshot(info.doc, at_most=s.seq)
                        if snap is not None and snap.seq == s.seq:
                            snaps.append(snap)  # damaged ones are left behind
                    tags = await source.tags(info.doc)
                    try:
                        await target.import_doc(info, events, snaps, tags, replace=replace)
                    except PalimpsestError as e:
                        failed += 1
                        tqdm.write(f"{info.doc}: not copied: {e}", file=sys.stderr)
                    else:
                        head = await target.head(info.doc)
                        if head != info.head:
                            failed += 1
                            tqdm.write(f"{info.doc}: head {head} != {info.head}", file=sys.stderr)
                    bar.update(len(events))
            copied = len(docs) - failed
            print(f"palimpsest: copied {copied} of {len(docs)} documents ({total} events)")
            return 0 if failed == 0 else 1
        finally:
            await target.stop()
    finally:
        await source.stop()
