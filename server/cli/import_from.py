"""`palimpsest import-from KIND PATH`: every document of another Yjs server's store, in
one run (server/bulk_import.py; docs/migrating.md). Like the admin commands it works on
the store directly: meant for documents no server has open yet."""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from ..bulk_import import SOURCES, Outcome, import_doc, map_names
from ..checkpoint import Checkpoints
from ..errors import StoreUnavailable
from ..store import EventStore
from . import add_store_options
from .admin import AdminError, _run, not_served_store

KINDS = {
    "hocuspocus-sqlite": "the SQLite file of @hocuspocus/extension-sqlite (a table "
    "documents(name, data))",
    "ystore": "the SQLite file of pycrdt-websocket's SQLiteYStore (a table yupdates: every "
    "update with its time)",
    "dir": "a directory of one file per document: NAME.yjs or NAME.bin (a Yjs update), "
    "NAME.txt (text); y-leveldb's documents are written out so (docs/migrating.md)",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import-from",
        help="import every document of Hocuspocus, pycrdt-websocket or a directory",
        description="Import every document of another Yjs server's store, each update as "
        "an event of kind 'import' by --user, in one run: "
        + "; ".join(f"{k}: {v}" for k, v in KINDS.items())
        + ". A leading / of a name is dropped and every other / becomes --slash (default "
        ":); names that are still not document names are listed and nothing is imported. "
        "A document that already has events is skipped, unless --append, or unless its last "
        "event is this import's (a run interrupted, or done: it goes on from the row after "
        "it). A YStore row's "
        "time becomes its event's; a row that adds nothing (an empty update) is left out. "
        "Refused while a server serves the store (its open documents would not see "
        "the import until they load again: a tab open on one sees nothing); "
        "--while-served imports all the same, for documents no server has open (see "
        "docs/migrating.md).",
    )
    add_store_options(p)
    p.add_argument("kind", choices=list(SOURCES), metavar="KIND", help=", ".join(SOURCES))
    p.add_argument("path", metavar="PATH", help="the source's file (or directory, for dir)")
    p.add_argument("--user", default="import",
                   help="actor of the events (default import): who wrote what before the "
                   "move is not known here")  # fmt: skip
    p.add_argument("--slash", default=":", help="what each / of a name becomes (default :)")
    p.add_argument("--rename", action="append", default=[], metavar="SOURCE=NAME",
                   help="import the source's document SOURCE as NAME (repeatable)")  # fmt: skip
    p.add_argument("--append", action="store_true",
                   help="add to documents that already have events (what they hold "
                   "already is left out)")  # fmt: skip
    p.add_argument("--while-served", action="store_true",
                   help="import although a server serves the store: only for documents "
                   "no one has open there (a tab open on one goes on seeing it empty)")  # fmt: skip
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, and a line on stderr only for documents skipped "
                   "or failed")  # fmt: skip
    p.add_argument("--verbose", action="store_true",
                   help="on a terminal too, a line for each document (else a progress bar "
                   "there, and a line only for those skipped or failed; in a pipe or a log "
                   "every document has its line)")  # fmt: skip
    p.set_defaults(func=lambda args: _run("import-from", import_from, args))


async def import_from(store: EventStore, args: argparse.Namespace) -> int:
    rename: dict[str, str] = {}
    for r in args.rename:
        old, sep, new = r.rpartition("=")  # a document name has no =, a source's may
        if not sep or not old:
            raise AdminError(f"--rename takes SOURCE=NAME, not {r!r}")
        rename[old] = new
    if args.while_served:
        return await _import_from(store, args, rename)
    try:
        async with not_served_store(store, "import-from"):
            return await _import_from(store, args, rename)
    except StoreUnavailable as e:
        if "serves" not in str(e):
            raise
        raise AdminError(
            f"{e}, or, if none of the documents to import is open there, run again with "
            "--while-served (a document a server has open does not see what is imported "
            "into its store until it loads again: a tab open on it sees it empty, and its "
            "first edit is made on that)"
        ) from None


async def _import_from(store: EventStore, args: argparse.Namespace, rename: dict[str, str]) -> int:
    started = time.monotonic()
    source = SOURCES[args.kind](args.path)
    try:
        mapping = map_names(source.names(), slash=args.slash, rename=rename)
        outcomes: list[Outcome] = []
        # a bar on a terminal (disable=None: tqdm asks isatty), where a line per document
        # scrolled 20,000 lines by; a pipe or a log keeps the lines (scripts read them)
        bar = tqdm(total=len(mapping), desc="import-from", unit="doc", file=sys.stderr,
                   leave=False, disable=True if args.quiet else None)  # fmt: skip
        every = (bar.disable and not args.quiet) or args.verbose
        try:
            async with Checkpoints(store, args.settings) as checkpoints:
                for i, (name, doc) in enumerate(mapping.items(), start=1):
                    out = await import_doc(store, source, name, doc, user=args.user,
                                           append=args.append, checkpoints=checkpoints)  # fmt: skip
                    outcomes.append(out)
                    if every or out.status in ("skipped", "failed"):
                        tqdm.write(f"palimpsest import-from: [{i}/{len(mapping)}] {_line(out)}",
                                   file=sys.stderr)  # fmt: skip
                        sys.stderr.flush()
                    bar.update(1)
        finally:
            bar.close()
    finally:
        source.close()
    count = {s: sum(o.status == s for o in outcomes)
             for s in ("imported", "skipped", "empty", "failed")}  # fmt: skip
    events = sum(o.events for o in outcomes)
    left_out = sum(o.left_out for o in outcomes)
    print(
        f"palimpsest import-from: {len(outcomes)} documents from {args.path}: "
        f"{count['imported']} imported ({events} events by {args.user}"
        + (f", {left_out} updates that added nothing left out" if left_out else "")
        + f"), {count['skipped']} skipped (they had events), {count['empty']} with nothing "
        f"to import, {count['failed']} failed ({time.monotonic() - started:.1f} s)"
    )
    if not outcomes:
        # (Hocuspocus killed before its debounced save: its file held nothing, and the
        # run said "0 imported" and exited 0)
        print(f"palimpsest import-from: warning: {args.path} holds no documents: was the "
              "old server stopped cleanly, after it saved them? (Hocuspocus saves on a "
              "debounce and writes what it holds when it stops on SIGTERM; a kill -9 "
              "loses it: docs/migrating.md)", file=sys.stderr)  # fmt: skip
    return 1 if count["failed"] else 0


def _line(o: Outcome) -> str:
    what = o.name if o.doc == o.name else f"{o.name} -> {o.doc}"
    if o.status == "skipped":
        return f"{what}: skipped: {o.detail}"
    if o.status == "failed":
        return f"{what}: FAILED: {o.detail}"
    if o.status == "empty":
        return f"{what}: nothing imported: {o.detail}"
    parts = [f"{o.events} event{'s' * (o.events != 1)}"]
    if o.left_out:
        parts.append(f"{o.left_out} updates that added nothing left out")
    if o.moved:
        parts.append(f"{o.moved} given the time of the event before them (theirs was earlier)")
    if o.resumed:
        parts.append(f"resumed after the {o.resumed} imported before")
    if o.snapshot is not None:
        parts.append(f"snapshot @{o.snapshot}")
    return f"{what}: {', '.join(parts)}"
