"""The document list. (Health, readiness and metrics: server.routes.ops.)

``GET /api/docs?prefix=&after=&limit=&sort=name|updated``: a page of the documents the
token grants, selected, ordered and cut by the store in SQL (``EventStore.doc_page``):
the token's patterns become ranges of the name index (``auth.granted_ranges``), so a
user with 100 pages among 10,000 documents costs a read of 100 rows, not 10,000 rows
and a million glob matches on the event loop.
"""

from __future__ import annotations

import dataclasses
import re

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import Identity, granted_ranges, may_open
from ..auth.open import OpenAccess
from ..backend import Backend
from ..errors import BadRequest, NotFound
from ..names import MAX_LEN, NAME_CHARS
from ..params import CREDENTIALS, everywhere
from ..store.base import DocInfo
from ..store.doc_pages import MAX_LIMIT, SORTS, DocPage
from ..util import iso

#: the query parameters of the list, and nothing else ...
PARAMS = ("prefix", "after", "limit", "sort")
#: ... but credentials (params.CREDENTIALS) and the extensions' own (takes_query)
_DIGITS = re.compile(r"[0-9]{1,15}")


def backend_of(request: Request) -> Backend:
    b: Backend = request.app.state.backend
    return b


def _name_like(value: str, what: str) -> str:
    if len(value) > MAX_LEN or any(c not in NAME_CHARS for c in value):
        raise BadRequest(
            f"?{what}= must be (the start of) a document name: at most {MAX_LEN} letters, "
            f"digits and _ . ~ : @ -; got {value[:80]!r}"
        )
    return value


def cursor_of(sort: str, d: DocInfo) -> str:
    """The ``next`` of a page that ends with `d`: its name (sort=name), or its updated
    time in ms and its name (sort=updated: ``1718000000000/notes``)."""
    return d.doc if sort == "name" else f"{d.updated_ts or 0}/{d.doc}"


def parse_page(q: QueryParams, extra: tuple[str, ...] = ()) -> tuple[str, DocPage]:
    """The prefix and the page a request asks for (without ranges); BadRequest saying
    what is wrong with any parameter. `extra`: the query parameters every route takes
    for the extensions (Extension.takes_query)."""
    unknown = sorted(set(q.keys()) - set(PARAMS) - set(CREDENTIALS) - set(extra))
    if unknown:
        raise BadRequest(
            f"unknown query parameter {', '.join(repr(u[:40]) for u in unknown[:5])}: "
            "GET /api/docs takes prefix, after, limit and sort" + everywhere(extra)
        )
    for name in PARAMS:
        if len(q.getlist(name)) > 1:
            raise BadRequest(f"?{name}= is given {len(q.getlist(name))} times: give it once")
    sort = q.get("sort") or "name"
    if sort not in SORTS:
        raise BadRequest(f"?sort= must be one of {', '.join(SORTS)}, not {sort[:40]!r}")
    raw = q.get("limit") or str(MAX_LIMIT)
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"?limit= must be a whole number from 1 to {MAX_LIMIT}, not {raw[:40]!r}")
    prefix = _name_like(q.get("prefix") or "", "prefix")
    after = q.get("after") or None
    after_ts: int | None = None
    if after is not None and "/" in after:
        ts, _, name = after.partition("/")
        if not _DIGITS.fullmatch(ts) or not name:
            raise BadRequest(
                "?after= must be the `next` of the previous page (sort=updated: updated "
                f"ms/name, e.g. 1718000000000/notes) or a name, not {after[:80]!r}"
            )
        # a sort=updated cursor given to sort=name: its name is the position
        after_ts = int(ts) if sort == "updated" else None
        after = _name_like(name, "after")
    elif after is not None:
        after = _name_like(after, "after")
    return prefix, DocPage((), sort, after, after_ts, int(raw))


async def page_of(
    backend: Backend, identity: Identity, prefix: str, asked: DocPage
) -> tuple[list[DocInfo], str | None]:
    """The page's documents and its ``next`` cursor (None: the list ends here)."""
    ranges = granted_ranges(identity, prefix)
    approximate = any(r.approximate for r in ranges)
    # one row more than the page: whether another page follows
    page = dataclasses.replace(asked, ranges=ranges, limit=asked.limit + 1)
    out: list[DocInfo] = []
    while True:
        rows = await backend.store.doc_page(page)
        # the store matched the patterns exactly, unless one holds a [set]
        out += [d for d in rows if may_open(identity, d.doc)] if approximate else rows
        if len(rows) < page.limit or len(out) > asked.limit:
            break
        last = rows[-1]
        page = dataclasses.replace(
            page, after_name=last.doc, after_updated=last.updated_ts or 0,
            limit=asked.limit + 1 - len(out),
        )  # fmt: skip
    if len(out) > asked.limit:
        del out[asked.limit :]
        return out, cursor_of(asked.sort, out[-1])
    return out, None


async def me(request: Request) -> Response:
    """Who the server takes the caller for: the page asks, so that a user an embedding
    app has signed in (its own ``authenticate``, a cookie) is not asked for a name.
    ``open``: open mode, where the name is whatever the page says (``?user=``)."""
    backend = backend_of(request)
    identity = await backend.authenticate(request, None, "read")
    is_open = backend.extension(OpenAccess) is not None
    return JSONResponse({"user": identity.user, "role": identity.role, "open": is_open})


async def list_docs(request: Request) -> Response:
    backend = backend_of(request)
    identity = await backend.authenticate(request, None, "read")
    prefix, asked = parse_page(request.query_params, backend.extensions.takes_query)
    if asked.sort == "updated" and asked.after_name is not None and asked.after_updated is None:
        # sort=updated after a name: after that document where it stands now
        info = await backend.store.doc_info(asked.after_name)
        if info is None or not may_open(identity, info.doc):
            raise NotFound(f"?after=: no document {asked.after_name!r} to list after")
        asked = dataclasses.replace(asked, after_updated=info.updated_ts or 0)
    docs, next_cursor = await page_of(backend, identity, prefix, asked)
    locked = await backend.store.doc_locks().of(d.doc for d in docs)
    return JSONResponse(
        {
            # the log's last global position: where `GET /api/events/stream` is now (a
            # follower that wants only what comes next, or the last few, starts there)
            "position": await backend.store.last_position(),
            "docs": [
                {
                    "doc": d.doc,
                    "head": d.head,
                    "updated": iso(d.updated_ts) if d.updated_ts else None,
                    "size": d.events_bytes,
                    "loaded": d.doc in backend.rooms,
                    # locked read-only (server.locking): no edit is taken
                    "locked": d.doc in locked,
                }
                for d in docs
            ],
            # `after` for the next page; null when this page ends the list
            "next": next_cursor,
        }
    )


routes = [
    Route("/api/docs", list_docs),
    Route("/api/me", me),
]
