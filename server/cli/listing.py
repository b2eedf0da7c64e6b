"""`palimpsest ls`: the documents of a store, a page at a time, as ``GET /api/docs``
lists them (the same ``EventStore.doc_page``: selected, ordered and cut in SQL), without
a server and without a token; and ``names_in``, the names under a prefix that the admin
commands taking many documents (delete, compact, export ``--prefix``) act on.

A store of 20,000 documents printed 20,000 lines unasked would bury the count an
operator wanted: a page of --limit (default DEFAULT_LIMIT), then on stderr how many
there are and how many more, and the cursor of the next page."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator

from ..names import MAX_LEN, NAME_CHARS
from ..store import EventStore
from ..store.base import DocInfo
from ..store.doc_pages import MAX_LIMIT, SORTS, DocPage, NameRange
from ..util import iso

#: rows printed when --limit is not given
DEFAULT_LIMIT = 100
#: rows counted at most for the total and the "more" of the summary: past it, "more
#: than" (a count is a read of every row in the prefix's range of the name index)
COUNT_CAP = 1_000_000


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from . import add_store_options
    from .admin import _run

    p = sub.add_parser(
        "ls",
        aliases=["list"],
        help="list the documents: name, head, last update, size, locked",
        description="List the documents of the store, as GET /api/docs does (no server or "
        "token needed; safe beside a running server: it only reads): one line each (NAME "
        "HEAD UPDATED SIZE, then `locked` for a document locked read-only; the name first, "
        "so that `palimpsest ls | palimpsest delete - --yes` reads it), at most --limit "
        f"(default {DEFAULT_LIMIT}). stderr then says "
        "how many documents there are and how many more, with the --after of the next page.",
    )
    add_store_options(p)
    p.add_argument("--prefix", default="", help="only the documents whose names start so")
    p.add_argument("--sort", choices=SORTS, default="name",
                   help="name (default), or updated: the last written first")  # fmt: skip
    p.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT,
                   help=f"print at most N (default {DEFAULT_LIMIT}; 0: all)")  # fmt: skip
    p.add_argument("--after", metavar="CURSOR",
                   help="start after this row: the `next` the previous page's summary (or "
                   "GET /api/docs) gave; with --sort name, any name")  # fmt: skip
    p.add_argument("--json", action="store_true",
                   help='one JSON object a line: {"doc", "head", "updated", "size", '
                   '"locked"}, as GET /api/docs lists them')  # fmt: skip
    p.set_defaults(func=lambda args: _run("ls", ls, args))


def _limit(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"a whole number (0: all), not {raw!r}")
    return int(raw)


def _name_like(value: str, what: str) -> str:
    if len(value) > MAX_LEN or any(c not in NAME_CHARS for c in value):
        raise ValueError(
            f"{what} must be (the start of) a document name: at most {MAX_LEN} letters, "
            f"digits and _ . ~ : @ -; got {value[:80]!r}"
        )
    return value


def page_of(prefix: str, sort: str = "name", after: str | None = None) -> DocPage:
    """The first page of documents whose names start with `prefix`, in `sort` order,
    after the cursor `after` (the route's ``next``: a name, or for sort=updated
    ``MS/NAME``)."""
    after_ts: int | None = None
    if after is not None and "/" in after:
        ts, _, after = after.partition("/")
        if not ts.isdigit() or not after:
            raise ValueError(f"--after takes the `next` of a page (MS/NAME or a name), not {ts!r}")
        after_ts = int(ts) if sort == "updated" else None
    if after is not None:
        _name_like(after, "--after")
    return DocPage((NameRange(_name_like(prefix, "--prefix")),), sort, after, after_ts, MAX_LIMIT)


async def pages(store: EventStore, page: DocPage) -> AsyncIterator[DocInfo]:
    """Every document from `page` on, read a page of `page.limit` rows at a time."""
    while True:
        rows = await store.doc_page(page)
        for d in rows:
            yield d
        if len(rows) < page.limit:
            return
        last = rows[-1]
        page = DocPage(page.ranges, page.sort, last.doc, last.updated_ts or 0, page.limit)


async def names_in(store: EventStore, prefix: str) -> list[str]:
    """The names of the documents that start with `prefix`, in name order."""
    return [d.doc async for d in pages(store, page_of(prefix))]


async def count(store: EventStore, page: DocPage) -> int:
    """How many documents from `page` on (at most COUNT_CAP + 1)."""
    n = 0
    async for _ in pages(store, page):
        n += 1
        if n > COUNT_CAP:
            break
    return n


def _counted(n: int) -> str:
    return f"more than {COUNT_CAP:,}" if n > COUNT_CAP else f"{n:,}"


def cursor_of(sort: str, d: DocInfo) -> str:
    """As GET /api/docs's ``next`` (routes.docs.cursor_of)."""
    return d.doc if sort == "name" else f"{d.updated_ts or 0}/{d.doc}"


async def ls(store: EventStore, args: argparse.Namespace) -> int:
    page = page_of(args.prefix, args.sort, args.after)
    if page.sort == "updated" and page.after_name is not None and page.after_updated is None:
        # a name alone after --sort updated: after that document where it stands now
        info = await store.doc_info(page.after_name)
        if info is None:
            raise ValueError(f"--after: no document {page.after_name!r} to list after")
        page = DocPage(page.ranges, page.sort, info.doc, info.updated_ts or 0, page.limit)
    shown: list[DocInfo] = []
    more = False
    # the locked documents (server.locking), as GET /api/docs says them: few, read at once
    locked = {lock.doc for lock in await store.doc_locks().list()}
    async for d in pages(store, page):
        if args.limit and len(shown) == args.limit:
            more = True
            break
        shown.append(d)
        if args.json:
            row = {"doc": d.doc, "head": d.head,
                   "updated": iso(d.updated_ts) if d.updated_ts else None,
                   "size": d.events_bytes, "locked": d.doc in locked}  # fmt: skip
            sys.stdout.write(json.dumps(row) + "\n")
        else:
            updated = iso(d.updated_ts) if d.updated_ts else "-"
            mark = "  locked" if d.doc in locked else ""
            sys.stdout.write(f"{d.doc}  {d.head}  {updated}  {d.events_bytes}{mark}\n")
    sys.stdout.flush()
    where = f" starting with {args.prefix!r}" if args.prefix else ""
    total = await count(store, page_of(args.prefix))
    if not more:
        print(f"palimpsest ls: {len(shown):,} listed; {_counted(total)} documents{where}",
              file=sys.stderr)  # fmt: skip
        return 0
    last = shown[-1]
    rest = await count(store, DocPage(page.ranges, page.sort, last.doc, last.updated_ts or 0))
    print(f"palimpsest ls: {len(shown):,} listed; {_counted(total)} documents{where}, "
          f"{_counted(rest)} more: --limit 0 lists all, --after {cursor_of(page.sort, last)} "
          "the next page", file=sys.stderr)  # fmt: skip
    return 0
